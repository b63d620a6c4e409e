"""Training configuration: the paper's recipes (section 4.3), a config file, CLI overrides.

Precedence: recipe < config file (TOML or JSON; YAML when PyYAML is installed) < command line.
The resolved configuration is a plain dict (``TrainConfig.to_dict``) written to
``<run>/config.json`` and stored in every checkpoint.

Recipes (section 4.3 of the paper):

- ``paper-cifar``: SGD momentum 0.9, weight decay 1e-4, batch 64, 300 epochs, lr 0.1 divided by
  10 at 50% and 75% of training.
- ``paper-imagenet``: SGD momentum 0.9, weight decay 1e-4, batch 64, 90 epochs,
  lr 0.1 x batch / 256, divided by 10 at epochs 30, 60 and 80.
- ``quick``: ours, for the generated ``shapes`` data: a few epochs that learn in a minute on a
  laptop CPU (batch 32, lr 0.05 with a short warm-up, weight decay 5e-4).
- ``modern-imagenet``: torchvision's "new" ResNet-50 recipe (references/classification, 2021)
  as far as afictl has its pieces; ``modern-cifar``: the same ideas at CIFAR scale (the sources
  of each value are in docs/TRAINING.md).

The recipes' values are declared with the options, in afictl/train/options.py (``RECIPES``:
``afictl train --help`` states them without importing torch); this module re-exports them.

The config is immutable once resolved: derived values (``num_classes``, ``world_size``, the
run folder) come in with :func:`dataclasses.replace`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..data import dataset_spec, resolve_data_root
from ..data.datasets import DATA_ENV
from ..errors import UserError
from ..model_options import MODEL_OPTIONS, fold_model_options
from ..models import check_model_options, get_model_info
from ..validate import LR_MAX, OPTION_CHECKS, check_option, check_options
from .options import (
    CONFIG_ALIASES,
    CONFIG_KEYS,
    RECIPES,
    RUNTIME_KEYS,
    TRAIN_OPTIONS,
    TrainOptions,
    long_flags,
)

__all__ = [
    "DERIVED_KEYS",
    "RECIPES",
    "RUNTIME_KEYS",
    "TrainConfig",
    "check_model_input_size",
    "default_recipe",
    "explain_config",
    "load_config_file",
    "parse_milestones",
    "resolve_config",
    "resolve_config_sources",
]

#: Fields derived by the run, written to config.json but never read from a config file.
DERIVED_KEYS = frozenset({"lr_effective", "num_classes", "world_size", "run_dir"})


@dataclass(frozen=True)
class TrainConfig(TrainOptions):
    """Everything a run depends on: the options (:class:`~afictl.train.options.TrainOptions`,
    one declaration each) and what the run derives from them. ``None`` fields are filled in by
    :func:`resolve_config`."""

    num_classes: int | None = None
    world_size: int = 1

    @property
    def effective_batch(self) -> int:
        """Images per optimizer step: the global batch times the accumulation steps."""
        return self.batch_size * self.grad_accum_steps

    @property
    def lr_effective(self) -> float:
        """The learning rate actually used (``paper-imagenet`` scales it by batch / 256)."""
        return (
            self.lr * self.effective_batch / self.lr_reference_batch
            if self.lr_reference_batch
            else self.lr
        )

    @property
    def lr_schedule(self) -> str:
        """The name of :attr:`sched` before it was renamed (kept for readers)."""
        return self.sched

    @property
    def augment_policy(self) -> str | None:
        """``aa`` for the data pipeline: ``None`` when off."""
        return None if self.aa in (None, "none") else self.aa

    @property
    def mixing(self) -> bool:
        return self.mixup_prob > 0 and (self.mixup > 0 or self.cutmix > 0)

    def milestone_epochs(self) -> list[float]:
        return parse_milestones(self.lr_milestones, self.epochs)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (stored in checkpoints read with ``weights_only=True``)."""
        d = asdict(self)
        d["lr_effective"] = self.lr_effective
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The config of ``d`` (a config.json, a checkpoint's config: also those written before
        a field was renamed, e.g. ``lr_schedule``, or before the model options moved into
        ``model_kwargs``); unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in current_names(d).items() if k in names})


def current_names(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (flags, a config file, a stored config) under the fields' current names: the
    older spellings of :data:`~afictl.train.options.CONFIG_ALIASES` renamed, the model options
    moved into ``model_kwargs`` (:func:`~afictl.model_options.fold_model_options`)."""
    return fold_model_options({CONFIG_ALIASES.get(k, k): v for k, v in values.items()})


def parse_milestones(items: list | str | None, epochs: int) -> list[float]:
    """``["50%", 75%"]`` or ``[30, 60]`` (or "30,60") -> epochs at which the lr is multiplied
    by ``lr_gamma``; percentages are of ``epochs``."""
    if items is None or items == "":
        return []
    if isinstance(items, str):
        items = [s for s in items.replace(" ", ",").split(",") if s]
    out = []
    for item in items:
        text = str(item).strip()
        try:
            value = float(text[:-1]) / 100 * epochs if text.endswith("%") else float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise UserError(
                f"bad lr milestone {text!r}: use epochs (30) or percent of training (50%)"
            )
        out.append(value)
    return sorted(out)


def default_recipe(dataset: str, input_size: int) -> str:
    """The paper's recipe for the data: ImageNet-sized inputs get ``paper-imagenet``,
    CIFAR-sized ones ``paper-cifar``; the generated datasets get ``quick``."""
    if dataset in ("shapes", "synthetic"):
        return "quick"
    return "paper-imagenet" if input_size > 64 else "paper-cifar"


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Keys of a TOML, JSON (e.g. a previous run's config.json) or YAML file, as TrainConfig
    fields: a key is a field or a long option name of ``afictl train`` (``data``, ``data-size``,
    ``batch_size``: :data:`~afictl.train.options.CONFIG_KEYS`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} cannot be read: {str(exc).splitlines()[0]}") from None
    try:
        data = _parse_config(path, text)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{path} cannot be parsed: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold key = value pairs")
    if not all(isinstance(k, str) for k in data):
        raise UserError(f"{path}: keys must be names, got {sorted(map(repr, data))[0]}")
    return _config_fields(path, data)


def _parse_config(path: Path, text: str) -> Any:
    """The parsed file; a key written twice is refused where the parser would keep the last."""
    if path.suffix == ".toml":
        import tomllib  # refuses a repeated key itself

        return tomllib.loads(text)
    if path.suffix == ".json":
        return json.loads(text, object_pairs_hook=lambda pairs: _once(path, pairs))
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml  # optional: only when PyYAML is installed
        except ImportError:
            raise UserError(
                f"{path}: YAML needs PyYAML (pip install pyyaml); or write TOML"
            ) from None
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if isinstance(node, yaml.MappingNode):
            _once(path, [(k.value, None) for k, _ in node.value])
        return yaml.safe_load(text)
    raise UserError(f"{path}: unknown config format; use .toml, .json or .yaml")


def _once(path: Path, pairs: list[tuple[Any, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    twice = next((k for k in keys if keys.count(k) > 1), None)
    if twice is not None:
        raise UserError(f"{path}: key {twice!r} is given twice; keep one")
    return dict(pairs)


def _config_fields(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """``data``'s keys as fields; one line for an unknown key (with the closest names) and for
    two keys that set the same field. A run's derived keys (config.json) are dropped."""
    accepted = {**CONFIG_KEYS, **{f.name: f.name for f in fields(TrainConfig)}}
    accepted.update({k: k for k in DERIVED_KEYS})
    unknown = [k for k in data if k.replace("-", "_") not in accepted]
    if unknown:
        raise UserError(f"{path}: unknown keys {', '.join(_guess(k, accepted) for k in unknown)}")
    out: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for key, value in data.items():
        name = accepted[key.replace("-", "_")]
        if name in seen:
            raise UserError(f"{path}: {seen[name]!r} and {key!r} both set {name}; keep one")
        seen[name], out[name] = key, value
    return {k: v for k, v in out.items() if k not in DERIVED_KEYS}


def _guess(key: str, accepted: dict[str, str]) -> str:
    """``key (did you mean 'name'?)`` with the closest accepted name, spelt as ``key`` is."""
    import difflib

    names = [k for k in accepted if k not in DERIVED_KEYS]  # those are read and dropped
    close = difflib.get_close_matches(key.replace("-", "_"), names, n=1)
    if not close:
        return f"{key} (the keys are afictl train's long option names)"
    name = close[0].replace("_", "-") if "-" in key else close[0]
    return f"{key} (did you mean {name!r}?)"


def _check(cfg: TrainConfig) -> TrainConfig:
    """Every value's type and range (afictl/validate.py, one check per option), then what
    depends on two of them; returns the normalised config."""
    cfg = replace(
        cfg,
        **{
            f.name: check_option(f.name, getattr(cfg, f.name))
            for f in fields(cfg)
            if f.name in OPTION_CHECKS
        },
    )
    cfg = replace(cfg, model_kwargs=check_model_options(cfg.arch, cfg.model_kwargs))
    parse_milestones(cfg.lr_milestones, cfg.epochs)
    _check_lr(cfg)
    _check_accumulation(cfg)
    if cfg.best_of == "ema" and not cfg.model_ema:
        raise UserError("--best-of ema needs --model-ema")
    if cfg.decode == "gpu" and cfg.device == "cpu":
        raise UserError("--decode gpu needs a CUDA device; use --decode auto on CPU")
    return cfg


def _check_lr(cfg: TrainConfig) -> None:
    """The scaled lr finite and at most LR_MAX, and --min-lr (where cosine ends) not above it."""
    scaled = f" (--lr {cfg.lr:g} x batch {cfg.effective_batch} / {cfg.lr_reference_batch})"
    scaled = scaled if cfg.lr_reference_batch else ""
    if not math.isfinite(cfg.lr_effective) or cfg.lr_effective > LR_MAX:
        raise UserError(
            f"the learning rate {cfg.lr_effective:g}{scaled} must be <= {LR_MAX:g}; lower --lr"
        )
    if cfg.min_lr > cfg.lr_effective:
        raise UserError(
            f"--min-lr {cfg.min_lr:g} must be <= the learning rate {cfg.lr_effective:g}{scaled}"
        )


def _check_accumulation(cfg: TrainConfig) -> None:
    """--grad-accum-steps at most the batches of an epoch, where the size is known from
    --data-size (a lower bound of the split's batches: a subset may hold fewer images)."""
    if cfg.data_size is None or cfg.grad_accum_steps == 1:
        return
    batches = max(1, cfg.data_size // cfg.batch_size)
    check_accumulation(cfg, batches, f"{cfg.data_size} images / batch {cfg.batch_size}")


def check_accumulation(cfg: TrainConfig, batches: int, how: str) -> None:
    """--grad-accum-steps no larger than ``batches``, the batches of an epoch (``how``: where
    that number comes from); else the lr would be scaled for batches that never come."""
    if cfg.grad_accum_steps > batches:
        raise UserError(
            f"--grad-accum-steps {cfg.grad_accum_steps} must be <= the batches of an epoch, "
            f"{batches} ({how})"
        )


def _check_input_size(cfg: TrainConfig) -> None:
    """An input size other than the model's own: see :func:`check_model_input_size`."""
    if cfg.input_size != get_model_info(cfg.arch).input_size:
        check_model_input_size(cfg.arch, cfg.input_size, cfg.model_kwargs)


def check_model_input_size(
    arch: str, size: int, model_kwargs: dict[str, Any] | None = None, option: str = "--input-size"
) -> None:
    """``size``-pixel inputs through ``arch``, or one line: at least the model's total stride
    (its last feature map at least 1 pixel), then one forward pass on the meta device (shapes
    only, milliseconds) shows whether the network takes it (the AFI ImageNet ResNets need stage
    maps that line up: 224 and 96 do, 100 does not)."""
    import torch

    from ..models.registry import create_meta_model

    model = create_meta_model(arch, num_classes=2, **(model_kwargs or {})).eval()
    stride = int(model.feature_info[-1]["reduction"])
    if size < stride:
        raise UserError(
            f"{option} {size}: {arch} needs at least {stride} pixels (its total stride); "
            f"use {stride} or more"
        )
    try:
        with torch.no_grad():
            model(torch.empty(2, 3, size, size, device="meta"))
    except (RuntimeError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:100]
        raise UserError(
            f"{option} {size}: {arch} cannot take {size}-pixel inputs ({reason}); "
            "multiples of 32 work"
        ) from None


def resolve_config(options: dict[str, Any], config_file: str | Path | None = None) -> TrainConfig:
    """Recipe < config file < ``options`` (the CLI's explicitly given values; ``None`` = not given).

    Fills the dataset (the architecture's home dataset), the input size (the files' size, else the
    model's), the recipe (the paper's for the data) and checks every value.
    """
    return resolve_config_sources(options, config_file)[0]


def resolve_config_sources(
    options: dict[str, Any], config_file: str | Path | None = None
) -> tuple[TrainConfig, dict[str, str]]:
    """:func:`resolve_config`, and where each field's value came from: ``flag``, ``config file
    PATH``, ``recipe NAME``, ``derived: ...`` or ``default`` (``afictl train --dry-run``)."""
    merged, sources = _given(options, config_file)
    if not merged.get("arch"):
        raise UserError("--arch is required (see `afictl models`)")
    info = get_model_info(merged["arch"])
    fills, notes = _fills(merged, info)
    dataset, recipe = fills["dataset"], fills["recipe"]
    if recipe not in RECIPES:
        raise UserError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    values = {**RECIPES[recipe], **merged, **fills}
    sources = {**dict.fromkeys(RECIPES[recipe], f"recipe {recipe}"), **sources, **notes}
    if values.get("amp") is None:
        values["amp"] = "none"
    root = resolve_data_root(dataset, values.get("data_root"))  # recorded, for the analyses
    values["data_root"] = str(root) if root is not None else None
    if root is not None and "data_root" not in merged:
        where = f"${DATA_ENV}/{dataset}" if os.environ.get(DATA_ENV) else f"./data/{dataset}"
        sources["data_root"] = f"default: {where}"
    if values.get("data_size") is None and dataset == "shapes":
        values["data_size"] = dataset_spec(dataset).default_size
        sources["data_size"] = f"derived: the default size of {dataset}"
    try:
        cfg = TrainConfig.from_dict(values)
    except TypeError as exc:
        raise UserError(f"bad configuration: {exc}") from None
    cfg = _check(cfg)
    _check_input_size(cfg)
    return cfg, {
        k: sources.get(k, "default") for k in [*(f.name for f in fields(cfg)), *MODEL_OPTIONS]
    }


def _given(
    options: dict[str, Any], config_file: str | Path | None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The values given, the command line's over the config file's, and where each came from."""
    # Types and ranges first, each value named with where it came from: a config file's
    # `epochs = "ten"` is one line here, not a TypeError in the training loop. None: not given.
    layers = [(check_options(options), "flag")]
    if config_file:
        from_file = check_options(load_config_file(config_file), str(config_file))
        layers.insert(0, (from_file, f"config file {config_file}"))
    merged: dict[str, Any] = {"model_kwargs": {}}
    sources: dict[str, str] = {}
    for values, source in layers:
        values = current_names(values)  # model_kwargs: a dict, checked by check_options
        kw = values.pop("model_kwargs", None) or {}
        merged["model_kwargs"].update(kw)
        sources.update(dict.fromkeys(kw, source))
        for key, value in values.items():
            if value is not None:
                merged[key], sources[key] = value, source
    return merged, sources


def _fills(merged: dict[str, Any], info: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The dataset, input size and recipe (given, or derived from the model and the data), and
    how each one not given was derived."""
    dataset = merged.get("dataset") or info.home_dataset
    spec = dataset_spec(dataset)
    input_size, how = next(
        (v, how)
        for v, how in (
            (merged.get("input_size"), ""),
            (spec.native_size, f"the image size of {dataset}"),
            (info.input_size, f"the input size of {info.name}"),
        )
        if v is not None
    )
    recipe = merged.get("recipe") or default_recipe(dataset, input_size)
    notes = {
        "dataset": f"derived: the home dataset of {info.name}",
        "input_size": f"derived: {how}",
        "recipe": f"derived: the default for {dataset} at {input_size} pixels",
    }
    fills = {"dataset": dataset, "input_size": int(input_size), "recipe": recipe}
    return fills, {k: v for k, v in notes.items() if not merged.get(k)}


def explain_config(cfg: TrainConfig, sources: dict[str, str]) -> list[dict[str, Any]]:
    """One (option, value, source) row per option of ``afictl train``, in the table's order,
    and the learning rate actually used when the batch scales it (``--dry-run``)."""
    rows = []
    takes = get_model_info(cfg.arch).options
    for spec in TRAIN_OPTIONS:
        if spec.model and spec.field not in takes:
            continue
        value = (
            cfg.model_kwargs.get(spec.field, spec.default)
            if spec.model
            else getattr(cfg, spec.field)
        )
        option = f"--{long_flags(spec)[0]}"
        rows.append(dict(option=option, value=value, source=sources.get(spec.field, "default")))
        if spec.field == "lr" and cfg.lr_reference_batch:
            how = f"derived: --lr x {cfg.effective_batch} / {cfg.lr_reference_batch}"
            rows.append(dict(option="lr (effective)", value=cfg.lr_effective, source=how))
    return rows


def default_workers(dataset: str) -> int:
    """In-memory data needs no worker processes; files get up to 8."""
    if dataset in ("shapes", "synthetic"):
        return 0
    return min(8, os.cpu_count() or 1)
