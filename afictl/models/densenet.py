"""DenseNet for CIFAR (Huang et al. 2017, Table 2 "DenseNet (k = 12)"), the Table 4 baselines.

Depth L = 3n + 4: a 3x3 stem with 16 channels, three dense blocks of n = (L - 4) / 3 layers
(BN -> ReLU -> 3x3 conv with k = 12 outputs, concatenated to the layer's input), transitions
BN -> ReLU -> 1x1 conv (no compression) -> 2x2 average pooling, then BN -> ReLU -> global
pooling -> fully connected. DenseNet-40 (1.06M parameters at 100 classes) and DenseNet-100
(7.09M) have no AFI version: the paper compares against them.

Stages are the dense blocks (conv1..conv3); a block of a stage is one dense layer, whose
``join.afi_out`` probe carries the k new feature maps (the tensor the layer adds).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import AFIJoin, StageFeatures
from ._base import Backbone, Stage
from .registry import register_model

__all__ = ["DenseLayer", "DenseNet", "Transition"]


class DenseLayer(nn.Module):
    """BN -> ReLU -> 3x3 conv (``growth`` channels), concatenated after its input."""

    def __init__(self, inp: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(inp)
        self.conv = nn.Conv2d(inp, growth, 3, padding=1, bias=False)
        self.join = AFIJoin(growth)  # baseline probe: the new feature maps

    def forward(self, x: Tensor, feats: StageFeatures | None = None) -> Tensor:
        new = self.conv(F.relu(self.bn(x)))
        new = self.join(new, feats)  # an identity: the analyses' probe on the new maps
        return torch.cat([x, new], dim=1)


class Transition(nn.Sequential):
    """BN -> ReLU -> 1x1 conv -> 2x2 average pooling between dense blocks."""

    def __init__(self, inp: int, oup: int) -> None:
        super().__init__(
            nn.BatchNorm2d(inp),
            nn.ReLU(inplace=True),
            nn.Conv2d(inp, oup, 1, bias=False),
            nn.AvgPool2d(2),
        )


class DenseNet(Backbone):
    """CIFAR DenseNet of depth ``3n + 4`` with growth rate ``growth``.

    No bottleneck, no compression.
    """

    def __init__(
        self, depth: int = 40, num_classes: int = 100, *, growth: int = 12, stem: int = 16
    ) -> None:
        super().__init__()
        if (depth - 4) % 3:
            raise ValueError("DenseNet depth must be 3n + 4")
        n = (depth - 4) // 3
        self.conv1 = nn.Conv2d(3, stem, 3, padding=1, bias=False)
        channels = stem
        for k in range(1, 4):
            layers = [DenseLayer(channels + i * growth, growth) for i in range(n)]
            channels += n * growth
            self.add_stage(f"dense{k}", Stage(*layers), channels, 2 ** (k - 1))
            if k < 3:
                setattr(self, f"trans{k}", Transition(channels, channels))
        self.norm = nn.BatchNorm2d(channels)
        self.num_features = channels
        self.num_classes = num_classes
        self.fc = self.new_classifier(num_classes)
        if not self.is_meta:  # shapes only: nothing to initialise
            self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if isinstance(self.fc, nn.Linear):
            nn.init.zeros_(self.fc.bias)

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.conv1(x)

    def forward_between(self, index: int, x: Tensor) -> Tensor:
        # Transitions sit between the stages, outside them: a stage's blocks are dense layers.
        return getattr(self, f"trans{index + 1}")(x)

    def forward_post(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(x))

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """As the base's, with each transition in the group of the dense block before it."""
        if coarse:
            return {"stem": r"^conv1\.", "blocks": r"^(?:dense|trans)(\d+)\."}
        # (99999,): timm's MATCH_PREV_GROUP, "same group as the previous one"
        blocks = [(r"^dense(\d+)\.(\d+)\.", None), (r"^trans(\d+)\.", (99999,))]
        return {"stem": r"^conv1\.", "blocks": blocks}


# --- builders -------------------------------------------------------------------------------


@register_model(family="densenet", input_size=32, num_stages=3, num_params=1_060_132)
def densenet40(**kwargs) -> DenseNet:
    """DenseNet-40 (k = 12) for 32x32 inputs (Table 4 baseline)."""
    return DenseNet(depth=40, **kwargs)


@register_model(family="densenet", input_size=32, num_stages=3, num_params=7_084_852)
def densenet100(**kwargs) -> DenseNet:
    """DenseNet-100 (k = 12) for 32x32 inputs (Table 4 baseline)."""
    return DenseNet(depth=100, **kwargs)
