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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .afi import AFIModule, FeaturePool

__all__ = ["AFIJoin", "first_conv_width"]


def first_conv_width(full: int, index: int | None) -> int:
    """Output channels of a block's first convolution: halved in AFI blocks 2..n."""
    return full // 2 if index is not None and index >= 2 else full


class AFIJoin(nn.Module):
    """The AFI side of one building block.

    Args:
        width: channels of the block's next-convolution input (full width); X(i) and R(i)
            have ``width // 2`` channels.
        index: the block's 1-based position in an AFI stage, or None outside one.
        reduction: r of the scoring function.
        seed_stride: spatial stride between the first activation and the stage resolution
            (block 1 of a bottleneck stage whose stride sits in a later convolution).
    """

    def __init__(self, width: int, index: int | None = None, reduction: int = 4, seed_stride: int = 1) -> None:
        super().__init__()
        self.width = width
        self.index = index
        self.seed_stride = seed_stride
        self.afi = AFIModule(width // 2, index - 1, reduction) if index is not None and index >= 3 else None
        self.afi_out = nn.Identity()

    def forward(self, x1: Tensor, pool: FeaturePool | None) -> Tensor:
        if self.index is None or pool is None:
            return self.afi_out(x1)
        half = self.width // 2
        if self.index == 1:
            seed = x1[:, :half]
            if self.seed_stride > 1:
                seed = F.avg_pool2d(seed, self.seed_stride)
            pool.add(seed)
            return self.afi_out(x1)
        r = pool.features[0] if self.afi is None else self.afi.forward_pool(pool)
        r = self.afi_out(r)
        pool.add(x1)
        return torch.cat([x1, r], dim=1)

    def extra_repr(self) -> str:
        return f"width={self.width}, index={self.index}, seed_stride={self.seed_stride}"
