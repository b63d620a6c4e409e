"""``afictl features``: an AFI module's inputs, output and attention weights (paper Figure 2)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..render import Format
from ._analysis import (
    BatchSizeOpt,
    DataOpt,
    DataRootOpt,
    MaxBatchesOpt,
    check_figure,
    check_results_file,
    choose_checkpoints,
    figure_option,
    progress_bar,
)
from ._util import FormatOpt, ModelArchOpt, OutputOpt

__all__ = ["features_cli"]

_COLUMNS = [
    "stage",
    "block",
    "input",
    "mean_alpha",
    "max_alpha",
    "channels_dominated",
    "channels",
    "averaged_over",
]
FeaturesFigureOpt = figure_option("features.png")


ImageArg = Annotated[
    Path | None,
    typer.Argument(
        help="Image whose feature maps to show (default: none; S~ averaged over the "
        "checkpoint's dataset).",
        show_default=False,
    ),
]
AfiCheckpointOpt = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        "-c",
        help="An AFI model's checkpoint: a run's .pt or folder, a plain state dict (with "
        "--arch) or a .safetensors file (default: the newest AFI run under ./runs/).",
    ),
]
StageOpt = Annotated[
    str | None,
    typer.Option(
        "--stage", "-s", help="Stage (conv1.., layerK, stageK); default: the last AFI stage."
    ),
]
BlockOpt = Annotated[
    int | None,
    typer.Option(
        "--block",
        min=1,
        help="1-based block of the stage (3..n carry an AFI module); default: the last.",
    ),
]
ChannelsOpt = Annotated[
    int, typer.Option("--channels", min=1, max=32, help="Channels shown in the feature grid.")
]


def features_cli(
    image: ImageArg = None,
    checkpoint: AfiCheckpointOpt = None,
    arch: ModelArchOpt = None,
    stage: StageOpt = None,
    block: BlockOpt = None,
    data: DataOpt = None,
    data_root: DataRootOpt = None,
    max_batches: MaxBatchesOpt = None,
    batch_size: BatchSizeOpt = 128,
    channels: ChannelsOpt = 8,
    output: OutputOpt = None,
    fmt: FormatOpt = Format.table,
    figure: FeaturesFigureOpt = None,
) -> None:
    """Feature maps entering an AFI module, its output R, and its attention weights S~.

    With IMAGE: a grid of the inputs X(1..i-1) and of R(i) for the most active channels, each
    input tile titled with its weight alpha (Eq. 2: R is the channel-wise weighted sum), plus
    the softmax matrix S~ (inputs x channels: which earlier block each channel draws from) and
    the stage's mean alpha per block and input (Eq. 8). Without IMAGE, or with --data, S~ is
    averaged over an evaluation set: --data, by default the checkpoint's recorded dataset (its
    root, subset size and seed). The figure goes to --figure; per input, the mean alpha and
    the channels it dominates print in --format, or go to --output.
    """
    check_figure(figure)
    check_results_file(output)
    (ckpt,) = choose_checkpoints([checkpoint] if checkpoint else None, afi_only=True)
    from ..analysis.features import attention_rows, run_features
    from ..analysis.plots import features_figure
    from ..analysis.runs import free_path
    from ..render import render

    # a log file hears from a long dataset average every 10 s (a terminal shows a bar)
    with progress_bar(seconds=10.0) as hook:
        result = run_features(
            ckpt,
            image,
            arch=arch,
            stage=stage,
            block=block,
            data=data,
            data_root=data_root,
            max_batches=max_batches,
            batch_size=batch_size,
            progress=hook,
        )
    if result.dataset_attention is not None:
        print(f"S~ averaged over {result.dataset_images} {result.dataset} images", file=sys.stderr)
    path = features_figure(result, figure or free_path("features.png"), channels=channels)
    print(f"wrote {path}", file=sys.stderr)
    render(
        attention_rows(result),
        fmt,
        output,
        columns=_COLUMNS,
        formatters={"mean_alpha": "{:.3f}".format, "max_alpha": "{:.3f}".format},
        title=f"{result.arch}: attention of AFI({result.block}) in {result.stage}",
    )
