"""`afictl report`: write the paper's tables and Figure 4 from runs and analysis outputs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import UserError
from ..render import human, render_text
from .figure4 import plot_figure4
from .runs import collect_runs
from .tables import TABLE_BUILDERS, build_tables, measured_models

__all__ = ["Report", "make_report", "read_json_rows", "table_text"]

TITLES = {
    3: "Table 3: Office-Home transfer accuracy (%)",
    4: "Table 4: CIFAR accuracy (%), parameters and FLOPs (batch 32)",
    5: "Table 5: ImageNet accuracy (%), parameters and FLOPs (batch 32)",
    6: "Table 6: memory (MiB) of training and inference",
    7: "Table 7: AFI blocks in one stage only (top-1 %)",
    8: "Table 8: AFI-ResNet-50 with reduction ratio r (top-1 %)",
    9: "Table 9: MobileNetV2 + AFI + attention modules (top-1 %)",
}
#: human number forms for the text formats (CSV and JSON keep raw numbers for programs)
FORMATTERS = {c: human for c in ("params", "paper_params", "flops", "paper_flops")}
EXTENSIONS = {"markdown": "md", "latex": "tex", "csv": "csv", "json": "json"}


@dataclass
class Report:
    tables: dict[int, pd.DataFrame]
    files: list[Path] = field(default_factory=list)
    runs: int = 0


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


def read_json_rows(
    paths: list[Path],
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


def table_text(df: pd.DataFrame, number: int, fmt: str) -> str:
    """One table in one format (Markdown/LaTeX with human numbers, CSV/JSON raw)."""
    if fmt == "latex":
        return _latex(df, TITLES[number])
    return render_text(
        df, fmt, title=TITLES[number], formatters=FORMATTERS if fmt == "markdown" else None
    )


def make_report(
    output: Path,
    *,
    runs_dir: Path = Path("runs"),
    formats: tuple[str, ...] = ("markdown", "latex", "csv"),
    tables: tuple[int, ...] = TABLE_BUILDERS,
    cifar_dataset: str = "cifar100",
    imagenet_dataset: str = "imagenet",
    memory_files: list[Path] | None = None,
    transfer_files: list[Path] | None = None,
    figure_formats: tuple[str, ...] = ("png", "pdf"),
) -> Report:
    runs = collect_runs(runs_dir)
    built = build_tables(
        runs,
        cifar_dataset=cifar_dataset,
        imagenet_dataset=imagenet_dataset,
        memory_rows=read_json_rows(memory_files or [], MEMORY_FIELDS, "memory"),
        transfer_rows=read_json_rows(transfer_files or [], TRANSFER_FIELDS, "transfer"),
        tables=tables,
    )
    report = Report(built, runs=len(runs))
    output.mkdir(parents=True, exist_ok=True)
    for number, df in built.items():
        for fmt in formats:
            path = output / f"table{number}.{EXTENSIONS[fmt]}"
            text = table_text(df, number, fmt)
            path.write_text(text if text.endswith("\n") else text + "\n")
            report.files.append(path)
    for number, dataset in ((4, cifar_dataset), (5, imagenet_dataset)):
        if number in built:  # every measured model on the table's dataset, paper's or not
            paths = [output / f"figure4_table{number}.{ext}" for ext in figure_formats]
            report.files += plot_figure4(
                measured_models(runs, dataset), paths, f"Figure 4 ({dataset}): accuracy vs cost"
            )
    return report
