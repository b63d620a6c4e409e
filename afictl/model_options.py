"""The options a registered model takes besides ``num_classes``, each declared once.

A :class:`ModelOption` holds an option's type, check (range or choices), default and help.
A builder names the ones it takes at registration (``register_model(options=(DROPOUT,))``;
an AFI model takes :data:`AFI_OPTIONS` besides), and everything else derives from that:
:func:`afictl.models.create_model`'s check, checkpoint validation, the flags of
``afictl train``/``bench``/``memory``/``export``/``flops`` and the config-file keys.
Names an option had before are mapped in one place, :func:`canonical_options`.

Light on purpose (no torch): ``afictl train --help`` lists every option from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import checks

__all__ = [
    "AFI_OPTIONS",
    "AFI_STAGES",
    "ATTENTION_NAMES",
    "ATTN",
    "DROPOUT",
    "LEGACY_NAMES",
    "MEMORY_EFFICIENT",
    "MODEL_OPTIONS",
    "REDUCTION",
    "SHUFFLENET_WIDTHS",
    "WIDTH",
    "ModelOption",
    "canonical_options",
    "fold_model_options",
]


@dataclass(frozen=True)
class ModelOption:
    """One keyword option of a model builder.

    ``kind`` (int, float, bool, str, stages) is how the command line reads it; ``check`` takes
    a value as it arrived (flag, config file, checkpoint, library call) and returns it
    normalised or raises :class:`afictl.checks.Invalid`; ``default`` is what the model uses when
    the option is not given (None: the family decides, said in ``help``); ``afi``: it changes the
    AFI blocks only (baselines do not take it).
    """

    name: str
    kind: str
    check: Callable[[Any], Any]
    default: Any
    help: str
    afi: bool = False
    short: str | None = None
    metavar: str | None = None

    @property
    def flag(self) -> str:
        """The long flag: ``--afi-stages``; a bool is a plain switch (``--memory-efficient``)."""
        return "--" + self.name.replace("_", "-")


def _width(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise checks.Invalid(f"must be a number, got {value!r}")
    if float(value) not in SHUFFLENET_WIDTHS:
        allowed = ", ".join(f"{w:g}" for w in SHUFFLENET_WIDTHS)
        raise checks.Invalid(f"must be one of {allowed}, got {value!r}")
    return float(value)


#: ShuffleNetV2's width multipliers (the ShuffleNet V2 paper's Table 5)
SHUFFLENET_WIDTHS = (0.5, 1.0, 1.5, 2.0)
#: the attention layers of afictl.layers.attention (Table 9)
ATTENTION_NAMES = ("se", "ge", "cbam", "eca")

AFI_STAGES = ModelOption(
    "afi_stages",
    "stages",
    checks.stages,
    None,
    "Stages (1-based, e.g. 1,2) that get AFI blocks (Table 7). Default: all.",
    afi=True,
)
REDUCTION = ModelOption(
    "reduction",
    "int",
    checks.Bound(1, 4096, integer=True),
    4,
    "Reduction ratio r of the AFI scoring function (Table 8).",
    afi=True,
    short="-r",
)
MEMORY_EFFICIENT = ModelOption(
    "memory_efficient",
    "bool",
    checks.flag,
    False,
    "Recompute each AFI block in backward instead of storing [X(i), R(i)] (Table 6): less "
    "memory, one more forward per block.",
    afi=True,
)
DROPOUT = ModelOption(
    "dropout",
    "float",
    checks.Bound(0.0, 1.0, hi_open=True),
    None,
    "Dropout before the classifier. Default: 0 on CIFAR, 0.2 on ImageNet (torchvision's).",
)
ATTN = ModelOption(
    "attn",
    "str",
    checks.choice(*ATTENTION_NAMES),
    None,
    "Attention applied to R(i) in every AFI block (Table 9). Default: none.",
    afi=True,
    metavar="[" + "|".join(ATTENTION_NAMES) + "]",
)
WIDTH = ModelOption(
    "width",
    "float",
    _width,
    1.0,
    "Width multiplier of ShuffleNetV2: " + ", ".join(f"{w:g}" for w in SHUFFLENET_WIDTHS) + ".",
)

#: what every AFI model takes: stages with AFI blocks (Table 7), the reduction ratio r (Table 8),
#: recomputation in backward (Table 6)
AFI_OPTIONS = (AFI_STAGES, REDUCTION, MEMORY_EFFICIENT)
#: every model option by name, in the order --help lists them
MODEL_OPTIONS: dict[str, ModelOption] = {o.name: o for o in (*AFI_OPTIONS, ATTN, DROPOUT, WIDTH)}
#: names options had before (checkpoints and config files keep them): old -> current
LEGACY_NAMES = {"r": "reduction"}


def canonical_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` under the current names (:data:`LEGACY_NAMES`); the current name wins when a
    file has both."""
    out = dict(options)
    for old, new in LEGACY_NAMES.items():
        if old in out:
            value = out.pop(old)
            out.setdefault(new, value)
    return out


def fold_model_options(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the model options given at the top level (a flag, ``reduction = 8`` in a
    config file, ``afi_stages``/``r`` in a config written before 0.9) moved into
    ``model_kwargs``, under their current names; ``None`` (not given) dropped."""
    values = dict(values)
    flat = {k: values.pop(k) for k in [*MODEL_OPTIONS, *LEGACY_NAMES] if k in values}
    flat = {k: v for k, v in canonical_options(flat).items() if v is not None}
    kw = values.get("model_kwargs")
    if isinstance(kw, dict):
        values["model_kwargs"] = {**flat, **canonical_options(kw)}
    elif kw is None and flat:  # another type is left for its check to refuse
        values["model_kwargs"] = flat
    return values
