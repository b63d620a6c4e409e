"""``afictl eval``: top-1/top-5 accuracy, loss and throughput of a checkpoint on a dataset
split; per class and as a confusion matrix (figure, CSV) when asked."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import UserError
from ..render import Format
from ._util import WEIGHTS_HELP, AmpOpt, DeviceOpt, FormatOpt, ModelArchOpt, OutputOpt

_COLUMNS = ["arch", "dataset", "split", "images", "top1", "top5", "loss", "epoch", "images_per_sec"]
#: The per-class table (JSON and CSV carry every field of the rows).
_CLASS_COLUMNS = ["class", "images", "top1", "top5", "error_share", "confused_with", "confused"]

CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", "-c", help=WEIGHTS_HELP)]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        "-d",
        help="Dataset (default: the one the checkpoint was trained on; for a plain state dict "
        "the architecture's home dataset).",
    ),
]
DataRootOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-root",
        help="Dataset folder (default: the recorded one, else `$AFICTL_DATA/{dataset}` "
        "or `./data/{dataset}`).",
    ),
]
SplitOpt = Annotated[
    str, typer.Option("--split", help="eval (val/ or test/; CIFAR's test set) or train.")
]
DataSizeOpt = Annotated[
    int | None,
    typer.Option("--data-size", help="Images (generated for shapes; a fixed subset otherwise)."),
]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", "-b", help="Batch size.")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", "-j", help="Data loading processes.")]
BadImagesOpt = Annotated[
    str, typer.Option("--bad-images", help="skip (default) or stop at an unreadable image.")
]
PerClassOpt = Annotated[
    bool,
    typer.Option(
        "--per-class",
        help="Also one row per class: images, top1, top5 (over 5 classes), error_share (percent "
        "of all errors), confused_with (the class it is most often mistaken for) and how often.",
    ),
]
FigureOpt = Annotated[
    Path | None,
    typer.Option(
        "--figure",
        dir_okay=False,
        help="Write the confusion matrix as a figure (.png, .pdf or .svg): rows are true "
        "classes, normalised to shares of their images; the counts go to --confusion.",
    ),
]
ConfusionOpt = Annotated[
    Path | None,
    typer.Option(
        "--confusion",
        dir_okay=False,
        help="Write the confusion matrix's counts as CSV (.csv): one row per true class, one "
        "column per predicted class, the class names as header and first column.",
    ),
]


def _evaluate(checkpoint: Path, **options: Any) -> dict[str, Any]:
    """:func:`afictl.train.evaluate_checkpoint` reporting through :mod:`afictl.progress` on
    stderr (a bar on a terminal, a line at least every 30 s in a log file)."""
    from ..progress import progress_hook
    from ..train import evaluate_checkpoint

    with progress_hook() as start:
        tick: list[Any] = []

        def batch_done(done: int, total: int) -> None:
            if not tick:  # the loader's length is known once the data is built
                tick.append(start("evaluating", total or None))
            tick[0]()

        return evaluate_checkpoint(checkpoint, progress=batch_done, **options)


def _check_files(figure: Path | None, confusion: Path | None, output: Path | None) -> None:
    """Every file the command will write: writable, of the right kind (before any work)."""
    from ..render import check_writable
    from ._analysis import check_figure

    check_figure(figure)
    if confusion is not None and confusion.suffix.lower() != ".csv":
        raise UserError(f"--confusion {confusion}: the counts are written as CSV (.csv)")
    for path in (figure, confusion, output):
        if path is not None:
            check_writable(path)


def _class_rows(confusion: Any) -> list[dict[str, Any]]:
    rows = [asdict(r) for r in confusion.rows()]
    return [{"class": r.pop("name"), **r} for r in rows]


def _write_confusion(result: dict, confusion: Any, figure: Path | None, csv: Path | None) -> None:
    from ..train.confusion import confusion_figure

    if csv is not None:
        print(f"wrote {confusion.write_csv(csv)}", file=sys.stderr)
    if figure is not None:
        top1 = "n/a" if result["top1"] is None else f"{result['top1']:.2f}%"
        title = (
            f"{result['arch']} on {result['dataset']} ({result['split']}): "
            f"top-1 {top1} of {result['images']} images\n"
            "each row: where the images of that true class went"
        )
        print(f"wrote {confusion_figure(confusion, figure, title)}", file=sys.stderr)


def _render_per_class(
    result: dict[str, Any], rows: list[dict[str, Any]], fmt: Format, output: Path | None
) -> None:
    """The summary and the per-class rows: one JSON object (``per_class`` in it), the class
    rows alone in CSV (one table per file), or two tables."""
    from ..render import render, render_text, terminal_width, write_text

    if fmt is Format.json:
        _print_json(result | {"per_class": rows}, output)
        return
    if fmt is Format.csv:
        render(rows, fmt, output)
        return
    width = terminal_width() if output is None else None
    percent = {c: (lambda v: f"{v:.2f}") for c in ("top1", "top5", "error_share")}
    columns = [c for c in _CLASS_COLUMNS if c != "top5" or len(rows) > 5]
    text = "\n".join(
        [
            render_text([result], fmt, width=width, **_summary_style(result)),
            "",
            render_text(
                rows,
                fmt,
                columns=columns,
                formatters=percent,
                title=f"per class ({len(rows)} classes; top1, top5, error_share in percent)",
                width=width,
            ),
        ]
    )
    if output is None:
        print(text)
    else:
        print(f"wrote {write_text(text, output)}", file=sys.stderr)


def _summary_style(result: dict[str, Any]) -> dict[str, Any]:
    """How the one-row summary is rendered (columns, formatters, title)."""
    return {
        "columns": _COLUMNS,
        "formatters": {"images_per_sec": lambda v: f"{v:,.0f}"},
        "title": f"evaluation of {result['checkpoint']}",
    }


def _print_json(result: dict[str, Any], output: Path | None) -> None:
    """``result`` as one JSON object, to ``output`` or else to stdout."""
    from ..render import write_text

    text = json.dumps(result)
    if output is not None:
        write_text(text, output)
    else:
        print(text)


def eval_cli(
    checkpoint: CheckpointOpt,
    data: DataOpt = None,
    data_root: DataRootOpt = None,
    split: SplitOpt = "eval",
    arch: ModelArchOpt = None,
    data_size: DataSizeOpt = None,
    batch_size: BatchSizeOpt = 256,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    amp: AmpOpt = "none",
    bad_images: BadImagesOpt = "skip",
    per_class: PerClassOpt = False,
    figure: FigureOpt = None,
    confusion: ConfusionOpt = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """Evaluate a checkpoint (paper's eval transforms): top-1, top-5, loss, images/s.

    The checkpoint is a run's .pt (or folder), or weights alone: a plain state dict of the
    model --arch names (num_classes read from its classifier), or a .safetensors file.
    images_per_sec counts the forward passes' wall time only (not data loading).

    --per-class adds one row per class (class names from the dataset); --figure draws the
    confusion matrix (rows normalised), --confusion writes its counts as CSV; all from the
    same single pass.

    With --format json: one JSON object with arch, top1, top5 (percent), loss, images and
    images_per_sec (and per_class, a list of rows, with --per-class); --format csv with
    --per-class: the class rows only. A progress bar runs on stderr while it evaluates;
    stdout carries the results only.
    """
    from ..render import render

    _check_files(figure, confusion, output)
    result = _evaluate(
        checkpoint,
        data=data,
        data_root=data_root,
        split=split,
        arch=arch,
        data_size=data_size,
        batch_size=batch_size,
        workers=workers,
        device=device,
        amp=amp,
        bad_images=bad_images,
        confusion=per_class or figure is not None or confusion is not None,
    )
    matrix = result.pop("confusion", None)
    if matrix is not None:
        _write_confusion(result, matrix, figure, confusion)
    if per_class:
        _render_per_class(result, _class_rows(matrix), fmt, output)
    elif fmt is Format.json:
        _print_json(result, output)
    else:
        render([result], fmt, output, **_summary_style(result))
