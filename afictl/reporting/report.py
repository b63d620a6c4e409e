"""`afictl report`: the paper's tables and Figure 4 from runs and analysis outputs.

:func:`make_report` reads the run folders, keeps the finished ones (unless asked otherwise),
chooses the dataset of each table (the one with the most runs unless given), builds the tables,
and writes them and Figure 4 (with its points as CSV) into a folder. It returns a
:class:`Report`; :func:`report_text` renders it in one of the results formats.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import UserError
from ..render import human, plural, render_text
from .runs import RunFilter, choose_dataset, collect_runs

__all__ = [
    "Report",
    "ReportOptions",
    "budget_warning",
    "make_report",
    "read_json_rows",
    "report_text",
    "table_text",
]

TITLES = {
    3: "Table 3: Office-Home transfer accuracy (%)",
    4: "Table 4: CIFAR accuracy (%), parameters and FLOPs (batch 32)",
    5: "Table 5: ImageNet accuracy (%), parameters and FLOPs (batch 32)",
    6: "Table 6: memory (MiB) of training and inference",
    7: "Table 7: AFI blocks in one stage only (top-1 %)",
    8: "Table 8: AFI-ResNet-50 with reduction ratio r (top-1 %)",
    9: "Table 9: MobileNetV2 + AFI + attention modules (top-1 %)",
}
#: the tables each dataset family fills
FAMILY_TABLES = {"cifar": (4, 7, 9), "imagenet": (5, 8)}
FAMILY_OPTION = {"cifar": "--dataset", "imagenet": "--imagenet-dataset"}
#: human number forms for the text formats (CSV and JSON keep raw numbers for programs)
FORMATTERS = {c: human for c in ("params", "paper_params", "flops", "paper_flops", "run_params")}
EXTENSIONS = {"markdown": "md", "latex": "tex", "csv": "csv", "json": "json"}
ACCURACY_WORDS = {"best": "best epoch", "final": "final epoch"}

#: ``progress(description, total)`` returns a function to call once per step done
ProgressHook = Callable[[str, int], Callable[[], None]]


@dataclass(frozen=True)
class ReportOptions:
    """What a report reads and writes (every field has the CLI's default)."""

    runs_dir: Path = Path("runs")
    tables: tuple[int, ...] = (3, 4, 5, 6, 7, 8, 9)
    file_formats: tuple[str, ...] = ("markdown", "latex", "csv")
    figure_formats: tuple[str, ...] = ("png", "pdf")  # none: Figure 4's points CSV only
    cifar_dataset: str | None = None  # None: the CIFAR-size dataset with the most runs
    imagenet_dataset: str | None = None
    accuracy: str = "best"  # "best" epoch's eval top-1, or the "final" epoch's
    runs_filter: RunFilter = field(default_factory=RunFilter)
    memory_files: tuple[Path, ...] = ()
    transfer_files: tuple[Path, ...] = ()


@dataclass
class Report:
    """The tables built, Figure 4's points, the datasets chosen and what was written."""

    tables: dict[int, pd.DataFrame]
    figures: dict[int, pd.DataFrame] = field(default_factory=dict)
    datasets: dict[int, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    runs_read: int = 0
    runs_used: int = 0
    notes: list[str] = field(default_factory=list)
    #: pairs compared across unequal budgets (:func:`afictl.reporting.budget.mismatch_note`)
    unequal: list[str] = field(default_factory=list)

    @property
    def runs(self) -> int:  # the name of earlier versions
        return self.runs_read

    def to_dict(self) -> dict:
        """Plain data (``--format json``): every table's rows, Figure 4's points, the notes."""

        def rows(df: pd.DataFrame) -> list[dict]:
            return json.loads(render_text(df, "json"))

        return {
            "datasets": {f"table{n}": d for n, d in self.datasets.items()},
            "runs_read": self.runs_read,
            "runs_used": self.runs_used,
            "notes": self.notes,
            "unequal_budgets": self.unequal,
            "tables": {f"table{n}": rows(df) for n, df in self.tables.items()},
            "figure4": {f"table{n}": rows(df) for n, df in self.figures.items()},
        }


_NUMBER = (int, float, type(None))
_TEXT = (str, type(None))
#: the fields the tables read from each row: name -> (accepted types, required)
MEMORY_FIELDS = {
    "arch": ((str,), True),
    "baseline": (_TEXT, False),
    "batch_size": (_NUMBER, False),
    "device": (_TEXT, False),
} | {
    k: (_NUMBER, False)
    for k in ("train_bytes", "infer_bytes", "baseline_train_bytes", "baseline_infer_bytes")
}
TRANSFER_FIELDS = {"arch": ((str,), True), "pair": ((str,), True), "top1": (_NUMBER, True)}


def budget_warning(report: Report) -> str | None:
    """The one stderr line for a report that compares runs trained under unequal budgets (the
    first pair, and how many more: the ``budget`` columns name each), else None."""
    if not report.unequal:
        return None
    more = len(report.unequal) - 1
    return report.unequal[0] + (
        f" (and {more} more unequal pair{'s' if more > 1 else ''}: see the budget column)"
        if more
        else ""
    )


def read_json_rows(
    paths: list[Path] | tuple[Path, ...],
    fields: dict[str, tuple[tuple[type, ...], bool]] | None = None,
    command: str = "memory",
) -> list[dict]:
    """Rows from JSON files written by `afictl memory/transfer --format json --output F`;
    with ``fields``, a row without a required field or with a value of the wrong type is a
    :class:`UserError` naming the file, the row and the field."""
    rows: list[dict] = []
    for p in paths:
        try:
            data = json.loads(Path(p).read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read {p}: {exc}") from None
        data = data if isinstance(data, list) else [data]
        for i, row in enumerate(data, 1):
            problem = _row_problem(row, fields) if fields else None
            if problem:
                raise UserError(
                    f"{p}: row {i} {problem}; expected the output of "
                    f"`afictl {command} --format json --output FILE`"
                )
        rows += data
    return rows


def _row_problem(row: object, fields: dict[str, tuple[tuple[type, ...], bool]]) -> str | None:
    if not isinstance(row, dict):
        return f"is {type(row).__name__}, not an object"
    for name, (types, required) in fields.items():
        if name not in row:
            if required:
                return f"has no {name!r}"
        elif isinstance(row[name], bool) or not isinstance(row[name], types):
            return f"has {name} = {row[name]!r}"
    return None


def _latex(df: pd.DataFrame, title: str) -> str:
    df = df.copy()
    for col, f in FORMATTERS.items():
        if col in df:
            df[col] = [f(v) if v is not None and not pd.isna(v) else None for v in df[col]]
    return df.to_latex(index=False, na_rep="", caption=title, float_format="%.2f")


def _title(number: int, dataset: str | None) -> str:
    return TITLES[number] + (f", runs on {dataset}" if dataset else "")


def table_text(df: pd.DataFrame, number: int, fmt: str, dataset: str | None = None) -> str:
    """One table in one format (table/Markdown/LaTeX with human numbers, CSV/JSON raw)."""
    if fmt == "latex":
        return _latex(df, _title(number, dataset))
    human_form = fmt in ("markdown", "table")
    return render_text(
        df, fmt, title=_title(number, dataset), formatters=FORMATTERS if human_form else None
    )


def report_text(report: Report, fmt: str, width: int | None = None) -> str:
    """The whole report in one results format: every table (table, Markdown), one CSV with a
    ``table`` column, or one JSON document (:meth:`Report.to_dict`)."""
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2)
    if fmt == "csv":
        frames = [df.assign(table=n)[["table", *df.columns]] for n, df in report.tables.items()]
        return pd.concat(frames, ignore_index=True).to_csv(index=False) if frames else ""
    parts = []
    for n, df in report.tables.items():
        title = _title(n, report.datasets.get(n))
        formatters = FORMATTERS
        parts.append(render_text(df, fmt, title=title, formatters=formatters, width=width))
    return "\n\n".join(parts)


def _dataset_notes(opts: ReportOptions, runs: pd.DataFrame) -> tuple[dict[str, str], list[str]]:
    """The dataset of each family's tables (given, else the one with most runs) and a note
    saying which and why."""
    chosen, notes = {}, []
    given = {"cifar": opts.cifar_dataset, "imagenet": opts.imagenet_dataset}
    for family, numbers in FAMILY_TABLES.items():
        wanted = [n for n in numbers if n in opts.tables]
        dataset, counts = choose_dataset(runs, family)
        chosen[family] = given[family] or dataset
        if not wanted:
            continue
        which = ("Table " if len(wanted) == 1 else "Tables ") + ", ".join(map(str, wanted))
        option = FAMILY_OPTION[family]
        if given[family]:
            notes.append(f"{which}: runs on {given[family]} (chosen with {option})")
        elif not counts:
            notes.append(f"{which}: no runs found for them; {dataset} shows the paper's numbers")
        else:
            others = ", ".join(
                f"{d} ({plural(c, 'run')})" for d, c in counts.items() if d != dataset
            )
            notes.append(
                f"{which}: runs on {dataset} ({plural(counts[dataset], 'run')}, the most)"
                + (f"; also found {others}: choose with {option}" if others else "")
            )
    return chosen, notes


def _filter_notes(opts: ReportOptions, runs: pd.DataFrame, used: pd.DataFrame) -> list[str]:
    notes = []
    f = opts.runs_filter
    if not f.include_unfinished and not runs.empty:
        n = int((~runs["complete"].astype(bool)).sum())
        if n:
            notes.append(
                f"{plural(n, 'unfinished run')} left out (--include-unfinished uses "
                f"{'it' if n == 1 else 'them'}, marked partial)"
            )
    if (f.recipes or f.min_epochs is not None) and len(used) < len(runs):
        kept = RunFilter(include_unfinished=f.include_unfinished).apply(runs)
        n = len(kept) - len(used)
        if n:
            notes.append(f"{plural(n, 'run')} left out by --recipe/--min-epochs")
    return notes


def _no_progress(description: str, total: int) -> Callable[[], None]:
    return lambda: None


def _count_models(ctx, opts: ReportOptions, datasets: dict[int, str], progress) -> None:
    """Count every model the tables need, one progress step each (the slow part)."""
    from .tables import count_keys, warm_count

    keys = count_keys(ctx, opts.tables, datasets)
    tick = progress("counting parameters and FLOPs", len(keys))
    for key in keys:
        warm_count(key)
        tick()


def _write_tables(report: Report, out_dir: Path, formats: tuple[str, ...]) -> None:
    for number, df in report.tables.items():
        for fmt in formats:
            path = out_dir / f"table{number}.{EXTENSIONS[fmt]}"
            text = table_text(df, number, fmt, report.datasets.get(number))
            path.write_text(text if text.endswith("\n") else text + "\n")
            report.files.append(path)


def _write_figures(report: Report, out_dir: Path, opts: ReportOptions, ctx, progress) -> None:
    """Figure 4 for Tables 4 and 5, each with its points as CSV; no picture without points."""
    from .figure4 import plot_figure4
    from .tables import measured_models

    numbers = [n for n in (4, 5) if n in report.tables]
    tick = progress("drawing Figure 4", len(numbers))
    for number in numbers:
        dataset = report.datasets[number]
        points = measured_models(ctx, dataset)
        report.figures[number] = points
        csv = out_dir / f"figure4_table{number}.csv"
        csv.write_text(render_text(points, "csv"))
        report.files.append(csv)
        if not opts.figure_formats:
            pass  # --no-figures: the points only
        elif points.dropna(subset=["top1"]).empty:
            report.notes.append(f"Figure 4 of Table {number} not drawn: no runs on {dataset}")
        else:
            paths = [out_dir / f"figure4_table{number}.{ext}" for ext in opts.figure_formats]
            title = f"Figure 4 ({dataset}): accuracy vs cost"
            ylabel = f"top-1 accuracy (%), {ACCURACY_WORDS[opts.accuracy]}"
            report.files += plot_figure4(points, paths, title, ylabel)
        tick()


def make_report(
    out_dir: Path, options: ReportOptions | None = None, progress: ProgressHook | None = None
) -> Report:
    """Build the selected tables and Figure 4 from ``options.runs_dir`` and the analysis files
    and write them into ``out_dir`` (``table{N}.md/.tex/.csv``, ``figure4_table{N}.png/.pdf``
    and ``figure4_table{N}.csv``, the figure's points). An AFI model is compared with a
    baseline run of the same budget where one exists; ``Report.unequal`` names the pairs that
    are not."""
    from .tables import TableContext, build_tables

    opts = options or ReportOptions()
    progress = progress or _no_progress
    memory_rows = read_json_rows(opts.memory_files, MEMORY_FIELDS, "memory")  # bad input first
    transfer_rows = read_json_rows(opts.transfer_files, TRANSFER_FIELDS, "transfer")
    skipped: list[str] = []  # damaged runs, one line each (file and field)
    runs = collect_runs(opts.runs_dir, skipped)
    used = opts.runs_filter.apply(runs)
    chosen, notes = _dataset_notes(opts, used)
    datasets = {n: chosen[f] for f, numbers in FAMILY_TABLES.items() for n in numbers}
    ctx = TableContext(used, opts.accuracy)
    _count_models(ctx, opts, datasets, progress)
    built = build_tables(
        ctx,
        cifar_dataset=chosen["cifar"],
        imagenet_dataset=chosen["imagenet"],
        memory_rows=memory_rows,
        transfer_rows=transfer_rows,
        tables=opts.tables,
    )
    report = Report(
        built,
        datasets={n: d for n, d in datasets.items() if n in built},
        runs_read=len(runs),
        runs_used=len(used),
        notes=skipped + notes + _filter_notes(opts, runs, used),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_tables(report, out_dir, opts.file_formats)
    _write_figures(report, out_dir, opts, ctx, progress)
    report.unequal = list(ctx.unequal.values())  # the tables' and Figure 4's, each pair once
    return report
