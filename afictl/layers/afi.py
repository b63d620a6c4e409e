"""The Attentive Feature Integration (AFI) module, paper section 3.1, Eq. 1-2, in plain tensor ops.

An AFI module takes the features X(1..n) of earlier blocks of a stage and returns their
channel-wise convex combination R:

    z(j) = F_sq(X(j))                       squeeze: global average pooling      (squeeze)
    s(j) = W2 ReLU(W1 z(j))                 score: one bottleneck for all inputs  (score, Eq. 1)
    S~   = softmax over j of [s(1..n)]      weights, channel by channel           (weights)
    R    = sum_j S~[j] * X(j)               integrate                             (integrate, Eq. 2)

This file is the definition, and the only implementation: every family builds its AFI blocks
from :class:`AFIModule` and :class:`StageFeatures` (the features of one stage, each squeezed
once) through :class:`~afictl.layers.afi_join.AFIJoin`. Everything here is ordinary tensor
code, so ``torch.export``, ``torch.jit.trace``, ``torch.fx``, ONNX export and ``torch.compile``
see it whole.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["AFIModule", "StageFeatures", "integrate", "negligible", "squeeze"]


def squeeze(x: Tensor) -> Tensor:
    """F_sq of Eq. 2: global average pooling, (B, C, H, W) -> (B, C)."""
    return x.mean(dim=(2, 3))


def negligible(dtype: torch.dtype) -> float:
    """Softmax weights below this are set to 0 (see :meth:`AFIModule.weights`).

    A softmax over scores that differ by more than ~87 (float32) underflows to subnormal
    weights; their products with the features are subnormal too, and x86 CPUs compute with
    subnormal operands up to 100x slower (measured: the layer4 conv2 of AFI-ResNet-50 at twice
    the baseline's time, docs/PERFORMANCE.md). A weight below tiny / eps changes R by less than
    eps x tiny x max|X|, far below what the next convolution resolves.
    """
    info = torch.finfo(dtype)
    return info.tiny / info.eps if info.tiny / info.eps < 1e-20 else info.tiny


def integrate(features: Sequence[Tensor], weights: Tensor) -> Tensor:
    """R of Eq. 2: sum_j weights[:, j] * X(j); weights (B, n, C), features n x (B, C, H, W).

    A running sum rather than a stack of the inputs: stacking would copy every earlier feature
    of the stage at every block. Autograd keeps only the features (alive anyway) and the weights.
    """
    w = weights[..., None, None]
    out = features[0] * w[:, 0]
    for j in range(1, len(features)):
        if torch.is_grad_enabled() or torch.jit.is_tracing():
            out = torch.addcmul(out, features[j], w[:, j])
        else:  # nothing to keep for backward: accumulate in place
            out.addcmul_(features[j], w[:, j])
    return out


class StageFeatures:
    """X(1..k) of one stage during one forward, in order, with z(j) = squeeze(X(j)) kept.

    A feature's squeeze does not change between the later blocks that read it, so it is
    computed once, when the feature is appended. A plain container of tensors: tracers see
    every tensor operation.
    """

    def __init__(self) -> None:
        self.features: list[Tensor] = []
        self.squeezed: list[Tensor] = []

    def append(self, x: Tensor) -> None:
        """Add X(k) (and z(k))."""
        self.features.append(x)
        self.squeezed.append(squeeze(x))

    def integrate(self, afi: AFIModule | None, n: int) -> Tensor:
        """R(n + 1) from X(1..n): ``afi`` over them, or X(1) itself when n = 1 (no weighing)."""
        if afi is None:
            return self.features[0]
        return afi(self.features[:n], self.squeezed[:n])

    def __len__(self) -> int:
        return len(self.squeezed)


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
        if self.fc1.weight.is_meta:  # shapes only; on meta, abs_ would import torch._dynamo (1 s)
            return
        with torch.no_grad():
            self.fc1.weight.abs_()

    def score(self, z: Tensor) -> Tensor:
        """F_sc of Eq. 1 applied to every input at once: (B, n, C) -> (B, n, C)."""
        return self.fc2(torch.relu(self.fc1(z)))

    def weights(self, squeezed: Sequence[Tensor]) -> Tensor:
        """S~ of Eq. 2 from the squeezed inputs z(1..n): (B, n, C), through ``attention``.

        Softmax weights lie in [0, 1]; those below :func:`negligible` (subnormal or nearly so)
        are set to 0, on every path, so that R and the convolution reading it never compute
        with subnormal numbers. The convex combination then sums to 1 up to that amount.
        """
        z = torch.stack(list(squeezed), dim=1)
        s = torch.softmax(self.score(z), dim=1)
        dtype = s.dtype if isinstance(s, Tensor) else torch.float32  # torch.fx: a Proxy, no dtype
        s = s.masked_fill(s < negligible(dtype), 0.0)
        return self.attention(s)

    def forward(
        self, features: Sequence[Tensor], squeezed: Sequence[Tensor] | None = None
    ) -> Tensor:
        """R = AFI(X(1..n)); ``squeezed`` (z of each input) when already computed."""
        if len(features) != self.num_inputs:
            raise ValueError(f"AFI module built for {self.num_inputs} inputs got {len(features)}")
        if squeezed is None:
            squeezed = [squeeze(x) for x in features]
        return integrate(features, self.weights(squeezed))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_inputs={self.num_inputs}, reduction={self.reduction}"
