"""The training checkpoint (``last.pt``, ``best.pt``, ``epoch-<N>.pt``) as a dataclass.

:class:`TrainCheckpoint` is what ``afictl train`` writes and resumes from; ``to_dict`` gives the
plain dict :func:`afictl.checkpoint.save_checkpoint` stores (tensors and plain types only, read
with ``weights_only=True``), ``from_dict`` reads every version written so far (version 1 had
no ``best_epoch``, ``partial_ranks``, ``model_ema`` or ``checkpoint_hist``; its config said
``lr_schedule`` for ``sched``). Readers other than training (eval, analyses) keep using the dict
and :func:`afictl.checkpoint.validate_checkpoint`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..checkpoint import CHECKPOINT_VERSION, CheckpointError, load_checkpoint, save_checkpoint
from .metrics import Sums

__all__ = ["TrainCheckpoint", "ema_weights", "repair_best"]

_NOT_STORED = ("path", "format")


@dataclass
class TrainCheckpoint:
    """Everything a run needs to continue exactly where it stopped."""

    arch: str
    num_classes: int
    model_kwargs: dict
    model: dict  # the raw weights (state_dict)
    epoch: int  # epochs completed
    optimizer: dict
    scheduler: dict
    scaler: dict
    config: dict
    step: int = 0  # batches into the next epoch (an interruption mid-epoch)
    rng: list = field(default_factory=list)  # one RNG state per process
    class_names: list | None = None
    metrics: list = field(default_factory=list)  # every epoch's row
    best_top1: float = -1.0
    best_epoch: int | None = None  # what best.pt holds (None: version 1, found from metrics)
    partial: list = field(default_factory=lambda: Sums().as_list())  # all ranks' sums added
    partial_ranks: list | None = None  # each rank's own running sums
    partial_seconds: float = 0.0
    input_size: int | None = None
    home_dataset: str | None = None
    model_ema: dict | None = None  # ModelEma.state_dict() with --model-ema
    checkpoint_hist: dict | None = None  # CheckpointHistory.state_dict() with --checkpoint-hist
    version: int = CHECKPOINT_VERSION
    path: str | None = None  # where it was read from (not stored)

    def to_dict(self) -> dict[str, Any]:
        """The stored dict; optional parts that are absent are left out."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_STORED}
        out["version"] = CHECKPOINT_VERSION  # written now, in this version's layout
        for key in ("model_ema", "checkpoint_hist", "partial_ranks"):
            if out[key] is None:
                del out[key]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainCheckpoint:
        """A loaded checkpoint (any version); ``CheckpointError`` when a required part is absent."""
        names = {f.name for f in fields(cls)}
        ckpt = cls(**{k: v for k, v in d.items() if k in names})
        if not isinstance(ckpt.metrics, list):
            raise CheckpointError(f"{ckpt.where}: metrics must be a list of rows")
        if ckpt.best_epoch is None or not _natural(ckpt.best_epoch):
            ckpt.best_epoch = ckpt._best_from_metrics()
        ckpt.step = int(ckpt.step or 0)
        ckpt.best_top1 = float(ckpt.best_top1)
        return ckpt

    @property
    def where(self) -> str:
        return self.path or "checkpoint"

    def _best_from_metrics(self) -> int:
        """Version 1: the first epoch of the history with the best eval top-1 (0 before any)."""
        return next(
            (int(r["epoch"]) for r in self.metrics if r.get("eval_top1") == self.best_top1), 0
        )

    def sums_for(self, rank: int, world: int) -> Sums:
        """This process's running sums of an interrupted epoch. Each rank gets its own when the
        run resumes on as many processes as it stopped on; otherwise rank 0 takes the total and
        the others start from zero, so the epoch's metrics (a sum over ranks) are still right."""
        ranks = self.partial_ranks
        if ranks is not None:
            if not (
                isinstance(ranks, list)
                and all(isinstance(r, list) and len(r) == 5 and all(map(_number, r)) for r in ranks)
            ):
                raise CheckpointError(
                    f"{self.where}: partial_ranks must be five numbers per process"
                )
            if len(ranks) == world:
                return Sums.from_list(ranks[rank])
        if len(self.partial) != 5:
            raise CheckpointError(f"{self.where}: partial must be five numbers")
        return Sums.from_list(self.partial) if rank == 0 else Sums()

    def best_copy(self, best_of: str) -> TrainCheckpoint:
        """What best.pt holds: this checkpoint, with the EMA weights as ``model`` under
        ``--best-of ema`` (so that eval and every analysis read the weights that ranked best)."""
        if best_of != "ema" or self.model_ema is None:
            return self
        return replace(self, model=ema_weights(self.model_ema))


def ema_weights(ema_state: dict) -> dict:
    """The model's state_dict inside a ``ModelEma`` (an AveragedModel: ``module.`` + name)."""
    return {k[len("module.") :]: v for k, v in ema_state.items() if k.startswith("module.")}


def _natural(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def repair_best(run_dir: Path, ckpt: TrainCheckpoint, best_of: str, log) -> None:
    """Make best.pt the epoch last.pt records as the best. A kill between the two saves of an
    epoch leaves best.pt one improvement behind (or absent); that epoch is last.pt's own, so
    best.pt is rewritten from it."""
    best_epoch = ckpt.best_epoch or 0
    if best_epoch < 1:
        return
    path = run_dir / "best.pt"
    try:
        held = int(load_checkpoint(path)["epoch"]) if path.is_file() else None
    except CheckpointError:
        held = None
    if held == best_epoch:
        return
    was = (
        f"epoch {held}" if held is not None else "nothing readable" if path.exists() else "nothing"
    )
    if best_epoch == ckpt.epoch and not ckpt.step:
        save_checkpoint(path, ckpt.best_copy(best_of).to_dict())
        log(
            f"afictl: repaired {path}: it held {was}, the run's best is epoch {best_epoch} "
            "(rewritten from last.pt)"
        )
    else:
        log(
            f"afictl: warning: {path} holds {was} but the run's best is epoch {best_epoch}; "
            "it cannot be restored"
        )
