"""Efficient Channel Attention (Wang, Wu, Zhu, Li, Zuo, Hu, "ECA-Net: Efficient Channel Attention
for Deep Convolutional Neural Networks", CVPR 2020).

``y = x * sigmoid(conv1d_k(GAP(x)))``: local cross-channel interaction without dimensionality
reduction; the kernel size adapts to the width, ``k = |log2(C)/gamma + b/gamma|_odd`` (their
Eq. 12, gamma = 2, b = 1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["EfficientChannelAttention", "eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """Eq. 12 of ECA-Net: int((log2(C) + b) / gamma), rounded up to an odd number."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class EfficientChannelAttention(nn.Module):
    """ECA block on channels-first features (B, C, H, W); the shape is unchanged."""

    def __init__(
        self, channels: int, kernel_size: int | None = None, gamma: int = 2, b: int = 1
    ) -> None:
        super().__init__()
        k = kernel_size or eca_kernel_size(channels, gamma, b)
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean(dim=(2, 3))  # (B, C)
        g = self.conv(s.unsqueeze(1)).squeeze(1)  # 1-D convolution across channels
        return x * torch.sigmoid(g)[:, :, None, None]
