"""Options and helpers shared by the analysis commands (gradcam, selectivity, features).

Light at import (stdlib, typer, afictl.render's Format): ``--help`` builds these options
without importing torch; the analyses themselves are imported inside the functions.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ..analysis.labels import FIGURE_SUFFIXES
from ..errors import UserError

__all__ = [
    "FIGURE_SUFFIXES",
    "ArchsOpt",
    "BatchSizeOpt",
    "CheckpointOpt",
    "DataOpt",
    "DataRootOpt",
    "MaxBatchesOpt",
    "check_figure",
    "check_results_file",
    "choose_checkpoints",
    "figure_option",
    "pair_archs",
    "progress_bar",
    "progress_factory",
]


CheckpointOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--checkpoint",
        "-c",
        help="Checkpoint file or run folder (repeatable), a plain state dict (.pth/.pt, with "
        "--arch) or a .safetensors file. Default: the newest run under ./runs/ with best.pt, "
        "and the newest run of its counterpart on the same dataset.",
    ),
]
ArchsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--arch",
        "-a",
        help="The model of each plain state dict or .safetensors file among --checkpoint: one "
        "name for all, or one per --checkpoint in order (repeatable); with an afictl "
        "checkpoint, the expected one.",
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


def figure_option(default_name: str) -> Any:
    """The ``--figure FILE`` option (an ``Annotated`` type) of a command whose figure defaults
    to ``default_name``."""
    stem, suffix = default_name.rsplit(".", 1)
    return Annotated[
        Path | None,
        typer.Option(
            "--figure",
            dir_okay=False,
            help=f"Figure file (.png, .pdf or .svg). Default: ./{default_name}, or "
            f"{stem}-2.{suffix}, {stem}-3.{suffix}, ... if that exists (never overwritten).",
        ),
    ]


def check_figure(path: Path | None) -> None:
    """``--figure`` must end in .png, .pdf or .svg (checked before any work)."""
    if path is not None and path.suffix.lower() not in FIGURE_SUFFIXES:
        raise UserError(f"--figure {path}: figures are written as {', '.join(FIGURE_SUFFIXES)}")


def check_results_file(path: Path | None) -> None:
    """``--output`` is the results file: a figure name there is its old meaning (it used to be
    the figure); say where that went, and check that the file can be written before any work.
    (A folder, selectivity's old ``--output``, is refused by the option itself.)"""
    if path is None:
        return
    if path.suffix.lower() in FIGURE_SUFFIXES:
        raise UserError(
            f"--output {path}: --output is the results file (in --format); "
            f"write the figure with --figure {path}"
        )
    from ..render import check_writable

    check_writable(path)


def choose_checkpoints(given: list[Path] | None, *, afi_only: bool = False) -> list[Path]:
    """The checkpoints named, else the newest run (and its counterpart); says which on stderr."""
    if given:
        return list(given)
    from ..analysis.runs import default_checkpoints

    chosen = default_checkpoints(afi_only=afi_only)
    print(f"using checkpoints: {', '.join(str(p) for p in chosen)}", file=sys.stderr)
    return chosen


def pair_archs(checkpoints: list[Path], archs: list[str] | None) -> list[str | None]:
    """``--arch`` for each checkpoint: none, one name for all, or one per checkpoint."""
    if not archs:
        return [None] * len(checkpoints)
    if len(archs) == 1:
        return archs * len(checkpoints)
    if len(archs) != len(checkpoints):
        raise UserError(
            f"{len(archs)} --arch for {len(checkpoints)} --checkpoint: give one name for all, "
            "or one per --checkpoint in order"
        )
    return list(archs)


def progress_factory(progress: Any) -> Callable[[str, int], Callable[[], None]]:
    """Adapt a rich Progress to the analyses' ``progress(description, total) -> tick`` hook."""

    def start(description: str, total: int) -> Callable[[], None]:
        task = progress.add_task(description, total=total)
        return lambda: progress.advance(task)

    return start


def progress_bar() -> Any:
    """A transient rich Progress on stderr (stdout carries the results), shown only when stderr
    is a terminal (rich's rules: a tty, or ``TTY_COMPATIBLE=1`` / ``FORCE_COLOR``)."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    return Progress(console=console, transient=True, disable=not console.is_terminal)
