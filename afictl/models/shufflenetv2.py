"""ShuffleNetV2 and AFI-ShuffleNetV2 for CIFAR (the pytorch-cifar variant the paper used).

ShuffleNet V2 (Ma et al. 2018): a stage opens with a down-sampling unit (two branches, stride 2)
followed by basic units that split the channels in halves, transform one half with
1x1 -> 3x3 depthwise -> 1x1 and shuffle the concatenation. The CIFAR variant keeps the
resolution in the stem (3x3, stride 1, no max-pooling).

AFI wiring: the AFI module sits at the first 1x1 convolution of the transformed branch (the
branch's "first convolution" of Figure 5; the identity half is the residual path and stays
untouched). In an AFI stage of n units:

- unit 1 (down-sampling) keeps its width; the first half of its right branch's first 1x1
  activation (C/2 of the branch's C channels, before the strided depthwise convolution) is
  average-pooled by 2 to the stage resolution and becomes X(1);
- unit i >= 2 halves that 1x1 to X(i) and the depthwise convolution receives [X(i), R(i)].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..layers import AFIJoin, StageFeatures, first_conv_width
from ..model_options import AFI_STAGES, MEMORY_EFFICIENT, REDUCTION, SHUFFLENET_WIDTHS, WIDTH
from ._base import Backbone, Stage, parse_afi_stages
from .registry import register_model

__all__ = ["ShuffleNetV2", "ShuffleUnit", "channel_shuffle"]

# Width multiplier -> (stage widths..., last 1x1 width), as in the ShuffleNet V2 paper's Table 5.
# The multipliers are declared with the option (afictl/model_options.py), the widths here.
WIDTHS: dict[float, tuple[int, int, int, int]] = dict(
    zip(
        SHUFFLENET_WIDTHS,
        [(48, 96, 192, 1024), (116, 232, 464, 1024), (176, 352, 704, 1024), (244, 488, 976, 2048)],
        strict=True,
    )
)
BLOCKS = (4, 8, 4)  # units per stage, the down-sampling unit included


def channel_shuffle(x: Tensor, groups: int = 2) -> Tensor:
    """(B, g*c, H, W) -> interleave the g groups channel by channel."""
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]


class ShuffleUnit(nn.Module):
    """A basic unit (``stride=1``, input split in halves) or a down-sampling unit (``stride=2``)."""

    def __init__(
        self,
        inp: int,
        oup: int,
        stride: int = 1,
        *,
        afi_index: int | None = None,
        reduction: int = 4,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        if stride == 1 and inp != oup:
            raise ValueError("a stride-1 ShuffleNetV2 unit keeps its width")
        branch = oup // 2
        self.stride = stride
        self.branch1: nn.Module | None = None  # the left branch of a down-sampling unit
        if stride > 1:
            self.branch1 = nn.Sequential(
                *_conv_bn(inp, inp, 3, stride, groups=inp),
                *_conv_bn(inp, branch, 1),
                nn.ReLU(inplace=True),
            )
        first = first_conv_width(branch, afi_index)
        self.conv1 = nn.Conv2d(inp if stride > 1 else branch, first, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(first)
        self.conv2 = nn.Conv2d(branch, branch, 3, stride, 1, groups=branch, bias=False)
        self.bn2 = nn.BatchNorm2d(branch)
        self.conv3 = nn.Conv2d(branch, branch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(branch)
        self.relu = nn.ReLU(inplace=True)
        self.join = AFIJoin(
            branch,
            afi_index,
            reduction=reduction,
            seed_stride=stride,  # stride in conv2
            memory_efficient=memory_efficient,
        )

    def forward(self, x: Tensor, feats: StageFeatures | None = None) -> Tensor:
        if self.branch1 is None:
            keep, x = x.chunk(2, dim=1)
        else:
            keep = self.branch1(x)

        def conv1_to_conv2(x: Tensor, feats: StageFeatures | None) -> Tensor:
            out = self.relu(self.bn1(self.conv1(x)))  # X(i) (halved in an AFI unit)
            out = self.join(out, feats)  # [X(i), R(i)] in an AFI unit; X(i) otherwise
            return self.conv2(out)  # 3x3 depthwise

        # recomputed in backward in a memory-efficient AFI unit
        out = self.join.recompute(conv1_to_conv2, x, feats, block=self)
        out = self.bn2(out)
        out = self.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([keep, out], dim=1))


class ShuffleNetV2(Backbone):
    """ShuffleNetV2 / AFI-ShuffleNetV2 for 32x32 inputs; stages conv1..conv3 of 4, 8, 4 units."""

    def __init__(
        self,
        num_classes: int = 100,
        *,
        width: float = WIDTH.default,
        afi: bool = False,
        afi_stages: Sequence[int] | str | None = AFI_STAGES.default,
        reduction: int = REDUCTION.default,
        memory_efficient: bool = MEMORY_EFFICIENT.default,
    ) -> None:
        super().__init__()
        if width not in WIDTHS:
            raise ValueError(f"width must be one of {sorted(WIDTHS)}")
        *widths, last = WIDTHS[width]
        self.afi = afi
        self.afi_stages = parse_afi_stages(afi_stages, len(widths)) if afi else ()
        self.reduction = reduction
        self.memory_efficient = memory_efficient
        self.conv1 = nn.Conv2d(3, 24, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU(inplace=True)
        inp = 24
        for k, (w, n) in enumerate(zip(widths, BLOCKS, strict=True), start=1):
            on = k in self.afi_stages
            kw = dict(reduction=reduction, memory_efficient=memory_efficient)
            units = [ShuffleUnit(inp, w, 2, afi_index=1 if on else None, **kw)]
            units += [
                ShuffleUnit(w, w, 1, afi_index=i if on else None, **kw) for i in range(2, n + 1)
            ]
            self.add_stage(f"layer{k}", Stage(*units), w, 2**k)  # each stage opens with stride 2
            inp = w
        self.head = nn.Sequential(*_conv_bn(inp, last, 1), nn.ReLU(inplace=True))
        self.num_features = last
        self.num_classes = num_classes
        self.fc = self.new_classifier(num_classes)
        if not self.is_meta:  # shapes only: nothing to initialise
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.relu(self.bn1(self.conv1(x)))

    def forward_post(self, x: Tensor) -> Tensor:
        return self.head(x)


# --- builders -------------------------------------------------------------------------------
# CIFAR (Table 4): ShuffleNetV2 1x of pytorch-cifar and its AFI version.


@register_model(
    family="shufflenetv2", input_size=32, num_stages=3, num_params=1_356_104, options=(WIDTH,)
)
def shufflenetv2(**kwargs) -> ShuffleNetV2:
    """ShuffleNetV2 1x for 32x32 inputs (Table 4)."""
    return ShuffleNetV2(**kwargs)


@register_model(
    family="shufflenetv2",
    input_size=32,
    num_stages=3,
    num_params=1_245_556,
    baseline="shufflenetv2",
    options=(WIDTH,),
)
def afi_shufflenetv2(**kwargs) -> ShuffleNetV2:
    """AFI-ShuffleNetV2 1x for 32x32 inputs (Table 4)."""
    return ShuffleNetV2(afi=True, **kwargs)
