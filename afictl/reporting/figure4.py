"""Figure 4: accuracy against FLOPs and against parameters, each AFI model linked to its baseline.

The points are the trained models' (their parameters and FLOPs at their class count and input
size); the report writes them beside the figure as CSV, so a reader can check the picture.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["plot_figure4"]

_AXES = (("flops", "FLOPs (G, batch 32)", 1e9), ("params", "parameters (M)", 1e6))


def _panel(ax, points: pd.DataFrame, key: str, scale: float) -> None:
    by_arch = {r["arch"]: r for _, r in points.iterrows()}
    for _, r in points.iterrows():
        afi = r["arch"].startswith("afi_")
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
        base = by_arch.get(r["arch"].removeprefix("afi_")) if afi else None
        if base is not None:
            ax.plot(
                [base[key] / scale, x],
                [base["top1"], y],
                color="grey",
                linestyle="--",
                zorder=2,
            )


def plot_figure4(
    points: pd.DataFrame, paths: list[Path], title: str, ylabel: str = "top-1 accuracy (%)"
) -> list[Path]:
    """Plot Figure 4's points (rows with an accuracy, parameters and FLOPs) into ``paths``."""
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
    fig.suptitle(title)
    fig.tight_layout()
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=120)
    plt.close(fig)
    return paths
