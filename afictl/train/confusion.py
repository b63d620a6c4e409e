"""Per-class accuracy and the confusion matrix of an evaluation (``afictl eval --per-class``).

:class:`ConfusionMeter` accumulates on the device, batch by batch, inside the evaluation loop
(no second pass, no read-back until the end); :class:`Confusion` is the result as plain numpy
counts: rows are the true classes, columns the predicted ones. Its figure is drawn by
:func:`confusion_plot` (matplotlib, imported only there).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .distributed import DistContext

__all__ = [
    "ClassRow",
    "Confusion",
    "ConfusionMeter",
    "confusion_figure",
    "confusion_plot",
]

#: Above this many classes the figure has no numbers in its cells (they would not be legible).
CELL_NUMBERS_MAX = 20
#: Above this many classes only every k-th class is named on the axes (about this many names).
AXIS_NAMES_MAX = 100


class ConfusionMeter:
    """Counts of (true, predicted top-1) pairs and of top-5 hits per true class, on ``device``.

    ``update`` takes the logits as the evaluation computed them; the top-1 is taken with
    ``topk`` like :func:`afictl.train.metrics.topk_correct`, so that ties break the same way
    and the diagonal equals the evaluation's top-1 count exactly.
    """

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.counts = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
        self.top5 = torch.zeros(num_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        n = self.num_classes
        targets = targets.to(logits.device, non_blocking=True).long()
        top = logits.float().topk(min(5, logits.shape[1]), dim=1).indices
        # index_add_ into fixed-size counts, not torch.bincount: on CUDA bincount reads the
        # input's min and max back to the host (two syncs per batch); this never waits
        self.counts.index_add_(0, targets * n + top[:, 0], torch.ones_like(targets))
        self.top5.index_add_(0, targets, top.eq(targets[:, None]).any(dim=1).long())

    def all_reduce(self, ctx: DistContext) -> None:
        """Sum the counts over the ranks, as the evaluation's own sums are (identity alone)."""
        if not ctx.distributed:
            return
        import torch.distributed as dist

        dist.all_reduce(self.counts)
        dist.all_reduce(self.top5)

    def result(self, classes: list[str]) -> Confusion:
        """The counts, read back once, with the class names (one per class)."""
        n = self.num_classes
        return Confusion(
            list(classes),
            self.counts.view(n, n).cpu().numpy(),
            self.top5.cpu().numpy(),
        )


@dataclass(frozen=True)
class ClassRow:
    """One class of an evaluation: its images, accuracy, and where its errors went.

    ``top1``/``top5`` are percent of the class's images (None without images; ``top5`` None for
    5 classes or fewer, where it is always 100); ``error_share`` is the percent of all the
    evaluation's top-1 errors that are images of this class; ``confused_with`` the class its
    images were most often mistaken for, ``confused`` how many were.
    """

    index: int
    name: str
    images: int
    top1: float | None
    top5: float | None
    error_share: float | None
    confused_with: str | None
    confused: int


@dataclass(frozen=True)
class Confusion:
    """The confusion counts of an evaluation: ``counts[true, predicted]`` (int64, n x n), and
    ``top5_hits[true]``, the images of each class with the true class among the top 5."""

    classes: list[str]
    counts: np.ndarray
    top5_hits: np.ndarray

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def correct(self) -> int:
        return int(np.trace(self.counts))

    def rows(self) -> list[ClassRow]:
        """One :class:`ClassRow` per class, in class order."""
        images = self.counts.sum(axis=1)
        wrong = self.counts.copy()
        np.fill_diagonal(wrong, 0)
        errors = wrong.sum(axis=1)
        total_errors = int(errors.sum())
        rows = []
        for i, name in enumerate(self.classes):
            n = int(images[i])
            j = int(wrong[i].argmax())
            confused = int(wrong[i, j])
            rows.append(
                ClassRow(
                    index=i,
                    name=name,
                    images=n,
                    top1=_pct(int(self.counts[i, i]), n),
                    top5=_pct(int(self.top5_hits[i]), n) if len(self.classes) > 5 else None,
                    error_share=_pct(int(errors[i]), total_errors),
                    confused_with=self.classes[j] if confused else None,
                    confused=confused,
                )
            )
        return rows

    def shares(self) -> np.ndarray:
        """Each row divided by its images (a class without images: a row of zeros)."""
        images = self.counts.sum(axis=1, keepdims=True)
        return np.divide(
            self.counts, images, out=np.zeros(self.counts.shape, dtype=float), where=images > 0
        )

    def write_csv(self, path: str | Path) -> Path:
        """The counts with the class names as header and first column (``true\\predicted``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["true\\predicted", *self.classes])
            for name, row in zip(self.classes, self.counts.tolist(), strict=True):
                w.writerow([name, *row])
        return path


def _pct(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(100.0 * part / whole, 4)


def _side(n: int) -> float:
    """The matrix's side in inches: 5 for a few classes, growing to 14 (about 100 classes)."""
    return float(np.clip(2.5 + 0.115 * n, 5, 14))


def _ticks(n: int) -> tuple[list[int], float]:
    """Which classes are named on the axes, and the font size (points) of their names: as
    large as the space between two names allows (about 80% of the axes are the matrix)."""
    step = max(1, -(-n // AXIS_NAMES_MAX))
    spacing = 0.8 * _side(n) / max(n, 1) * step  # inches between two names
    return list(range(0, n, step)), float(np.clip(spacing * 72 * 0.8, 4, 10))


def confusion_plot(confusion: Confusion, title: str | None = None) -> Figure:
    """The confusion matrix normalised by row (share of each true class's images), with a
    colourbar; the numbers in the cells for up to :data:`CELL_NUMBERS_MAX` classes."""
    import matplotlib

    matplotlib.use("Agg")  # headless; a no-op when pyplot already chose it
    import matplotlib.pyplot as plt

    n = len(confusion.classes)
    side = _side(n)
    fig, ax = plt.subplots(figsize=(side + 1.2, side), layout="constrained")
    shares = confusion.shares()
    im = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class's images")
    ticks, size = _ticks(n)
    names = [confusion.classes[i] for i in ticks]
    ax.set_xticks(ticks, names, rotation=90 if n > 10 else 45, ha="center" if n > 10 else "right")
    ax.set_yticks(ticks, names)
    ax.tick_params(labelsize=size, length=2 if n > 20 else 3.5)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= CELL_NUMBERS_MAX:
        for (i, j), share in np.ndenumerate(shares):
            if confusion.counts[i, j]:
                color = "white" if share > 0.5 else "black"
                ax.text(j, i, f"{share:.2f}", ha="center", va="center", fontsize=size, color=color)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def confusion_figure(
    confusion: Confusion, path: str | Path, title: str | None = None, dpi: int = 110
) -> Path:
    """Write :func:`confusion_plot` to ``path`` (.png, .pdf or .svg by its suffix)."""
    import matplotlib.pyplot as plt

    fig = confusion_plot(confusion, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
