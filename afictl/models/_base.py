"""The surface every model of the zoo shares, so that no tool branches on the family.

- timm's model surface: ``forward_features``, ``forward_head(pre_logits=...)``,
  ``reset_classifier`` (0 classes: no classifier), ``num_features``, ``feature_info`` (one dict
  per stage), ``forward_intermediates``, ``prune_intermediate_layers``,
  ``set_grad_checkpointing`` (per stage), ``group_matcher``, ``no_weight_decay``;
- stages by the paper's names: ``conv1..conv3`` on CIFAR models (Table 1), ``conv1..conv4`` on
  ImageNet models (``conv1`` is the first residual stage, Figures 2 and 6); ``layerK`` and
  ``stageK`` are accepted as aliases;
- ``blocks(stage)`` lists a stage's building blocks; every block has an ``AFIJoin`` named
  ``join`` whose identity ``afi_out`` carries the AFI output R(i) (in a baseline block, the
  activation of its first convolution, the tensor at the same position): ``probes(stage)``
  lists them, the one hook point of the analyses.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import checks
from ..errors import ModelOptionError, StageError
from ..layers import AFIModule, StageFeatures
from ..layers.recompute import recomputed
from .features import feature_take_indices

__all__ = [
    "Backbone",
    "ModelOptionError",
    "Stage",
    "StageError",
    "feature_take_indices",
    "parse_afi_stages",
]


class Stage(nn.Sequential):
    """A stage of same-shape building blocks sharing one features container per forward.

    Blocks take ``(x, feats)`` (:class:`~afictl.layers.StageFeatures`, X(1..i-1) of the stage) and
    hand it to their join; baseline blocks' joins ignore it. Being an ``nn.Sequential``
    keeps torchvision's state-dict keys (``layer1.0.conv1.weight``).
    """

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        feats = StageFeatures()
        for block in self:
            x = block(x, feats)
        return x


def parse_afi_stages(afi_stages: Sequence[int] | str | None, num_stages: int) -> tuple[int, ...]:
    """Stages (1-based) that get AFI blocks; ``None`` means all (Table 7 ablation option)."""
    if afi_stages is None:
        return tuple(range(1, num_stages + 1))
    try:
        stages = tuple(checks.stages(afi_stages))  # the option's own check (model_options.py)
    except checks.Invalid as exc:
        raise ValueError(f"afi_stages {exc}") from None
    bad = [s for s in stages if not 1 <= s <= num_stages]
    if bad:
        raise ValueError(f"afi_stages {bad} out of range 1..{num_stages}")
    return stages


class Backbone(nn.Module):
    """Base class of every registered network: stages by name and timm's model surface.

    A family builds its stem, adds each stage with :meth:`add_stage` (which records its
    ``feature_info``), sets ``num_features``, builds its classifier with :meth:`new_classifier`
    and defines ``forward_stem``; ``forward_between`` (layers between two stages) and
    ``forward_post`` (layers after the last) where it has such layers.
    """

    #: attribute names of the residual stages, in order (e.g. ``["layer1", "layer2", ...]``)
    stage_attrs: list[str]
    #: per stage: ``num_chs``, ``reduction`` (input size over map size), ``module`` (as timm's)
    feature_info: list[dict[str, Any]]
    num_features: int
    num_classes: int
    #: submodule paths of the first convolution and of the classifier (a Linear, or Identity)
    first_conv_path = "conv1"
    classifier_path = "fc"
    in_chans = 3
    #: dropout on the pooled features before the classifier (timm's ``drop_rate``)
    drop_rate = 0.0

    def __init__(self) -> None:
        super().__init__()
        self.stage_attrs = []
        self.feature_info = []
        self.grad_checkpointing = False

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """timm's ``pretrained_cfg`` (:func:`~afictl.models.registry.pretrained_cfg`), made on
        first use: it imports the data pipeline (torchvision), which counting does not need."""
        if "_pretrained_cfg" not in self.__dict__:
            from .registry import pretrained_cfg

            self.__dict__["_pretrained_cfg"] = pretrained_cfg(self)
        return self.__dict__["_pretrained_cfg"]

    @pretrained_cfg.setter
    def pretrained_cfg(self, cfg: dict[str, Any]) -> None:
        self.__dict__["_pretrained_cfg"] = cfg

    @property
    def is_meta(self) -> bool:
        """Whether the model is built on the ``meta`` device (shapes only): the families'
        initialisers skip then, as there is nothing to set, and random ones (``normal_``,
        ``kaiming_normal_``) run on meta as Python references that import torch._dynamo (1 s)."""
        return any(p.is_meta for p in self.parameters())

    def add_stage(self, attr: str, stage: nn.Module, num_chs: int, reduction: int) -> None:
        """Register a stage under ``attr`` with its output channels and its total stride."""
        setattr(self, attr, stage)
        self.stage_attrs.append(attr)
        self.feature_info.append({"num_chs": num_chs, "reduction": reduction, "module": attr})

    @property
    def stage_names(self) -> list[str]:
        """The paper's names of the stages: conv1..convK."""
        return [f"conv{i}" for i in range(1, len(self.stage_attrs) + 1)]

    def resolve_stage(self, name: str) -> str:
        """Map ``convK`` / ``layerK`` / ``stageK`` (any case) to the paper's ``convK``."""
        m = re.fullmatch(r"(conv|layer|stage)_?(\d+)", name.strip().lower())
        if m and 1 <= int(m.group(2)) <= len(self.stage_attrs):
            return f"conv{int(m.group(2))}"
        valid = ", ".join(self.stage_names)
        raise StageError(
            f"unknown stage {name!r} for {getattr(self, 'arch', type(self).__name__)}; "
            f"valid stages: {valid} (aliases layerK, stageK)"
        )

    def get_stage(self, name: str) -> nn.Module:
        idx = int(self.resolve_stage(name)[4:]) - 1
        return getattr(self, self.stage_attrs[idx])

    def stages(self) -> dict[str, nn.Module]:
        return {
            n: getattr(self, a) for n, a in zip(self.stage_names, self.stage_attrs, strict=True)
        }

    def blocks(self, stage: str) -> list[nn.Module]:
        return list(self.get_stage(stage).children())

    def probes(self, stage: str) -> list[nn.Module]:
        """The ``afi_out`` identity of every block of a stage (R(i), or its baseline position)."""
        return [b.join.afi_out for b in self.blocks(stage)]

    def afi_modules(self) -> dict[str, AFIModule]:
        return {n: m for n, m in self.named_modules() if isinstance(m, AFIModule)}

    def feature_layer(self) -> nn.Module:
        """Default Grad-CAM target: the last block of the last stage."""
        return self.blocks(self.stage_names[-1])[-1]

    # --- forward: stem, stages (with the layers between them), post, head --------------------

    def forward_stem(self, x: Tensor) -> Tensor:
        return x

    def forward_between(self, index: int, x: Tensor) -> Tensor:
        """Layers between stage ``index`` (from 0) and the next (none but DenseNet's)."""
        return x

    def forward_post(self, x: Tensor) -> Tensor:
        """Layers between the last stage and the pooling (none in ResNets)."""
        return x

    def forward_stage(self, index: int, x: Tensor) -> Tensor:
        """Stage ``index`` (from 0) on ``x``; recomputed in backward under grad checkpointing.

        Checkpointing is per stage, not per block: the blocks of an AFI stage share the
        stage's features container X(1..i-1), filled as the blocks run, so one block cannot be
        recomputed alone; a stage makes a new container at each call.
        """
        stage = getattr(self, self.stage_attrs[index])
        if self.grad_checkpointing and torch.is_grad_enabled():
            return recomputed(stage, x, modules=[stage])
        return stage(x)

    def forward_features(self, x: Tensor) -> Tensor:
        """The feature maps before pooling: stem, stages, post-stage layers."""
        x = self.forward_stem(x)
        last = len(self.stage_attrs) - 1
        for i in range(last + 1):
            x = self.forward_stage(i, x)
            if i < last:
                x = self.forward_between(i, x)
        return self.forward_post(x)

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """The outputs of the stages ``indices`` (timm's convention: None all, n the last n),
        and unless ``intermediates_only`` the final features (``forward_features``; with
        ``stop_early``, the output of the last stage taken). ``norm``: accepted, no effect (no
        family has a norm to apply to a stage's output)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt {output_fmt!r}: these models give NCHW only")
        num = len(self.stage_attrs)
        take, max_index = feature_take_indices(num, indices)
        last = max_index if stop_early or intermediates_only else num - 1
        x = self.forward_stem(x)
        intermediates = []
        for i in range(last + 1):
            x = self.forward_stage(i, x)
            if i in take:
                intermediates.append(x)
            if i < last:
                x = self.forward_between(i, x)
        if intermediates_only:
            return intermediates
        return (self.forward_post(x) if last == num - 1 else x), intermediates

    def prune_intermediate_layers(
        self,
        indices: int | Sequence[int] | None = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Replace what follows the last stage of ``indices`` by ``Identity`` (the later stages;
        the post-stage layers too when ``prune_norm`` or when stages go) and, with
        ``prune_head`` or when stages go, the classifier. Returns the stage indices kept."""
        take, max_index = feature_take_indices(len(self.stage_attrs), indices)
        cut = max_index < len(self.stage_attrs) - 1
        if cut or prune_norm:
            names = [n for n, _ in self.named_children()]
            head = self.classifier_path.split(".")[0]
            for name in names[names.index(self.stage_attrs[max_index]) + 1 :]:
                if name != head:
                    setattr(self, name, nn.Identity())
            self.num_features = self.feature_info[max_index]["num_chs"]
        if prune_head or cut:
            self.reset_classifier(0)
        return take

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pooled features (``pre_logits``), or the classifier's output on them."""
        x = x.mean(dim=(2, 3))  # global average pooling: every family of the paper
        if pre_logits:
            return x
        if self.drop_rate:
            x = F.dropout(x, self.drop_rate, self.training)
        return getattr(self, self.classifier_path.split(".")[0])(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    # --- classifier, input, training options ------------------------------------------------

    def new_classifier(self, num_classes: int) -> nn.Module:
        """A fresh classifier on ``num_features``: Linear, or Identity for ``num_classes=0``."""
        if num_classes < 0:
            raise ModelOptionError(
                f"num_classes must be >= 0 (0: no classifier), got {num_classes}"
            )
        return nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def get_classifier(self) -> nn.Module:
        """The final classifier (a Linear, or Identity when the model has none)."""
        return self.get_submodule(self.classifier_path)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new, freshly initialised classifier for ``num_classes`` classes (0: none, the model
        returns the pooled features), on the device and dtype of the model's parameters."""
        if global_pool not in (None, "avg"):
            raise ModelOptionError(
                f"global_pool {global_pool!r}: these models pool by average only ('avg')"
            )
        ref = next(self.parameters(), None)
        with torch.device(ref.device) if ref is not None else nullcontext():
            head = self.new_classifier(num_classes)
        if ref is not None and ref.is_floating_point():
            head.to(dtype=ref.dtype)
        self.set_submodule(self.classifier_path, head)
        self.num_classes = num_classes

    def set_in_chans(self, in_chans: int) -> None:
        """A fresh first convolution taking ``in_chans`` input channels (timm's ``in_chans``)."""
        if in_chans < 1:
            raise ModelOptionError(f"in_chans must be positive, not {in_chans}")
        old = self.get_submodule(self.first_conv_path)
        new = nn.Conv2d(
            in_chans,
            old.out_channels,
            old.kernel_size,
            old.stride,
            old.padding,
            bias=old.bias is not None,
            device=old.weight.device,
            dtype=old.weight.dtype,
        )
        if not new.weight.is_meta:  # shapes only: see is_meta
            nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
        self.set_submodule(self.first_conv_path, new)
        self.in_chans = in_chans

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage in backward instead of keeping its activations (per stage:
        see :meth:`forward_stage`); BatchNorm running statistics are updated once."""
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Parameter names to exclude from weight decay: none (the paper decays all)."""
        return set()

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Regexes grouping parameter names, as timm's: ``stem`` (the layers before the first
        stage) and ``blocks`` (per stage if ``coarse``, else per block); the rest (post-stage
        layers, classifier) is the last group."""
        children = list(self.named_children())
        first = [n for n, _ in children].index(self.stage_attrs[0])
        stem = [n for n, m in children[:first] if next(m.parameters(), None) is not None]
        prefix = self.stage_attrs[0].rstrip("0123456789")
        blocks = rf"^{prefix}(\d+)\." if coarse else rf"^{prefix}(\d+)\.(\d+)\."
        return {"stem": rf"^(?:{'|'.join(stem)})\.", "blocks": blocks}
