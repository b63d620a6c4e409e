"""``afictl curves``: learning curves of several runs in one figure, and their points.

Light at import (``--help`` must not import pandas or matplotlib): the library part,
afictl/reporting/curves.py, is imported inside.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UserError
from ..render import Format
from ._analysis import check_figure, check_results_file, figure_option
from ._util import FormatOpt, OutputOpt

RunsArg = Annotated[
    list[Path] | None,
    typer.Argument(
        metavar="[RUN]...",
        help="Run folders (written by afictl train). Default: the newest run under ./runs/ "
        "and the newest run of its counterpart trained under the same budget.",
    ),
]
RootOpt = Annotated[
    Path,
    typer.Option("--runs", help="Folder of run folders searched when no RUN is named."),
]
CurvesFigureOpt = figure_option("curves.png")


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def curves_cli(
    runs: RunsArg = None,
    root: RootOpt = Path("runs"),
    figure: CurvesFigureOpt = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """Learning curves: training and evaluation loss and top-1 per epoch of several runs.

    One figure (--figure, default ./curves.png, never overwritten) with loss and top-1 side by
    side: one colour per run, training dashed, evaluation solid. The points (run, epoch,
    train_loss, train_top1, eval_loss, eval_top1) print in --format, or go to --output. Runs
    trained under unequal budgets (dataset, data size, epochs, recipe) are drawn all the same,
    with a warning on stderr and a red note in the figure.
    """
    check_figure(figure)
    check_results_file(output)
    from ..analysis.runs import free_path
    from ..render import render
    from ..reporting.curves import (
        budget_notes,
        curve_points,
        curves_figure,
        default_curve_runs,
        run_labels,
    )
    from ..reporting.runs import RunDamage

    if runs:
        chosen = list(runs)
    else:
        chosen, alone = default_curve_runs(root)
        why = f" ({alone})" if alone else ""
        print(f"using runs: {', '.join(map(str, chosen)) + why}", file=sys.stderr)
    try:
        points = curve_points(chosen)
        notes = budget_notes(chosen)
    except RunDamage as exc:
        raise UserError(f"damaged run: {str(exc).splitlines()[0]}") from None
    for note in notes:
        print(f"afictl: warning: {note}", file=sys.stderr)
    path = curves_figure(points, figure or free_path("curves.png"), notes)
    print(f"wrote {path}", file=sys.stderr)
    if fmt in (Format.table, Format.markdown):  # the folder's name, as in the legend
        points = points.assign(run=points["run"].map(run_labels(chosen)))
    render(
        points,
        fmt,
        output,
        formatters={c: _fmt for c in ("train_loss", "train_top1", "eval_loss", "eval_top1")},
        title="learning curves" + (f" ({'; '.join(notes)})" if notes else ""),
        priority=["run", "epoch", "eval_top1", "eval_loss", "train_top1", "train_loss"],
    )
