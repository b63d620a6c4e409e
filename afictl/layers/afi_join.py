"""Where a building block meets its stage's AFI wiring (Eq. 4), for every family.

A block hands its input and the modules around its AFI point to its ``AFIJoin`` in one call,
``self.join(x, feats, first=conv1, norm=bn1, act=relu, conv=conv2)``, and gets back
``conv(input of the next convolution)``:

- outside an AFI stage (``index=None``): conv(act(norm(first(x)))) (baseline block);
- block 1 of an AFI stage: the same, after seeding the stage's features with X(1), the first
  half of the activation (full width: AFI(1) has no input);
- block 2: conv([X(i), R(i)]) with R(2) = X(1) (one input needs no weighing);
- block i >= 3: conv([X(i), R(i)]) with R(i) = AFI(i)(X(1), ..., X(i-1)).

The tensor that takes R's place passes through the identity ``afi_out`` (in a baseline block
and in block 1: the activation), the one hook point of the analyses.

There is one implementation, the plain tensor code of layers/afi.py: what eager mode, hooks,
tracers, exporters and the compiler all see. ``memory_efficient`` blocks, when training,
keep nothing of the join for backward but their input and X(i), and recompute the rest there
(``torch.utils.checkpoint``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .afi import AFIModule, StageFeatures, integrate
from .recompute import recomputed

__all__ = ["AFIJoin", "first_conv_width"]


def first_conv_width(full: int, index: int | None) -> int:
    """Output channels of a block's first convolution: halved in AFI blocks 2..n."""
    return full // 2 if index is not None and index >= 2 else full


def _apply(module: nn.Module | None, x: Tensor) -> Tensor:
    return x if module is None else module(x)


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
            (the paper's remark on [38]). Forward hooks on the modules of the join then also
            see the recomputation; BatchNorm running statistics are updated once.
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
        self,
        x: Tensor,
        feats: StageFeatures | None,
        *,
        first: nn.Module,
        norm: nn.Module | None = None,
        act: nn.Module | None = None,
        conv: nn.Module | None = None,
        attn: nn.Module | None = None,
    ) -> Tensor:
        """conv(join(act(norm(first(x))))): see the module docstring."""
        if self.index is None or self.index == 1 or feats is None:
            xi = _apply(act, _apply(norm, first(x)))
            if self.index == 1 and feats is not None:
                feats.append(self._seed(xi))
            return _apply(conv, self.afi_out(xi))
        n = self.index - 1
        if self.memory_efficient and conv is not None and self.training and torch.is_grad_enabled():
            out, xi = self._recomputed(x, feats, n, (first, norm, act, conv, attn))
        else:
            xi = _apply(act, _apply(norm, first(x)))
            out = self._join(xi, feats.integrate(self.afi, n), conv, attn)
        feats.append(xi)
        return out

    def _seed(self, out: Tensor) -> Tensor:
        seed = out[:, : self.width // 2]
        return F.avg_pool2d(seed, self.seed_stride) if self.seed_stride > 1 else seed

    def _join(self, xi: Tensor, r: Tensor, conv: nn.Module | None, attn: nn.Module | None):
        """conv([X(i), R(i)]), R(i) through ``afi_out`` (the probe) and ``attn``."""
        return _apply(conv, torch.cat([xi, _apply(attn, self.afi_out(r))], dim=1))

    def _recomputed(
        self, x: Tensor, feats: StageFeatures, n: int, modules
    ) -> tuple[Tensor, Tensor]:
        """(conv([X(i), R(i)]), X(i)) with X(i) = act(norm(first(x))), recomputed in backward
        (keeping x, X(1..i) and the softmax weights, which autograd keeps anyway)."""
        first, norm, act, conv, attn = modules
        weights = None if self.afi is None else self.afi.weights(feats.squeezed[:n])

        def join(x: Tensor, weights: Tensor | None, *features: Tensor) -> tuple[Tensor, Tensor]:
            xi = _apply(act, _apply(norm, first(x)))
            r = features[0] if weights is None else integrate(features, weights)
            return self._join(xi, r, conv, attn), xi

        return recomputed(join, x, weights, *feats.features[:n], modules=modules)

    def extra_repr(self) -> str:
        extra = ", memory_efficient=True" if self.memory_efficient else ""
        return f"width={self.width}, index={self.index}, seed_stride={self.seed_stride}{extra}"
