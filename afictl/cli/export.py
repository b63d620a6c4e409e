"""``afictl export``: a model to ONNX or ``.pt2`` with a dynamic batch, verified against eager,
or its weights to ``.safetensors``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import UserError
from ..render import Format
from ._util import WEIGHTS_HELP, OutputOpt, model_option_flags

if TYPE_CHECKING:
    from ..export import ExportResult

#: A stage is named in a log file only once it has lasted this long (seconds): quick stages
#: and an immediate error stay one line.
STAGE_LINE_DELAY = 2.0


class ExportFormat(StrEnum):
    onnx = "onnx"
    pt2 = "pt2"
    safetensors = "safetensors"


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


_COLUMNS = [
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
]

ExportCheckpointOpt = Annotated[Path | None, typer.Option("--checkpoint", "-c", help=WEIGHTS_HELP)]
ExpectedArchOpt = Annotated[
    str | None,
    typer.Option(
        "--arch",
        "-a",
        help="Registered architecture (random weights); with -c: the model of a plain state "
        "dict, or the expected one.",
    ),
]
ToOpt = Annotated[
    ExportFormat | None,
    typer.Option(
        "--to",
        case_sensitive=False,
        help="File format: onnx, pt2, or safetensors (the weights alone, with NAME.config.json "
        "beside them). Default: the suffix of --export-file, else onnx.",
    ),
]
ExportFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--export-file",
        dir_okay=False,
        help="The exported model file (default: `./{arch}.{format}`); folders are created.",
    ),
]
OpsetOpt = Annotated[
    int | None,
    typer.Option("--opset", min=18, help="ONNX opset (default 18, the exporter's lowest)."),
]
ExampleBatchOpt = Annotated[
    int,
    typer.Option(
        "--batch-size",
        "-b",
        min=2,
        help="Batch of the example the model is traced with (2 or more); "
        "the file accepts any batch.",
    ),
]
ExportInputSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--input-size",
        min=8,
        help="Input resolution (default: the checkpoint's, else the model's: 32 or 224).",
    ),
]
ExportNumClassesOpt = Annotated[
    int | None,
    typer.Option(
        "--num-classes", min=1, help="Classes with --arch (default: 100 CIFAR, 1000 ImageNet)."
    ),
]
ToleranceOpt = Annotated[
    float,
    typer.Option(
        "--tolerance",
        min=0.0,
        help="Relative tolerance: pass when max|diff| <= TOLERANCE * max|eager|.",
    ),
]
VerifyOpt = Annotated[
    bool,
    typer.Option(
        "--verify/--no-verify", help="Run the file against the eager model before writing it."
    ),
]
# a str, not Format: a file format given here gets its own message (see _results_format)
ResultsFormatOpt = Annotated[
    str,
    typer.Option(
        "--format",
        "-f",
        metavar="[table|json|csv|markdown]",
        help="Results format: table, json, csv or markdown.",
    ),
]
# the old spelling of --format, hidden, kept to point at the new one
PrintFormatOpt = Annotated[str | None, typer.Option("--print-format", "-p", hidden=True)]


def _check_options(
    print_format: str | None,
    fmt: str,
    output: Path | None,
    to: ExportFormat | None,
    export_file: Path | None,
    opset: int | None,
    numbers: tuple[int, float, int | None, str | None] = (2, 1e-4, None, None),
) -> tuple[Format, str | None]:
    """The results format and the file format (None: export's default), after refusing
    options out of range (``numbers``: batch, tolerance, input size, arch) or that contradict
    each other; nothing is built before this."""
    from ..export import infer_format

    _check_numbers(*numbers)
    if print_format is not None:
        raise UserError(f"--print-format is now --format: use --format {print_format}")
    results_format = _results_format(fmt)
    _check_results_file(output)
    file_format = to.value if to is not None else None
    if export_file is not None:
        file_format = infer_format(export_file, file_format)
    if opset is not None and file_format in ("pt2", "safetensors"):
        raise UserError("--opset applies to --to onnx only")
    return results_format, file_format


def _check_numbers(batch: int, tolerance: float, input_size: int | None, arch: str | None) -> None:
    """--batch-size within the file's dynamic batch, --tolerance finite and above 0, and
    --input-size at least the total stride of --arch (a checkpoint's model: checked by export)."""
    from ..validate import EXPORT_BATCH, EXPORT_TOLERANCE, check_value

    check_value("--batch-size", EXPORT_BATCH, batch)
    check_value("--tolerance", EXPORT_TOLERANCE, tolerance)
    if input_size is not None and arch is not None:
        from ..models import get_model_info
        from ..train.config import check_model_input_size

        check_model_input_size(get_model_info(arch).name, input_size)


def _stages(file_format: str | None, verify: bool) -> int:
    """Stages of an export: loading, exporting, verifying, writing (safetensors: loading,
    writing; the file is read back as it is written)."""
    if file_format == "safetensors":
        return 2
    return 4 if verify else 3


def _check_passed(result: ExportResult) -> None:
    """A failed verification is an error (exit 2): the file was not written."""
    if result.passed is False:
        raise UserError(
            f"verification failed: {Path(result.path).name} differs from the eager model by "
            f"{result.max_abs_diff:.3g} at batches {result.verify_batches} "
            f"(tolerance {result.tolerance:.3g}); "
            "nothing written (--no-verify writes it unchecked)"
        )


def _render_result(result: ExportResult, results_format: Format, output: Path | None) -> None:
    """The export's one row, in the results format, to stdout or ``output``."""
    from ..render import human, render

    render(
        [result],
        results_format,
        output,
        columns=_COLUMNS,
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


@model_option_flags
def export_cli(
    checkpoint: ExportCheckpointOpt = None,
    arch: ExpectedArchOpt = None,
    to: ToOpt = None,
    export_file: ExportFileOpt = None,
    opset: OpsetOpt = None,
    batch_size: ExampleBatchOpt = 2,
    input_size: ExportInputSizeOpt = None,
    num_classes: ExportNumClassesOpt = None,
    tolerance: ToleranceOpt = 1e-4,
    verify: VerifyOpt = True,
    fmt: ResultsFormatOpt = "table",
    output: OutputOpt = None,
    print_format: PrintFormatOpt = None,
    model_options: dict[str, Any] | None = None,
) -> None:
    """Export a model to ONNX or .pt2 (dynamic batch, verified) or its weights to .safetensors.

    The model is --arch NAME with random weights and the model options given, or a checkpoint
    (-c: a run's .pt, a plain state dict with --arch, or a .safetensors file). ONNX uses the
    torch.export-based exporter (onnxscript; weights inside the file) and is run back with
    ONNX Runtime; .pt2 is torch.export.save, run back with torch.export.load. Before the file
    replaces --export-file it runs at batches 1 and B+1 (B: --batch-size), which differ from the
    traced batch, and its outputs are compared with the eager model in fp32: it passes when
    max|diff| <= TOLERANCE * max|eager|. A failure writes nothing and exits with 2.

    Every file says what it holds (arch, classes, preprocessing, class names): ONNX in its
    metadata_props (afictl.*), .pt2 in NAME.pt2.json beside it. --to safetensors writes
    NAME.safetensors (read back and compared tensor by tensor), NAME.config.json beside it and,
    from a run's checkpoint, a model card NAME.README.md.

    --to picks the file format; --format and --output are the results format and file, as in
    every command. ONNX needs the extra: pip install -e ".[export]".
    """
    from ..export import DEFAULT_OPSET
    from ..exporter import export
    from ..progress import progress

    numbers = (batch_size, tolerance, input_size, arch if checkpoint is None else None)
    results_format, file_format = _check_options(
        print_format, fmt, output, to, export_file, opset, numbers
    )
    # a stage's line waits 2 s (as a job's closing line): quick stages and early errors stay quiet
    with progress("export", _stages(file_format, verify), stage_delay=STAGE_LINE_DELAY) as job:
        result = export(
            export_file,
            arch=arch,
            checkpoint=checkpoint,
            num_classes=num_classes,
            input_size=input_size,
            format=file_format,
            model_options=model_options,
            opset=opset or DEFAULT_OPSET,
            batch_size=batch_size,
            verify=verify,
            rtol=tolerance,
            progress=job.stage,
        )
    _check_passed(result)
    _render_result(result, results_format, output)
