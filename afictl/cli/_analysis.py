"""Options and helpers shared by the analysis commands (gradcam, selectivity, features).

Light at import (stdlib, typer, afictl.render's Format): ``--help`` builds these options
without importing torch; the analyses themselves are imported inside the functions.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated, Any

import typer

from ..analysis.labels import FIGURE_SUFFIXES
from ..errors import UserError

#: the analyses' ``progress(description, total) -> tick`` hook
ProgressHook = Callable[[str, int], Callable[..., None]]

__all__ = [
    "FIGURE_SUFFIXES",
    "ArchsOpt",
    "BatchSizeOpt",
    "CheckpointOpt",
    "DataOpt",
    "DataRootOpt",
    "MaxBatchesOpt",
    "ProgressHook",
    "budget_note",
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
        "and the newest run of its counterpart trained under the same budget (dataset, data "
        "size, epochs, recipe).",
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
    """The checkpoints named, else the newest run (and its counterpart under the same budget);
    says which on stderr, and warns in one line when the budgets of the pair differ."""
    if given:
        chosen = list(given)
    else:
        from ..analysis.runs import default_checkpoints

        chosen = default_checkpoints(afi_only=afi_only)
        print(f"using checkpoints: {', '.join(str(p) for p in chosen)}", file=sys.stderr)
    note = budget_note(chosen)
    if note:
        print(f"afictl: warning: {note}", file=sys.stderr)
    return chosen


def budget_note(checkpoints: list[Path]) -> str | None:
    """The line that marks a table or figure comparing checkpoints trained under unequal
    budgets (:func:`afictl.analysis.runs.pair_note`); None when alike or unknown."""
    if len(checkpoints) < 2:
        return None
    from ..analysis.runs import pair_note

    return pair_note(checkpoints)


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


def progress_bar(**options: Any) -> AbstractContextManager[ProgressHook]:
    """Progress of the analyses on stderr (stdout carries the results), through
    :func:`afictl.progress.progress_hook`: a bar on a terminal, timed lines in a log file.
    ``with progress_bar() as hook: run_x(..., progress=hook)``."""
    from ..progress import progress_hook

    return progress_hook(**options)


def progress_factory(hook: ProgressHook) -> ProgressHook:
    """The hook itself (kept for the callers written as ``progress=progress_factory(bar)``)."""
    return hook
