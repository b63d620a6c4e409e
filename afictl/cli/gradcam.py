"""``afictl gradcam``: Grad-CAM (or another CAM) heatmaps of checkpoints side by side (paper Figure 3)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..analysis.gradcam import METHODS, resolve_method, run_gradcam
from ..analysis.plots import figure_path, gradcam_figure
from ..analysis.runs import free_path
from ..render import Format, render
from ._analysis import CheckpointOpt, choose_checkpoints
from ._util import FormatOpt

_PCT = "{:.1%}".format


def gradcam_cli(
    images: Annotated[
        list[Path], typer.Argument(help="Image files (JPEG, PNG, ...).", show_default=False)
    ],
    checkpoint: CheckpointOpt = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            dir_okay=False,
            help="Figure file (.png, .pdf or .svg). Default: ./gradcam.png, or gradcam-N.png "
            "if that exists.",
        ),
    ] = None,
    target_class: Annotated[
        str | None,
        typer.Option(
            "--target-class",
            "-t",
            help="Class index or name to explain (default: the predicted one).",
        ),
    ] = None,
    layer: Annotated[
        str | None,
        typer.Option(
            "--layer",
            "-l",
            help="Target module path (e.g. layer3.2) or stage name (default: "
            "the last block of the last stage).",
        ),
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            "-m",
            help=f"CAM method (pytorch-grad-cam; case ignored): {', '.join(METHODS)}. "
            "fullgrad uses every bias, not --layer; scorecam and ablationcam "
            "run one forward pass per channel of the layer (slower).",
        ),
    ] = "gradcam",
    dpi: Annotated[
        int, typer.Option("--dpi", min=30, max=600, help="Figure resolution (dots per inch).")
    ] = 110,
    fmt: FormatOpt = Format.table,
) -> None:
    """Grad-CAM heatmaps for each image under each checkpoint, side by side (Figure 3).

    One row per image: the original, then one heatmap per checkpoint titled with the predicted
    class and its probability; --method picks another CAM (the figure title names it). The
    numbers (method, predicted class, probability, attention_area: the share of the image above
    half the maximum activation) print in --format. Bad images or checkpoints: one error line
    each, the others are still processed, exit code 2.
    """
    spec = resolve_method(method)  # before any checkpoint is loaded: one line, exit 2
    if output is not None:
        figure_path(output)
    ckpts = choose_checkpoints(checkpoint)
    report = run_gradcam(images, ckpts, target_class=target_class, layer=layer, method=spec.name)
    for err in report.errors:
        print(f"afictl: error: {err}", file=sys.stderr)
    if report.results:
        path = gradcam_figure(
            report, output if output is not None else free_path("gradcam.png"), dpi=dpi
        )
        print(f"wrote {path}", file=sys.stderr)
        render(
            report.rows(),
            fmt,
            None,
            columns=[
                "image",
                "arch",
                "method",
                "predicted_class",
                "probability",
                "target_class",
                "attention_area",
                "checkpoint",
            ],
            formatters={"probability": _PCT, "attention_area": _PCT},
            title=report.title,
        )
    if report.errors:
        raise typer.Exit(2)
