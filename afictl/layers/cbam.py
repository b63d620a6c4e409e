"""CBAM (Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018).

Channel attention then spatial attention (their Eq. 1-3):

    M_c = sigmoid(MLP(AvgPool(x)) + MLP(MaxPool(x)))        one gate per channel, shared MLP
    M_s = sigmoid(conv7x7([mean_c(x'), max_c(x')]))          one gate per position
    y   = M_s(x') * x'   with   x' = M_c(x) * x
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["CBAM", "ChannelGate", "SpatialGate"]


class ChannelGate(nn.Module):
    """CBAM's channel attention: a shared bottleneck MLP on the average- and max-pooled channels."""

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 8) -> None:
        super().__init__()
        hidden = max(min_hidden, channels // reduction)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return x * torch.sigmoid(avg + mx)


class SpatialGate(nn.Module):
    """CBAM's spatial attention: a k x k convolution over the channel mean and channel max."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x: Tensor) -> Tensor:
        s = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.bn(self.conv(s)))


class CBAM(nn.Module):
    """CBAM on channels-first features (B, C, H, W); the shape is unchanged."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelGate(channels, reduction)
        self.spatial = SpatialGate(kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.spatial(self.channel(x))
