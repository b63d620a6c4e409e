"""Which checkpoints an analysis uses when none is named (issue 9: the bare command lines).

``afictl gradcam image.jpg`` and ``afictl selectivity --stage conv3`` take the newest run under
``./runs/`` that has a ``best.pt`` and, beside it, the newest run of its counterpart (the
baseline of an AFI model, or the AFI model of a baseline) trained on the same dataset.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import CheckpointError, load_checkpoint
from ..errors import UserError
from ..models import counterpart, get_model_info

__all__ = ["RunInfo", "default_checkpoints", "find_runs", "free_path"]

RUNS_DIR = Path("runs")


@dataclass(frozen=True)
class RunInfo:
    """A finished (or best-so-far) run: its ``best.pt`` and what it was trained on."""

    checkpoint: Path
    arch: str
    dataset: str | None
    mtime: float

    @property
    def is_afi(self) -> bool:
        return get_model_info(self.arch).is_afi


def _meta(path: Path) -> dict[str, Any] | None:
    """Architecture and dataset of a checkpoint without reading its weights.

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
        print(f"afictl: warning: {str(exc)[:300]}; skipped", file=sys.stderr)
        return None
    config = data.get("config") or {}
    return {"arch": data["arch"], "dataset": config.get("dataset")}


def find_runs(root: str | Path = RUNS_DIR) -> list[RunInfo]:
    """Every ``best.pt`` under ``root`` (any depth), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = []
    for path in root.rglob("best.pt"):
        meta = _meta(path)
        if meta is not None:
            runs.append(RunInfo(path, meta["arch"], meta["dataset"], path.stat().st_mtime))
    return sorted(runs, key=lambda r: (r.mtime, str(r.checkpoint)), reverse=True)


def default_checkpoints(root: str | Path = RUNS_DIR, *, afi_only: bool = False) -> list[Path]:
    """The newest run and, when one exists, the newest run of its counterpart on the same data.

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
    other = counterpart(newest.arch)
    mate = next((r for r in runs if r.arch == other and r.dataset == newest.dataset), None)
    if mate is None:
        return [newest.checkpoint]
    pair = [newest, mate]
    pair.sort(key=lambda r: r.is_afi)  # baseline first
    return [r.checkpoint for r in pair]


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
