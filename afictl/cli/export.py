"""``afictl export``: a model to ONNX or ``.pt2`` with a dynamic batch, verified against eager."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UserError
from ..render import Format, human, render


class ExportFormat(StrEnum):
    onnx = "onnx"
    pt2 = "pt2"


def _format(value: str | None) -> str | None:
    """``--format``: the file format; a results format here gets a pointer to --print-format."""
    if value is None:
        return None
    value = value.lower()
    if value in Format.__members__:
        raise UserError(
            f"--format is the file format of afictl export (onnx or pt2); "
            f"for {value} results use --print-format {value}"
        )
    if value not in ExportFormat.__members__:
        raise UserError(f"--format {value}: choose onnx or pt2")
    return value


def _diff(value: float) -> str:
    return f"{value:.3g}"


def export_cli(
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            "-c",
            help="A .pt written by afictl train (or its run folder: best.pt, else last.pt).",
        ),
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch",
            "-a",
            help="Registered architecture (random weights); with -c: the expected one.",
        ),
    ] = None,
    file_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            metavar="onnx|pt2",
            help="File format (default: the suffix of --output, else onnx).",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", dir_okay=False, help="The exported file (default: ./ARCH.FORMAT)."
        ),
    ] = None,
    opset: Annotated[
        int | None, typer.Option(min=18, help="ONNX opset (default 18, the exporter's lowest).")
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            "-b",
            min=2,
            help="Batch of the example the model is traced with (2 or more); "
            "the file accepts any batch.",
        ),
    ] = 2,
    input_size: Annotated[
        int | None,
        typer.Option(
            min=8, help="Input resolution (default: the checkpoint's, else the model's: 32 or 224)."
        ),
    ] = None,
    num_classes: Annotated[
        int | None,
        typer.Option(min=1, help="Classes with --arch (default: 100 CIFAR, 1000 ImageNet)."),
    ] = None,
    tolerance: Annotated[
        float,
        typer.Option(
            min=0.0, help="Relative tolerance: pass when max|diff| <= TOLERANCE * max|eager|."
        ),
    ] = 1e-4,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify", help="Run the file against the eager model before writing it."
        ),
    ] = True,
    print_format: Annotated[
        Format,
        typer.Option(
            "--print-format",
            "-p",
            case_sensitive=False,
            help="Results format: table, json, csv or markdown.",
        ),
    ] = Format.table,
) -> None:
    """Export a model to ONNX or torch.export (.pt2) with a dynamic batch, and verify the file.

    The model is --arch NAME with random weights (eval mode) or a checkpoint (-c). ONNX uses the
    torch.export-based exporter (onnxscript; weights inside the file) and is run back with
    ONNX Runtime; .pt2 is torch.export.save, run back with torch.export.load. Before the file
    replaces --output it runs at batches 1 and B+1 (B: --batch-size), which differ from the
    traced batch, and its outputs are compared with the eager model in fp32: it passes when
    max|diff| <= TOLERANCE * max|eager|. A failure writes nothing and exits with 2.

    Here --format and --output name the exported file (the issue's `--format onnx|pt2`); the
    printed results take --print-format instead of the usual --format. ONNX needs the extra:
    pip install -e ".[export]".
    """
    from ..export import DEFAULT_OPSET, export, infer_format

    fmt = _format(file_format)
    if output is not None:
        fmt = infer_format(output, fmt)
    if opset is not None and fmt == "pt2":
        raise UserError("--opset applies to --format onnx only")
    result = export(
        output,
        arch=arch,
        checkpoint=checkpoint,
        num_classes=num_classes,
        input_size=input_size,
        format=fmt,
        opset=opset or DEFAULT_OPSET,
        batch_size=batch_size,
        verify=verify,
        rtol=tolerance,
    )
    if result.passed is False:
        raise UserError(
            f"verification failed: {Path(result.path).name} differs from the eager model by "
            f"{result.max_abs_diff:.3g} at batches {result.verify_batches} (tolerance {result.tolerance:.3g}); "
            "nothing written (--no-verify writes it unchecked)"
        )
    render(
        [result],
        print_format,
        None,
        columns=[
            "arch",
            "format",
            "path",
            "bytes",
            "opset",
            "input_shape",
            "export_batch",
            "verify_batches",
            "max_abs_diff",
            "tolerance",
            "passed",
            "export_seconds",
            "verify_seconds",
        ],
        formatters={
            "bytes": lambda b: human(b, "B"),
            "max_abs_diff": _diff,
            "tolerance": _diff,
            "export_seconds": "{:.1f}".format,
            "verify_seconds": "{:.1f}".format,
            "verify_batches": lambda b: ",".join(map(str, b)),
            "opset": lambda v: str(int(v)),
        },
        title=f"exported {result.arch} to {result.path}",
    )
