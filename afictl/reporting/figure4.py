"""Figure 4: accuracy against FLOPs and against parameters, each AFI model linked to its baseline.

The points are the trained models' (their parameters and FLOPs at their class count and input
size); the report writes them beside the figure as CSV, so a reader can check the picture. A
dashed line joins an AFI model to its baseline only when both were trained under the same budget
(dataset, data size, epochs, recipe: the points' ``budget`` column); an unequal pair is left
unjoined and named in a caption under the panels.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..models import get_model_info

__all__ = ["budget_caption", "plot_figure4", "training_subtitle"]

_AXES = (("flops", "FLOPs (G, batch 32)", 1e9), ("params", "parameters (M)", 1e6))


def _joined(r: pd.Series) -> bool:
    """Whether an AFI point is linked to its baseline (same budget, or no budget recorded)."""
    cell = r.get("budget")
    return not (isinstance(cell, str) and cell.startswith("unequal"))


def _panel(ax, points: pd.DataFrame, key: str, scale: float) -> None:
    by_arch = {r["arch"]: r for _, r in points.iterrows()}
    for _, r in points.iterrows():
        info = get_model_info(r["arch"])  # the points are registered architectures
        afi = info.is_afi
        colour = "tab:red" if afi else "tab:blue"
        partial = not bool(r.get("finished", True))
        x, y = r[key] / scale, r["top1"]
        ax.scatter(
            x,
            y,
            marker="o" if afi else "s",
            facecolors="none" if partial else colour,
            edgecolors=colour,
            zorder=3,
        )
        label = r["model"] + (" (partial)" if partial else "")
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        base = by_arch.get(info.baseline) if afi else None
        if base is not None and _joined(r):
            ax.plot(
                [base[key] / scale, x],
                [base["top1"], y],
                color="grey",
                linestyle="--",
                zorder=2,
            )


def _values(points: pd.DataFrame, column: str) -> list[str]:
    if column not in points:
        return []
    return sorted({str(v) for v in points[column] if v is not None and not pd.isna(v)})


def training_subtitle(points: pd.DataFrame) -> str:
    """What the points were trained with: ``'recipe quick, epochs 1/1, data size 400'`` (each
    value once; several when the runs differ)."""
    parts = []
    for column, name in (("recipe", "recipe"), ("epochs", "epochs"), ("data_size", "data size")):
        values = _values(points, column)
        if values:
            parts.append(f"{name} {' / '.join(values)}")
    return ", ".join(parts)


def budget_caption(points: pd.DataFrame) -> str | None:
    """One line per AFI point not joined to its baseline (unequal budgets), else None."""
    if "budget" not in points:
        return None
    lines = [
        f"not joined, unequal budgets: {r['model']} vs its baseline: "
        + str(r["budget"]).removeprefix("unequal: ")
        for _, r in points.iterrows()
        if not _joined(r)
    ]
    return "\n".join(lines) or None


def plot_figure4(
    points: pd.DataFrame, paths: list[Path], title: str, ylabel: str = "top-1 accuracy (%)"
) -> list[Path]:
    """Plot Figure 4's points (rows with an accuracy, parameters and FLOPs) into ``paths``:
    the title, the recipe, epochs and data size of the runs under it, and a caption naming
    every pair left unjoined (unequal budgets)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    have = points.dropna(subset=["top1", "params", "flops"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, (key, label, scale) in zip(axes, _AXES, strict=True):
        _panel(ax, have, key, scale)
        ax.set_xlabel(label)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.margins(0.15)  # room for the labels of points at the edges
    axes[0].scatter([], [], marker="s", color="tab:blue", label="baseline")
    axes[0].scatter([], [], marker="o", color="tab:red", label="AFI")
    axes[0].legend(loc="best")
    subtitle = training_subtitle(have)
    fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""))
    caption = budget_caption(have)
    if caption:
        fig.text(0.01, -0.01, caption, ha="left", va="top", fontsize=9, color="tab:red")
    fig.tight_layout()
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        # tight: the labels of edge points and the caption are kept whole, never clipped
        fig.savefig(p, dpi=120, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
    return paths
