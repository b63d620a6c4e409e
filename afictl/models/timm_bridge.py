"""afictl's models in timm's registry: ``timm.create_model("afi_resnet50", ...)``.

Every afictl name is registered in timm under its own name, except the names timm already has
(read from ``timm.list_models()`` before ours are added: resnet50, resnet101, resnet152,
resnext50_32x4d with timm 1.0), which get the prefix :data:`PREFIX`
(``timm.create_model("afictl_resnet50")``). ``timm.list_models(module="timm_bridge")`` lists
them; each has a registry cfg (``timm.models.get_pretrained_cfg``) without weights.

timm is optional, and importing it costs about a second and imports torch._dynamo, which the
commands that only list or count models avoid. So importing afictl.models does not import
timm: :func:`install` registers at once if timm is already imported, else right after timm's
own import runs (a one-time import hook), so that ``import afictl.models; import timm`` and the
other order both work.

An entrypoint takes timm's keyword arguments and passes each to afictl's ``create_model`` or
refuses it in one line (:class:`~afictl.models.ModelOptionError`, a ValueError): no
``pretrained`` weights (nothing is downloaded; afictl.weights loads files), no stochastic depth
(``drop_path_rate``), no dilation (``output_stride`` other than the model's own), global average
pooling only, NCHW feature lists only.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from ..errors import ModelOptionError
from .registry import create_model, get_model_info, list_models

__all__ = ["PREFIX", "REGISTERED", "create_timm_model", "install", "register", "timm_name"]

#: prefix of the afictl models whose names timm already has
PREFIX = "afictl_"
#: timm name -> afictl name, once registered
REGISTERED: dict[str, str] = {}
#: read by ``timm.models.register_model``: the registry cfg of each name (module-level by contract)
default_cfgs: dict[str, Any] = {}


def timm_name(name: str) -> str:
    """The name afictl's model ``name`` has in timm's registry (after :func:`register`)."""
    for key, value in REGISTERED.items():
        if value == name:
            return key
    raise KeyError(f"{name!r} is not registered in timm (is timm installed and imported?)")


def register() -> dict[str, str]:
    """Register every afictl model in timm's registry (once); returns timm name -> afictl name."""
    if REGISTERED:
        return REGISTERED
    import timm
    from timm.models import generate_default_cfgs, is_model, register_model

    ours = list_models()
    taken = set(timm.list_models()) | {n for n in ours if is_model(n)}
    names = {(PREFIX + n if n in taken else n): n for n in ours}
    clash = sorted(t for t in names if t in taken)
    if clash:
        raise RuntimeError(f"timm already has {', '.join(clash)}: afictl cannot register them")
    default_cfgs.update(generate_default_cfgs({t: _registry_cfg(n) for t, n in names.items()}))
    module = sys.modules[__name__]
    for key, name in names.items():
        entry = _entrypoint(key, name)
        setattr(module, key, entry)  # timm lists it in this module's __all__
        register_model(entry)
    REGISTERED.update(names)
    return REGISTERED


def _registry_cfg(name: str) -> dict[str, Any]:
    """A name's cfg in timm's registry: the input side of the model's ``pretrained_cfg``
    (first_conv and classifier need a built model: they are on the model's cfg only)."""
    from ..data.transforms import preprocessing

    info = get_model_info(name)
    kind = f"AFI model on {info.baseline}" if info.baseline else "baseline"
    return {
        **preprocessing(info.home_dataset, info.input_size),
        "num_classes": info.num_classes,
        "description": f"afictl {name} ({info.family}, {kind}); no pretrained weights",
    }


def _entrypoint(key: str, name: str) -> Callable[..., nn.Module]:
    def entry(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return create_timm_model(name, pretrained=pretrained, architecture=key, **kwargs)

    entry.__name__ = entry.__qualname__ = key
    entry.__module__ = __name__
    entry.__doc__ = f"afictl's {name} through timm.create_model (see afictl.models.timm_bridge)."
    return entry


def create_timm_model(
    name: str,
    *,
    pretrained: bool = False,
    pretrained_cfg: Any = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    architecture: str | None = None,
    device: Any = None,
    dtype: torch.dtype | None = None,
    **kwargs: Any,
) -> nn.Module:
    """afictl's ``create_model`` with timm's keyword arguments (each taken or refused in one
    line); ``architecture``: the name in timm's registry, recorded in ``pretrained_cfg``."""
    if pretrained:
        raise ModelOptionError(
            f"{name} has no pretrained weights (nothing is downloaded); pass pretrained=False "
            "or load a file with afictl.weights"
        )
    overlay = {**_cfg_overlay(name, pretrained_cfg), **(pretrained_cfg_overlay or {})}
    kwargs = _afictl_kwargs(name, kwargs)
    output_stride = kwargs.pop("output_stride", None)
    with torch.device(device) if device is not None else nullcontext():
        model = create_model(name, **kwargs)
    stride = model.feature_info[-1]["reduction"]  # the last stage's, features_only or not
    if output_stride not in (None, stride):
        raise ModelOptionError(
            f"output_stride {output_stride}: {name} has output stride {stride} only "
            "(no dilated stages)"
        )
    if dtype is not None:
        model.to(dtype=dtype)
    model.pretrained_cfg.update({"architecture": architecture or name, **overlay})
    return model


def _cfg_overlay(name: str, pretrained_cfg: Any) -> dict[str, Any]:
    """An explicit ``pretrained_cfg`` (dict or timm's PretrainedCfg): its set fields, laid over
    the model's own; a tag (``"afi_resnet20.tag"``) is refused: there are none."""
    if pretrained_cfg is None:
        return {}
    if isinstance(pretrained_cfg, str):
        raise ModelOptionError(f"{name} has no pretrained tags (got {pretrained_cfg!r})")
    if hasattr(pretrained_cfg, "to_dict"):
        pretrained_cfg = pretrained_cfg.to_dict()
    return {k: v for k, v in dict(pretrained_cfg).items() if v is not None}


#: timm's keyword arguments and the value(s) under which afictl takes them as no-ops
_NO_OPS = {
    "cache_dir": None,  # nothing is downloaded
    "drop_path_rate": (0, 0.0),
    "global_pool": ("avg",),
    "feature_cls": ("list", "getter"),
    "output_fmt": ("NCHW",),
}
_REFUSED = {
    "drop_path_rate": "has no stochastic depth; pass drop_path_rate=0 or leave it out",
    "global_pool": "pools by average only (global_pool='avg')",
    "feature_cls": "returns a list of feature maps (feature_cls='list')",
    "output_fmt": "gives NCHW feature maps only (output_fmt='NCHW')",
}


def _afictl_kwargs(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """timm's arguments that afictl's ``create_model`` takes as they are, the no-ops dropped,
    the rest refused in one line; family options pass through (and are checked there)."""
    out = {}
    for key, value in kwargs.items():
        if key not in _NO_OPS:
            out[key] = value
        elif key != "cache_dir" and value not in _NO_OPS[key]:
            raise ModelOptionError(f"{key}={value!r}: {name} {_REFUSED[key]}")
    if out.get("in_chans") is None:
        out.pop("in_chans", None)
    return out


class _RegisteringLoader(importlib.abc.Loader):
    """timm's own loader, followed by :func:`register` once timm's import has run."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        # timm's own loader from here on (importlib.resources and reloads read it)
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        if _FINDER in sys.meta_path:
            sys.meta_path.remove(_FINDER)
        _register_or_warn()


class _TimmImportHook(importlib.abc.MetaPathFinder):
    """Finds timm as the other finders do, with a loader that registers afictl's models."""

    searching = False

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "timm" or self.searching:
            return None
        self.searching = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.searching = False
        if spec is None or spec.loader is None:
            return None
        spec.loader = _RegisteringLoader(spec.loader)
        return spec


_FINDER = _TimmImportHook()


def _register_or_warn() -> None:
    # A timm whose registry API changed must not break afictl (or the import of timm).
    try:
        register()
    except Exception as exc:
        warnings.warn(f"afictl's models are not in timm's registry: {exc}", stacklevel=2)


def install() -> None:
    """Register afictl's models in timm now if timm is imported, else when it is (if installed)."""
    if sys.modules.get("timm") is not None:  # None: timm's import is blocked
        _register_or_warn()
    elif _FINDER not in sys.meta_path and importlib.util.find_spec("timm") is not None:
        sys.meta_path.insert(0, _FINDER)
