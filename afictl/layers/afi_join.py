"""What an AFI block adds between its first convolution and the next one (Eq. 4), for every
family.

A block computes the activation of its first convolution, X(i), itself and hands it to its
join, ``out = self.join(out, feats)``, which returns what the next convolution reads:

- outside an AFI stage (``index=None``): X(i) (the join is an identity);
- block 1 of an AFI stage: X(i), after seeding the stage's features with X(1), the first half
  of it (full width: AFI(1) has no input), pooled to the stage resolution where the block's
  stride comes after it;
- block 2: [X(2), R(2)] with R(2) = X(1) (one input needs no weighing);
- block i >= 3: [X(i), R(i)] with R(i) = AFI(i)(X(1), ..., X(i-1)).

The tensor that takes R's place passes through the identity ``afi_out`` (in a baseline block
and in block 1: X(i)), the one hook point of the analyses.

There is one implementation, the plain tensor code of layers/afi.py: what eager mode, hooks,
tracers, exporters and the compiler all see. ``memory_efficient`` blocks, when training, keep
nothing for backward of their first convolution, the join and the convolution reading it but
their input and X(i), and recompute the rest there (:meth:`AFIJoin.recompute`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .afi import AFIModule, StageFeatures, integrate
from .recompute import recomputed

__all__ = ["AFIJoin", "first_conv_width"]

#: a block from its first convolution to the convolution reading the join, as a function of
#: the block's input and the stage's features
Segment = Callable[[Tensor, StageFeatures | None], Tensor]


def first_conv_width(full: int, index: int | None) -> int:
    """Output channels of a block's first convolution: halved in AFI blocks 2..n."""
    return full // 2 if index is not None and index >= 2 else full


class AFIJoin(nn.Module):
    """The AFI side of one building block.

    Args:
        width: channels of the next convolution's input (full width); X(i) and R(i) have
            ``width // 2`` channels.
        index: the block's 1-based position in an AFI stage, or None outside one.
        reduction: r of the scoring function (Eq. 1).
        seed_stride: spatial stride between the first activation and the stage resolution
            (block 1 of a stage whose stride sits in a later convolution).
        memory_efficient: in training, keep neither the first convolution's output nor
            [X(i), R(i)] for backward and recompute them there, with the next convolution
            (the paper's remark on [38]). Forward hooks on the modules of the block up to that
            convolution then also see the recomputation; BatchNorm running statistics are
            updated once.
    """

    def __init__(
        self,
        width: int,
        index: int | None = None,
        *,
        reduction: int = 4,
        seed_stride: int = 1,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        self.width = width
        self.index = index
        self.seed_stride = seed_stride
        self.memory_efficient = memory_efficient
        self.afi = (
            AFIModule(width // 2, index - 1, reduction)
            if index is not None and index >= 3
            else None
        )
        self.afi_out = nn.Identity()

    def forward(
        self, xi: Tensor, feats: StageFeatures | None, attn: nn.Module | None = None
    ) -> Tensor:
        """[X(i), R(i)] in AFI block i >= 2 (R(i) through ``afi_out``, then ``attn``, Table 9);
        X(i) through ``afi_out`` otherwise. X(i) joins the stage's features ``feats``."""
        if self.index is None or feats is None:
            return self.afi_out(xi)
        if self.index == 1:
            feats.append(self._seed(xi))
            return self.afi_out(xi)
        out = self._join(xi, feats.integrate(self.afi, self.index - 1), attn)
        feats.append(xi)
        return out

    def _seed(self, xi: Tensor) -> Tensor:
        seed = xi[:, : self.width // 2]
        return F.avg_pool2d(seed, self.seed_stride) if self.seed_stride > 1 else seed

    def _join(self, xi: Tensor, r: Tensor, attn: nn.Module | None) -> Tensor:
        """[X(i), R(i)], R(i) through ``afi_out`` (the probe) and ``attn``."""
        r = self.afi_out(r)
        return torch.cat([xi, r if attn is None else attn(r)], dim=1)

    def recompute(
        self, segment: Segment, x: Tensor, feats: StageFeatures | None, *, block: nn.Module
    ) -> Tensor:
        """``segment(x, feats)``: ``block`` from its input ``x`` through its first convolution
        and this join to the convolution reading [X(i), R(i)].

        In a ``memory_efficient`` AFI block i >= 2, when training, nothing of it is kept for
        backward but ``x``, X(1..i) and the softmax weights (which autograd keeps anyway); the
        rest is recomputed there, updating ``block``'s BatchNorm statistics once. Elsewhere
        this is the call ``segment(x, feats)``.
        """
        if not (
            self.memory_efficient
            and self.index is not None
            and self.index >= 2
            and feats is not None
            and self.training
            and torch.is_grad_enabled()
        ):
            return segment(x, feats)
        out, xi = self._recomputed(segment, x, feats, block)
        feats.append(xi)
        return out

    def _recomputed(
        self, segment: Segment, x: Tensor, feats: StageFeatures, block: nn.Module
    ) -> tuple[Tensor, Tensor]:
        """(``segment``'s output, X(i)), recomputed in backward. The softmax weights are
        computed once, here; they and X(1..i-1) are inputs of the recomputation, kept for it."""
        n = self.index - 1
        weights = None if self.afi is None else self.afi.weights(feats.squeezed[:n])
        earlier = _Recording()

        def run(x: Tensor, weights: Tensor | None, *features: Tensor) -> Tensor:
            earlier.features, earlier.weights = list(features), weights
            return segment(x, earlier)

        out = recomputed(run, x, weights, *feats.features[:n], modules=[block])
        return out, earlier.take()

    def extra_repr(self) -> str:
        extra = ", memory_efficient=True" if self.memory_efficient else ""
        return f"width={self.width}, index={self.index}, seed_stride={self.seed_stride}{extra}"


class _Recording(StageFeatures):
    """X(1..i-1) of a stage as a recomputed block i sees them: R(i) from softmax weights given
    from outside, and X(i) recorded by the first run only (a recomputation's is dropped)."""

    def __init__(self) -> None:
        super().__init__()
        self.weights: Tensor | None = None
        self.xi: Tensor | None = None
        self.recording = True

    def append(self, x: Tensor) -> None:
        if self.recording:
            self.xi, self.recording = x, False

    def integrate(self, afi: AFIModule | None, n: int) -> Tensor:
        if self.weights is None:
            return self.features[0]
        return integrate(self.features[:n], self.weights)

    def take(self) -> Tensor:
        """X(i), no longer referenced here (the last block's is read by no later block)."""
        xi, self.xi = self.xi, None
        if xi is None:
            raise RuntimeError("the block's segment did not pass X(i) through its join")
        return xi
