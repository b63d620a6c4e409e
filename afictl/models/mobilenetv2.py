"""MobileNetV2 and AFI-MobileNetV2, CIFAR (pytorch-cifar variant) and ImageNet (torchvision).

The building block is the inverted residual: 1x1 expansion -> 3x3 depthwise -> 1x1 linear
projection (Sandler et al. 2018). In an AFI block the expansion is the first convolution of
Figure 5(b): it outputs half its width, X(i), and the depthwise convolution receives
[X(i), R(i)] (Eq. 4 with f = the expansion and g = depthwise + projection).

Stage: the AFI module needs every X(j) of a stage to have one shape. The expansion of the block
that opens a configuration row (the one that changes the channels or the resolution) still
works on the previous row's width and resolution (t x c_prev channels, before its strided
depthwise convolution), so a stage is a maximal run of consecutive blocks whose expansion
outputs the same shape: rows k's blocks 2..n followed by row k+1's first block. That gives the
seven stages conv1..conv7 (1, 1, 2, 3, 4, 3, 3 blocks) on CIFAR and ImageNet alike.

Variants:
- ``cifar=True``: the 32x32 network of the pytorch-cifar collection the paper used (stem and
  second row with stride 1, ReLU, a 1x1 expansion also where t = 1, a projection shortcut where a
  stride-1 block changes the width, no dropout);
- ``cifar=False``: torchvision's ``mobilenet_v2`` (ReLU6, dropout 0.2). Inside a block the
  attribute names are torchvision's (``conv.0.0.weight``); the stages replace torchvision's flat
  ``features`` list, and ``load_state_dict`` accepts torchvision's keys (``features.N.*``).
- ``attn``: one of :func:`afictl.layers.attention.create_attn`'s names, applied to R(i) in every
  AFI block i >= 2 (Table 9).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import Tensor, nn

from ..layers import AFIJoin, StageFeatures, first_conv_width
from ..layers.attention import create_attn
from ..model_options import AFI_STAGES, ATTN, DROPOUT, MEMORY_EFFICIENT, REDUCTION
from ._base import Backbone, Stage, parse_afi_stages
from .registry import register_model

__all__ = ["ConvBNAct", "InvertedResidual", "MobileNetV2", "mobilenetv2_stages"]

# (expansion t, output channels c, blocks n, stride s) of the MobileNetV2 paper's Table 2.
_CFG: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_STEM, _LAST = 32, 1280


class ConvBNAct(nn.Sequential):
    """conv -> BN -> activation, keyed ``0/1/2`` like torchvision's ``Conv2dNormActivation``."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: type[nn.Module] = nn.ReLU6,
    ) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            act(inplace=True),
        )


class InvertedResidual(nn.Module):
    """One inverted residual; with ``afi_index >= 2`` the expansion outputs half its width."""

    def __init__(
        self,
        inp: int,
        oup: int,
        stride: int,
        expand_ratio: int,
        *,
        cifar: bool = False,
        afi_index: int | None = None,
        reduction: int = 4,
        attn: str | None = None,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        act = nn.ReLU if cifar else nn.ReLU6
        hidden = inp * expand_ratio
        self.stride = stride
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        # torchvision drops the expansion where t = 1; the pytorch-cifar variant keeps it.
        if expand_ratio != 1 or cifar:
            layers.append(ConvBNAct(inp, first_conv_width(hidden, afi_index), 1, act=act))
        elif afi_index is not None and afi_index >= 2:
            raise ValueError("an AFI block >= 2 needs a 1x1 expansion to halve")
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=act),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        # the stride is in the depthwise conv, after X
        self.join = AFIJoin(
            hidden, afi_index, reduction=reduction, memory_efficient=memory_efficient
        )
        # Table 9: attention on R(i), the AFI module's resulting feature (Eq. 2).
        self.attn = (
            create_attn(attn, hidden // 2) if afi_index is not None and afi_index >= 2 else None
        )
        # pytorch-cifar adds a projection shortcut where a stride-1 block changes the width.
        self.shortcut: nn.Module | None = None
        if cifar and stride == 1 and inp != oup:
            self.shortcut = nn.Sequential(nn.Conv2d(inp, oup, 1, bias=False), nn.BatchNorm2d(oup))

    @property
    def first_conv(self) -> nn.Conv2d:
        """The convolution whose activation the join receives (expansion, or depthwise if t = 1)."""
        return self.conv[0][0]

    def forward(self, x: Tensor, feats: StageFeatures | None = None) -> Tensor:
        # self.conv: the 1x1 expansion (conv-BN-act), the 3x3 depthwise (conv-BN-act), the 1x1
        # projection and its BN. torchvision's t = 1 block has no expansion: its first
        # conv-BN-act is the depthwise one, and the projection reads the join.
        (conv1, bn1, act1), *others = self.conv
        layers: list[nn.Module] = []
        for layer in others:
            layers += list(layer) if isinstance(layer, ConvBNAct) else [layer]
        conv2, *rest = layers

        def conv1_to_conv2(x: Tensor, feats: StageFeatures | None) -> Tensor:
            out = act1(bn1(conv1(x)))  # X(i) (halved in an AFI block)
            out = self.join(out, feats, attn=self.attn)  # [X(i), attn(R(i))] in an AFI block
            return conv2(out)  # the depthwise convolution (t = 1: the projection)

        # recomputed in backward in a memory-efficient AFI block
        out = self.join.recompute(conv1_to_conv2, x, feats, block=self)
        for layer in rest:  # BN and activation of the depthwise, projection, BN
            out = layer(out)
        if self.use_res_connect:
            return x + out
        if self.shortcut is not None:
            return out + self.shortcut(x)
        return out


def mobilenetv2_stages(cifar: bool) -> list[list[tuple[int, int, int, int]]]:
    """Blocks ``(inp, oup, stride, t)`` grouped into stages of one expansion-output shape."""
    blocks = []
    inp = _STEM
    for row, (t, c, n, s) in enumerate(_CFG):
        stride = 1 if cifar and row == 1 else s  # pytorch-cifar: 32x32 kept through row 2
        for i in range(n):
            blocks.append((inp, c, stride if i == 0 else 1, t))
            inp = c
    stages: list[list[tuple[int, int, int, int]]] = []
    shape = None
    scale = 1  # input resolution divisor within the stages
    for inp, oup, stride, t in blocks:
        # The expansion keeps the input resolution; torchvision's t = 1 block starts with the
        # depthwise convolution, which applies the stride.
        key = (inp * t, scale * (stride if t == 1 and not cifar else 1))
        if key != shape:
            stages.append([])
            shape = key
        stages[-1].append((inp, oup, stride, t))
        scale *= stride
    return stages


class MobileNetV2(Backbone):
    """MobileNetV2 / AFI-MobileNetV2 (see the module docstring for stages and variants)."""

    first_conv_path = "stem.0"
    classifier_path = "classifier.1"  # after the classifier's own dropout

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        cifar: bool = False,
        afi: bool = False,
        afi_stages: Sequence[int] | str | None = AFI_STAGES.default,
        reduction: int = REDUCTION.default,
        attn: str | None = ATTN.default,
        dropout: float | None = DROPOUT.default,
        memory_efficient: bool = MEMORY_EFFICIENT.default,
    ) -> None:
        super().__init__()
        if attn is not None and not afi:
            raise ValueError("attn applies to the AFI output R(i): it needs afi=True")
        act = nn.ReLU if cifar else nn.ReLU6
        stages = mobilenetv2_stages(cifar)
        self.cifar = cifar
        self.afi = afi
        self.afi_stages = parse_afi_stages(afi_stages, len(stages)) if afi else ()
        self.reduction = reduction
        self.memory_efficient = memory_efficient
        self.attn = attn
        self.stem = ConvBNAct(3, _STEM, 3, 1 if cifar else 2, act=act)
        stride_so_far = 1 if cifar else 2  # the stem's
        for k, specs in enumerate(stages, start=1):
            on = k in self.afi_stages
            blocks = [
                InvertedResidual(
                    inp,
                    oup,
                    s,
                    t,
                    cifar=cifar,
                    afi_index=i if on else None,
                    reduction=reduction,
                    attn=attn,
                    memory_efficient=memory_efficient,
                )
                for i, (inp, oup, s, t) in enumerate(specs, start=1)
            ]
            for _, _, stride, _ in specs:
                stride_so_far *= stride
            self.add_stage(f"stage{k}", Stage(*blocks), specs[-1][1], stride_so_far)
        self.head = ConvBNAct(_CFG[-1][1], _LAST, 1, act=act)
        self.num_features = _LAST
        self.num_classes = num_classes
        p = (0.0 if cifar else 0.2) if dropout is None else dropout
        self.classifier = nn.Sequential(nn.Dropout(p), self.new_classifier(num_classes))
        self._init_weights()
        self._tv_keys = self._torchvision_key_map()
        self.register_load_state_dict_pre_hook(_accept_torchvision_keys)

    def _init_weights(self) -> None:
        """torchvision's initialisation; AFI modules keep their own (non-negative W1)."""
        if self.is_meta:  # shapes only: nothing to initialise
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if isinstance(self.classifier[1], nn.Linear):
            nn.init.normal_(self.classifier[1].weight, 0, 0.01)
            nn.init.zeros_(self.classifier[1].bias)

    def _torchvision_key_map(self) -> dict[str, str]:
        """torchvision's ``features.N.`` prefixes -> ours (stem, stageK.i, head)."""
        mapping = {"features.0.": "stem."}
        n = 1
        for attr in self.stage_attrs:
            for i in range(len(getattr(self, attr))):
                mapping[f"features.{n}."] = f"{attr}.{i}."
                n += 1
        mapping[f"features.{n}."] = "head."
        return mapping

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.stem(x)

    def forward_post(self, x: Tensor) -> Tensor:
        return self.head(x)


_TV_KEY = re.compile(r"features\.\d+\.")


def _accept_torchvision_keys(module: MobileNetV2, state_dict: dict, prefix: str, *_args) -> None:
    """Rename torchvision's ``features.N.*`` keys in place before loading (ours pass unchanged)."""
    for key in [k for k in state_dict if k.startswith(prefix + "features.")]:
        rest = key[len(prefix) :]
        m = _TV_KEY.match(rest)
        if m and m.group(0) in module._tv_keys:
            state_dict[prefix + module._tv_keys[m.group(0)] + rest[m.end() :]] = state_dict.pop(key)


def _mobilenetv2(*, cifar: bool, afi: bool, **kwargs) -> MobileNetV2:
    return MobileNetV2(cifar=cifar, afi=afi, **kwargs)


# --- builders -------------------------------------------------------------------------------
# CIFAR (Table 4, Table 9): the pytorch-cifar MobileNetV2, its AFI version and AFI + attention;
# ImageNet (Table 5): torchvision's mobilenet_v2 and its AFI version.


@register_model(
    family="mobilenetv2", input_size=32, num_stages=7, num_params=2_412_212, options=(DROPOUT,)
)
def mobilenetv2(**kwargs) -> MobileNetV2:
    """MobileNetV2 for 32x32 inputs (pytorch-cifar's, Table 4)."""
    return _mobilenetv2(cifar=True, afi=False, **kwargs)


@register_model(
    family="mobilenetv2",
    input_size=32,
    num_stages=7,
    num_params=2_351_972,
    baseline="mobilenetv2",
    options=(DROPOUT, ATTN),
)
def afi_mobilenetv2(**kwargs) -> MobileNetV2:
    """AFI-MobileNetV2 for 32x32 inputs (Table 4)."""
    return _mobilenetv2(cifar=True, afi=True, **kwargs)


@register_model(
    family="mobilenetv2",
    input_size=32,
    num_stages=7,
    num_params=2_450_888,
    baseline="mobilenetv2",
    options=(DROPOUT,),
)
def afi_mobilenetv2_se(**kwargs) -> MobileNetV2:
    """AFI-MobileNetV2 with SE on R(i) (Table 9)."""
    return _mobilenetv2(cifar=True, afi=True, attn="se", **kwargs)


@register_model(
    family="mobilenetv2",
    input_size=32,
    num_stages=7,
    num_params=2_351_972,
    baseline="mobilenetv2",
    options=(DROPOUT,),
)
def afi_mobilenetv2_ge(**kwargs) -> MobileNetV2:
    """AFI-MobileNetV2 with Gather-Excite on R(i) (Table 9)."""
    return _mobilenetv2(cifar=True, afi=True, attn="ge", **kwargs)


@register_model(
    family="mobilenetv2",
    input_size=32,
    num_stages=7,
    num_params=2_449_356,
    baseline="mobilenetv2",
    options=(DROPOUT,),
)
def afi_mobilenetv2_cbam(**kwargs) -> MobileNetV2:
    """AFI-MobileNetV2 with CBAM on R(i) (Table 9)."""
    return _mobilenetv2(cifar=True, afi=True, attn="cbam", **kwargs)


@register_model(
    family="mobilenetv2",
    input_size=32,
    num_stages=7,
    num_params=2_352_016,
    baseline="mobilenetv2",
    options=(DROPOUT,),
)
def afi_mobilenetv2_eca(**kwargs) -> MobileNetV2:
    """AFI-MobileNetV2 with ECA on R(i) (Table 9)."""
    return _mobilenetv2(cifar=True, afi=True, attn="eca", **kwargs)


@register_model(
    family="mobilenetv2", input_size=224, num_stages=7, num_params=3_504_872, options=(DROPOUT,)
)
def mobilenet_v2(**kwargs) -> MobileNetV2:
    """torchvision's MobileNetV2 (Table 5)."""
    return _mobilenetv2(cifar=False, afi=False, **kwargs)


@register_model(
    family="mobilenetv2",
    input_size=224,
    num_stages=7,
    num_params=3_444_632,
    baseline="mobilenet_v2",
    options=(DROPOUT, ATTN),
)
def afi_mobilenet_v2(**kwargs) -> MobileNetV2:
    """AFI-MobileNetV2 for ImageNet (Table 5)."""
    return _mobilenetv2(cifar=False, afi=True, **kwargs)
