"""The N best epoch checkpoints of a run (timm's ``--checkpoint-hist N``).

Besides ``last.pt`` and ``best.pt`` a run keeps ``<run_dir>/epoch-<N>.pt`` for its ``keep`` best
epochs by eval top-1, as timm's ``CheckpointSaver(max_history=N)`` does. Each file is written
atomically (:func:`afictl.checkpoint.save_checkpoint`: temp file, fsync, ``os.replace``); the
new file is in place before the one it pushes out is deleted, so a crash leaves one file too
many, never one too few. Only files named in the ranking (the ones it wrote, in this process or
before a resume) are ever deleted.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["CheckpointHistory"]


def _rank_key(entry: tuple[int, float]) -> tuple[float, int]:
    epoch, top1 = entry
    # best top-1 first; ties: the earlier epoch first (it stays); NaN ranks last
    return (-top1 if not math.isnan(top1) else math.inf, epoch)


class CheckpointHistory:
    """Keeps the ``keep`` best epochs by top-1 as ``epoch-<N>.pt``; ``keep=0`` keeps none."""

    def __init__(self, run_dir: str | Path, keep: int) -> None:
        if keep < 0:
            raise ValueError(f"checkpoint history must keep 0 or more epochs, not {keep}")
        self.run_dir = Path(run_dir)
        self.keep = int(keep)
        self.ranking: list[tuple[int, float]] = []  # (epoch, top1), best first

    def path(self, epoch: int) -> Path:
        """Where epoch ``epoch``'s checkpoint is kept."""
        return self.run_dir / f"epoch-{int(epoch)}.pt"

    def offer(self, epoch: int, top1: float, payload: dict[str, Any]) -> Path | None:
        """Write ``payload`` as ``epoch-<epoch>.pt`` when the epoch is among the ``keep`` best
        (then delete the file it pushes out) and return its path; ``None`` when it is not.

        An epoch offered again (a resumed run redoing it) replaces its earlier entry.
        """
        if self.keep == 0:
            return None
        from ..checkpoint import save_checkpoint  # torch and the models: only when writing

        epoch, top1 = int(epoch), float(top1)
        others = [e for e in self.ranking if e[0] != epoch]
        kept, dropped = self._ranked(epoch, top1)
        written = None
        if any(e == epoch for e, _ in kept):
            written = save_checkpoint(self.path(epoch), payload)
        elif len(others) < len(self.ranking):  # its earlier file is stale now
            self.path(epoch).unlink(missing_ok=True)
        self.ranking = kept
        for old, _ in dropped:
            if old != epoch:
                self.path(old).unlink(missing_ok=True)
        return written

    def _ranked(self, epoch: int, top1: float) -> tuple[list, list]:
        """(kept, dropped) rankings once ``epoch`` is offered; nothing is written."""
        others = [e for e in self.ranking if e[0] != int(epoch)]
        ranking = sorted([*others, (int(epoch), float(top1))], key=_rank_key)
        return ranking[: self.keep], ranking[self.keep :]

    def state_dict_after(self, epoch: int, top1: float) -> dict[str, Any]:
        """:meth:`state_dict` as it will be once ``epoch`` is offered (``last.pt`` records it
        before the epoch's file is written: a failed history write never costs ``last.pt``)."""
        if self.keep == 0:
            return self.state_dict()
        kept, _ = self._ranked(epoch, top1)
        return {"keep": self.keep, "ranking": [[e, t] for e, t in kept]}

    def state_dict(self) -> dict[str, Any]:
        """Plain types (stored in a checkpoint read with ``weights_only=True``)."""
        return {"keep": self.keep, "ranking": [[e, t] for e, t in self.ranking]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a resumed run's ranking. A smaller ``keep`` than the run had drops (and
        deletes) the worst of its files at once."""
        ranking = sorted(((int(e), float(t)) for e, t in state.get("ranking", [])), key=_rank_key)
        self.ranking = ranking[: self.keep]
        for old, _ in ranking[self.keep :]:
            self.path(old).unlink(missing_ok=True)
