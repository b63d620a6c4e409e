"""Top-k accuracy, running sums, and the per-run metrics files (CSV, JSONL, TensorBoard)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError

__all__ = [
    "METRIC_COLUMNS",
    "MetricsLog",
    "Sums",
    "metric_columns",
    "require_tensorboard",
    "topk_correct",
]

#: Columns of ``metrics.csv``, one row per epoch (epoch is 1-based: epochs completed).
METRIC_COLUMNS = [
    "epoch",
    "lr",
    "train_loss",
    "train_top1",
    "eval_loss",
    "eval_top1",
    "eval_top5",
    "images_per_sec",
    "train_time_s",
    "eval_time_s",
    "skipped_images",
]
#: the evaluation of the EMA weights (``--model-ema``), after ``eval_top5``
EMA_COLUMNS = ["eval_loss_ema", "eval_top1_ema", "eval_top5_ema"]


def metric_columns(*, ema: bool = False, backbone: bool = False) -> list[str]:
    """The columns of a run's metrics.csv: :data:`METRIC_COLUMNS`, with ``lr_backbone`` after
    ``lr`` for fine-tuning (two learning rates) and the EMA's evaluation after ``eval_top5``."""
    cols = list(METRIC_COLUMNS)
    if backbone:
        cols.insert(cols.index("lr") + 1, "lr_backbone")
    if ema:
        at = cols.index("eval_top5") + 1
        cols[at:at] = EMA_COLUMNS
    return cols


def topk_correct(
    logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)
) -> list[torch.Tensor]:
    """Number of samples whose target is among the top-k logits, for each k (tensors, no sync)."""
    kmax = min(max(ks), logits.shape[1])
    pred = logits.topk(kmax, dim=1).indices
    hit = pred.eq(targets[:, None])
    return [hit[:, : min(k, kmax)].any(dim=1).sum() for k in ks]


@dataclass
class Sums:
    """Running sums of one epoch or evaluation; plain floats (go into checkpoints as they are)."""

    loss: float = 0.0  # sum of per-sample losses
    top1: float = 0.0
    top5: float = 0.0
    n: float = 0.0
    skipped: float = 0.0

    def as_list(self) -> list[float]:
        return [self.loss, self.top1, self.top5, self.n, self.skipped]

    @classmethod
    def from_list(cls, v: list[float]) -> Sums:
        return cls(*v)

    def mean_loss(self) -> float:
        return self.loss / self.n if self.n else math.nan

    def pct(self, which: str) -> float:
        return 100.0 * getattr(self, which) / self.n if self.n else math.nan


def require_tensorboard() -> None:
    """:class:`UserError` (one line, the install command) when the package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise UserError(
            "--tensorboard needs the tensorboard package: pip install 'afictl[tensorboard]' "
            "(or --no-tensorboard)"
        ) from None


class MetricsLog:
    """``metrics.csv`` + ``metrics.jsonl`` (+ TensorBoard event files when installed and wanted).

    The rows live in the checkpoint too; :meth:`rewrite` makes the files match a resumed run's
    history (an epoch written after its checkpoint is not duplicated).
    """

    def __init__(
        self, run_dir: Path, tensorboard: bool | None = None, columns: list[str] | None = None
    ) -> None:
        self.columns = columns or METRIC_COLUMNS
        self.csv_path = run_dir / "metrics.csv"
        self.jsonl_path = run_dir / "metrics.jsonl"
        self.tb = None
        if tensorboard is not False:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # TensorBoard is optional
                if tensorboard:
                    require_tensorboard()
            else:
                self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def rewrite(self, rows: list[dict[str, Any]]) -> None:
        with open(self.csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, self.columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        with open(self.jsonl_path, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")

    def append(self, row: dict[str, Any]) -> None:
        new = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="") as f:
            w = csv.DictWriter(f, self.columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, int | float) and math.isfinite(value):
                    self.tb.add_scalar(key, value, row["epoch"])
            self.tb.flush()

    def step(self, step: int, stats: dict[str, float]) -> None:
        """Per-step scalars at a log point (``step``: batches of the run so far): the epoch's
        running loss and top-1 so far, and the learning rate, as ``step/<name>``."""
        if self.tb is None:
            return
        for key in ("loss", "top1", "lr"):
            value = stats.get(key)
            if value is not None and math.isfinite(value):
                self.tb.add_scalar(f"step/{key}", value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
