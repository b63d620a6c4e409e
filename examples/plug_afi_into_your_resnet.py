"""Plug the AFI module into your own residual network in a few lines.

Each block halves its first convolution to X(i) and hands it to its `AFIJoin`, which returns
[X(i), R(i)] for the next convolution (Eq. 4); everything else in the block stays as you wrote
it. The stage shares one `StageFeatures` (X(1..i-1)) per forward: `afictl.models.Stage`
does that for you. The same model exports, traces and compiles.
Run: python examples/plug_afi_into_your_resnet.py
"""

from __future__ import annotations

import torch
from torch import nn

from afictl.layers import AFIJoin, first_conv_width, record_attention
from afictl.models import Stage


class MyBlock(nn.Module):
    """A plain residual block (two 3x3 convs) made AFI-aware by `index`."""

    def __init__(self, channels: int, index: int | None) -> None:
        super().__init__()
        first = first_conv_width(channels, index)  # halved for blocks 2..n of an AFI stage
        self.conv1 = nn.Conv2d(channels, first, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(first)
        self.relu = nn.ReLU()
        self.join = AFIJoin(channels, index, reduction=4)  # X(i) -> [X(i), R(i)]
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor, feats=None) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # X(i)
        out = self.join(out, feats)  # [X(i), R(i)] in AFI blocks 2..n, X(i) otherwise
        out = self.bn2(self.conv2(out))
        return torch.relu(x + out)


def my_network(
    num_blocks: int = 4, channels: int = 16, num_classes: int = 10, afi: bool = True
) -> nn.Module:
    blocks = [MyBlock(channels, i if afi else None) for i in range(1, num_blocks + 1)]
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1),
        nn.ReLU(),
        Stage(*blocks),  # one StageFeatures per forward pass
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, num_classes),
    )


def main() -> dict[str, torch.Tensor]:
    net = my_network()
    x = torch.randn(2, 3, 32, 32)
    with record_attention(net) as attention:
        logits = net(x)
    logits.sum().backward()
    print("logits", tuple(logits.shape))
    for name, (s,) in attention.items():
        print(
            f"{name}: S~ of shape {tuple(s.shape)} (batch, inputs, channels); sums to 1 over inputs"
        )
    base = sum(p.numel() for p in my_network(afi=False).parameters())
    ours = sum(p.numel() for p in net.parameters())
    print(f"parameters: baseline {base:,}, AFI {ours:,}")
    return {name: s for name, (s,) in attention.items()}


if __name__ == "__main__":
    main()
