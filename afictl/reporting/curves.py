"""Learning curves (``afictl curves``): training and evaluation loss and top-1 per epoch of
several runs, read from their metrics.csv, in one figure.

A comparison means something only under the same budget (afictl/reporting/budget.py): runs
named with unequal budgets are still drawn, and :func:`budget_notes` gives the lines that say so
(on stderr and in the figure). With no run named, :func:`default_curve_runs` takes the newest
run and the newest run of its counterpart trained under the same budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..errors import UserError
from .budget import budget_mismatch, mismatch_note, same_budget
from .runs import list_runs, read_config, read_metrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "POINT_COLUMNS",
    "budget_notes",
    "curve_points",
    "curves_figure",
    "curves_plot",
    "default_curve_runs",
    "run_labels",
]

#: one marker shape per run, each smaller than the one before: where two runs' points coincide,
#: both stay visible (the later drawn inside the earlier)
_MARKERS = ("o", "s", "^", "D", "v", "P")
#: one row per run and epoch
POINT_COLUMNS = ["run", "epoch", "train_loss", "train_top1", "eval_loss", "eval_top1"]


def _config(run_dir: Path) -> dict:
    read = read_config(run_dir)
    if read is None:
        raise UserError(f"{run_dir} is not a run folder (no config.json)")
    return read[0]


def curve_points(run_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """:data:`POINT_COLUMNS` of every evaluated epoch of each run, in the order given.
    :class:`UserError` for a folder that is not a run or has no evaluated epoch yet;
    :class:`~afictl.reporting.runs.RunDamage` for a damaged file."""
    frames = []
    for d in map(Path, run_dirs):
        _config(d)
        metrics = read_metrics(d)
        if metrics.empty:
            raise UserError(f"{d}: no evaluated epoch yet (no curve to draw)")
        points = metrics.reindex(columns=POINT_COLUMNS[1:]).astype(float)
        points["epoch"] = points["epoch"].astype(int)
        points.insert(0, "run", str(d))
        frames.append(points)
    return pd.concat(frames, ignore_index=True)


def run_labels(run_dirs: Sequence[str | Path]) -> dict[str, str]:
    """Each run's name in a legend: its folder's name, or the whole path when two share one."""
    names = [Path(d).name for d in run_dirs]
    return {
        str(d): n if names.count(n) == 1 else str(d) for d, n in zip(run_dirs, names, strict=True)
    }


def budget_notes(run_dirs: Sequence[str | Path]) -> list[str]:
    """One :func:`~afictl.reporting.budget.mismatch_note` for each run whose budget differs
    from the first run's; [] when all were trained alike."""
    labels = run_labels(run_dirs)
    first = Path(run_dirs[0])
    base = _config(first)
    notes = []
    for d in map(Path, run_dirs[1:]):
        differences = budget_mismatch(base, _config(d))
        if differences:
            notes.append(mismatch_note(labels[str(first)], labels[str(d)], differences))
    return notes


def default_curve_runs(root: str | Path = "runs") -> tuple[list[Path], str | None]:
    """The newest run under ``root`` with an evaluated epoch and the newest run of its
    counterpart (:func:`afictl.models.counterpart`) trained under the same budget, baseline
    first; and, when the newest run goes alone, why (None otherwise)."""
    from ..errors import UnknownModelError
    from ..models import counterpart, get_model_info

    rows = [r for r in list_runs(root) if r["epochs_done"]]
    if not rows:
        raise UserError(
            f"no run named and no run with an evaluated epoch under {Path(root)}/; "
            "pass run folders (afictl curves RUN...) or train first (afictl train)"
        )
    newest = rows[0]
    try:
        other = counterpart(newest["arch"])
    except UnknownModelError:
        other = None
    if other is None:
        return [Path(newest["run_dir"])], f"{newest['arch']} has no counterpart"
    config = _config(Path(newest["run_dir"]))
    mates = [r for r in rows if r["arch"] == other]
    mate = next((r for r in mates if same_budget(config, _config(Path(r["run_dir"])))), None)
    if mate is None:
        why = "with the same budget " if mates else ""
        return [Path(newest["run_dir"])], f"no {other} run {why}under {Path(root)}/"
    pair = sorted([newest, mate], key=lambda r: get_model_info(r["arch"]).is_afi)
    return [Path(r["run_dir"]) for r in pair], None


def curves_plot(points: pd.DataFrame, notes: Sequence[str] = ()) -> Figure:
    """Loss (left) and top-1 (right) per epoch of each run of :func:`curve_points`: one colour
    and marker per run, training dashed, evaluation solid; the legend under the panels (it
    hides no curve); ``notes`` in red under the title."""
    import matplotlib

    matplotlib.use("Agg")  # headless, as afictl/analysis/plots.py
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    runs = list(dict.fromkeys(points["run"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for i, run in enumerate(runs):
        df = points[points["run"] == run]
        many = len(df) > 40  # markers show a one-epoch run; on long runs they hide the line
        for ax, metric in zip(axes, ("loss", "top1"), strict=True):
            for split, style in (("train", "--"), ("eval", "-")):
                ax.plot(
                    df["epoch"],
                    df[f"{split}_{metric}"],
                    style,
                    color=_colour(i),
                    marker=None if many else _MARKERS[i % len(_MARKERS)],
                    markersize=max(7.0 - 1.2 * i, 3.0),
                    # hollow training points: a one-epoch run has no line to tell them apart
                    markerfacecolor="none" if split == "train" else _colour(i),
                    linewidth=1.4,
                )
    for ax, what in zip(axes, ("loss", "top-1 (%)"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        first, last = int(points["epoch"].min()), int(points["epoch"].max())
        ax.set_xlim(first - 0.5, last + 0.5)
        if last - first < 12:  # whole epochs only: MaxNLocator falls back to fractions here
            ax.set_xticks(range(first, last + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    _legend(fig, runs)
    from ..analysis.plots import title_with_note  # the analyses' red caveat under the title

    title_with_note(fig, "Learning curves: loss and top-1 per epoch", "; ".join(notes), 11)
    return fig


def curves_figure(
    points: pd.DataFrame, path: str | Path, notes: Sequence[str] = (), dpi: int = 110
) -> Path:
    """:func:`curves_plot` written to ``path`` (.png, .pdf or .svg); returns the path."""
    import matplotlib.pyplot as plt

    fig = curves_plot(points, notes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def _colour(i: int) -> tuple:
    import matplotlib.pyplot as plt

    return plt.get_cmap("tab10")(i % 10)


def _legend(fig: Figure, runs: list[str]) -> None:
    """One entry per run (its colour and marker), then the two line styles; outside the axes."""
    from matplotlib.lines import Line2D

    labels = run_labels(runs)
    handles = [
        Line2D([], [], color=_colour(i), marker=_MARKERS[i % len(_MARKERS)], label=labels[r])
        for i, r in enumerate(runs)
    ]
    handles += [
        Line2D(
            [], [], color="0.3", linestyle="--", marker="o", markerfacecolor="none", label="train"
        ),
        Line2D([], [], color="0.3", linestyle="-", marker="o", label="eval"),
    ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(len(handles), 3),
        fontsize=8,
        frameon=False,
    )
