"""Figure 4: accuracy against FLOPs and against parameters, each AFI model linked to its baseline."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["plot_figure4"]


def plot_figure4(table: pd.DataFrame, paths: list[Path], title: str) -> list[Path]:
    """Plot the measured rows of a Table 4/5 frame; rows without a run are not drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    have = table.dropna(subset=["top1"])
    for ax, key, label in (
        (axes[0], "flops", "FLOPs (G, batch 32)"),
        (axes[1], "params", "parameters (M)"),
    ):
        scale = 1e9 if key == "flops" else 1e6
        by_arch = {r["arch"]: r for _, r in have.iterrows()}
        for _, r in have.iterrows():
            afi = r["arch"].startswith("afi_")
            ax.scatter(
                r[key] / scale,
                r["top1"],
                marker="o" if afi else "s",
                color="tab:red" if afi else "tab:blue",
                zorder=3,
            )
            ax.annotate(
                r["model"],
                (r[key] / scale, r["top1"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
            base = r["arch"].removeprefix("afi_")
            if afi and base in by_arch:
                b = by_arch[base]
                ax.plot(
                    [b[key] / scale, r[key] / scale],
                    [b["top1"], r["top1"]],
                    color="grey",
                    linestyle="--",
                    zorder=2,
                )
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].scatter([], [], marker="s", color="tab:blue", label="baseline")
    axes[0].scatter([], [], marker="o", color="tab:red", label="AFI")
    axes[0].legend(loc="best")
    if have.empty:
        for ax in axes:
            ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title)
    fig.tight_layout()
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=120)
    plt.close(fig)
    return paths
