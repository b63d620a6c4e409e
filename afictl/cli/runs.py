"""``afictl runs``: every training run under a folder, one line each, or one run in full.

Light at import (``--help`` must not import pandas): afictl.reporting is imported inside.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import UserError
from ..render import Format
from ._util import FormatOpt, OutputOpt

#: the table's columns, in order; at 80 columns the folder, state, epochs and top-1 stay
_COLUMNS = [
    "arch",
    "dataset",
    "data_size",
    "recipe",
    "epochs",
    "best_top1",
    "last_top1",
    "state",
    "run",
]
_PRIORITY = ["run", "state", "epochs", "best_top1", "last_top1", "arch", "dataset"]

FolderArg = Annotated[
    Path,
    typer.Argument(
        metavar="[DIR]",
        help="Folder holding run folders (default: ./runs), or one run folder: then that "
        "run in full, as --show.",
    ),
]
ShowOpt = Annotated[
    str | None,
    typer.Option(
        "--show",
        metavar="RUN",
        help="Show one run in full: its resolved config (every key) and its metrics per "
        "epoch. RUN: a run folder, or the name of one under DIR.",
    ),
]


def _pct(value: Any) -> str:
    return f"{value:.2f}"


def _table_rows(rows: list[dict], root: Path) -> list[dict]:
    """What a person reads: epochs as done/planned, the folder by its name under ``root``."""
    out = []
    for r in rows:
        planned = "?" if r["epochs"] is None else r["epochs"]
        run = Path(r["run_dir"])
        out.append(
            r
            | {
                "data_size": "full" if r["data_size"] is None else r["data_size"],
                "epochs": f"{r['epochs_done']}/{planned}",
                "run": str(run.relative_to(root)) if run.is_relative_to(root) else str(run),
            }
        )
    return out


def _list(root: Path, fmt: Format, output: Path | None) -> None:
    from ..render import plural, render
    from ..reporting.runs import list_runs

    if not root.is_dir() and root != Path("runs"):  # no ./runs yet: no run, not a mistake
        raise UserError(f"{root}: no such folder (pass the folder of your runs: afictl runs DIR)")
    skipped: list[str] = []
    rows = list_runs(root, skipped)
    for line in skipped:
        print(f"afictl: warning: {line}", file=sys.stderr)
    if not rows and fmt is Format.table and output is None:
        print(f"no run folder under {root}/ (afictl train writes them there)", file=sys.stderr)
        return
    human = fmt in (Format.table, Format.markdown)
    render(
        _table_rows(rows, root) if human else rows,
        fmt,
        output,
        columns=_COLUMNS,
        formatters={"best_top1": _pct, "last_top1": _pct},
        title=f"{plural(len(rows), 'run')} in {root}/, newest first",
        priority=_PRIORITY,
    )


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _show(run_dir: Path, fmt: Format, output: Path | None) -> None:
    from ..render import render_text, terminal_width, write_text
    from ..reporting.runs import RunDamage, show_run

    try:
        detail = show_run(run_dir)
    except RunDamage as exc:
        raise UserError(f"damaged run: {str(exc).splitlines()[0]}") from None
    metrics = detail.metrics
    if fmt is Format.json:
        records = json.loads(render_text(metrics, "json")) if len(metrics) else []
        text = json.dumps(
            {"run": detail.row, "config": detail.config, "metrics": records}, indent=2
        )
    elif fmt is Format.csv:
        text = render_text(metrics, fmt)
    else:
        r = detail.row
        best = "" if r["best_top1"] is None else f", best top-1 {r['best_top1']:.2f}%"
        width = terminal_width() if output is None and fmt is Format.table else None
        config = [{"key": k, "value": _value(v)} for k, v in detail.config.items()]
        title = f"{run_dir}: {r['state']}, {r['epochs_done']}/{r['epochs']} epochs{best}"
        parts = [render_text(config, fmt, title=title, width=width)]
        if len(metrics):
            parts.append(
                render_text(
                    metrics,
                    fmt,
                    title="metrics per epoch",
                    width=width,
                    formatters=_metric_formatters(metrics.columns),
                )
            )
        text = "\n\n".join(parts)
    if output is not None:
        write_text(text, output)
        print(f"wrote {output}", file=sys.stderr)
    else:
        print(text.rstrip("\n"))


def _metric_formatters(columns: Any) -> dict:
    """Four significant digits, percentages with two decimals, throughput whole."""
    out = {}
    for col in columns:
        if "top" in col:
            out[col] = _pct
        elif col == "images_per_sec":
            out[col] = lambda v: f"{v:.0f}"
        elif col != "epoch" and col != "skipped_images":
            out[col] = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    return out


def _resolve(root: Path, show: str) -> Path:
    """``--show RUN``: a run folder as given, else the folder of that name under ``root``."""
    for candidate in (Path(show), root / show):
        if (candidate / "config.json").is_file():
            return candidate
    raise UserError(f"--show {show}: no run folder (with config.json) there or under {root}/")


def runs_cli(
    folder: FolderArg = Path("runs"),
    show: ShowOpt = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """List the training runs: model, data, recipe, epochs, best and last top-1, state.

    One row per run folder under DIR (default ./runs), newest first. state: `finished` (its
    metrics.csv holds every planned epoch), `running` (a live `afictl train` holds its lock) or
    `stopped` (neither: continue it with `afictl train --resume RUN`). A damaged run folder is
    left out with a one-line warning.

    `afictl runs RUN_FOLDER` or `--show RUN` prints one run in full: its config.json (every
    option the run resolved) and its metrics per epoch; `--format csv` gives the metrics,
    `--format json` one object with both.
    """
    if output is not None:
        from ..render import check_writable

        check_writable(output)
    if show is not None:
        _show(_resolve(folder, show), fmt, output)
    elif (folder / "config.json").is_file():
        _show(folder, fmt, output)
    else:
        _list(folder, fmt, output)
