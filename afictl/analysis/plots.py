"""The analyses' figures (matplotlib, Agg backend: no display needed). Data in, file out.

The file's suffix picks the format: .png (default), .pdf or .svg.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless, deterministic

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from .features import AFIFeatures  # noqa: E402
from .gradcam import GradCamReport  # noqa: E402

__all__ = [
    "FIGURE_SUFFIXES",
    "features_figure",
    "figure_path",
    "gradcam_figure",
    "overlay",
    "selectivity_figure",
]

FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
_DPI = 110
_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _save(fig: plt.Figure, path: str | Path, dpi: int = _DPI) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def overlay(view: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The heatmap (resized to the view, jet colours) blended over the image, RGB in [0, 1]."""
    h, w = view.shape[:2]
    heat = Image.fromarray((np.clip(heatmap, 0, 1) * 255).astype(np.uint8)).resize(
        (w, h), Image.BILINEAR
    )
    colored = plt.get_cmap("jet")(np.asarray(heat, dtype=np.float32) / 255.0)[..., :3]
    return np.clip((1 - alpha) * view + alpha * colored, 0, 1)


def _short(path: str, width: int = 34) -> str:
    name = Path(path).name
    return name if len(name) <= width else name[: width - 3] + "..."


def gradcam_figure(report: GradCamReport, path: str | Path, dpi: int = _DPI) -> Path:
    """Figure 3: one row per image, the original then one CAM panel per checkpoint; the title
    names the method (Grad-CAM, Score-CAM, ...).

    ``dpi`` sets the raster resolution (photos make large PNGs: 110 dpi is about 90 KB per panel).
    """
    images, ckpts = report.images, report.checkpoints
    by_key = {(r.image, r.checkpoint): r for r in report.results}
    cols = 1 + len(ckpts)
    # each row as tall as its image's aspect needs at 2.5 inches per panel, plus three title lines
    aspects = [report.originals[i].shape[0] / report.originals[i].shape[1] for i in images]
    heights = [2.5 * min(max(a, 0.4), 1.6) + 0.6 for a in aspects]
    fig, axes = plt.subplots(
        len(images),
        cols,
        figsize=(2.5 * cols, sum(heights) + 0.3),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for row, image in enumerate(images):
        ax = axes[row, 0]
        ax.imshow(report.originals[image])
        ax.set_title(_short(image), fontsize=8)
        for col, ckpt in enumerate(ckpts, start=1):
            ax = axes[row, col]
            r = by_key.get((image, ckpt))
            if r is None:
                ax.set_visible(False)
                continue
            ax.imshow(overlay(r.view, r.heatmap))
            title = f"{r.arch}\n{r.predicted_class} {r.probability:.0%}"
            if r.target_index != r.predicted_index:
                title += f" | cam: {r.target_class}"
            title += f"\narea {r.attention_area:.0%}"
            ax.set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{report.title} (area: share above half the maximum)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, dpi)


def _label(arch: str, checkpoint: str, multiple_same_arch: bool) -> str:
    return f"{arch} ({_short(checkpoint, 20)})" if multiple_same_arch else arch


def selectivity_figure(channels: pd.DataFrame, path: str | Path, kind: str = "hist") -> Path:
    """Figure 6: per block, the distribution of the live channels' index for each checkpoint.

    ``kind``: ``hist`` (step histograms overlaid) or ``violin``. The legend gives each mean.
    """
    blocks = sorted(channels["block"].unique())
    ckpts = list(dict.fromkeys(channels["checkpoint"]))
    archs = channels.drop_duplicates("checkpoint").set_index("checkpoint")["arch"]
    dup = archs.duplicated().any()
    stage = channels["stage"].iloc[0]
    ncols = min(len(blocks), 4)
    nrows = -(-len(blocks) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols, 2.5 * nrows), squeeze=False)
    bins = np.linspace(0, 1, 21)
    for ax, block in zip(axes.flat, blocks, strict=False):
        data = []
        for i, ckpt in enumerate(ckpts):
            g = channels[(channels["checkpoint"] == ckpt) & (channels["block"] == block)]
            live = g.loc[~g["dead"], "index"].to_numpy()
            label = (
                f"{_label(archs[ckpt], ckpt, dup)}: {live.mean():.3f}"
                if live.size
                else f"{archs[ckpt]}: all dead"
            )
            dead = int(g["dead"].sum())
            if dead:
                label += f" ({dead} dead)"
            color = _COLORS[i % len(_COLORS)]
            data.append((live, label, color))
            if kind == "hist" and live.size:
                ax.hist(
                    live,
                    bins=bins,
                    histtype="stepfilled",
                    alpha=0.35,
                    color=color,
                    label=label,
                    weights=np.full(live.size, 1.0 / live.size),
                )
                ax.axvline(live.mean(), color=color, lw=1, ls="--")
        if kind == "violin":
            present = [(d, lab, c) for d, lab, c in data if d.size]
            if present:
                parts = ax.violinplot([d for d, _, _ in present], showmeans=True, showextrema=False)
                for body, (_, lab, c) in zip(parts["bodies"], present, strict=True):
                    body.set_facecolor(c)
                    body.set_alpha(0.5)
                    body.set_label(lab)
                ax.set_xticks(range(1, len(present) + 1), [""] * len(present))
            ax.set_ylim(0, 1)
            ax.set_ylabel("selectivity index", fontsize=8)
        else:
            ax.set_xlim(0, 1)
            ax.set_ylim(0, ax.get_ylim()[1] * 1.45)  # headroom: the legend sits above the bars
            ax.set_xlabel("selectivity index", fontsize=8)
            ax.set_ylabel("share of channels", fontsize=8)
        ax.set_title(f"{stage} block {block}", fontsize=9)
        ax.legend(fontsize=7, title="mean", title_fontsize=7, loc="upper right")
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(blocks) :]:
        ax.set_visible(False)
    fig.suptitle(f"Class selectivity index per channel, stage {stage}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _channels_to_show(result: AFIFeatures, count: int) -> list[int]:
    """The ``count`` channels with the most output activity (the most informative tiles)."""
    activity = result.output.mean(axis=(1, 2))
    return sorted(np.argsort(-activity, kind="stable")[:count].tolist())


def features_figure(result: AFIFeatures, path: str | Path, channels: int = 8) -> Path:
    """Figure 2 made visible: inputs X(j) and output R of one AFI module, and its weights S~.

    Top (with an image): one row per input X(1..n) and one for R, the same ``channels``
    channels in every row, each channel's colour scale shared down the column so that R reads
    as the weighted sum of the tiles above it; every X tile is titled with its weight alpha.
    Bottom: S~ (inputs x channels) and, across the stage, every module's mean alpha per input.
    """
    has_maps = result.output is not None
    n = result.weights.shape[0]
    shown = _channels_to_show(result, channels) if has_maps else []
    map_rows = (n + 1) if has_maps else 0
    cols = max(len(shown) + 1, 4)
    height = 1.25 * map_rows + 2.8
    fig = plt.figure(figsize=(1.25 * cols + 0.6, height))
    grid = fig.add_gridspec(map_rows + 1, cols, height_ratios=[1.0] * map_rows + [2.4])
    if has_maps:
        tensors = [*result.inputs, result.output]
        labels = [f"X({j + 1})" for j in range(n)] + [f"R({result.block})"]
        ax = fig.add_subplot(grid[: min(2, map_rows), 0])
        ax.imshow(result.view)
        ax.set_title(_short(result.image or "", 16), fontsize=7)
        ax.axis("off")
        for c_i, c in enumerate(shown):
            vmax = max(float(t[c].max()) for t in tensors) or 1.0
            for r, (t, lab) in enumerate(zip(tensors, labels, strict=True)):
                ax = fig.add_subplot(grid[r, c_i + 1])
                ax.imshow(t[c], cmap="magma", vmin=0, vmax=vmax)
                ax.set_xticks([])
                ax.set_yticks([])
                if r < n:
                    ax.set_title(f"α={result.attention[r, c]:.2f}", fontsize=6, pad=2)
                else:
                    ax.set_title(f"ch {c}", fontsize=6, pad=2)
                if c_i == 0:
                    ax.set_ylabel(lab, fontsize=7)
    split = max(1, cols * 2 // 3)
    ax = fig.add_subplot(grid[map_rows, :split])
    # Diverging colours centred on the uniform weight 1/n: white = no preference, red = the
    # channel draws more from that input, blue = less. (On 0..1 the weights of a module with
    # n inputs all sit near 1/n and look alike.)
    uniform = 1.0 / n
    spread = max(float(np.abs(result.weights - uniform).max()), 1e-3)
    im = ax.imshow(
        result.weights,
        aspect="auto",
        cmap="RdBu_r",
        vmin=uniform - spread,
        vmax=uniform + spread,
        interpolation="nearest",
    )
    ax.set_yticks(range(n), [f"X({j + 1})" for j in range(n)], fontsize=7)
    ax.set_xlabel("channel of R", fontsize=7)
    ax.tick_params(labelsize=6)
    where = (
        f"mean over {result.dataset_images} images"
        if result.dataset_attention is not None
        else "this image"
    )
    ax.set_title(
        rf"$\tilde{{S}}$ of AFI({result.block}) in {result.stage}, {where} (white: 1/{n})",
        fontsize=8,
    )
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01).ax.tick_params(labelsize=6)
    if result.stage_alpha:
        blocks = sorted(result.stage_alpha)
        width = max(blocks) - 1
        mat = np.full((len(blocks), width), np.nan)
        for r, b in enumerate(blocks):
            mat[r, : b - 1] = result.stage_alpha[b]
        ax = fig.add_subplot(grid[map_rows, split:])
        # colour = departure from the uniform weight 1/(i-1) of each row (at least +-0.1, so that
        # a nearly uniform module stays nearly white); the numbers are the weights themselves
        dev = mat - np.array([1.0 / (b - 1) for b in blocks])[:, None]
        spread = max(float(np.nanmax(np.abs(dev))), 0.1)
        ax.imshow(
            np.ma.masked_invalid(dev),
            aspect="auto",
            cmap="RdBu_r",
            vmin=-spread,
            vmax=spread,
            interpolation="nearest",
        )
        ax.set_yticks(range(len(blocks)), [f"AFI({b})" for b in blocks], fontsize=7)
        ax.set_xticks(range(width), [f"X({j + 1})" for j in range(width)], fontsize=6)
        if mat.size <= 64:  # small enough to print the coefficients themselves
            for (r, c), v in np.ndenumerate(mat):
                if not np.isnan(v):
                    ax.text(
                        c,
                        r,
                        f"{v:.2f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if abs(dev[r, c]) > 0.6 * spread else "black",
                    )
        ax.set_title(r"stage: mean $\alpha_j^{(i)}$ (Eq. 8; white: $1/(i-1)$)", fontsize=8)
    fig.suptitle(f"{result.arch}: AFI module {result.module}", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def figure_path(path: str | Path) -> Path:
    """Check a figure path's suffix (.png, .pdf, .svg)."""
    from ..errors import UserError

    path = Path(path)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise UserError(f"{path}: figures are written as {', '.join(FIGURE_SUFFIXES)}")
    return path
