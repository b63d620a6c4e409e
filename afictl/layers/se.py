"""Squeeze-and-Excitation (Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018).

``y = x * sigmoid(W2 ReLU(W1 GAP(x)))`` (their Eq. 2-3): a channel gate computed from the
global average of each channel through a bottleneck of ``channels // reduction`` units.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SqueezeExcite"]


class SqueezeExcite(nn.Module):
    """SE block on channels-first features (B, C, H, W); the shape is unchanged.

    Args:
        channels: C.
        reduction: the paper's r (16); the bottleneck has ``max(min_hidden, C // r)`` units.
        min_hidden: lower bound of the bottleneck width, so narrow layers keep a usable gate.
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 8) -> None:
        super().__init__()
        hidden = max(min_hidden, channels // reduction)
        # 1x1 convolutions are the paper's fully connected layers on the (B, C, 1, 1) descriptor.
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))
