"""``afictl eval``: top-1/top-5 accuracy and loss of a checkpoint on a dataset split."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..render import Format
from ._util import WEIGHTS_HELP, AmpOpt, DeviceOpt, FormatOpt, ModelArchOpt, OutputOpt

_COLUMNS = ["arch", "dataset", "split", "images", "top1", "top5", "loss", "epoch"]

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


def _evaluate(checkpoint: Path, **options: Any) -> dict[str, Any]:
    """:func:`afictl.train.evaluate_checkpoint` behind a progress bar on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from ..train import evaluate_checkpoint

    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    # On a terminal only: a log file of stderr gets the warnings, not the bar's redraws.
    bar = Progress(
        *columns,
        console=Console(file=sys.stderr),
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    with bar:
        task = bar.add_task("evaluating", total=None)
        return evaluate_checkpoint(
            checkpoint,
            progress=lambda done, total: bar.update(task, completed=done, total=total or None),
            **options,
        )


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
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """Evaluate a checkpoint (paper's eval transforms): top-1, top-5, loss, images.

    The checkpoint is a run's .pt (or folder), or weights alone: a plain state dict of the
    model --arch names (num_classes read from its classifier), or a .safetensors file.

    With --format json: one JSON object with arch, top1, top5 (percent), loss and images.
    A progress bar runs on stderr while it evaluates; stdout carries the results only.
    """
    from ..render import render

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
    )
    if fmt is Format.json:
        _print_json(result, output)
        return
    title = f"evaluation of {result['checkpoint']}"
    render([result], fmt, output, columns=_COLUMNS, title=title)
