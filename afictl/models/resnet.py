"""ResNet and AFI-ResNet, CIFAR (Table 1, Eq. 3-4) and ImageNet (bottleneck) variants.

An AFI model is the ResNet builder with ``afi=True``; docs/ARCHITECTURE.md explains the wiring:
in a stage of n blocks, block 1 keeps its full width and exposes the first half of its first
convolution's activation as X(1); block i >= 2 halves its first convolution to X(i), takes
R(i) = AFI(X(1..i-1)) (R(2) = X(1): one input needs no weighing) and feeds [X(i), R(i)] to its
next convolution (Eq. 4).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..layers import AFIJoin, StageFeatures, first_conv_width
from ..model_options import AFI_STAGES, MEMORY_EFFICIENT, REDUCTION
from ._base import Backbone, Stage, parse_afi_stages
from .registry import register_model

__all__ = ["BasicBlock", "Bottleneck", "ResNet"]


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Eq. 3 (baseline) and Eq. 4 (AFI block, ``afi_index >= 2``)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        afi_index: int | None = None,
        reduction: int = 4,
        groups: int = 1,
        base_width: int = 64,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        first = first_conv_width(planes, afi_index)
        self.conv1 = conv3x3(inplanes, first, stride)
        self.bn1 = nn.BatchNorm2d(first)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        # the stride is in conv1, before X
        self.join = AFIJoin(
            planes, afi_index, reduction=reduction, memory_efficient=memory_efficient
        )

    def forward(self, x: Tensor, feats: StageFeatures | None = None) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)

        def conv1_to_conv2(x: Tensor, feats: StageFeatures | None) -> Tensor:
            out = self.relu(self.bn1(self.conv1(x)))  # X(i) (halved in an AFI block)
            out = self.join(out, feats)  # [X(i), R(i)] in an AFI block; X(i) otherwise
            return self.conv2(out)

        # recomputed in backward in a memory-efficient AFI block
        out = self.join.recompute(conv1_to_conv2, x, feats, block=self)
        return self.relu(self.bn2(out) + identity)


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck.

    In an AFI block the first 1x1 outputs half its width.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        afi_index: int | None = None,
        reduction: int = 4,
        groups: int = 1,
        base_width: int = 64,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        first = first_conv_width(width, afi_index)
        self.conv1 = conv1x1(inplanes, first)
        self.bn1 = nn.BatchNorm2d(first)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        # the stride is in conv2
        self.join = AFIJoin(
            width,
            afi_index,
            reduction=reduction,
            seed_stride=stride,
            memory_efficient=memory_efficient,
        )

    def forward(self, x: Tensor, feats: StageFeatures | None = None) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)

        def conv1_to_conv2(x: Tensor, feats: StageFeatures | None) -> Tensor:
            out = self.relu(self.bn1(self.conv1(x)))  # X(i) (halved in an AFI block)
            out = self.join(out, feats)  # [X(i), R(i)] in an AFI block; X(i) otherwise
            return self.conv2(out)

        # recomputed in backward in a memory-efficient AFI block
        out = self.join.recompute(conv1_to_conv2, x, feats, block=self)
        out = self.relu(self.bn2(out))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(Backbone):
    """ResNet / AFI-ResNet. ``cifar=True`` gives the 3-stage, 16-32-64 network of Table 1."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        num_classes: int = 1000,
        *,
        cifar: bool = False,
        afi: bool = False,
        afi_stages: Sequence[int] | str | None = AFI_STAGES.default,
        reduction: int = REDUCTION.default,
        groups: int = 1,
        width_per_group: int = 64,
        widths: Sequence[int] | None = None,
        stem_kernel: int = 3,
        memory_efficient: bool = MEMORY_EFFICIENT.default,
    ) -> None:
        super().__init__()
        self.afi = afi
        # AFI blocks recompute [X(i), R(i)] in backward instead of storing it (Table 6, [38]).
        self.memory_efficient = memory_efficient
        self.afi_stages = parse_afi_stages(afi_stages, len(layers)) if afi else ()
        self.reduction = reduction
        self.groups = groups
        self.base_width = width_per_group
        # widths / stem_kernel: other CIFAR bottleneck networks (ResNeXt-29: 64-128-256, 1x1 stem).
        widths = list(widths) if widths else ([16, 32, 64] if cifar else [64, 128, 256, 512])
        if len(layers) != len(widths):
            raise ValueError(f"{len(widths)} stage widths for {len(layers)} stages")
        self.inplanes = widths[0]
        self.cifar = cifar
        if cifar:
            self.conv1 = nn.Conv2d(
                3, self.inplanes, stem_kernel, padding=stem_kernel // 2, bias=False
            )
        else:
            self.conv1 = nn.Conv2d(3, self.inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if cifar else nn.MaxPool2d(3, stride=2, padding=1)
        stride_so_far = 1 if cifar else 4  # the stem's
        for i, (w, n) in enumerate(zip(widths, layers, strict=True), start=1):
            stride = 1 if i == 1 else 2
            stride_so_far *= stride
            stage = self._make_stage(block, w, n, stride=stride, afi=i in self.afi_stages)
            self.add_stage(f"layer{i}", stage, w * block.expansion, stride_so_far)
        self.num_features = widths[-1] * block.expansion
        self.num_classes = num_classes
        self.fc = self.new_classifier(num_classes)
        self._init_weights()

    def _make_stage(self, block, planes: int, blocks: int, stride: int, afi: bool) -> Stage:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        kw = dict(
            reduction=self.reduction,
            groups=self.groups,
            base_width=self.base_width,
            memory_efficient=self.memory_efficient,
        )
        layers = [
            block(self.inplanes, planes, stride, downsample, afi_index=1 if afi else None, **kw)
        ]
        self.inplanes = planes * block.expansion
        for i in range(2, blocks + 1):
            layers.append(block(self.inplanes, planes, afi_index=i if afi else None, **kw))
        return Stage(*layers)

    def _init_weights(self) -> None:
        if self.is_meta:  # shapes only: nothing to initialise
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


def _resnet_cifar(*, depth: int, afi: bool, **kwargs) -> ResNet:
    n = (depth - 2) // 6
    return ResNet(BasicBlock, [n, n, n], cifar=True, afi=afi, **kwargs)


_IMAGENET_LAYERS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


def _resnet_imagenet(*, depth: int, afi: bool, **kwargs) -> ResNet:
    return ResNet(Bottleneck, _IMAGENET_LAYERS[depth], afi=afi, **kwargs)


# --- builders -------------------------------------------------------------------------------
# CIFAR: ResNet-(6N+2) with projection shortcuts, N = 3, 5, 7, 9, 18 (Table 1, Table 4).
# num_params: at 100 classes (CIFAR) / 1000 (ImageNet), checked by tests/test_models.py.


@register_model(family="resnet", input_size=32, num_stages=3, num_params=278_324)
def resnet20(**kwargs) -> ResNet:
    """ResNet-20 for 32x32 inputs (Table 1)."""
    return _resnet_cifar(depth=20, afi=False, **kwargs)


@register_model(
    family="resnet", input_size=32, num_stages=3, num_params=230_388, baseline="resnet20"
)
def afi_resnet20(**kwargs) -> ResNet:
    """AFI-ResNet-20 for 32x32 inputs (Table 4)."""
    return _resnet_cifar(depth=20, afi=True, **kwargs)


@register_model(family="resnet", input_size=32, num_stages=3, num_params=472_756)
def resnet32(**kwargs) -> ResNet:
    """ResNet-32 for 32x32 inputs (Table 1)."""
    return _resnet_cifar(depth=32, afi=False, **kwargs)


@register_model(
    family="resnet", input_size=32, num_stages=3, num_params=377_556, baseline="resnet32"
)
def afi_resnet32(**kwargs) -> ResNet:
    """AFI-ResNet-32 for 32x32 inputs (Table 4)."""
    return _resnet_cifar(depth=32, afi=True, **kwargs)


@register_model(family="resnet", input_size=32, num_stages=3, num_params=667_188)
def resnet44(**kwargs) -> ResNet:
    """ResNet-44 for 32x32 inputs (Table 1)."""
    return _resnet_cifar(depth=44, afi=False, **kwargs)


@register_model(
    family="resnet", input_size=32, num_stages=3, num_params=524_724, baseline="resnet44"
)
def afi_resnet44(**kwargs) -> ResNet:
    """AFI-ResNet-44 for 32x32 inputs (Table 4)."""
    return _resnet_cifar(depth=44, afi=True, **kwargs)


@register_model(family="resnet", input_size=32, num_stages=3, num_params=861_620)
def resnet56(**kwargs) -> ResNet:
    """ResNet-56 for 32x32 inputs (Table 1)."""
    return _resnet_cifar(depth=56, afi=False, **kwargs)


@register_model(
    family="resnet", input_size=32, num_stages=3, num_params=671_892, baseline="resnet56"
)
def afi_resnet56(**kwargs) -> ResNet:
    """AFI-ResNet-56 for 32x32 inputs (Table 4)."""
    return _resnet_cifar(depth=56, afi=True, **kwargs)


@register_model(family="resnet", input_size=32, num_stages=3, num_params=1_736_564)
def resnet110(**kwargs) -> ResNet:
    """ResNet-110 for 32x32 inputs (Table 1)."""
    return _resnet_cifar(depth=110, afi=False, **kwargs)


@register_model(
    family="resnet", input_size=32, num_stages=3, num_params=1_334_148, baseline="resnet110"
)
def afi_resnet110(**kwargs) -> ResNet:
    """AFI-ResNet-110 for 32x32 inputs (Table 4)."""
    return _resnet_cifar(depth=110, afi=True, **kwargs)


# ImageNet: torchvision's ResNet-50/101/152 (v1.5) and their AFI versions (Table 5).


@register_model(family="resnet", input_size=224, num_stages=4, num_params=25_557_032)
def resnet50(**kwargs) -> ResNet:
    """torchvision's ResNet-50 (v1.5)."""
    return _resnet_imagenet(depth=50, afi=False, **kwargs)


@register_model(
    family="resnet", input_size=224, num_stages=4, num_params=23_805_736, baseline="resnet50"
)
def afi_resnet50(**kwargs) -> ResNet:
    """AFI-ResNet-50 (Table 5)."""
    return _resnet_imagenet(depth=50, afi=True, **kwargs)


@register_model(family="resnet", input_size=224, num_stages=4, num_params=44_549_160)
def resnet101(**kwargs) -> ResNet:
    """torchvision's ResNet-101 (v1.5)."""
    return _resnet_imagenet(depth=101, afi=False, **kwargs)


@register_model(
    family="resnet", input_size=224, num_stages=4, num_params=40_704_552, baseline="resnet101"
)
def afi_resnet101(**kwargs) -> ResNet:
    """AFI-ResNet-101 (Table 5)."""
    return _resnet_imagenet(depth=101, afi=True, **kwargs)


@register_model(family="resnet", input_size=224, num_stages=4, num_params=60_192_808)
def resnet152(**kwargs) -> ResNet:
    """torchvision's ResNet-152 (v1.5)."""
    return _resnet_imagenet(depth=152, afi=False, **kwargs)


@register_model(
    family="resnet", input_size=224, num_stages=4, num_params=54_624_040, baseline="resnet152"
)
def afi_resnet152(**kwargs) -> ResNet:
    """AFI-ResNet-152 (Table 5)."""
    return _resnet_imagenet(depth=152, afi=True, **kwargs)
