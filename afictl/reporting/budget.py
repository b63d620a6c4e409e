"""The training budget of a run, and whether two runs were trained under the same one.

A comparison of a model with its counterpart (report, Figure 4, gradcam, selectivity, curves)
means something only when both were trained on the same data for as long with the same recipe.
Every command that pairs runs asks :func:`budget_mismatch` and, where it must pair unequal runs,
says so with :func:`mismatch_note` (one line on stderr, and a mark on its table or figure).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["BUDGET_FIELDS", "budget", "budget_mismatch", "mismatch_note", "same_budget"]

#: What a like-with-like pair shares: the data (name and number of training images, None for
#: the whole dataset), the number of epochs and the recipe.
BUDGET_FIELDS = ("dataset", "data_size", "epochs", "recipe")


def budget(config: Mapping[str, Any]) -> dict[str, Any]:
    """The budget fields of a run's config (``config.json`` or a checkpoint's ``config``)."""
    return {name: config.get(name) for name in BUDGET_FIELDS}


def budget_mismatch(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The budget fields two configs differ in, as ``'data_size 400 vs full'``; [] when equal."""
    out = []
    for name, x, y in zip(BUDGET_FIELDS, budget(a).values(), budget(b).values(), strict=True):
        if x != y:
            out.append(f"{name} {_show(name, x)} vs {_show(name, y)}")
    return out


def same_budget(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """True when the two configs share every budget field."""
    return not budget_mismatch(a, b)


def mismatch_note(first: str, second: str, differences: list[str]) -> str:
    """One line naming the pair and what differs, for stderr and for a table or figure."""
    return f"unequal budgets: {first} vs {second} differ in " + "; ".join(differences)


def _show(name: str, value: Any) -> str:
    if value is None:
        return "full" if name == "data_size" else "unknown"
    return str(value)
