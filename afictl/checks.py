"""The checks that options are declared with: ranges (:class:`Bound`), choices, flags, paths,
stage lists. Each takes a value as it arrived (command line, config file, checkpoint, library
call) and returns it normalised, or raises :class:`Invalid` saying what is wrong; the caller
adds the option's name (:func:`afictl.validate.check_value`). Types are checked before ranges,
so that a config file's ``epochs = "ten"`` is reported as such rather than failing later.

Free of torch, and of every declaration: the training options
(:class:`~afictl.train.options.TrainConfig`), the model options
(:mod:`afictl.models.options`) and the other commands' options name these checks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


class Invalid(Exception):
    """What is wrong with a value (the caller adds the option's name)."""


def integer(value: Any, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, float) and value.is_integer():  # JSON/YAML `10.0`
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"must be an integer, got {value!r}")
    if lo is not None and value < lo:
        raise Invalid(f"must be {'> 0' if lo == 1 else f'>= {lo}'}, got {value}")
    if hi is not None and value > hi:
        raise Invalid(f"must be <= {hi}, got {value}")
    return value


def number(value: Any, lo: float = 0.0, *, zero: bool = True, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise Invalid(f"must be a finite number, got {value}")
    if value < lo or (value == lo and not zero):
        raise Invalid(f"must be {'>=' if zero else '>'} {lo:g}, got {value:g}")
    if hi is not None and value > hi:
        raise Invalid(f"must be <= {hi:g}, got {value:g}")
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
        """``value`` normalised, or :class:`Invalid` naming the range."""
        if self.integer:
            try:
                return integer(value, int(self.lo), None if self.hi is None else int(self.hi))
            except Invalid as exc:
                if self.hi is None:
                    raise
                allowed = f" (allowed {self.text()}), got"
                raise Invalid(str(exc).replace(", got", allowed)) from None
        value = number(value, float("-inf"))
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
        raise Invalid(f"must be {side}{allowed}, got {value:g}")


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string, got {value!r}")
    return value


def path(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a path, got {value!r}")
    if "\0" in value or not value:
        raise Invalid(f"must be a path, got {value!r}")
    if value.startswith("~"):
        try:
            Path(value).expanduser()
        except RuntimeError:  # `~name` of no known user
            raise Invalid(f"{value!r}: {value.split('/', 1)[0]} is no known user's home") from None
    return value


def flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, got {value!r}")
    return value


def choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise Invalid(f"must be one of {', '.join(choices)}, got {value!r}")
        return value.lower()

    return check


def device(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise Invalid(f"must be cpu, cuda, cuda:N or auto, got {value!r}")
    return value


def milestones(value: Any) -> list | str:
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
        raise Invalid(f"takes epochs (30,60) or percent of training (50%,75%), got {value!r}")
    return list(value) if isinstance(value, list | tuple) else value


def parse_stages(value: Any) -> list[int]:
    """``--afi-stages``: "1,2" (or "1 2"), a list of stage numbers, or one number -> sorted
    numbers."""
    if isinstance(value, str):
        items: list[Any] = [s for s in re.split(r"[,\s]+", value.strip()) if s]
        if not all(re.fullmatch(r"\+?\d+", s) for s in items):
            raise Invalid(f"takes stage numbers like 1,2,3, got {value!r}")
        return sorted({int(s) for s in items})
    items = list(value) if isinstance(value, list | tuple) else [value]
    if any(
        isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and v.is_integer()))
        for v in items
    ):
        raise Invalid(f"takes stage numbers like 1,2,3, got {value!r}")
    return sorted({int(v) for v in items})


def stages(value: Any) -> list[int]:
    stages = parse_stages(value)
    if any(s < 1 for s in stages):
        raise Invalid(f"takes stage numbers from 1, got {value!r}")
    return stages


def augment_policy(value: Any) -> str:
    """``none`` stays a word (not None), so that ``--aa none`` overrides a recipe's policy."""
    if not isinstance(value, str):
        raise Invalid(f"must be a policy name, got {value!r}")
    text = value.lower()
    if text in ("", "none"):
        return "none"
    if text in AA_FIXED or _AA_RAND.fullmatch(text):
        return text
    raise Invalid(
        f"must be rand-m9-mstd0.5 (RandAugment, timm's notation), {', '.join(AA_FIXED)} "
        f"or none, got {value!r}"
    )


def optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


def options_dict(value: Any) -> dict[str, Any]:
    """Keyword options by name (a model's: their values are checked by their declarations)."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise Invalid(f"must map option names to values, got {value!r:.60}")
    return dict(value)
