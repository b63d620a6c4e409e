"""The model registry: one name -> one builder plus the metadata every command needs.

Like torchvision's and timm's registries: a decorator that refuses duplicate names, a
``list_models`` with wildcards, and ``create_model(name, **kwargs)``.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import checks
from ..errors import ModelOptionError, UnknownModelError
from ..model_options import AFI_OPTIONS, MODEL_OPTIONS, ModelOption, canonical_options
from .features import FeatureNet

__all__ = [
    "AFI_OPTIONS",
    "ModelInfo",
    "UnknownModelError",
    "check_model_options",
    "counterpart",
    "create_meta_model",
    "create_model",
    "get_model_info",
    "list_models",
    "options_of",
    "pretrained_cfg",
    "register_model",
]


@dataclass(frozen=True)
class ModelInfo:
    """What the tools know about a registered name without building the model (declared once,
    at registration; tests/test_models.py checks the counts against the built models)."""

    name: str
    family: str
    input_size: int
    home_dataset: str  # "cifar100" for 32-pixel models, "imagenet" for 224-pixel ones
    num_classes: int
    baseline: str | None  # the baseline of an AFI model; None for baselines
    builder: Callable[..., nn.Module]
    num_stages: int  # residual stages conv1..convK
    num_params: int  # parameters at the home dataset's number of classes
    #: the keyword options the builder takes besides num_classes (afictl/model_options.py)
    options: dict[str, ModelOption]

    @property
    def is_afi(self) -> bool:
        return self.baseline is not None

    @property
    def stage_names(self) -> list[str]:
        """The paper's names of the stages: conv1..convK."""
        return [f"conv{i}" for i in range(1, self.num_stages + 1)]


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    *,
    family: str,
    input_size: int,
    num_stages: int,
    num_params: int,
    baseline: str | None = None,
    options: tuple[ModelOption, ...] = (),
    name: str | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under its function name (or ``name``), with what it accepts and measures.

    An AFI model (one with a ``baseline``) takes :data:`AFI_OPTIONS` besides ``options``.
    """
    if input_size not in (32, 224):
        raise ValueError("input_size must be 32 (CIFAR) or 224 (ImageNet)")

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is already registered")
        cifar = input_size == 32
        _REGISTRY[key] = ModelInfo(
            name=key,
            family=family,
            input_size=input_size,
            home_dataset="cifar100" if cifar else "imagenet",
            num_classes=100 if cifar else 1000,
            baseline=baseline,
            builder=fn,
            num_stages=num_stages,
            num_params=num_params,
            options={o.name: o for o in ((*AFI_OPTIONS, *options) if baseline else options)},
        )
        return fn

    return wrap


def _pattern(pattern: str) -> str:
    """A pattern as fnmatch reads it, lowercased: a bare word (no ``*``, ``?`` or ``[``)
    matches as a substring (``afi`` -> ``*afi*``), as ``pip list | grep`` does."""
    pattern = pattern.lower()
    return pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"


def list_models(
    include: str | list[str] = "*", exclude: str | list[str] | None = None
) -> list[str]:
    """Registered names matching any ``include`` pattern and no ``exclude`` pattern, sorted.

    Patterns are case-insensitive; ``*`` and ``?`` are wildcards (fnmatch, as timm's
    ``list_models``) and a bare word matches anywhere in the name (``"afi"``, ``"resnet5"``).
    """
    inc = [_pattern(p) for p in ([include] if isinstance(include, str) else include)]
    exc = [_pattern(p) for p in ([exclude] if isinstance(exclude, str) else (exclude or []))]
    names = [n for n in _REGISTRY if any(fnmatch.fnmatchcase(n.lower(), p) for p in inc)]
    names = [n for n in names if not any(fnmatch.fnmatchcase(n.lower(), p) for p in exc)]
    return sorted(names, key=_natural_key)


def _natural_key(name: str) -> tuple:
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def get_model_info(name: str) -> ModelInfo:
    """Metadata of a registered name; :class:`UnknownModelError` with suggestions otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `afictl models`"
        raise UnknownModelError(f"unknown architecture {name!r}{hint}") from None


def counterpart(name: str) -> str | None:
    """The baseline of an AFI model, or the AFI model built on a baseline (first by name)."""
    info = get_model_info(name)
    if info.baseline:
        return info.baseline
    afi = [n for n, i in _REGISTRY.items() if i.baseline == name]
    return sorted(afi, key=len)[0] if afi else None


def create_model(
    name: str,
    num_classes: int | None = None,
    *,
    features_only: bool = False,
    out_indices: int | Sequence[int] | None = None,
    in_chans: int = 3,
    drop_rate: float | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model, with its ``pretrained_cfg`` (its eval preprocessing).

    ``num_classes``: None, the home dataset's; 0, no classifier (the model returns pooled
    features of size ``num_features``). ``features_only``: a
    :class:`~afictl.models.features.FeatureNet` returning the feature maps of the stages
    ``out_indices`` (timm's convention; default all). ``in_chans``: input channels (a fresh
    first convolution). ``drop_rate``: dropout before the classifier (the family's own
    ``dropout`` option where it has one). Options other than the registered ones are refused
    with one line naming those it takes.
    """
    info = get_model_info(name)
    kwargs = _with_drop_rate(info, check_model_options(name, kwargs, legacy=False), drop_rate)
    kwargs = {o.name: o.default for o in info.options.values()} | kwargs
    if out_indices is not None and not features_only:
        raise ModelOptionError(f"out_indices applies to features_only=True models ({name})")
    num_classes = info.num_classes if num_classes is None else num_classes
    if num_classes < 0:
        raise ModelOptionError(f"num_classes must be >= 0 (0: no classifier), got {num_classes}")
    model = info.builder(num_classes=num_classes, **kwargs)
    model.arch = name  # type: ignore[assignment]
    if drop_rate and "dropout" not in info.options:
        model.drop_rate = drop_rate
    if in_chans != 3:
        model.set_in_chans(in_chans)
    return FeatureNet(model, out_indices) if features_only else model


#: the options only AFI blocks have
AFI_NAMES = frozenset(o.name for o in MODEL_OPTIONS.values() if o.afi)


def check_model_options(
    name: str, options: dict[str, Any], *, legacy: bool = True
) -> dict[str, Any]:
    """``options`` of model ``name``, each value checked and normalised by its declaration
    (afictl/model_options.py); :class:`ModelOptionError` (one line naming the option) for an
    option the model does not take or a value out of range. ``legacy``: options read from a
    file (checkpoint, config) may have the names they had before, returned under the current
    ones; :func:`create_model` takes the current names only."""
    info = get_model_info(name)
    options = canonical_options(options) if legacy else options
    unknown = sorted(str(k) for k in set(options) - set(info.options))
    if unknown:
        takes = ", ".join(info.options) if info.options else "no options besides num_classes"
        afi = not info.is_afi and all(k in AFI_NAMES for k in unknown)
        note = " (it has no AFI modules)" if afi else ""
        raise ModelOptionError(f"{name} does not take {', '.join(unknown)}; it takes {takes}{note}")
    out = {}
    for key, value in options.items():
        try:
            out[key] = None if value is None else info.options[key].check(value)
        except checks.Invalid as exc:
            raise ModelOptionError(f"{name}: {key} {exc}") from None
    bad = [s for s in out.get("afi_stages") or () if s > info.num_stages]
    if bad:
        raise ModelOptionError(
            f"afi_stages {bad[0]} out of range: {name} has stages 1..{info.num_stages}"
        )
    return out


def options_of(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``options`` that model ``name`` takes: given to an AFI model and its
    baseline, the baseline gets those they share (``width``, ``dropout``), so that the pair
    differs only by AFI."""
    takes = get_model_info(name).options
    return {k: v for k, v in options.items() if k in takes}


def _with_drop_rate(info: ModelInfo, kwargs: dict[str, Any], drop_rate: float | None) -> dict:
    """timm's ``drop_rate`` as the family's ``dropout`` option where it has one."""
    if drop_rate is None:
        return kwargs
    if not 0.0 <= drop_rate < 1.0:
        raise ModelOptionError(f"drop_rate must be in [0, 1), got {drop_rate}")
    if "dropout" in info.options:
        if kwargs.get("dropout", drop_rate) != drop_rate:
            raise ModelOptionError("give drop_rate or dropout, not both with different values")
        return {**kwargs, "dropout": drop_rate}
    return kwargs


def pretrained_cfg(model: nn.Module) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` of a model made by :func:`create_model`: the input side is
    afictl's eval pipeline for its home dataset (:func:`~afictl.data.transforms.preprocessing`),
    the rest the model's (``Backbone.pretrained_cfg`` makes it on first use)."""
    # imported here: the data package imports torchvision (~1.5 s), which counting does not need
    from ..data.transforms import preprocessing

    if getattr(model, "arch", None) is None:
        raise AttributeError("pretrained_cfg: the model was not made by create_model")
    info = get_model_info(model.arch)
    cfg = preprocessing(info.home_dataset, info.input_size)
    if model.in_chans != 3:
        # afictl has statistics for RGB only: each channel gets the average of the three
        cfg["input_size"] = (model.in_chans, *cfg["input_size"][1:])
        for key in ("mean", "std"):
            cfg[key] = (sum(cfg[key]) / 3,) * model.in_chans
    pool = info.input_size // model.feature_info[-1]["reduction"]
    return {
        "architecture": info.name,
        **cfg,
        "fixed_input_size": False,
        "num_classes": model.num_classes,
        "pool_size": (pool, pool),
        "first_conv": model.first_conv_path,
        "classifier": model.classifier_path,
    }


def create_meta_model(name: str, num_classes: int | None = None, **kwargs) -> nn.Module:
    """A registered model on the ``meta`` device: shapes only, no memory, no initialisation.

    What counting needs (``afictl models``, ``flops``, the ``memory`` account). Nothing global
    is patched (safe beside other threads): the families' initialisers skip a meta model
    (``Backbone.is_meta``), and the default ones of ``nn.Conv2d``/``nn.Linear``/norms are
    shape-only on meta.
    """
    with torch.device("meta"):
        return create_model(name, num_classes=num_classes, **kwargs)
