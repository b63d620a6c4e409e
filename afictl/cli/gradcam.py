"""``afictl gradcam``: Grad-CAM (or another CAM) heatmaps of checkpoints side by side (paper
Figure 3)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..analysis.cam_methods import METHOD_NAMES, METHODS, check_target_class, resolve_method
from ..render import Format
from ._analysis import (
    ArchsOpt,
    CheckpointOpt,
    budget_note,
    check_figure,
    check_results_file,
    choose_checkpoints,
    figure_option,
    pair_archs,
    progress_bar,
)
from ._util import FormatOpt, OutputOpt

if TYPE_CHECKING:  # --help stays light: no torch
    from ..analysis.gradcam import GradCamReport

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
        "--target-class",
        help="Class index or name to explain (default: the predicted one); refused by "
        "class-independent methods (eigencam).",
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

    One row per image: the model's input (the image resized or cropped to the input size, as
    the model saw it), then one heatmap over that input per checkpoint, titled with the
    predicted class and its probability, and a colorbar; --method picks another CAM (the
    figure title names it and the input size). The figure goes to --figure; the numbers
    (method, predicted class, probability, attention_area: the share of the input above half
    the maximum activation) print in --format, or go to --output. Checkpoints trained under
    unequal budgets get a warning, and a red note in the figure. Bad images or checkpoints: one
    error line each, the others are still processed, exit code 2.
    """
    spec = resolve_method(method)  # before any checkpoint is loaded: one line, exit 2
    check_target_class(spec, target_class)
    check_figure(figure)
    check_results_file(output)
    ckpts = choose_checkpoints(checkpoint)
    archs = pair_archs(ckpts, arch)
    from ..analysis.gradcam import run_gradcam

    note = budget_note(ckpts)  # choose_checkpoints has warned; this marks the figure and table
    # one step per image and checkpoint; a log file hears from a long run every 10 s
    with progress_bar(seconds=10.0) as hook:
        report = run_gradcam(
            images,
            ckpts,
            archs=archs,
            target_class=target_class,
            layer=layer,
            method=spec.name,
            progress=hook,
        )
    for err in report.errors:
        print(f"afictl: error: {err}", file=sys.stderr)
    if report.results:
        _write(report, figure, dpi, note, fmt, output)
    if report.errors:
        raise typer.Exit(2)


def _write(
    report: GradCamReport,
    figure: Path | None,
    dpi: int,
    note: str | None,
    fmt: Format,
    output: Path | None,
) -> None:
    """The figure (said on stderr), then the table in ``fmt`` (to ``output`` if given)."""
    from ..analysis.labels import percent
    from ..analysis.plots import gradcam_figure
    from ..analysis.runs import free_path
    from ..render import render

    path = gradcam_figure(report, figure or free_path("gradcam.png"), dpi=dpi, note=note)
    print(f"wrote {path}", file=sys.stderr)
    render(
        report.rows(),
        fmt,
        output,
        columns=_COLUMNS,
        formatters={"probability": percent, "attention_area": percent},
        title=f"{report.title} ({note})" if note else report.title,
    )
