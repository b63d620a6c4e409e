"""Where a building block meets its stage's AFI wiring (Eq. 4), for every family.

A block hands its input and the modules around its AFI point to its ``AFIJoin`` in one call,
``self.join(x, feats, first=conv1, norm=bn1, act=relu, conv=conv2)``, and gets back
``conv(input of the next convolution)``:

- outside an AFI stage (``index=None``): conv(act(norm(first(x)))) (baseline block);
- block 1 of an AFI stage: the same, after seeding the stage's features with X(1), the first
  half of the activation (full width: AFI(1) has no input);
- block 2: conv([X(2), R(2)]) with R(2) = X(1) (one input needs no weighing);
- block i >= 3: conv([X(i), R(i)]) with R(i) = AFI(i)(X(1), ..., X(i-1)).

The tensor that takes R's place passes through the identity ``afi_out`` (in a baseline block
and in block 1: the activation), the one hook point of the analyses.

The join chooses how: the plain path (layers/afi.py) everywhere, or the fused one
(layers/afi_fast.py: X(i) written straight into a stage buffer, conv([X(i), R(i)]) from it in
one autograd Function) when the stage's features are buffered (:func:`stage_features`: eager
training on ordinary tensors), the activation is a ReLU or ReLU6, no ``attn`` sits on R, and no
hook is on the modules the fused path bypasses (``first``, ``norm``, ``act``, ``conv``, the
join, its ``afi_out`` and AFI module). Hooks therefore always see the plain path, and so do
tracers and every forward without gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as _module
from torch.utils.checkpoint import checkpoint

from .afi import AFIModule, StageFeatures, integrate
from .afi_fast import (
    BufferedFeatures,
    accelerated,
    activation_bound,
    aggregation_mode,
    plain_batch_norm,
)
from .narrow_conv import conv_narrow

__all__ = ["AFIJoin", "aggregation_path", "first_conv_width", "has_hooks", "stage_features"]


def first_conv_width(full: int, index: int | None) -> int:
    """Output channels of a block's first convolution: halved in AFI blocks 2..n."""
    return full // 2 if index is not None and index >= 2 else full


def has_hooks(*modules: nn.Module | None) -> bool:
    """Whether any module (or every module, globally) has forward or backward hooks."""
    if (
        _module._global_forward_hooks
        or _module._global_forward_pre_hooks
        or _module._global_backward_hooks
        or _module._global_backward_pre_hooks
    ):
        return True
    for m in modules:  # a plain loop: this runs once per block and forward
        if m is not None and (
            m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
        ):
            return True
    return False


def aggregation_path(x: Tensor, *, grad: bool | None = None) -> str:
    """The path AFI stages take on ``x`` (with gradients on or off; default: as now):
    ``"fused"`` (the stage buffer of layers/afi_fast.py: eager training, or the ``fused``
    :func:`~afictl.layers.afi_fast.aggregation`) or ``"plain"``."""
    grad = torch.is_grad_enabled() if grad is None else grad
    fused = grad or aggregation_mode() == "fused"
    return "fused" if fused and accelerated(x) else "plain"


def stage_features(stage: nn.Sequential, x: Tensor) -> StageFeatures:
    """The features container of one forward of ``stage`` (its blocks have ``join``s) on ``x``."""
    join = getattr(stage[0], "join", None)
    if join is not None and join.index is not None and aggregation_path(x) == "fused":
        return BufferedFeatures(len(stage), recompute=join.memory_efficient)
    return StageFeatures(eager=accelerated(x))


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
        memory_efficient: keep no [X(i), R(i)] for backward and recompute it there (one more
            weighted sum per block; the paper's remark on [38]); on the fused path also X(i)
            itself is rebuilt from BN's input.
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
            out = _apply(act, _apply(norm, first(x)))
            if self.index == 1 and feats is not None:
                self._seed(out, feats)
            return _apply(conv, self.afi_out(out))
        if self.fuses(feats, first, norm, act, conv, attn):
            return self._fused(x, feats, first, norm, act, conv)
        return self._plain(x, feats, first, norm, act, conv, attn)

    def _seed(self, out: Tensor, feats: StageFeatures) -> None:
        seed = out[:, : self.width // 2]
        if self.seed_stride > 1:
            seed = F.avg_pool2d(seed, self.seed_stride)
        feats.append(seed)

    def fuses(self, feats: StageFeatures | None, first, norm, act, conv, attn=None) -> bool:
        """Whether the fused path runs for these features and modules (see the module docstring)."""
        return (
            isinstance(feats, BufferedFeatures)
            and attn is None
            and isinstance(conv, nn.Conv2d)
            and activation_bound(act) is not None
            and isinstance(first, nn.Conv2d)
            and not has_hooks(self, self.afi_out, self.afi, first, norm, act, conv)
        )

    def _fused(self, x, feats: BufferedFeatures, first, norm, act, conv) -> Tensor:
        hi = activation_bound(act)
        h = conv_narrow(first, x)
        if self.memory_efficient and plain_batch_norm(norm):
            feats.append_bn_act(h, norm, hi)
        else:
            feats.append_act(_apply(norm, h), hi)
        return feats.integrate_conv(self.afi, conv, memory_efficient=self.memory_efficient)

    def _plain(self, x, feats: StageFeatures, first, norm, act, conv, attn) -> Tensor:
        # eager: the paired narrow convolution, unless a hook must see ``first`` called
        narrow = feats.eager and isinstance(first, nn.Conv2d) and not has_hooks(first)
        first_out = conv_narrow(first, x) if narrow else first(x)
        xi = _apply(act, _apply(norm, first_out))
        n = self.index - 1
        # memory-efficient in eager training (features still listed: the attn variants);
        # never under hooks, which would see the recomputation run a second time
        listed = isinstance(feats, BufferedFeatures) and not feats.buffered
        if (
            conv is not None
            and self.memory_efficient
            and listed
            and not has_hooks(self.afi_out, self.afi, attn, conv)
        ):
            out = self._recomputed(xi, feats, n, conv, attn)
            feats.append(xi)
            return out
        r = _apply(attn, self.afi_out(feats.integrate(self.afi, n)))
        feats.append(xi)
        return _apply(conv, torch.cat([xi, r], dim=1))

    def _recomputed(self, xi, feats: StageFeatures, n: int, conv, attn) -> Tensor:
        """conv([X(i), R(i)]) recomputed in backward (torch.utils.checkpoint): memory-efficient
        blocks on the plain path keep only what autograd keeps anyway (X(1..i), the weights)."""
        weights = None if self.afi is None else self.afi.weights(feats.squeezed[:n])

        def join(xi: Tensor, weights: Tensor | None, *features: Tensor) -> Tensor:
            r = features[0] if weights is None else integrate(features, weights)
            return conv(torch.cat([xi, _apply(attn, self.afi_out(r))], dim=1))

        return checkpoint(join, xi, weights, *feats.features[:n], use_reentrant=False)

    def extra_repr(self) -> str:
        extra = ", memory_efficient=True" if self.memory_efficient else ""
        return f"width={self.width}, index={self.index}, seed_stride={self.seed_stride}{extra}"
