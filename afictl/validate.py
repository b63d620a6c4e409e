"""Every option's check, written once: the config loader and every command that takes it call it.

:func:`check_option` takes a value as it arrived (command line, config file, library call) and
returns it normalised, or raises :class:`~afictl.errors.UserError` with one line naming the
option, the value and what is accepted. Types are checked before ranges, so that a config file's
``epochs = "ten"`` is reported as such rather than failing later inside the training loop.
Free of torch, so that the command line can check its options before importing models.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import UserError

__all__ = [
    "AMP_CHOICES",
    "BAD_IMAGES_CHOICES",
    "BEST_OF_CHOICES",
    "DECODE_CHOICES",
    "INPUT_SIZE_RANGE",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "OPTION_CHECKS",
    "check_option",
    "check_options",
    "check_stages_of",
]

AMP_CHOICES = ("none", "bf16", "fp16")
BAD_IMAGES_CHOICES = ("skip", "stop")
LR_SCHEDULES = ("step", "cosine", "inv")
OPTIMIZERS = ("sgd", "adamw")
DECODE_CHOICES = ("auto", "pil", "pil-draft", "torchvision", "gpu")
BEST_OF_CHOICES = ("raw", "ema")
#: --aa: timm's RandAugment strings (rand-m9-mstd0.5, rand-m9-n2; afictl/data/transforms.py
#: parses them), TrivialAugment, AutoAugment with torchvision's policies
AA_FIXED = ("trivial", "autoaugment", "autoaugment-imagenet", "autoaugment-cifar10")
_AA_RAND = re.compile(r"rand(-m\d+(\.\d+)?|-n\d+|-mstd\d+(\.\d+)?)+")
#: inputs smaller than 8 pixels vanish in the first strided layers; larger than 4096 exhaust memory
INPUT_SIZE_RANGE = (8, 4096)
_SEED_LIMIT = 2**63


class _Invalid(Exception):
    """What is wrong with a value (the caller adds the option's name)."""


def _integer(value: Any, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, float) and value.is_integer():  # JSON/YAML `10.0`
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"must be an integer, got {value!r}")
    if lo is not None and value < lo:
        raise _Invalid(f"must be {'> 0' if lo == 1 else f'>= {lo}'}, got {value}")
    if hi is not None and value > hi:
        raise _Invalid(f"must be <= {hi}, got {value}")
    return value


def _number(value: Any, lo: float = 0.0, *, zero: bool = True, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(f"must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise _Invalid(f"must be a finite number, got {value}")
    if value < lo or (value == lo and not zero):
        raise _Invalid(f"must be {'>=' if zero else '>'} {lo:g}, got {value:g}")
    if hi is not None and value > hi:
        raise _Invalid(f"must be <= {hi:g}, got {value:g}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, got {value!r}")
    return value


def _path(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a path, got {value!r}")
    if "\0" in value or not value:
        raise _Invalid(f"must be a path, got {value!r}")
    if value.startswith("~"):
        try:
            Path(value).expanduser()
        except RuntimeError:  # `~name` of no known user
            raise _Invalid(f"{value!r}: {value.split('/', 1)[0]} is no known user's home") from None
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, got {value!r}")
    return value


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise _Invalid(f"must be one of {', '.join(choices)}, got {value!r}")
        return value.lower()

    return check


def _device(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise _Invalid(f"must be cpu, cuda, cuda:N or auto, got {value!r}")
    return value


def _milestones(value: Any) -> list | str:
    items = (
        value
        if isinstance(value, list | tuple)
        else [value]
        if isinstance(value, int | float | str)
        else None
    )
    if items is None or any(
        isinstance(v, bool) or not isinstance(v, int | float | str) for v in items
    ):
        raise _Invalid(f"takes epochs (30,60) or percent of training (50%,75%), got {value!r}")
    return list(value) if isinstance(value, list | tuple) else value


def _parse_stages(value: Any) -> list[int]:
    """``--afi-stages``: "1,2" (or "1 2"), a list of stage numbers, or one number -> sorted
    numbers."""
    if isinstance(value, str):
        items: list[Any] = [s for s in re.split(r"[,\s]+", value.strip()) if s]
        if not all(re.fullmatch(r"\+?\d+", s) for s in items):
            raise _Invalid(f"takes stage numbers like 1,2,3, got {value!r}")
        return sorted({int(s) for s in items})
    items = list(value) if isinstance(value, list | tuple) else [value]
    if any(
        isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and v.is_integer()))
        for v in items
    ):
        raise _Invalid(f"takes stage numbers like 1,2,3, got {value!r}")
    return sorted({int(v) for v in items})


def _stages(value: Any) -> list[int]:
    stages = _parse_stages(value)
    if any(s < 1 for s in stages):
        raise _Invalid(f"takes stage numbers from 1, got {value!r}")
    return stages


def check_stages_of(stages: list[int], arch: str, num_stages: int) -> list[int]:
    """``--afi-stages`` (already checked) against the model's stage count."""
    bad = [s for s in stages if s > num_stages]
    if bad:
        raise UserError(f"--afi-stages {bad[0]} out of range: {arch} has stages 1..{num_stages}")
    return stages


def _aa(value: Any) -> str:
    """``none`` stays a word (not None), so that ``--aa none`` overrides a recipe's policy."""
    if not isinstance(value, str):
        raise _Invalid(f"must be a policy name, got {value!r}")
    text = value.lower()
    if text in ("", "none"):
        return "none"
    if text in AA_FIXED or _AA_RAND.fullmatch(text):
        return text
    raise _Invalid(
        f"must be rand-m9-mstd0.5 (RandAugment, timm's notation), {', '.join(AA_FIXED)} "
        f"or none, got {value!r}"
    )


def _ema_decay(value: Any) -> float:
    value = _number(value, zero=False)
    if value >= 1:
        raise _Invalid(f"must be below 1 (e.g. 0.9998), got {value:g}")
    return value


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


def _positive(value: Any) -> int:
    return _integer(value, 1)


def _count(value: Any) -> int:
    return _integer(value, 0)


#: option (a :class:`~afictl.train.TrainConfig` field, or an option of eval) -> its check
OPTION_CHECKS: dict[str, Callable[[Any], Any]] = {
    "arch": _text,
    "dataset": _text,
    "recipe": _text,
    "data_root": _optional(_path),
    "download": _flag,
    "data_size": _optional(_positive),
    "input_size": _optional(lambda v: _integer(v, *INPUT_SIZE_RANGE)),
    "eval_split": _choice("eval"),
    "split": _choice("eval", "train"),
    "epochs": _positive,
    "batch_size": _positive,
    "lr": lambda v: _number(v, zero=False),
    "lr_reference_batch": _optional(_positive),
    "lr_milestones": _milestones,
    "lr_gamma": lambda v: _number(v, zero=False),
    "warmup_epochs": _number,
    "sched": _choice(*LR_SCHEDULES),
    "lr_schedule": _choice(*LR_SCHEDULES),  # the name of --sched before 0.3 (config files)
    "min_lr": _number,
    "opt": _choice(*OPTIMIZERS),
    "wd_norm_bias": _flag,
    "backbone_lr_mult": _number,
    "pretrained": _optional(_path),
    "momentum": _number,
    "weight_decay": _number,
    "nesterov": _flag,
    "label_smoothing": lambda v: _number(v, hi=1.0),
    "smoothing": lambda v: _number(v, hi=1.0),
    "mixup": _number,
    "cutmix": _number,
    "mixup_prob": lambda v: _number(v, hi=1.0),
    "aa": _optional(_aa),
    "reprob": lambda v: _number(v, hi=1.0),
    "model_ema": _flag,
    "model_ema_decay": _ema_decay,
    "best_of": _choice(*BEST_OF_CHOICES),
    "clip_grad": _optional(_number),  # 0: off (so that it can override a recipe)
    "grad_accum_steps": _positive,
    "checkpoint_hist": _count,
    "decode": _choice(*DECODE_CHOICES),
    "afi_stages": _optional(_stages),
    "reduction": _optional(_positive),
    "seed": lambda v: _integer(v, 0, _SEED_LIMIT - 1),
    "deterministic": _flag,
    "device": _device,
    "amp": _choice(*AMP_CHOICES),
    "channels_last": _flag,
    "compile": _flag,
    "sync_bn": _flag,
    "workers": _optional(_count),
    "threads": _optional(_positive),
    "bad_images": _choice(*BAD_IMAGES_CHOICES),
    "tensorboard": _optional(_flag),
    "run_dir": _optional(_path),
}


def check_option(name: str, value: Any, source: str | None = None) -> Any:
    """``value`` of option ``name`` normalised, or :class:`UserError`:
    ``--name must be ..., got ...`` (``SOURCE: name must be ...`` for a value read from a
    config file)."""
    try:
        return OPTION_CHECKS[name](value)
    except _Invalid as exc:
        label = f"{source}: {name}" if source else f"--{name.replace('_', '-')}"
        raise UserError(f"{label} {exc}") from None


def check_options(values: dict[str, Any], source: str | None = None) -> dict[str, Any]:
    """Every known option of ``values`` checked and normalised; ``None`` means "not given" and
    unknown keys pass through unchanged."""
    return {
        k: check_option(k, v, source) if k in OPTION_CHECKS and v is not None else v
        for k, v in values.items()
    }
