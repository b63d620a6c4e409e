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


def _resnext29(*, afi: bool, **kwargs) -> ResNet:
    # Bottleneck width = planes * width_per_group / 64 * groups: planes 64-128-256 with 32 groups
    # of 4 give the group widths 128-256-512 and, x4, the outputs 256-512-1024.
    return ResNet(
        Bottleneck,
        [3, 3, 3],
        cifar=True,
        widths=[64, 128, 256],
        stem_kernel=1,
        groups=32,
        width_per_group=4,
        afi=afi,
        **kwargs,
    )


def _resnext50(*, afi: bool, **kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4, afi=afi, **kwargs)


# --- builders -------------------------------------------------------------------------------


@register_model(family="resnext", input_size=32, num_stages=3, num_params=4_866_468)
def resnext29_32x4d(**kwargs) -> ResNet:
    """ResNeXt-29 (32x4d) for 32x32 inputs (Table 4)."""
    return _resnext29(afi=False, **kwargs)


@register_model(
    family="resnext", input_size=32, num_stages=3, num_params=4_219_556, baseline="resnext29_32x4d"
)
def afi_resnext29_32x4d(**kwargs) -> ResNet:
    """AFI-ResNeXt-29 (32x4d) for 32x32 inputs (Table 4)."""
    return _resnext29(afi=True, **kwargs)


@register_model(family="resnext", input_size=224, num_stages=4, num_params=25_028_904)
def resnext50_32x4d(**kwargs) -> ResNet:
    """torchvision's ResNeXt-50 (32x4d)."""
    return _resnext50(afi=False, **kwargs)


@register_model(
    family="resnext",
    input_size=224,
    num_stages=4,
    num_params=21_666_600,
    baseline="resnext50_32x4d",
)
def afi_resnext50_32x4d(**kwargs) -> ResNet:
    """AFI-ResNeXt-50 (32x4d) (Table 5)."""
    return _resnext50(afi=True, **kwargs)
