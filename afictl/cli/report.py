"""``afictl report``: the paper's tables (3-9) and Figure 4 from runs and analysis outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UserError
from ..reporting.report import EXTENSIONS, make_report, table_text
from ..reporting.tables import TABLE_BUILDERS


def report_cli(
    runs: Annotated[
        Path, typer.Option("--runs", help="Folder holding run folders (afictl train --run-dir).")
    ] = Path("runs"),
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for the tables and figures.")
    ] = Path("report"),
    fmt: Annotated[
        list[str] | None,
        typer.Option(
            "--format", "-f", help="Table formats: markdown, latex, csv, json (repeatable)."
        ),
    ] = None,
    table: Annotated[
        list[int] | None, typer.Option("--table", "-t", help="Only these paper tables (3-9).")
    ] = None,
    cifar_dataset: Annotated[
        str, typer.Option(help="Dataset whose runs fill Tables 4, 7, 9.")
    ] = "cifar100",
    imagenet_dataset: Annotated[
        str, typer.Option(help="Dataset whose runs fill Tables 5, 8.")
    ] = "imagenet",
    memory: Annotated[
        list[Path] | None, typer.Option(help="`afictl memory --format json` output (Table 6).")
    ] = None,
    transfer: Annotated[
        list[Path] | None, typer.Option(help="`afictl transfer --format json` output (Table 3).")
    ] = None,
    show: Annotated[bool, typer.Option(help="Also print the tables as Markdown.")] = True,
) -> None:
    """Regenerate the paper's Tables 3-9 and Figure 4 from finished runs and analysis outputs.

    Cells without a measured run or analysis file stay empty: nothing is invented.
    """
    formats = tuple(fmt or ["markdown", "latex", "csv"])
    bad = [f for f in formats if f not in EXTENSIONS]
    if bad:
        raise UserError(f"unknown format(s) {', '.join(bad)}; choose from {', '.join(EXTENSIONS)}")
    tables = tuple(table or TABLE_BUILDERS)
    wrong = [t for t in tables if t not in TABLE_BUILDERS]
    if wrong:
        raise UserError(
            f"no paper table {wrong[0]} to report; choose from {', '.join(map(str, TABLE_BUILDERS))}"
        )
    needs_runs = sorted(set(tables) - {3, 6})  # Tables 3 and 6 come from --transfer/--memory files
    if needs_runs and not runs.is_dir():
        raise UserError(
            f"--runs {runs}: no such folder (Tables {', '.join(map(str, needs_runs))} are built "
            "from its run folders); pass the folder of your runs, or --table 3 / --table 6"
        )
    rep = make_report(
        output,
        runs_dir=runs,
        formats=formats,
        tables=tables,
        cifar_dataset=cifar_dataset,
        imagenet_dataset=imagenet_dataset,
        memory_files=memory,
        transfer_files=transfer,
    )
    if show:
        for number, df in rep.tables.items():
            typer.echo(table_text(df, number, "markdown") + "\n")
    typer.echo(
        f"{rep.runs} run(s) read from {runs}; wrote {len(rep.files)} files to {output}/", err=True
    )
