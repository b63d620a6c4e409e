"""Which checkpoints an analysis uses when none is named (the bare command lines).

``afictl gradcam image.jpg`` and ``afictl selectivity --stage conv3`` take the newest run under
``./runs/`` that has a ``best.pt`` and, beside it, the newest run of its counterpart (the
baseline of an AFI model, or the AFI model of a baseline) trained under the same budget
(dataset, data size, epochs, recipe: :mod:`afictl.reporting.budget`); only when no run of the
counterpart on that dataset has the same budget is an unequal one taken, and said so.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint import CheckpointError, load_checkpoint
from ..errors import UserError
from ..models import counterpart, get_model_info
from ..reporting.budget import budget, budget_mismatch, mismatch_note

__all__ = [
    "RunInfo",
    "checkpoint_budget",
    "default_checkpoints",
    "find_runs",
    "free_path",
    "pair_note",
]

RUNS_DIR = Path("runs")


@dataclass(frozen=True)
class RunInfo:
    """A finished (or best-so-far) run: its ``best.pt``, what it was trained on and for how long."""

    checkpoint: Path
    arch: str
    dataset: str | None
    mtime: float
    budget: dict[str, Any] = field(default_factory=dict)

    @property
    def is_afi(self) -> bool:
        return get_model_info(self.arch).is_afi


def _meta(path: Path, *, warn: bool = True) -> dict[str, Any] | None:
    """Architecture, dataset and budget of a checkpoint without reading its weights.

    ``mmap=True`` maps the tensors instead of reading them, so scanning many ImageNet runs stays
    cheap; read and checked by :func:`afictl.checkpoint.load_checkpoint` as everywhere. A file
    that is refused (unsafe, corrupt, crafted) is skipped with a one-line warning naming it, not
    fatal: one bad run folder must not break an analysis of the others.
    """
    try:
        data = load_checkpoint(path, mmap=True)
        if "arch" not in data:
            raise CheckpointError(f"{path} is not a complete afictl checkpoint (no arch)")
    except CheckpointError as exc:
        if warn:
            print(f"afictl: warning: {str(exc)[:300]}; skipped", file=sys.stderr)
        return None
    config = data.get("config")
    config = config if isinstance(config, dict) else {}
    return {
        "arch": data["arch"],
        "dataset": config.get("dataset"),
        "budget": budget(config) if config else {},
    }


def find_runs(root: str | Path = RUNS_DIR) -> list[RunInfo]:
    """Every ``best.pt`` under ``root`` (any depth), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = []
    for path in root.rglob("best.pt"):
        meta = _meta(path)
        if meta is not None:
            runs.append(
                RunInfo(path, meta["arch"], meta["dataset"], path.stat().st_mtime, meta["budget"])
            )
    return sorted(runs, key=lambda r: (r.mtime, str(r.checkpoint)), reverse=True)


def _mate(newest: RunInfo, runs: list[RunInfo]) -> RunInfo | None:
    """The counterpart's newest run on the same dataset with the same budget, else its newest
    run on that dataset (an unequal pair, which :func:`pair_note` names), else None."""
    other = counterpart(newest.arch)
    mates = [r for r in runs if r.arch == other and r.dataset == newest.dataset]
    equal = [r for r in mates if r.budget and not budget_mismatch(r.budget, newest.budget)]
    return (equal or mates or [None])[0]


def default_checkpoints(root: str | Path = RUNS_DIR, *, afi_only: bool = False) -> list[Path]:
    """The newest run and, when one exists, its counterpart's run on the same data, the newest
    with the same budget first (:func:`_mate`).

    Baseline first, then the AFI model (the paper's Figure 3 order). ``afi_only``: the newest
    AFI run alone (``afictl features`` needs an AFI module).
    """
    runs = find_runs(root)
    if afi_only:
        runs = [r for r in runs if r.is_afi]
    if not runs:
        what = "AFI model's run" if afi_only else "run"
        raise UserError(
            f"no checkpoint given and no {what} with best.pt under {Path(root)}/; "
            "pass --checkpoint FILE or train first (afictl train)"
        )
    newest = runs[0]
    if afi_only:
        return [newest.checkpoint]
    mate = _mate(newest, runs)
    if mate is None:
        return [newest.checkpoint]
    pair = [newest, mate]
    pair.sort(key=lambda r: r.is_afi)  # baseline first
    return [r.checkpoint for r in pair]


def checkpoint_budget(path: str | Path) -> tuple[str, dict[str, Any]] | None:
    """The architecture and budget recorded in an afictl checkpoint (or a run folder); None for
    a file without a training config (a plain state dict, safetensors, an unreadable file)."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        return None
    meta = _meta(path, warn=False)  # a plain state dict is refused here: None
    if meta is None or not meta["budget"]:
        return None
    return meta["arch"], meta["budget"]


def _label(path: Path, arch: str, others: Sequence[tuple[Path, str]]) -> str:
    """The architecture when it tells the pair apart, else the run folder (or file) name."""
    if sum(a == arch for _, a in others) == 1:
        return arch
    return path.parent.name if path.name in ("best.pt", "last.pt") else path.name


def pair_note(checkpoints: Sequence[str | Path]) -> str | None:
    """One line naming every checkpoint whose budget differs from the first one's
    (:func:`afictl.reporting.budget.mismatch_note`); None when all are alike, or when a file
    records no budget (nothing to compare)."""
    known = [(Path(p), checkpoint_budget(p)) for p in checkpoints]
    if len(known) < 2 or any(b is None for _, b in known):
        return None
    named = [(p, b[0]) for p, b in known]  # type: ignore[index]
    (first, (arch0, budget0)), notes = known[0], []
    for path, (arch, other) in known[1:]:  # type: ignore[misc]
        diffs = budget_mismatch(budget0, other)
        if diffs:
            a, b = _label(first, arch0, named), _label(path, arch, named)
            notes.append(mismatch_note(a, b, diffs))
    return " | ".join(notes) or None


def free_path(path: str | Path) -> Path:
    """``path`` if nothing is there, else the first free ``stem-N.suffix``, N = 2, 3, ...
    (never overwrite): ``gradcam.png`` is the first figure, ``gradcam-2.png`` the second."""
    path = Path(path)
    if not path.exists():
        return path
    n = 2
    while True:
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        if not candidate.exists():
            return candidate
        n += 1
