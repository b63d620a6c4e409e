"""``afictl predict``: the top-k classes of a checkpoint for image files or folders."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..render import Format
from ._util import WEIGHTS_HELP, DeviceOpt, FormatOpt, ModelArchOpt, OutputOpt

__all__ = ["predict_cli"]

_COLUMNS = ["image", "rank", "class", "probability"]
#: Unreadable files named one by one up to this many; then only their count.
_WARN_MAX = 10

ImagesArg = Annotated[
    list[Path],
    typer.Argument(
        help="Image files (JPEG, PNG, ...) or folders (every image in them and their subfolders).",
        show_default=False,
    ),
]
CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", "-c", help=WEIGHTS_HELP)]
TopkOpt = Annotated[
    int,
    typer.Option(
        "--topk", "-k", min=1, help="Classes per image, most probable first (at most all)."
    ),
]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Batch size.")]


def _warn(lines: list[str]) -> None:
    for line in lines[:_WARN_MAX]:
        print(line, file=sys.stderr)
    if len(lines) > _WARN_MAX:
        print(f"afictl: warning: {len(lines) - _WARN_MAX} more files skipped", file=sys.stderr)


def predict_cli(
    images: ImagesArg,
    checkpoint: CheckpointOpt,
    topk: TopkOpt = 5,
    arch: ModelArchOpt = None,
    batch_size: BatchSizeOpt = 64,
    device: DeviceOpt = "auto",
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """Predict the top-k classes of image files (or folders) with a checkpoint.

    Each image is preprocessed exactly as `afictl eval` preprocesses the checkpoint's dataset
    (its recorded dataset and input size), then one row per class: image, rank, class,
    probability (softmax over all classes). A folder means every image in it. An unreadable
    file is a warning and is skipped; no readable image, or --topk above the number of
    classes, is an error (exit 2). --format json/csv also carry the class index.
    """
    from ..analysis.predict import image_files, predict_images
    from ..errors import UserError
    from ..progress import progress
    from ..render import check_writable, plural, render

    if output is not None:
        check_writable(output)
    files, empty = image_files(images)
    if not files:
        raise UserError(empty[0].removeprefix("afictl: warning: ") if empty else "no image given")
    with progress("predicting", len(files)) as p:
        report = predict_images(
            files,
            checkpoint,
            arch=arch,
            topk=topk,
            batch_size=batch_size,
            device=device,
            progress=p.tick,
        )
    _warn(empty + report.skipped)
    rows = [
        {"image": r.image, "rank": r.rank, "class": r.class_name}
        | {"index": r.index, "probability": r.probability}
        for r in report.rows
    ]
    what = "class" if report.topk == 1 else "classes"
    title = (
        f"top-{report.topk} {what} of {plural(report.images, 'image')} under {report.checkpoint}"
    )
    render(
        rows,
        fmt,
        output,
        columns=_COLUMNS,
        formatters={"probability": lambda v: f"{v:.4f}"},
        title=title,
    )
