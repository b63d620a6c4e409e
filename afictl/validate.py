"""Every option's check, derived from the declarations: :func:`check_option` takes a value as
it arrived (command line, config file, library call) and returns it normalised, or raises
:class:`~afictl.errors.UserError` with one line naming the option, the value and what is
accepted.

The checks are declared with the options: the training options' in afictl/train/options.py
(which holds the model options' too), the checks themselves in afictl/checks.py; the few
options of other commands below. Free of torch, so that the command line can check its options
before importing models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .checks import (
    AA_FIXED,
    AMP_CHOICES,
    BAD_IMAGES_CHOICES,
    BEST_OF_CHOICES,
    DECODE_CHOICES,
    EXPORT_MAX_BATCH,
    INPUT_SIZE_RANGE,
    LR_MAX,
    LR_SCHEDULES,
    MIX_ALPHA_RANGE,
    OPTIMIZERS,
    PIPELINE_CHOICES,
    SEED_MAX,
    THREADS_MAX,
    Bound,
    Invalid,
    choice,
)
from .errors import UserError
from .train.options import DECLARED_CHECKS, RECIPE_NAMES
from .train.options import OPTION_CHECKS as _TRAIN_CHECKS

__all__ = [
    "AA_FIXED",
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
    "RECIPE_NAMES",
    "SEED_MAX",
    "THREADS_MAX",
    "Bound",
    "BENCH_BATCH",
    "EXPORT_BATCH",
    "EXPORT_TOLERANCE",
    "UserError",
    "check_option",
    "check_options",
    "check_value",
]

#: option (a training option, a model option, or an option of eval) -> its check
OPTION_CHECKS: dict[str, Callable[[Any], Any]] = {
    **_TRAIN_CHECKS,
    "split": choice("eval", "train"),  # afictl eval --split
}
#: every numeric option's range, as declared
NUMERIC_BOUNDS: dict[str, Bound] = {
    k: c for k, c in DECLARED_CHECKS.items() if isinstance(c, Bound)
}

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
    except Invalid as exc:
        raise UserError(f"{flag} {exc}") from None


def check_option(name: str, value: Any, source: str | None = None) -> Any:
    """``value`` of option ``name`` normalised, or :class:`UserError`:
    ``--name must be ..., got ...`` (``SOURCE: name must be ...`` for a value read from a
    config file)."""
    try:
        return OPTION_CHECKS[name](value)
    except Invalid as exc:
        label = f"{source}: {name}" if source else f"--{name.replace('_', '-')}"
        raise UserError(f"{label} {exc}") from None


def check_options(values: dict[str, Any], source: str | None = None) -> dict[str, Any]:
    """Every known option of ``values`` checked and normalised; ``None`` means "not given" and
    unknown keys pass through unchanged."""
    return {
        k: check_option(k, v, source) if k in OPTION_CHECKS and v is not None else v
        for k, v in values.items()
    }
