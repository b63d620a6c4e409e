"""The analyses' figures (matplotlib, Agg backend: no display needed). Data in, file out.

Each figure has a ``*_plot`` function that returns the matplotlib Figure (for tests and for
people who restyle it) and a ``*_figure`` function that writes it; the file's suffix picks the
format: .png (default), .pdf or .svg. Figures use matplotlib's constrained layout, which also
makes room for their colorbars.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless, deterministic

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize, TwoSlopeNorm  # noqa: E402
from matplotlib.text import Annotation  # noqa: E402
from PIL import Image  # noqa: E402

from .features import AFIFeatures  # noqa: E402
from .gradcam import GradCamReport  # noqa: E402
from .labels import FIGURE_SUFFIXES, percent  # noqa: E402

__all__ = [
    "FIGURE_SUFFIXES",
    "features_figure",
    "features_plot",
    "figure_path",
    "gradcam_figure",
    "gradcam_plot",
    "overlay",
    "selectivity_bins",
    "selectivity_figure",
    "selectivity_plot",
    "selectivity_range",
    "title_with_note",
    "weights_norm",
]

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


def title_with_note(fig: plt.Figure, title: str, note: str | None = None, size: float = 10) -> None:
    """The figure's title and, under it, ``note`` in red: a caveat no reader can miss.

    The title gets one blank line per line of the note, so that constrained layout makes room
    for it; the note is then drawn over those blank lines (anchored to the title).
    """
    if not note:
        fig.suptitle(title, fontsize=size)
        return
    chars = max(40, int(fig.get_figwidth() * 72 / (0.55 * size)))  # a line as wide as the figure
    lines = textwrap.wrap(" ".join(note.split()), chars) or [note]
    # wider lines than the note's: it sits clear of the axes titles below
    head = fig.suptitle(title + "\n " * len(lines), fontsize=size, linespacing=1.5)
    caption = Annotation(
        "\n".join(lines),
        xy=(0.5, 0.0),
        xycoords=head,
        xytext=(0, 0.3 * size),
        textcoords="offset points",
        ha="center",
        va="bottom",
        multialignment="center",
        color="red",
        fontsize=size,
        gid="note",
    )
    caption.set_in_layout(False)  # its room is the title's blank lines
    fig.add_artist(caption)


#: A darker shade of each colour above: medians and means drawn over a body of that colour.
_DARK = ["#0b3c68", "#7a1315", "#14591a", "#4b2d6b", "#a04d00", "#4a2d26"]
#: Text sizes (points at the written size): titles and labels readable in a printed column.
_TITLE, _LABEL, _TICK = 9, 8, 8


# --- Figure 3: Grad-CAM ---------------------------------------------------------------------


def _cam_title(r) -> str:
    title = f"{r.arch}\n{r.predicted_class} {percent(r.probability)}"
    if r.target_index != r.predicted_index:
        title += f" | cam: {r.target_class} {percent(r.target_probability)}"
    return title + f"\narea {percent(r.attention_area, digits=0)}"


def _input_size(view: np.ndarray) -> str:
    return f"{view.shape[1]}\u00d7{view.shape[0]}"


def _show_input(ax: plt.Axes, view: np.ndarray) -> None:
    """The model's own pixels, enlarged without smoothing (each input pixel a square)."""
    ax.imshow(view, interpolation="nearest")


def gradcam_plot(report: GradCamReport, note: str | None = None) -> plt.Figure:
    """Figure 3: one row per image, the model's input (the resized or cropped S x S pixels it
    saw, un-normalised) then one CAM panel per checkpoint over exactly those pixels, titled with
    the predicted class and its probability; one colorbar (the heatmap's colours, each map
    scaled to its own maximum), a title naming the method and the input size, and ``note`` (a
    caveat such as unequal training budgets) in red under the title."""
    images, ckpts = report.images, report.checkpoints
    by_key = {(r.image, r.checkpoint): r for r in report.results}
    first = {i: next(r for r in report.results if r.image == i) for i in images}
    cols = 1 + len(ckpts)
    # square panels of 2.5 inches plus three title lines per row
    fig, axes = plt.subplots(
        len(images),
        cols,
        figsize=(2.5 * cols + 0.8, 3.1 * len(images) + 0.4),
        squeeze=False,
        layout="constrained",
    )
    for row, image in enumerate(images):
        view = first[image].view
        _show_input(axes[row, 0], view)
        photo = report.sizes.get(image)
        of = f" of {photo[0]}\u00d7{photo[1]}" if photo else ""
        axes[row, 0].set_title(
            f"{_short(image)}\nmodel input {_input_size(view)}{of}", fontsize=_TITLE
        )
        for col, ckpt in enumerate(ckpts, start=1):
            r = by_key.get((image, ckpt))
            if r is None:
                axes[row, col].set_visible(False)
                continue
            _show_input(axes[row, col], r.view)
            # the heatmap has the input's shape: the same pixel grid, smoothed for reading
            axes[row, col].imshow(
                r.heatmap, cmap="jet", vmin=0, vmax=1, alpha=0.5, interpolation="bilinear"
            )
            axes[row, col].set_title(_cam_title(r), fontsize=_TITLE)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(
        ScalarMappable(Normalize(0, 1), cmap="jet"),
        ax=axes[:, 1:].ravel().tolist(),
        fraction=0.04,
        pad=0.02,
        shrink=min(1.0, 0.9 if len(images) > 1 else 0.8),
    )
    bar.set_label(f"{report.title} (1 = the map's maximum)", fontsize=_LABEL)
    bar.ax.tick_params(labelsize=_TICK)
    sizes = " / ".join(dict.fromkeys(_input_size(r.view) for r in report.results))
    title_with_note(
        fig,
        f"{report.title} on the model's {sizes} input (area: share above half the maximum)",
        note,
    )
    return fig


def gradcam_figure(
    report: GradCamReport, path: str | Path, dpi: int = _DPI, note: str | None = None
) -> Path:
    """Write :func:`gradcam_plot` (``note``: a red caption under the title). ``dpi`` sets the
    raster resolution."""
    return _save(gradcam_plot(report, note=note), path, dpi)


# --- Figure 6: class selectivity --------------------------------------------------------------


def _label(arch: str, checkpoint: str, multiple_same_arch: bool) -> str:
    return f"{arch} ({_short(checkpoint, 20)})" if multiple_same_arch else arch


def selectivity_range(values: np.ndarray, step: float = 0.05) -> tuple[float, float]:
    """The axis range of Figure 6: the live channels' indices, widened to multiples of ``step``
    (at least one step wide) and kept inside [0, 1], the index's own range."""
    values = np.asarray(values, dtype=np.float64)
    if not values.size:
        return 0.0, 1.0
    lo = max(0.0, np.floor(values.min() / step + 1e-9) * step)
    hi = min(1.0, np.ceil(values.max() / step - 1e-9) * step)
    if hi - lo < step:  # every channel at (nearly) one value: one step around it
        lo, hi = max(0.0, min(lo, 1.0 - step)), min(1.0, max(hi, lo + step))
    return float(round(lo, 10)), float(round(hi, 10))


def _panels(channels: pd.DataFrame) -> dict[int, list[tuple[np.ndarray, str, int]]]:
    """Per block: (live indices, legend label with mean and channel count, colour number) for
    each checkpoint, in the order the checkpoints came."""
    ckpts = list(dict.fromkeys(channels["checkpoint"]))
    archs = channels.drop_duplicates("checkpoint").set_index("checkpoint")["arch"]
    dup = archs.duplicated().any()
    out: dict[int, list[tuple[np.ndarray, str, int]]] = {}
    for block in sorted(channels["block"].unique()):
        out[int(block)] = []
        for i, ckpt in enumerate(ckpts):
            g = channels[(channels["checkpoint"] == ckpt) & (channels["block"] == block)]
            live = g.loc[~g["dead"], "index"].to_numpy()
            dead = int(g["dead"].sum())
            name = _label(archs[ckpt], ckpt, dup)
            if not live.size:
                out[int(block)].append((live, f"{name}: all {dead} channels dead", i))
                continue
            count = f"n={live.size}" + (f", {dead} dead" if dead else "")
            out[int(block)].append((live, f"{name} ({count}): mean {live.mean():.3f}", i))
    return out


def _hist_panel(ax: plt.Axes, data: list, bins: np.ndarray) -> float:
    """Step histograms (share of each model's live channels) and dashed means; the tallest bar."""
    top = 0.0
    for live, label, i in data:
        if not live.size:
            ax.plot([], [], color=_COLORS[i % len(_COLORS)], label=label)
            continue
        weights = np.full(live.size, 1.0 / live.size)
        heights, _, _ = ax.hist(
            live,
            bins=bins,
            histtype="stepfilled",
            alpha=0.35,
            color=_COLORS[i % len(_COLORS)],
            edgecolor=_DARK[i % len(_DARK)],
            linewidth=0.8,
            label=label,
            weights=weights,
        )
        ax.axvline(live.mean(), color=_DARK[i % len(_DARK)], lw=1.2, ls="--", gid="mean")
        top = max(top, float(np.max(heights)))
    return top


def _violin_panel(ax: plt.Axes, data: list) -> None:
    """One violin per model, x-labelled; its median a line and its mean a dot in its dark shade."""
    present = [(d, lab, i) for d, lab, i in data if d.size]
    for d, lab, i in data:
        if not d.size:
            ax.plot([], [], color=_COLORS[i % len(_COLORS)], label=lab)
    if not present:
        return
    parts = ax.violinplot([d for d, _, _ in present], showmedians=True, showextrema=False)
    dark = [_DARK[i % len(_DARK)] for _, _, i in present]
    for body, (_, lab, i) in zip(parts["bodies"], present, strict=True):
        body.set_facecolor(_COLORS[i % len(_COLORS)])
        body.set_edgecolor(_DARK[i % len(_DARK)])
        body.set_alpha(0.5)
        body.set_label(lab)
    parts["cmedians"].set_colors(dark)
    parts["cmedians"].set_linewidth(2)
    parts["cmedians"].set_gid("medians")  # findable by tests and by people restyling it
    for x, ((d, _, _), c) in enumerate(zip(present, dark, strict=True), start=1):
        ax.plot(x, d.mean(), "o", color=c, markersize=4, markeredgecolor="white", zorder=3)
    names = [lab.split(" (")[0].split(":")[0] for _, lab, _ in present]
    ax.set_xticks(range(1, len(present) + 1), names, fontsize=_TICK, rotation=15 * (len(names) > 2))


def selectivity_bins(values: np.ndarray, count: int = 20) -> np.ndarray:
    """The histogram bin edges of Figure 6, one set for every model and panel: ``count`` bins
    over :func:`selectivity_range` of all the live indices together (inside [0, 1], the index's
    range), computed once, so that the models' histograms compare bar by bar."""
    lo, hi = selectivity_range(values)
    return np.linspace(lo, hi, count + 1)


def _legend_above(ax: plt.Axes, header: str) -> None:
    """The panel's legend above its axes, headed by the panel's name: it covers no bar, no
    mean line and no violin (constrained layout makes room for it)."""
    legend = ax.legend(
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        fontsize=_TICK,
        title=header,
        title_fontsize=_TITLE,
        frameon=False,
        borderaxespad=0.3,
    )
    legend.get_title().set_fontweight("bold")


def selectivity_plot(
    channels: pd.DataFrame, kind: str = "hist", note: str | None = None
) -> plt.Figure:
    """Figure 6: per block, the distribution of the live channels' index for each checkpoint.

    ``kind``: ``hist`` (step histograms overlaid on the same bin edges,
    :func:`selectivity_bins`, dashed means) or ``violin`` (median line and mean dot per model).
    Every panel shares one index axis fitted to the data (:func:`selectivity_range`) and one
    scale for the other axis; each panel's legend, above its axes, gives each model's live
    channel count and mean index. ``note`` (a caveat such as unequal training budgets) is
    written in red under the title.
    """
    panels = _panels(channels)
    stage = channels["stage"].iloc[0]
    live_all = channels.loc[~channels["dead"], "index"].to_numpy()
    lo, hi = selectivity_range(live_all)
    bins = selectivity_bins(live_all)
    ncols = min(len(panels), 4)
    nrows = -(-len(panels) // ncols)
    n_models = channels["checkpoint"].nunique()
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(3.3 * ncols, (2.5 + 0.18 * n_models) * nrows + 0.4),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    top = 0.0
    for ax, (block, data) in zip(axes.flat, panels.items(), strict=False):
        if kind == "violin":
            _violin_panel(ax, data)
        else:
            top = max(top, _hist_panel(ax, data, bins))
        _legend_above(ax, f"{stage} block {block}")
        ax.tick_params(labelsize=_TICK)
    first = axes[0, 0]
    if kind == "violin":
        first.set_ylim(lo, hi)
        for ax in axes[:, 0]:
            ax.set_ylabel("selectivity index", fontsize=_LABEL)
    else:
        first.set_xlim(lo, hi)
        first.set_ylim(0, (top or 1.0) * 1.08)
        for ax in axes[:, 0]:
            ax.set_ylabel("share of live channels", fontsize=_LABEL)
        for ax in axes[-1, :]:
            ax.set_xlabel("selectivity index", fontsize=_LABEL)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    how = "line: median, dot: mean" if kind == "violin" else "dashed: mean; legend: n, mean"
    title_with_note(fig, f"Class selectivity index per channel, stage {stage} ({how})", note)
    return fig


def selectivity_figure(
    channels: pd.DataFrame, path: str | Path, kind: str = "hist", note: str | None = None
) -> Path:
    """Write :func:`selectivity_plot` (``note``: a red caption under the title)."""
    return _save(selectivity_plot(channels, kind, note=note), path)


# --- Figure 2: an AFI module's features ------------------------------------------------------


def _channels_to_show(result: AFIFeatures, count: int) -> list[int]:
    """The ``count`` channels with the most output activity (the most informative tiles)."""
    activity = result.output.mean(axis=(1, 2))
    return sorted(np.argsort(-activity, kind="stable")[:count].tolist())


def _feature_tiles(fig: plt.Figure, spec, result: AFIFeatures, shown: list[int]) -> None:
    """The source image (large, left), one row per input X(j) and one for R, a column per
    channel, and the tiles' colour scale (right)."""
    n = len(result.inputs)
    grid = spec.subgridspec(n + 1, len(shown) + 2, width_ratios=[2.6] + [1.0] * len(shown) + [0.12])
    ax = fig.add_subplot(grid[:, 0])
    _show_input(ax, result.view)
    size = _input_size(result.view)
    ax.set_title(f"{_short(result.image or '', 22)}\nmodel input {size}", fontsize=_TITLE)
    ax.axis("off")
    tensors = [*result.inputs, result.output]
    labels = [f"X({j + 1})" for j in range(n)] + [f"R({result.block})"]
    for c_i, c in enumerate(shown):
        # one scale per channel down the column, so that R reads as the weighted sum of the
        # tiles above it; shown as a share of the column's maximum (printed under R)
        vmax = max(float(t[c].max()) for t in tensors) or 1.0
        for r, (t, lab) in enumerate(zip(tensors, labels, strict=True)):
            ax = fig.add_subplot(grid[r, c_i + 1])
            im = ax.imshow(t[c] / vmax, cmap="magma", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r < n:
                ax.set_title(f"α={result.attention[r, c]:.2f}", fontsize=_LABEL, pad=2)
            else:
                ax.set_title(f"ch {c}", fontsize=_LABEL, pad=2)
                ax.set_xlabel(f"max {vmax:.3g}", fontsize=_LABEL, labelpad=2)
            if c_i == 0:
                ax.set_ylabel(lab, fontsize=_TITLE)
    # labelled as the colorbars matplotlib makes itself (``fig.colorbar(..., ax=...)``)
    bar = fig.colorbar(im, cax=fig.add_subplot(grid[:, -1], label="<colorbar>"))
    bar.set_label("activation / channel's max", fontsize=_LABEL)
    bar.ax.tick_params(labelsize=_TICK)


def weights_norm(n: int) -> TwoSlopeNorm:
    """The colour scale of S~ for a module with ``n`` inputs: the weights' whole range [0, 1],
    white at the uniform weight 1/n. Fixed, whatever the data: near-uniform attention looks
    near-white, not zoomed into structure (each channel's weights are a softmax over n)."""
    return TwoSlopeNorm(vcenter=1.0 / n, vmin=0.0, vmax=1.0)


#: Half the span of the stage panel's colour scale (alpha - 1/(i-1)), fixed for every figure.
STAGE_SPAN = 0.5


def _weights_panel(fig: plt.Figure, ax: plt.Axes, result: AFIFeatures) -> None:
    """S~ (inputs x channels) on the fixed scale of :func:`weights_norm`."""
    w = result.weights
    n = w.shape[0]
    # white = the uniform weight 1/n (no preference), red = the channel draws more from that
    # input (up to 1: only that input), blue = less (down to 0)
    im = ax.imshow(w, aspect="auto", cmap="RdBu_r", norm=weights_norm(n), interpolation="nearest")
    ax.set_yticks(range(n), [f"X({j + 1})" for j in range(n)], fontsize=_TICK)
    ax.set_xlabel("channel of R", fontsize=_LABEL)
    ax.tick_params(labelsize=_TICK)
    if result.dataset_attention is not None:
        source = f" {result.dataset}" if result.dataset else ""
        where = f"mean over {result.dataset_images}{source} images"
    else:
        where = "this image"
    ax.set_title(
        rf"$\tilde{{S}}$ of AFI({result.block}) in {result.stage}, {where}", fontsize=_TITLE
    )
    bar = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.01)
    bar.set_ticks(sorted({0.0, 1.0 / n, 1.0}))
    bar.ax.tick_params(labelsize=_TICK)
    bar.set_label(f"weight (softmax over {n}; white: 1/{n})", fontsize=_LABEL)


def _stage_panel(fig: plt.Figure, ax: plt.Axes, stage_alpha: dict[int, np.ndarray]) -> None:
    """Every AFI module of the stage: mean alpha per input (Eq. 8), coloured by its departure
    from the uniform weight 1/(i-1) of its row on a fixed +-:data:`STAGE_SPAN` scale, the
    numbers printed when they fit."""
    blocks = sorted(stage_alpha)
    width = max(blocks) - 1
    mat = np.full((len(blocks), width), np.nan)
    for r, b in enumerate(blocks):
        mat[r, : b - 1] = stage_alpha[b]
    dev = mat - np.array([1.0 / (b - 1) for b in blocks])[:, None]
    spread = STAGE_SPAN  # fixed: a nearly uniform module stays nearly white
    im = ax.imshow(
        np.ma.masked_invalid(dev),
        aspect="auto",
        cmap="RdBu_r",
        vmin=-spread,
        vmax=spread,
        interpolation="nearest",
    )
    ax.set_yticks(range(len(blocks)), [f"AFI({b})" for b in blocks], fontsize=_TICK)
    ax.set_xticks(range(width), [f"X({j + 1})" for j in range(width)], fontsize=_TICK)
    if mat.size <= 64:  # small enough to print the coefficients themselves
        for (r, c), v in np.ndenumerate(mat):
            if not np.isnan(v):
                color = "white" if abs(dev[r, c]) > 0.6 * spread else "black"
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=_LABEL, color=color)
    ax.set_title(r"stage: mean $\alpha_j^{(i)}$ (Eq. 8)", fontsize=_TITLE)
    bar = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    bar.ax.tick_params(labelsize=_TICK)
    bar.set_label(r"$\alpha - 1/(i-1)$ (white: uniform)", fontsize=_LABEL)


def features_plot(result: AFIFeatures, channels: int = 8) -> plt.Figure:
    """Figure 2 made visible: inputs X(j) and output R of one AFI module, and its weights S~.

    Top (with an image): the image, then one row per input X(1..n) and one for R, the same
    ``channels`` channels in every row, each X tile titled with its weight alpha, and the
    tiles' colour scale. Bottom: S~ (inputs x channels) and, across the stage, every module's
    mean alpha per input, each with its colorbar.
    """
    has_maps = result.output is not None
    n = result.weights.shape[0]
    shown = _channels_to_show(result, channels) if has_maps else []
    map_rows = (n + 1) if has_maps else 0
    width = max(1.15 * len(shown) + 3.4, 8.0)
    fig = plt.figure(figsize=(width, 1.3 * map_rows + 3.0), layout="constrained")
    outer = fig.add_gridspec(
        2 if has_maps else 1, 1, height_ratios=[1.3 * map_rows, 2.6] if has_maps else None
    )
    if has_maps:
        _feature_tiles(fig, outer[0], result, shown)
    bottom = outer[-1].subgridspec(1, 2, width_ratios=[2.0, 1.0] if result.stage_alpha else [1, 0])
    _weights_panel(fig, fig.add_subplot(bottom[0, 0]), result)
    if result.stage_alpha:
        _stage_panel(fig, fig.add_subplot(bottom[0, 1]), result.stage_alpha)
    fig.suptitle(f"{result.arch}: AFI module {result.module}", fontsize=_TITLE + 1)
    return fig


def features_figure(result: AFIFeatures, path: str | Path, channels: int = 8) -> Path:
    """Write :func:`features_plot`."""
    return _save(features_plot(result, channels), path)


def figure_path(path: str | Path) -> Path:
    """Check a figure path's suffix (.png, .pdf, .svg)."""
    from ..errors import UserError

    path = Path(path)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise UserError(f"{path}: figures are written as {', '.join(FIGURE_SUFFIXES)}")
    return path
