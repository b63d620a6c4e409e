"""Gather-Excite (Hu, Shen, Albanie, Sun, Vedaldi, "Gather-Excite: Exploiting Feature Context in
Convolutional Neural Networks", NeurIPS 2018).

``y = x * sigmoid(interp(xi_G(x)))`` (their Eq. 1-2): a gather operator xi_G aggregates each
channel over a spatial extent e, the excite operator redistributes the gathered context to every
position of that extent (nearest-neighbour interpolation) as a sigmoid gate.

- GE-theta-minus (the default): xi_G is average pooling, parameter-free; a global extent
  (``extent=0``) is the paper's best parameter-free variant.
- ``use_mlp=True`` adds the SE-style bottleneck of GE-theta-plus between gather and gate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GatherExcite"]


class GatherExcite(nn.Module):
    """GE block on channels-first features (B, C, H, W); the shape is unchanged.

    Args:
        channels: C.
        extent: e of the paper; 0 is a global extent (one descriptor per channel).
        use_mlp: excite through a ``C -> C/reduction -> C`` bottleneck (GE-theta-plus excite).
        reduction: bottleneck ratio when ``use_mlp``.
    """

    def __init__(
        self, channels: int, extent: int = 0, use_mlp: bool = False, reduction: int = 16
    ) -> None:
        super().__init__()
        if extent < 0 or extent == 1:
            raise ValueError("extent must be 0 (global) or >= 2")
        self.extent = extent
        self.mlp: nn.Module | None = None
        if use_mlp:
            hidden = max(8, channels // reduction)
            self.mlp = nn.Sequential(
                nn.Conv2d(channels, hidden, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(hidden, channels, 1),
            )

    def gather(self, x: Tensor) -> Tensor:
        """xi_G: the mean of each channel over every e x e neighbourhood (stride e)."""
        if self.extent == 0:
            return x.mean(dim=(2, 3), keepdim=True)
        return F.avg_pool2d(
            x, self.extent, stride=self.extent, ceil_mode=True, count_include_pad=False
        )

    def forward(self, x: Tensor) -> Tensor:
        g = self.gather(x)
        if self.mlp is not None:
            g = self.mlp(g)
        if self.extent == 0:  # one descriptor per channel: broadcasting redistributes it
            return x * torch.sigmoid(g)
        return x * torch.sigmoid(F.interpolate(g, size=x.shape[-2:], mode="nearest"))

    def extra_repr(self) -> str:
        return f"extent={self.extent}"
