"""``afictl report``: the paper's tables (3-9) and Figure 4 from runs and analysis outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UserError
from ..render import Format
from ._util import FormatOpt, OutputOpt

#: literals (not imported from afictl.reporting, which needs pandas) so that --help stays light
TABLE_NUMBERS = (3, 4, 5, 6, 7, 8, 9)
FILE_FORMATS = ("markdown", "latex", "csv", "json")
ACCURACY = ("best", "final")


def _check(tables: tuple[int, ...], files: tuple[str, ...], accuracy: str, runs: Path) -> None:
    bad = [f for f in files if f not in FILE_FORMATS]
    if bad:
        raise UserError(
            f"unknown file format(s) {', '.join(bad)}; choose from {', '.join(FILE_FORMATS)}"
        )
    wrong = [t for t in tables if t not in TABLE_NUMBERS]
    if wrong:
        raise UserError(
            f"no paper table {wrong[0]} to report; choose from {', '.join(map(str, TABLE_NUMBERS))}"
        )
    if accuracy not in ACCURACY:
        raise UserError(f"--accuracy {accuracy}: choose best or final")
    needs_runs = sorted(set(tables) - {3, 6})  # Tables 3 and 6 come from --transfer/--memory files
    if needs_runs and not runs.is_dir():
        raise UserError(
            f"--runs {runs}: no such folder (Tables {', '.join(map(str, needs_runs))} are built "
            "from its run folders); pass the folder of your runs, or --table 3 / --table 6"
        )


RunsOpt = Annotated[
    Path, typer.Option("--runs", help="Folder holding run folders (`afictl train --run-dir`).")
]
OutDirOpt = Annotated[
    Path, typer.Option("--out-dir", help="Folder for the table files and Figure 4.")
]
FileFormatOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--file-format",
        help="Formats of the table files in --out-dir: markdown, latex, csv, json "
        "(repeatable; default markdown, latex, csv).",
    ),
]
TableOpt = Annotated[
    list[int] | None, typer.Option("--table", "-t", help="Only these paper tables (3-9).")
]
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        "--cifar-dataset",
        help="Dataset whose runs fill Tables 4, 7, 9 (e.g. shapes, cifar10). Default: the "
        "CIFAR-size dataset (input up to 64 px) with the most runs.",
    ),
]
ImagenetOpt = Annotated[
    str | None,
    typer.Option(
        help="Dataset whose runs fill Tables 5, 8. Default: the ImageNet-size dataset with "
        "the most runs, else imagenet."
    ),
]
AccuracyOpt = Annotated[
    str,
    typer.Option(
        help="Which eval top-1 fills a cell: `best` epoch (column top1_best) or `final` "
        "epoch (top1_final)."
    ),
]
UnfinishedOpt = Annotated[
    bool,
    typer.Option(
        "--include-unfinished", help="Also use unfinished runs (their epochs say partial)."
    ),
]
RecipeOpt = Annotated[
    list[str] | None,
    typer.Option(help="Only runs of this recipe (repeatable), e.g. paper-cifar."),
]
MinEpochsOpt = Annotated[
    int | None, typer.Option(min=1, help="Only runs with at least this many epochs done.")
]
MemoryOpt = Annotated[
    list[Path] | None, typer.Option(help="`afictl memory --format json` output (Table 6).")
]
FiguresOpt = Annotated[
    bool,
    typer.Option(
        "--figures/--no-figures",
        help="Draw Figure 4 (png, pdf); its points CSV is written either way.",
    ),
]
TransferOpt = Annotated[
    list[Path] | None, typer.Option(help="`afictl transfer --format json` output (Table 3).")
]


def _print(rep, fmt: Format, output: Path | None, show: bool) -> None:
    from ..render import terminal_width, write_text
    from ..reporting.report import budget_warning, report_text

    for note in rep.notes:
        typer.echo(f"afictl: {note}", err=True)
    warning = budget_warning(rep)  # one line, however many pairs are unequal
    if warning:
        typer.echo(f"afictl: warning: {warning}", err=True)
    if output is not None:
        write_text(report_text(rep, fmt), output)
    elif show:
        typer.echo(report_text(rep, fmt, width=terminal_width() if fmt == "table" else None))


def report_cli(
    runs: RunsOpt = Path("runs"),
    out_dir: OutDirOpt = Path("report"),
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    file_format: FileFormatOpt = None,
    table: TableOpt = None,
    dataset: DatasetOpt = None,
    imagenet_dataset: ImagenetOpt = None,
    accuracy: AccuracyOpt = "best",
    include_unfinished: UnfinishedOpt = False,
    recipe: RecipeOpt = None,
    min_epochs: MinEpochsOpt = None,
    memory: MemoryOpt = None,
    transfer: TransferOpt = None,
    figures: FiguresOpt = True,
    show: Annotated[bool, typer.Option(hidden=True)] = True,
) -> None:
    """Regenerate the paper's Tables 3-9 and Figure 4 from finished runs and analysis outputs.

    A run is finished when its metrics.csv holds every epoch of its config.json; unfinished
    runs are left out unless --include-unfinished. Each table takes the runs of one dataset:
    without --dataset, the one with the most runs (stderr says which). Every accuracy cell is
    the best epoch's eval top-1 (top1_best; --accuracy final for the last epoch's), shown with
    the run's recipe, epochs and data size. Figure 4 plots the trained models' parameters and
    FLOPs; its points are written beside it (`figure4_table4.csv`).

    The tables print on stdout (--format, or to --output FILE); the files go to --out-dir.
    Cells without a measured run or analysis file stay empty: nothing is invented.
    """
    from ..progress import progress_hook
    from ..render import check_writable, plural
    from ..reporting.report import ReportOptions, make_report
    from ..reporting.runs import RunFilter

    tables = tuple(table or TABLE_NUMBERS)
    files = tuple(file_format or FILE_FORMATS[:3])
    _check(tables, files, accuracy, runs)
    if output is not None:
        check_writable(output)
    options = ReportOptions(
        runs_dir=runs,
        tables=tables,
        file_formats=files,
        cifar_dataset=dataset,
        imagenet_dataset=imagenet_dataset,
        accuracy=accuracy,
        runs_filter=RunFilter(include_unfinished, tuple(recipe or ()), min_epochs),
        memory_files=tuple(memory or ()),
        transfer_files=tuple(transfer or ()),
        figure_formats=("png", "pdf") if figures else (),
    )
    with progress_hook() as hook:  # a bar per stage, or lines in a log file
        rep = make_report(out_dir, options, progress=hook)
    _print(rep, fmt, output, show)
    typer.echo(
        f"{plural(rep.runs_read, 'run')} read from {runs} ({rep.runs_used} used); wrote "
        f"{plural(len(rep.files), 'file')} to {out_dir}/" + (f" and {output}" if output else ""),
        err=True,
    )
