"""The surface every model of the zoo shares, so that no tool branches on the family.

- ``forward_features`` / ``forward_head(pre_logits=...)`` / ``reset_classifier`` / ``num_features``
  as in timm;
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

from torch import Tensor, nn

from ..errors import StageError
from ..layers import AFIModule, StageFeatures

__all__ = ["Backbone", "Stage", "StageError", "parse_afi_stages"]


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
    if isinstance(afi_stages, str):
        afi_stages = [int(s) for s in re.split(r"[,\s]+", afi_stages.strip()) if s]
    stages = tuple(sorted(set(int(s) for s in afi_stages)))
    bad = [s for s in stages if not 1 <= s <= num_stages]
    if bad:
        raise ValueError(f"afi_stages {bad} out of range 1..{num_stages}")
    return stages


class Backbone(nn.Module):
    """Base class of every registered network. Subclasses set the attributes below."""

    #: attribute names of the residual stages, in order (e.g. ``["layer1", "layer2", ...]``)
    stage_attrs: list[str]
    num_features: int

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

    # Families define ``forward_stem`` and a ``fc`` classifier; stages run in order.
    def forward_stem(self, x: Tensor) -> Tensor:
        return x

    def forward_post(self, x: Tensor) -> Tensor:
        """Layers between the last stage and the pooling (none in ResNets)."""
        return x

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.forward_stem(x)
        for attr in self.stage_attrs:
            x = getattr(self, attr)(x)
        return self.forward_post(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)

    def get_classifier(self) -> nn.Module:
        """The final classifier (families with another attribute name override this)."""
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised classifier for ``num_classes`` classes."""
        self.fc = nn.Linear(self.num_features, num_classes)
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))
