"""``afictl gradcam``: Grad-CAM (or another CAM) heatmaps of checkpoints side by side (paper
Figure 3)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..analysis.cam_methods import METHOD_NAMES, METHODS, resolve_method
from ..render import Format
from ._analysis import (
    ArchsOpt,
    CheckpointOpt,
    check_figure,
    check_results_file,
    choose_checkpoints,
    figure_option,
    pair_archs,
    progress_bar,
    progress_factory,
)
from ._util import FormatOpt, OutputOpt

__all__ = ["METHODS", "gradcam_cli"]

_COLUMNS = [
    "image",
    "arch",
    "method",
    "predicted_class",
    "probability",
    "target_class",
    "attention_area",
    "checkpoint",
]
GradcamFigureOpt = figure_option("gradcam.png")


ImagesArg = Annotated[
    list[Path], typer.Argument(help="Image files (JPEG, PNG, ...).", show_default=False)
]
TargetClassOpt = Annotated[
    str | None,
    typer.Option(
        "--target-class", help="Class index or name to explain (default: the predicted one)."
    ),
]
LayerOpt = Annotated[
    str | None,
    typer.Option(
        "--layer",
        "-l",
        help="Target module path (e.g. layer3.2) or stage name (default: "
        "the last block of the last stage).",
    ),
]
MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        "-m",
        help=f"CAM method (pytorch-grad-cam; case ignored): {', '.join(METHOD_NAMES)}. "
        "fullgrad uses every bias, not --layer; scorecam and ablationcam "
        "run one forward pass per channel of the layer (slower).",
    ),
]
DpiOpt = Annotated[
    int, typer.Option("--dpi", min=30, max=600, help="Figure resolution (dots per inch).")
]


def gradcam_cli(
    images: ImagesArg,
    checkpoint: CheckpointOpt = None,
    arch: ArchsOpt = None,
    output: OutputOpt = None,
    fmt: FormatOpt = Format.table,
    figure: GradcamFigureOpt = None,
    target_class: TargetClassOpt = None,
    layer: LayerOpt = None,
    method: MethodOpt = "gradcam",
    dpi: DpiOpt = 110,
) -> None:
    """Grad-CAM heatmaps for each image under each checkpoint, side by side (Figure 3).

    One row per image: the original, then one heatmap per checkpoint titled with the predicted
    class and its probability, and a colorbar; --method picks another CAM (the figure title
    names it). The figure goes to --figure; the numbers (method, predicted class, probability,
    attention_area: the share of the image above half the maximum activation) print in
    --format, or go to --output. Bad images or checkpoints: one error line each, the others
    are still processed, exit code 2.
    """
    spec = resolve_method(method)  # before any checkpoint is loaded: one line, exit 2
    check_figure(figure)
    check_results_file(output)
    ckpts = choose_checkpoints(checkpoint)
    archs = pair_archs(ckpts, arch)
    from ..analysis.gradcam import run_gradcam
    from ..analysis.labels import percent
    from ..analysis.plots import gradcam_figure
    from ..analysis.runs import free_path
    from ..render import render

    with progress_bar() as bar:
        report = run_gradcam(
            images,
            ckpts,
            archs=archs,
            target_class=target_class,
            layer=layer,
            method=spec.name,
            progress=progress_factory(bar),
        )
    for err in report.errors:
        print(f"afictl: error: {err}", file=sys.stderr)
    if report.results:
        path = gradcam_figure(report, figure or free_path("gradcam.png"), dpi=dpi)
        print(f"wrote {path}", file=sys.stderr)
        render(
            report.rows(),
            fmt,
            output,
            columns=_COLUMNS,
            formatters={"probability": percent, "attention_area": percent},
            title=report.title,
        )
    if report.errors:
        raise typer.Exit(2)
