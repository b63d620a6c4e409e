"""The Attentive Feature Integration (AFI) module, paper section 3.1, Eq. 1-2.

An AFI module takes the features X(1..n) of earlier blocks of a stage and returns their
channel-wise convex combination R:

    z(j) = F_sq(X(j))                      squeeze: global average pooling
    s(j) = W2 ReLU(W1 z(j))                score: a bottleneck shared by all inputs (Eq. 1)
    S~   = softmax over j of S = [s(1..n)]  normalise, channel by channel
    R    = sum_j S~[j] * X(j)               integrate (Eq. 2)

Every family builds its AFI blocks from this one module and from :class:`FeaturePool`, which
holds the features of a stage and squeezes each of them exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["AFIModule", "FeaturePool", "squeeze", "weighted_sum"]


def squeeze(x: Tensor) -> Tensor:
    """F_sq of Eq. 2: global average pooling, (B, C, H, W) -> (B, C)."""
    return x.mean(dim=(2, 3))


class FeaturePool:
    """The features X(1..i-1) of one stage during one forward pass, each squeezed once.

    A feature's squeeze z(j) does not change between the later blocks that read it, so it is
    computed when the feature is added, not once per consuming module.
    """

    __slots__ = ("features", "squeezed")

    def __init__(self) -> None:
        self.features: list[Tensor] = []
        self.squeezed: list[Tensor] = []

    def add(self, x: Tensor) -> None:
        self.features.append(x)
        self.squeezed.append(squeeze(x))

    def __len__(self) -> int:
        return len(self.features)


class _WeightedSum(torch.autograd.Function):
    """R = sum_j w[:, j] * X(j) without stacking the inputs.

    Stacking would copy every earlier feature of the stage at every block (O(n^2) memory for a
    stage of n blocks); this function accumulates in place and saves only references to its
    inputs, which the ReLU that produced them keeps alive for its own backward anyway.
    """

    @staticmethod
    def forward(ctx, weights: Tensor, *features: Tensor) -> Tensor:  # type: ignore[override]
        w = weights[..., None, None]
        out = features[0] * w[:, 0]
        for j in range(1, len(features)):
            out.addcmul_(features[j], w[:, j])
        ctx.save_for_backward(weights, *features)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        weights, *features = ctx.saved_tensors
        w = weights[..., None, None]
        grad_w = None
        if ctx.needs_input_grad[0]:
            grad_w = torch.stack([(grad * f).sum(dim=(2, 3)) for f in features], dim=1)
        grad_f = [
            grad * w[:, j] if ctx.needs_input_grad[j + 1] else None for j in range(len(features))
        ]
        return (grad_w, *grad_f)


def weighted_sum(features: Sequence[Tensor], weights: Tensor) -> Tensor:
    """Channel-wise convex combination of Eq. 2: weights (B, n, C), features n x (B, C, H, W)."""
    if len(features) != weights.shape[1]:
        raise ValueError(f"{len(features)} features but {weights.shape[1]} weights")
    return _WeightedSum.apply(weights, *features)


class AFIModule(nn.Module):
    """AFI(i): integrates ``num_inputs`` earlier features of ``channels`` channels (Eq. 1-2).

    The softmax matrix S~ (shape (B, n, C)) passes through the identity submodule
    ``attention``; a forward hook on it reads the attention weights without redoing the math
    (see :func:`afictl.layers.record_attention`).
    """

    def __init__(self, channels: int, num_inputs: int, reduction: int = 4) -> None:
        super().__init__()
        if num_inputs < 2:
            raise ValueError("an AFI module with fewer than two inputs has nothing to weigh")
        hidden = max(1, channels // reduction)
        self.channels = channels
        self.num_inputs = num_inputs
        self.reduction = reduction
        # No biases: Eq. 1 has none, and the paper's parameter counts (Eq. 10) leave none room.
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, channels, bias=False)
        self.attention = nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Default Linear init, with W1 non-negative.

        The squeezed inputs z are means of post-ReLU features, so z >= 0 and its channels are
        correlated: with a zero-mean W1 and no bias, every hidden unit of a module is dead for
        all inputs with probability about 2^-hidden (often one module in a ResNet-32), and a
        dead module never learns. A non-negative W1 keeps ReLU(W1 z) alive at the start.
        """
        self.fc1.reset_parameters()
        self.fc2.reset_parameters()
        with torch.no_grad():
            self.fc1.weight.abs_()

    def score(self, z: Tensor) -> Tensor:
        """F_sc of Eq. 1 applied to every input at once: (B, n, C) -> (B, n, C)."""
        return self.fc2(torch.relu(self.fc1(z)))

    def forward(self, features: Sequence[Tensor], squeezed: Sequence[Tensor] | None = None) -> Tensor:
        if len(features) != self.num_inputs:
            raise ValueError(f"AFI module built for {self.num_inputs} inputs got {len(features)}")
        if squeezed is None:
            squeezed = [squeeze(x) for x in features]
        z = torch.stack(list(squeezed), dim=1)
        weights = self.attention(torch.softmax(self.score(z), dim=1))
        return self.integrate(features, weights)

    @staticmethod
    def integrate(features: Sequence[Tensor], weights: Tensor) -> Tensor:
        """R of Eq. 2."""
        return weighted_sum(features, weights)

    def forward_pool(self, pool: FeaturePool) -> Tensor:
        """R from the first ``num_inputs`` features of a stage's pool."""
        n = self.num_inputs
        return self(pool.features[:n], pool.squeezed[:n])

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_inputs={self.num_inputs}, reduction={self.reduction}"
