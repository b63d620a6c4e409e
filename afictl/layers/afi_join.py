"""Where a building block meets its stage's AFI wiring (Eq. 4), for every family.

A block computes the activation of its first convolution and hands it to its ``AFIJoin``, which
returns the input of the block's next convolution:

- outside an AFI stage (``index=None``): the activation itself (baseline block);
- block 1 of an AFI stage: the activation itself (full width: AFI(1) has no input), after
  seeding the stage's pool with X(1), the first half of the activation;
- block 2: [X(2), R(2)] with R(2) = X(1) (one input needs no weighing);
- block i >= 3: [X(i), R(i)] with R(i) = AFI(i)(X(1), ..., X(i-1)).

The tensor that takes R's place passes through the identity ``afi_out`` (in a baseline block
and in block 1: the activation), the one hook point of the analyses.

Blocks that own their next convolution can call :meth:`AFIJoin.fused` instead (ResNet and
ResNeXt do): it takes the pre-activation, writes ReLU(h) = X(i) straight into the stage buffer
and returns the next convolution's output from one autograd Function, which keeps
[X(i), R(i)] only for that convolution's backward (memory-efficient blocks: not at all).
:meth:`AFIJoin.fuses` says when that path applies: an AFI block >= 2 on the fast aggregation,
with no hooks on the modules it bypasses (so analyses always see the plain path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as _module

from .afi import AFIModule, FeaturePool, plain_batch_norm

__all__ = ["AFIJoin", "first_conv_width", "has_hooks"]


def first_conv_width(full: int, index: int | None) -> int:
    """Output channels of a block's first convolution: halved in AFI blocks 2..n."""
    return full // 2 if index is not None and index >= 2 else full


def has_hooks(*modules: nn.Module) -> bool:
    """Whether any module (or every module, globally) has forward or backward hooks."""
    if (_module._global_forward_hooks or _module._global_forward_pre_hooks
            or _module._global_backward_hooks or _module._global_backward_pre_hooks):
        return True
    for m in modules:  # a plain loop: this runs once per block and forward
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
            return True
    return False


class AFIJoin(nn.Module):
    """The AFI side of one building block.

    Args:
        width: channels of the block's next-convolution input (full width); X(i) and R(i)
            have ``width // 2`` channels.
        index: the block's 1-based position in an AFI stage, or None outside one.
        reduction: r of the scoring function.
        seed_stride: spatial stride between the first activation and the stage resolution
            (block 1 of a bottleneck stage whose stride sits in a later convolution).
        memory_efficient: in :meth:`fused`, keep no [X(i), R(i)] for backward and recompute
            it there from the stage buffer (one more weighted sum per block).
    """

    def __init__(
        self, width: int, index: int | None = None, reduction: int = 4, seed_stride: int = 1,
        *, memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        self.width = width
        self.index = index
        self.seed_stride = seed_stride
        self.memory_efficient = memory_efficient
        self.afi = AFIModule(width // 2, index - 1, reduction) if index is not None and index >= 3 else None
        self.afi_out = nn.Identity()

    def forward(self, x1: Tensor, pool: FeaturePool | None) -> Tensor:
        if self.index is None or pool is None:
            return self.afi_out(x1)
        half = self.width // 2
        if self.index == 1:
            pool.recompute = self.memory_efficient
            seed = x1[:, :half]
            if self.seed_stride > 1:
                seed = F.avg_pool2d(seed, self.seed_stride)
            pool.add(seed)
            return self.afi_out(x1)
        n = self.index - 1
        if pool.buffered:
            r = pool.integrate(self._weights(pool), n)
        else:
            r = pool.features[0] if self.afi is None else self.afi.forward_pool(pool)
        r = self.afi_out(r)
        pool.add(x1)
        return torch.cat([x1, r], dim=1)

    def fuses(self, pool: FeaturePool | None, *bypassed: nn.Module) -> bool:
        """Whether :meth:`fused` applies: AFI block >= 2, fast pool, nothing hooked.

        ``bypassed``: the block's modules that the fused path does not call as modules (its
        next convolution, the ReLU of X(i), ...); a hook on any of them selects the plain path.
        """
        return (
            self.index is not None and self.index >= 2 and pool is not None and pool.fast
            and not has_hooks(self, self.afi_out, *bypassed)
        )

    def fused(self, h: Tensor, pool: FeaturePool, conv: nn.Conv2d, bn: nn.Module | None = None) -> Tensor:
        """conv([X(i), R(i)]) with X(i) = ReLU(h), or ReLU(bn(h)) when ``bn`` is given, in one
        step (see the module docstring). Memory-efficient blocks pass their BN so that X(i)
        need not be kept for backward (it is rebuilt from BN's input)."""
        if bn is None:
            pool.add_relu(h)
        elif self.memory_efficient and plain_batch_norm(bn) and not has_hooks(bn):
            pool.add_bn_relu(h, bn)
        else:
            pool.add_relu(bn(h))
        return pool.integrate_conv(self._weights(pool), conv, memory_efficient=self.memory_efficient)

    def _weights(self, pool: FeaturePool) -> Tensor | None:
        return None if self.afi is None else self.afi.weights(pool.squeezed[: self.afi.num_inputs])

    def extra_repr(self) -> str:
        extra = ", memory_efficient=True" if self.memory_efficient else ""
        return f"width={self.width}, index={self.index}, seed_stride={self.seed_stride}{extra}"
