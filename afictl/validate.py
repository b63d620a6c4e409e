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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .train.recipes import RECIPE_NAMES

__all__ = [
    "AMP_CHOICES",
    "BAD_IMAGES_CHOICES",
    "BEST_OF_CHOICES",
    "DECODE_CHOICES",
    "PIPELINE_CHOICES",
    "EXPORT_MAX_BATCH",
    "INPUT_SIZE_RANGE",
    "LR_MAX",
    "LR_SCHEDULES",
    "MIX_ALPHA_RANGE",
    "NUMERIC_BOUNDS",
    "OPTIMIZERS",
    "OPTION_CHECKS",
    "SEED_MAX",
    "THREADS_MAX",
    "Bound",
    "BENCH_BATCH",
    "EXPORT_BATCH",
    "EXPORT_TOLERANCE",
    "check_option",
    "check_options",
    "check_value",
    "check_stages_of",
]

AMP_CHOICES = ("none", "bf16", "fp16")
BAD_IMAGES_CHOICES = ("skip", "stop")
LR_SCHEDULES = ("step", "cosine", "inv")
OPTIMIZERS = ("sgd", "adamw")
DECODE_CHOICES = ("auto", "pil", "pil-draft", "torchvision", "gpu")
#: the input pipelines of afictl/data/pipeline.py
PIPELINE_CHOICES = ("auto", "tensor", "loader")
BEST_OF_CHOICES = ("raw", "ema")
#: --aa: timm's RandAugment strings (rand-m9-mstd0.5, rand-m9-n2; afictl/data/transforms.py
#: parses them), TrivialAugment, AutoAugment with torchvision's policies
AA_FIXED = ("trivial", "autoaugment", "autoaugment-imagenet", "autoaugment-cifar10")
_AA_RAND = re.compile(r"rand(-m\d+(\.\d+)?|-n\d+|-mstd\d+(\.\d+)?)+")
#: inputs smaller than 8 pixels vanish in the first strided layers; larger than 4096 exhaust memory
INPUT_SIZE_RANGE = (8, 4096)
#: --seed: the loader reseeds with seed x 100003 + epoch and DDP ranks with seed + 1000 x rank;
#: up to 2^32 - 1 (NumPy's range) these stay far inside torch.manual_seed's 64 bits
SEED_MAX = 2**32 - 1
#: --lr, --min-lr and the scaled lr: finite in float32 once multiplied by gradients and the
#: schedule (1e39 overflowed to inf in SGD's update)
LR_MAX = 1000.0
#: --mixup/--cutmix alphas other than 0 (off): Beta(alpha, alpha) needs alpha > 0 in float32
#: (1e-50 is 0 there), and a huge alpha is inf
MIX_ALPHA_RANGE = (1e-6, 1000.0)
#: --threads: torch.set_num_threads of more fails (100000 raised inside OpenMP)
THREADS_MAX = 1024
#: afictl export/bench --batch-size: the export's dynamic batch dimension ends at 2^16
#: (afictl.export.MAX_BATCH is this) and verification runs batch + 1
EXPORT_MAX_BATCH = 1 << 16


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


@dataclass(frozen=True)
class Bound:
    """The range of a numeric option, declared once: ``lo``..``hi`` (``None``: no upper end),
    each end included unless ``*_open``; ``integer``: integers only; ``off``: a value below
    ``lo`` that switches the option off (0 for the mixing alphas)."""

    lo: float
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    off: float | None = None

    def text(self) -> str:
        """The range as the messages state it, e.g. ``[0, 1)`` or ``0 (off) or [1e-06, 1000]``."""
        num = (lambda v: str(int(v))) if self.integer else (lambda v: f"{v:g}")
        left = f"{'(' if self.lo_open else '['}{num(self.lo)}, "
        right = "inf)" if self.hi is None else f"{num(self.hi)}{')' if self.hi_open else ']'}"
        return (f"{self.off:g} (off) or " if self.off is not None else "") + left + right

    def __call__(self, value: Any) -> int | float:
        """``value`` normalised, or :class:`_Invalid` naming the range."""
        if self.integer:
            try:
                return _integer(value, int(self.lo), None if self.hi is None else int(self.hi))
            except _Invalid as exc:
                if self.hi is None:
                    raise
                allowed = f" (allowed {self.text()}), got"
                raise _Invalid(str(exc).replace(", got", allowed)) from None
        value = _number(value, float("-inf"))
        if self.off is not None and value == self.off:
            return value
        low = self.off if self.off is not None and value < self.off else self.lo
        low_open = self.lo_open and low == self.lo
        if value < low or (value == low and low_open):
            side = f"{'>' if low_open else '>='} {low:g}"
        elif self.hi is not None and (value > self.hi or (value == self.hi and self.hi_open)):
            side = f"{'below' if self.hi_open else '<='} {self.hi:g}"
        else:
            return value
        return self._refuse(side, value)

    def _refuse(self, side: str, value: float) -> float:
        two_sided = self.hi is not None or self.off is not None
        allowed = f" (allowed {self.text()})" if two_sided else ""
        raise _Invalid(f"must be {side}{allowed}, got {value:g}")


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


def _recipe(value: Any) -> str:
    """One of the recipes (afictl/train/recipes.py)."""
    return _choice(*RECIPE_NAMES)(value)


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


_UNIT = Bound(0.0, 1.0)  # a probability
_BELOW_ONE = Bound(0.0, 1.0, hi_open=True)
_ALPHA = Bound(*MIX_ALPHA_RANGE, off=0.0)
_POSITIVE = Bound(1, integer=True)
_COUNT = Bound(0, integer=True)

#: every numeric option's range (its check is the bound itself; ``None`` stays "not given" for
#: the optional ones of :data:`OPTION_CHECKS`)
NUMERIC_BOUNDS: dict[str, Bound] = {
    "data_size": _POSITIVE,
    "input_size": Bound(*INPUT_SIZE_RANGE, integer=True),
    "epochs": _POSITIVE,
    "batch_size": _POSITIVE,
    "lr": Bound(0.0, LR_MAX, lo_open=True),
    "lr_reference_batch": _POSITIVE,
    "lr_gamma": Bound(0.0, lo_open=True),
    "warmup_epochs": Bound(0.0),
    "min_lr": Bound(0.0, LR_MAX),
    "backbone_lr_mult": Bound(0.0),
    "momentum": _BELOW_ONE,
    "weight_decay": Bound(0.0),
    "label_smoothing": _BELOW_ONE,
    "smoothing": _BELOW_ONE,
    "mixup": _ALPHA,
    "cutmix": _ALPHA,
    "mixup_prob": _UNIT,
    "reprob": _UNIT,
    "model_ema_decay": Bound(0.0, 1.0, lo_open=True, hi_open=True),
    "clip_grad": Bound(0.0),  # 0: off (so that it can override a recipe)
    "grad_accum_steps": _POSITIVE,  # and at most the batches of an epoch (config.py)
    "checkpoint_hist": _COUNT,
    "reduction": _POSITIVE,
    "seed": Bound(0, SEED_MAX, integer=True),
    "workers": _COUNT,
    "threads": Bound(1, THREADS_MAX, integer=True),
    "log_interval": _POSITIVE,
}
#: options that may be None (not given: the recipe, the data or the machine decides)
_OPTIONAL = {"data_size", "input_size", "lr_reference_batch", "clip_grad", "reduction"}
_OPTIONAL |= {"workers", "threads", "log_interval"}

#: option (a :class:`~afictl.train.TrainConfig` field, or an option of eval) -> its check
OPTION_CHECKS: dict[str, Callable[[Any], Any]] = {
    "arch": _text,
    "dataset": _text,
    "recipe": _recipe,
    "data_root": _optional(_path),
    "download": _flag,
    "eval_split": _choice("eval"),
    "split": _choice("eval", "train"),
    "lr_milestones": _milestones,
    "sched": _choice(*LR_SCHEDULES),
    "lr_schedule": _choice(*LR_SCHEDULES),  # the name of --sched before 0.3 (config files)
    "opt": _choice(*OPTIMIZERS),
    "wd_norm_bias": _flag,
    "pretrained": _optional(_path),
    "nesterov": _flag,
    "aa": _optional(_aa),
    "model_ema": _flag,
    "best_of": _choice(*BEST_OF_CHOICES),
    "decode": _choice(*DECODE_CHOICES),
    "pipeline": _choice(*PIPELINE_CHOICES),
    "data_on_device": _optional(_flag),
    "afi_stages": _optional(_stages),
    "deterministic": _flag,
    "device": _device,
    "amp": _choice(*AMP_CHOICES),
    "channels_last": _flag,
    "compile": _flag,
    "sync_bn": _flag,
    "bad_images": _choice(*BAD_IMAGES_CHOICES),
    "tensorboard": _optional(_flag),
    "run_dir": _optional(_path),
} | {k: _optional(b) if k in _OPTIONAL else b for k, b in NUMERIC_BOUNDS.items()}


#: options of afictl export and afictl bench (not of a run's configuration)
EXPORT_BATCH = Bound(2, EXPORT_MAX_BATCH - 1, integer=True)  # verified at batch + 1 too
BENCH_BATCH = Bound(1, EXPORT_MAX_BATCH, integer=True)
#: export --tolerance: relative, finite and above 0 (nan passed every comparison before)
EXPORT_TOLERANCE = Bound(0.0, lo_open=True)


def check_value(flag: str, check: Callable[[Any], Any], value: Any) -> Any:
    """``value`` of option ``flag`` (``--batch-size``) through ``check`` (e.g. a
    :class:`Bound`), or :class:`UserError`: ``--flag must be ..., got ...``."""
    try:
        return check(value)
    except _Invalid as exc:
        raise UserError(f"{flag} {exc}") from None


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
