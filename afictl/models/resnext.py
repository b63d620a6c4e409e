"""ResNeXt and AFI-ResNeXt (Xie et al. 2017): the ResNet bottleneck with a grouped 3x3 convolution.

Both variants are :class:`~afictl.models.resnet.ResNet` with ``groups`` and ``width_per_group``,
so the AFI wiring is the bottleneck's (docs/ARCHITECTURE.md): the first 1x1 convolution of block
i >= 2 of a stage outputs half the group width, X(i), and the grouped 3x3 receives [X(i), R(i)];
block 1 exposes the first half of its 1x1 activation, average-pooled by the stride, as X(1).

- ``resnext29_32x4d`` (CIFAR, as in pytorch-cifar): a 1x1 stem with 64 channels, three stages of
  3 blocks, cardinality 32 and group widths 128-256-512 (outputs 256-512-1024);
- ``resnext50_32x4d`` (ImageNet): torchvision's network, same names and parameters.
"""

from __future__ import annotations

from .registry import register_model
from .resnet import Bottleneck, ResNet

__all__ = ["resnext29_32x4d", "resnext50_32x4d"]


def _resnext29(afi: bool, **kwargs) -> ResNet:
    # Bottleneck width = planes * width_per_group / 64 * groups: planes 64-128-256 with 32 groups
    # of 4 give the group widths 128-256-512 and, x4, the outputs 256-512-1024.
    return ResNet(
        Bottleneck, [3, 3, 3], cifar=True, widths=[64, 128, 256], stem_kernel=1,
        groups=32, width_per_group=4, afi=afi, **kwargs,
    )


def _resnext50(afi: bool, **kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4, afi=afi, **kwargs)


# --- builders -------------------------------------------------------------------------------


@register_model(family="resnext", input_size=32)
def resnext29_32x4d(**kwargs) -> ResNet:
    return _resnext29(False, **kwargs)


@register_model(family="resnext", input_size=32, baseline="resnext29_32x4d")
def afi_resnext29_32x4d(**kwargs) -> ResNet:
    return _resnext29(True, **kwargs)


@register_model(family="resnext", input_size=224)
def resnext50_32x4d(**kwargs) -> ResNet:
    return _resnext50(False, **kwargs)


@register_model(family="resnext", input_size=224, baseline="resnext50_32x4d")
def afi_resnext50_32x4d(**kwargs) -> ResNet:
    return _resnext50(True, **kwargs)
