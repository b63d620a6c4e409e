"""``afictl eval``: top-1/top-5 accuracy and loss of a checkpoint on a dataset split."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..render import Format
from ._util import AmpOpt, DeviceOpt, FormatOpt, OutputOpt


def eval_cli(
    checkpoint: Annotated[
        Path,
        typer.Option(
            "--checkpoint",
            "-c",
            help="A .pt written by afictl train (or its run folder: best.pt, else last.pt).",
        ),
    ],
    data: Annotated[
        str | None,
        typer.Option(
            "--data", "-d", help="Dataset (default: the one the checkpoint was trained on)."
        ),
    ] = None,
    data_root: Annotated[
        Path | None,
        typer.Option(
            "--data-root",
            help="Dataset folder (default: the recorded one, else `$AFICTL_DATA/{dataset}` "
            "or `./data/{dataset}`).",
        ),
    ] = None,
    split: Annotated[
        str, typer.Option("--split", help="eval (val/ or test/; CIFAR's test set) or train.")
    ] = "eval",
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch", "-a", help="Expected architecture: a checkpoint of another one is an error."
        ),
    ] = None,
    data_size: Annotated[
        int | None,
        typer.Option(
            "--data-size", help="Images (generated for shapes; a fixed subset otherwise)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Batch size.")] = 256,
    workers: Annotated[
        int | None, typer.Option("--workers", "-j", help="Data loading processes.")
    ] = None,
    device: DeviceOpt = "auto",
    amp: AmpOpt = "none",
    bad_images: Annotated[
        str, typer.Option("--bad-images", help="skip (default) or stop at an unreadable image.")
    ] = "skip",
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """Evaluate a checkpoint (paper's eval transforms): top-1, top-5, loss, images.

    With --format json: one JSON object with arch, top1, top5 (percent), loss and images.
    A progress bar runs on stderr while it evaluates; stdout carries the results only.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from ..render import render, write_text
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
        result = evaluate_checkpoint(
            checkpoint,
            data,
            data_root,
            split=split,
            arch=arch,
            data_size=data_size,
            batch_size=batch_size,
            workers=workers,
            device=device,
            amp=amp,
            bad_images=bad_images,
            progress=lambda done, total: bar.update(task, completed=done, total=total or None),
        )
    if fmt is Format.json:
        text = json.dumps(result)
        if output is not None:
            write_text(text, output)
        else:
            print(text)
        return
    render(
        [result],
        fmt,
        output,
        columns=["arch", "dataset", "split", "images", "top1", "top5", "loss", "epoch"],
        title=f"evaluation of {result['checkpoint']}",
    )
