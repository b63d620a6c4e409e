"""``afictl export``: a model to ONNX or ``.pt2`` with a dynamic batch, verified against eager."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UserError
from ..render import Format
from ._util import OutputOpt


class ExportFormat(StrEnum):
    onnx = "onnx"
    pt2 = "pt2"


def _results_format(value: str) -> Format:
    """``--format``: the results format, as in every command; a file format gets ``--to``."""
    value = value.lower()
    if value in ExportFormat.__members__:
        raise UserError(
            f"--format is the results format (table, json, csv, markdown): use --to {value}"
        )
    if value not in Format.__members__:
        raise UserError(f"--format {value}: choose table, json, csv or markdown")
    return Format(value)


def _check_results_file(output: Path | None) -> None:
    """``--output`` is the results file: a model file name there is the old spelling."""
    if output is not None and output.suffix.lower().lstrip(".") in ExportFormat.__members__:
        raise UserError(
            f"--output is the results file; the exported model goes to --export-file {output}"
        )


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
    to: Annotated[
        ExportFormat | None,
        typer.Option(
            "--to",
            case_sensitive=False,
            help="File format (default: the suffix of --export-file, else onnx).",
        ),
    ] = None,
    export_file: Annotated[
        Path | None,
        typer.Option(
            "--export-file",
            dir_okay=False,
            help="The exported model file (default: `./{arch}.{format}`); folders are created.",
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
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            metavar="[table|json|csv|markdown]",
            help="Results format: table, json, csv or markdown.",
        ),
    ] = "table",
    output: OutputOpt = None,
    print_format: Annotated[
        str | None, typer.Option("--print-format", "-p", hidden=True)  # the old spelling
    ] = None,
) -> None:
    """Export a model to ONNX or torch.export (.pt2) with a dynamic batch, and verify the file.

    The model is --arch NAME with random weights (eval mode) or a checkpoint (-c). ONNX uses the
    torch.export-based exporter (onnxscript; weights inside the file) and is run back with
    ONNX Runtime; .pt2 is torch.export.save, run back with torch.export.load. Before the file
    replaces --export-file it runs at batches 1 and B+1 (B: --batch-size), which differ from the
    traced batch, and its outputs are compared with the eager model in fp32: it passes when
    max|diff| <= TOLERANCE * max|eager|. A failure writes nothing and exits with 2.

    --to picks the file format; --format and --output are the results format and file, as in
    every command. ONNX needs the extra: pip install -e ".[export]".
    """
    from ..export import DEFAULT_OPSET, export, infer_format
    from ..render import human, render

    if print_format is not None:
        raise UserError(f"--print-format is now --format: use --format {print_format}")
    results_format = _results_format(fmt)
    _check_results_file(output)
    file_format = to.value if to is not None else None
    if export_file is not None:
        file_format = infer_format(export_file, file_format)
    if opset is not None and file_format == "pt2":
        raise UserError("--opset applies to --to onnx only")
    result = export(
        export_file,
        arch=arch,
        checkpoint=checkpoint,
        num_classes=num_classes,
        input_size=input_size,
        format=file_format,
        opset=opset or DEFAULT_OPSET,
        batch_size=batch_size,
        verify=verify,
        rtol=tolerance,
    )
    if result.passed is False:
        raise UserError(
            f"verification failed: {Path(result.path).name} differs from the eager model by "
            f"{result.max_abs_diff:.3g} at batches {result.verify_batches} "
            f"(tolerance {result.tolerance:.3g}); "
            "nothing written (--no-verify writes it unchecked)"
        )
    render(
        [result],
        results_format,
        output,
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
