"""``afictl features``: an AFI module's inputs, output and attention weights (paper Figure 2)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from ..analysis.features import attention_rows, run_features
from ..analysis.plots import features_figure, figure_path
from ..analysis.runs import free_path
from ..render import Format, render
from ._analysis import (
    BatchSizeOpt,
    DataOpt,
    DataRootOpt,
    MaxBatchesOpt,
    choose_checkpoints,
    progress_factory,
)
from ._util import FormatOpt


def features_cli(
    image: Annotated[
        Path | None, typer.Argument(help="Image whose feature maps to show.", show_default=False)
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            "-c",
            help="An AFI model's checkpoint (default: the newest AFI run under ./runs/).",
        ),
    ] = None,
    stage: Annotated[
        str | None,
        typer.Option(
            "--stage", "-s", help="Stage (conv1.., layerK, stageK); default: the last AFI stage."
        ),
    ] = None,
    block: Annotated[
        int | None,
        typer.Option(
            "--block",
            min=1,
            help="1-based block of the stage (3..n carry an AFI module); default: the last.",
        ),
    ] = None,
    data: DataOpt = None,
    data_root: DataRootOpt = None,
    max_batches: MaxBatchesOpt = None,
    batch_size: BatchSizeOpt = 128,
    channels: Annotated[
        int, typer.Option("--channels", min=1, max=32, help="Channels shown in the feature grid.")
    ] = 8,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            dir_okay=False,
            help="Figure file (.png, .pdf, .svg). Default: ./features.png, or features-N.png if that exists.",
        ),
    ] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Feature maps entering an AFI module, its output R, and its attention weights S~.

    With IMAGE: a grid of the inputs X(1..i-1) and of R(i) for the most active channels, each
    input tile titled with its weight alpha (Eq. 2: R is the channel-wise weighted sum), plus
    the softmax matrix S~ (inputs x channels: which earlier block each channel draws from) and
    the stage's mean alpha per block and input (Eq. 8). With --data, S~ is averaged over the
    dataset (IMAGE is then optional). Prints, per input, the mean alpha and the channels it
    dominates.
    """
    if output is not None:
        figure_path(output)
    (ckpt,) = choose_checkpoints([checkpoint] if checkpoint else None, afi_only=True)
    with Progress(transient=True, disable=not sys.stderr.isatty()) as progress:
        result = run_features(
            ckpt,
            image,
            stage=stage,
            block=block,
            data=data,
            data_root=data_root,
            max_batches=max_batches,
            batch_size=batch_size,
            progress=progress_factory(progress),
        )
    path = features_figure(
        result, output if output is not None else free_path("features.png"), channels=channels
    )
    print(f"wrote {path}", file=sys.stderr)
    render(
        attention_rows(result),
        fmt,
        None,
        columns=[
            "stage",
            "block",
            "input",
            "mean_alpha",
            "max_alpha",
            "channels_dominated",
            "channels",
            "averaged_over",
        ],
        formatters={"mean_alpha": "{:.3f}".format, "max_alpha": "{:.3f}".format},
        title=f"{result.arch}: attention of AFI({result.block}) in {result.stage}",
    )
