"""Rendering of result rows: ``table | json | csv | markdown``, to stdout or a file.

Library functions return data (dataclasses, dicts, DataFrames); this module is the one place
that turns them into text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["Format", "check_writable", "human", "render", "to_frame", "write_text"]


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


def human(value: Any, unit: str = "") -> str:
    """Compact human form: 472756 -> '472.76K', 2.23e9 -> '2.23G'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if not isinstance(value, int | float):
        return str(value)
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= div:
            return f"{value / div:.2f}{suffix}{unit}"
    return f"{value:.4g}{unit}" if isinstance(value, float) else f"{value}{unit}"


def _row(obj: Any) -> dict:
    if is_dataclass(obj):
        return obj.to_dict() if hasattr(obj, "to_dict") else asdict(obj)
    return dict(obj)


def to_frame(rows: Sequence[Any] | pd.DataFrame) -> pd.DataFrame:
    return rows if isinstance(rows, pd.DataFrame) else pd.DataFrame([_row(r) for r in rows])


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def render_text(
    rows: Sequence[Any] | pd.DataFrame,
    fmt: Format | str,
    *,
    columns: Sequence[str] | None = None,
    formatters: dict[str, Callable[[Any], str]] | None = None,
    title: str | None = None,
) -> str:
    """Rows as text. ``columns`` and ``formatters`` shape the human formats only: JSON and CSV
    always carry every field, unformatted, for programs to read."""
    fmt = Format(fmt)
    df = to_frame(rows)
    if fmt is Format.json:
        records = [{k: _clean(v) for k, v in r.items()} for r in df.to_dict(orient="records")]
        return json.dumps(records, indent=2, default=_json_default)
    if fmt is Format.csv:
        return df.to_csv(index=False)
    view = df[[c for c in columns if c in df.columns]] if columns else df
    view = view.copy()
    for col, f in (formatters or {}).items():
        if col in view.columns:
            view[col] = view[col].map(
                lambda v, f=f: "" if v is None or (isinstance(v, float) and math.isnan(v)) else f(v)
            )
    view = view.astype(object).where(view.notna(), "")
    if fmt is Format.markdown:
        head = "| " + " | ".join(map(str, view.columns)) + " |"
        sep = "|" + "|".join("---" for _ in view.columns) + "|"
        body = ["| " + " | ".join(str(v) for v in r) + " |" for r in view.itertuples(index=False)]
        text = "\n".join([head, sep, *body])
        return f"**{title}**\n\n{text}" if title else text
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col in view.columns:
        table.add_column(str(col), overflow="fold")
    for r in view.itertuples(index=False):
        table.add_row(*(str(v) for v in r))
    buf = StringIO()
    # Wide enough that no cell wraps: tables are read, and also grepped and diffed.
    widths = [max([len(str(c))] + [len(str(v)) for v in view[c]]) for c in view.columns]
    Console(file=buf, width=sum(widths) + 3 * len(widths) + 1, force_terminal=False).print(table)
    return buf.getvalue().rstrip("\n")


def check_writable(output: Path) -> None:
    """Fail now, not after hours of work, when ``output`` could not be written later: a folder,
    a path under a regular file, a read-only or full place. :class:`~afictl.errors.UserError`
    naming the path and the OS reason; nothing is left behind (a probe file is removed)."""
    import errno
    import tempfile

    from .errors import UserError

    output = Path(output)
    try:
        if output.is_dir():
            raise IsADirectoryError(errno.EISDIR, "it is a folder")
        if output.exists():
            with open(output, "ab"):  # appends nothing: the contents stay
                pass
            return
        parent = output.parent
        while (
            not parent.exists() and parent != parent.parent
        ):  # the folder write_text would create under
            parent = parent.parent
        if not parent.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{parent} is not a folder")
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror or exc}") from None


def write_text(text: str, output: Path) -> Path:
    """Write atomically-enough for reports: parent folders are created."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text if text.endswith("\n") else text + "\n")
    return output


def render(
    rows: Sequence[Any] | pd.DataFrame,
    fmt: Format | str = Format.table,
    output: Path | None = None,
    **kwargs: Any,
) -> str:
    """Render rows, print them (stdout) or write them to ``output``; returns the text."""
    import sys

    text = render_text(rows, fmt, **kwargs)
    if output is not None:
        write_text(text, output)
        print(f"wrote {output}", file=sys.stderr)
    else:
        print(text)
    return text
