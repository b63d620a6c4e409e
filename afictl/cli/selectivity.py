"""``afictl selectivity``: class selectivity index per channel of a stage (paper Figure 6)."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UserError
from ..render import Format
from ._analysis import (
    ArchsOpt,
    BatchSizeOpt,
    CheckpointOpt,
    DataOpt,
    DataRootOpt,
    MaxBatchesOpt,
    budget_note,
    check_results_file,
    choose_checkpoints,
    pair_archs,
    progress_bar,
)
from ._util import FormatOpt, OutputOpt

__all__ = ["PlotKind", "selectivity_cli"]

_COLUMNS = [
    "stage",
    "block",
    "arch",
    "mean_index",
    "median_index",
    "channels",
    "dead_channels",
    "checkpoint",
]


class PlotKind(StrEnum):
    hist = "hist"
    violin = "violin"


StageOpt = Annotated[
    str,
    typer.Option(
        "--stage",
        "-s",
        help="Stage: conv1..conv3 (CIFAR models) or conv1..conv4 (ImageNet); "
        "aliases layerK, stageK.",
    ),
]
OutDirOpt = Annotated[
    Path,
    typer.Option("--out-dir", file_okay=False, help="Folder for the figure and the channels' CSV."),
]
PlotOpt = Annotated[PlotKind, typer.Option("--plot", help="Distribution plot: hist or violin.")]
FigureFormatOpt = Annotated[
    str, typer.Option("--figure-format", help="Figure file type: png, pdf or svg.")
]


def selectivity_cli(
    stage: StageOpt = "conv3",
    checkpoint: CheckpointOpt = None,
    arch: ArchsOpt = None,
    data: DataOpt = None,
    data_root: DataRootOpt = None,
    max_batches: MaxBatchesOpt = None,
    batch_size: BatchSizeOpt = 128,
    output: OutputOpt = None,
    fmt: FormatOpt = Format.table,
    out_dir: OutDirOpt = Path("selectivity"),
    plot: PlotOpt = PlotKind.hist,
    figure_format: FigureFormatOpt = "png",
) -> None:
    """Class selectivity index (Morcos et al. 2018) of every channel in every block of a stage.

    Measured at each block's AFI output R(i) (the first activation in block 1 and in baseline
    blocks), over the evaluation set: the same images for every checkpoint (the recorded
    evaluation set of the one trained on the fewest images). Writes
    OUT_DIR/selectivity-STAGE.png (one panel per block, the checkpoints overlaid, channel
    counts and means in the legend) and OUT_DIR/selectivity-STAGE.csv (every channel); prints
    per block and checkpoint (in --format, or to --output): mean_index, median_index, channels,
    dead_channels. Checkpoints trained under unequal budgets (dataset, data size, epochs,
    recipe) are compared with a warning, and the table and figure say so.
    """
    if figure_format.lower() not in ("png", "pdf", "svg"):
        raise UserError(f"--figure-format {figure_format!r}: use png, pdf or svg")
    check_results_file(output)
    ckpts = choose_checkpoints(checkpoint)
    from ..analysis.selectivity import run_selectivity
    from ..render import render

    note = budget_note(ckpts)  # choose_checkpoints has warned; this marks the table and figure
    # a log file hears from a long run at least every 10 s (a terminal shows a bar)
    with progress_bar(seconds=10.0) as hook:
        results = run_selectivity(
            ckpts,
            stage,
            archs=pair_archs(ckpts, arch),
            data=data,
            data_root=data_root,
            max_batches=max_batches,
            batch_size=batch_size,
            progress=hook,
        )
    fig_path, csv_path = _write(results, out_dir, plot, figure_format.lower(), note)
    print(f"wrote {fig_path}\nwrote {csv_path}", file=sys.stderr)
    render(
        [row for r in results for row in r.summary()],
        fmt,
        output,
        columns=_COLUMNS,
        formatters={"mean_index": "{:.3f}".format, "median_index": "{:.3f}".format},
        title=_title(results, note),
    )


def _write(
    results: list, out_dir: Path, plot: PlotKind, suffix: str, note: str | None
) -> tuple[Path, Path]:
    """The figure (with ``note``, the pair's unequal budgets, if any) and every channel's CSV."""
    import pandas as pd

    from ..analysis.plots import selectivity_figure
    from ..analysis.selectivity import channel_csv

    stage = results[0].stage
    frames = [r.channels for r in results]
    csv_path = channel_csv(frames, out_dir / f"selectivity-{stage}.csv")
    fig_path = selectivity_figure(
        pd.concat(frames, ignore_index=True),
        out_dir / f"selectivity-{stage}.{suffix}",
        kind=plot.value,
        note=note,
    )
    return fig_path, csv_path


def _title(results: list, note: str | None) -> str:
    """What was measured on which images, and the pair's unequal budgets if they differ."""
    first = results[0]
    same = "the same " if len(results) > 1 else ""
    title = (
        f"Class selectivity index, stage {first.stage}, on {same}{first.images} "
        f"{first.dataset} eval images"
    )
    return f"{title} ({note})" if note else title
