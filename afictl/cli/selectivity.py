"""``afictl selectivity``: class selectivity index per channel of a stage (paper Figure 6)."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from ..analysis.plots import selectivity_figure
from ..analysis.selectivity import channel_csv, run_selectivity
from ..render import Format, render
from ._analysis import (
    BatchSizeOpt,
    CheckpointOpt,
    DataOpt,
    DataRootOpt,
    MaxBatchesOpt,
    choose_checkpoints,
    progress_factory,
)
from ._util import FormatOpt


class PlotKind(StrEnum):
    hist = "hist"
    violin = "violin"


def selectivity_cli(
    stage: Annotated[
        str,
        typer.Option(
            "--stage",
            "-s",
            help="Stage: conv1..conv3 (CIFAR models) or conv1..conv4 (ImageNet); "
            "aliases layerK, stageK.",
        ),
    ] = "conv3",
    checkpoint: CheckpointOpt = None,
    data: DataOpt = None,
    data_root: DataRootOpt = None,
    max_batches: MaxBatchesOpt = None,
    batch_size: BatchSizeOpt = 128,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", file_okay=False, help="Folder for the figure and the CSV."),
    ] = Path("selectivity"),
    plot: Annotated[
        PlotKind, typer.Option("--plot", help="Distribution plot: hist or violin.")
    ] = PlotKind.hist,
    figure_format: Annotated[
        str, typer.Option("--figure-format", help="Figure file type: png, pdf or svg.")
    ] = "png",
    fmt: FormatOpt = Format.table,
) -> None:
    """Class selectivity index (Morcos et al. 2018) of every channel in every block of a stage.

    Measured at each block's AFI output R(i) (the first activation in block 1 and in baseline
    blocks), over the evaluation set. Writes OUTPUT/selectivity-STAGE.png (one panel per block,
    the checkpoints overlaid, means in the legend) and OUTPUT/selectivity-STAGE.csv (every
    channel); prints per block and checkpoint: mean_index, channels, dead_channels.
    """
    if figure_format.lower() not in ("png", "pdf", "svg"):
        from ..errors import UserError

        raise UserError(f"--figure-format {figure_format!r}: use png, pdf or svg")
    ckpts = choose_checkpoints(checkpoint)
    with Progress(transient=True, disable=not sys.stderr.isatty()) as progress:
        results = run_selectivity(
            ckpts,
            stage,
            data=data,
            data_root=data_root,
            max_batches=max_batches,
            batch_size=batch_size,
            progress=progress_factory(progress),
        )
    paper_stage = results[0].stage
    frames = [r.channels for r in results]
    csv_path = channel_csv(frames, output / f"selectivity-{paper_stage}.csv")
    import pandas as pd

    fig_path = selectivity_figure(
        pd.concat(frames, ignore_index=True),
        output / f"selectivity-{paper_stage}.{figure_format.lower()}",
        kind=plot.value,
    )
    print(f"wrote {fig_path}", file=sys.stderr)
    print(f"wrote {csv_path}", file=sys.stderr)
    rows = [row for r in results for row in r.summary()]
    render(
        rows,
        fmt,
        None,
        columns=[
            "stage",
            "block",
            "arch",
            "mean_index",
            "median_index",
            "channels",
            "dead_channels",
            "checkpoint",
        ],
        formatters={"mean_index": "{:.3f}".format, "median_index": "{:.3f}".format},
        title=f"Class selectivity index, stage {paper_stage}",
    )
