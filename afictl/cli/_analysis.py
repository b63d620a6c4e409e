"""Options and checkpoint choice shared by the analysis commands (gradcam, selectivity, features)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..analysis.runs import default_checkpoints

CheckpointOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--checkpoint",
        "-c",
        help="Checkpoint file or run folder (repeatable). Default: the newest run under ./runs/ "
        "with best.pt, and the newest run of its counterpart on the same dataset.",
    ),
]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        "-d",
        help="Dataset name (cifar10, cifar100, imagenet, imagefolder, shapes). "
        "Default: the one recorded in the checkpoint.",
    ),
]
DataRootOpt = Annotated[
    Path | None,
    typer.Option("--data-root", help="Dataset folder (default: the checkpoint's recorded root)."),
]
MaxBatchesOpt = Annotated[
    int | None,
    typer.Option("--max-batches", min=1, help="Stop after this many batches (bounds the run)."),
]
BatchSizeOpt = Annotated[
    int, typer.Option("--batch-size", "-b", min=1, help="Evaluation batch size.")
]


def choose_checkpoints(given: list[Path] | None, *, afi_only: bool = False) -> list[Path]:
    """The checkpoints named, else the newest run (and its counterpart); says which on stderr."""
    if given:
        return list(given)
    chosen = default_checkpoints(afi_only=afi_only)
    print(f"using checkpoints: {', '.join(str(p) for p in chosen)}", file=sys.stderr)
    return chosen


def progress_factory(progress):
    """Adapt a rich Progress to the analyses' ``progress(description, total) -> tick`` hook."""

    def start(description: str, total: int):
        task = progress.add_task(description, total=total)
        return lambda: progress.advance(task)

    return start
