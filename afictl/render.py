"""Rendering of result rows: ``table | json | csv | markdown``, to stdout or a file.

Library functions return data (dataclasses, dicts, DataFrames); this module is the one place
that turns them into text. It imports pandas and rich only inside its functions, so that
``from afictl.render import Format`` (every command's ``--format``) stays light for ``--help``.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields, is_dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Format",
    "terminal_width",
    "check_writable",
    "human",
    "pct",
    "plural",
    "render",
    "render_text",
    "signed_pct",
    "to_frame",
    "write_text",
]


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
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a count that went through a float column: 12.0 -> "12"
    return f"{value:.4g}{unit}" if isinstance(value, float) else f"{value}{unit}"


def pct(value: float, digits: int = 2) -> str:
    """A percentage already in percent: 12.345 -> '12.35%'; never '-0.00%'."""
    text = f"{value:.{digits}f}"
    return ("0" + text[2:] if text.startswith("-0") and float(text) == 0 else text) + "%"


def signed_pct(value: float, digits: int = 2) -> str:
    """A signed change in percent: 1.5 -> '+1.50%', -2 -> '-2.00%', and whatever rounds to
    zero (-0.001 included) -> '0.00%': no sign on a change that is not there."""
    text = f"{value:+.{digits}f}"
    if float(text) == 0:
        return text[1:] + "%"
    return text + "%"


#: Words the rules below would get wrong ("epoches"); ``plural(n, word, many)`` for others.
_IRREGULAR = {"epoch": "epochs", "stomach": "stomachs", "child": "children", "index": "indices"}


def plural(n: int, word: str, many: str | None = None) -> str:
    """``n`` and the noun agreeing with it: (1, 'epoch') -> '1 epoch', (2, 'process') ->
    '2 processes'; ``many`` for irregular plurals."""
    if n == 1:
        return f"{n} {word}"
    if many is None:
        many = _IRREGULAR.get(word)
    if many is None:
        if re.search(r"(s|x|z|ch|sh)$", word):
            many = word + "es"
        elif re.search(r"[^aeiou]y$", word):
            many = word[:-1] + "ies"
        else:
            many = word + "s"
    return f"{n} {many}"


def _row(obj: Any) -> dict:
    if is_dataclass(obj):
        return obj.to_dict() if hasattr(obj, "to_dict") else asdict(obj)
    return dict(obj)


def to_frame(rows: Sequence[Any] | pd.DataFrame) -> pd.DataFrame:
    """Rows (dataclasses, dicts) as a DataFrame, whole counts kept as integers."""
    import pandas as pd

    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame([_row(r) for r in rows])
    return _integral_counts(df, _int_fields(rows))


#: Column-name words that say a column counts something (``baseline_params``, ``train_bytes``,
#: ``num_classes``) and words that say it does not (``params_delta_pct``, ``images_per_sec``).
_COUNT_WORDS = frozenset(
    "params flops macs ops bytes images count batch size epoch epochs steps iters repeats "
    "warmup threads workers classes channels runs seed opset skipped n num".split()
)
_NOT_COUNT_WORDS = frozenset(
    "pct ratio diff delta mean avg median frac rate per sec seconds ms loss lr top1 top5".split()
)


def _int_fields(rows: Any) -> set[str]:
    """Fields of dataclass rows annotated as ``int`` (or ``int | None``), not float or bool."""
    first = rows[0] if isinstance(rows, Sequence) and rows else None
    if first is None or not is_dataclass(first):
        return set()
    out = set()
    for f in fields(first):
        kinds = set(re.findall(r"\w+", str(f.type))) - {"None", "Optional"}
        if kinds == {"int"}:
            out.add(f.name)
    return out


def _says_count(name: str) -> bool:
    words = set(str(name).lower().split("_"))
    return bool(words & _COUNT_WORDS) and not words & _NOT_COUNT_WORDS


def _integral_counts(df: pd.DataFrame, int_fields: set[str]) -> pd.DataFrame:
    """Float columns of whole numbers that hold counts become nullable integers: a column with
    a missing value is float in pandas, and CSV/JSON would print ``765460480.0`` otherwise."""
    convert = []
    for col in df.columns:
        if df[col].dtype.kind != "f" or not (col in int_fields or _says_count(col)):
            continue
        values = df[col].dropna()
        if len(values) and (values == values.round()).all() and values.abs().max() < 2**63:
            convert.append(col)
    if not convert:
        return df
    df = df.copy()
    for col in convert:
        df[col] = df[col].astype("Int64")
    return df


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _clean(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if type(value).__name__ == "NAType":  # pandas' missing integer
        return None
    return value


def _markdown_cell(value: Any) -> str:
    # A `|` would end the cell; a newline would end the row.
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _markdown(view: pd.DataFrame, title: str | None) -> str:
    head = "| " + " | ".join(_markdown_cell(c) for c in view.columns) + " |"
    sep = "|" + "|".join("---" for _ in view.columns) + "|"
    body = [
        "| " + " | ".join(_markdown_cell(v) for v in r) + " |" for r in view.itertuples(index=False)
    ]
    text = "\n".join([head, sep, *body])
    return f"**{title}**\n\n{text}" if title else text


def terminal_width() -> int | None:
    """The width a table printed on stdout must fit: ``$COLUMNS``, else the terminal's; None
    when stdout is a pipe or a file (then nothing wraps, for grep and diff)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        import shutil

        return shutil.get_terminal_size().columns
    return None


def _span(widths: Sequence[int]) -> int:
    """A rich table's width for these content widths: a border and two spaces per column."""
    return sum(widths) + 3 * len(widths) + 1


def _cell_len(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in text.split("\n")), default=0)


def _header_parts(header: str) -> list[str]:
    """A column name cut after each ``_`` or space: where its header may break onto a new line
    (``params_diff_pct`` -> ``params_``, ``diff_``, ``pct``); never inside a word."""
    return re.findall(r"[^_ ]+[_ ]*|[_ ]+", header) or [header]


def _wrap_header(header: str, width: int) -> str:
    lines = [""]
    for part in _header_parts(header):
        if lines[-1] and _cell_len(lines[-1] + part.rstrip()) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(line.rstrip() for line in lines)


def _least(header: str, cells: list[str]) -> int:
    """The narrowest a column can be without cutting a word of its header or of a cell (cells
    break at spaces only: a name, number or path is one word)."""
    words = [w for c in cells for w in c.split()] + [p.rstrip() for p in _header_parts(header)]
    return max(map(_cell_len, words), default=1) or 1


def _spread(natural: list[int], least: list[int], room: int) -> list[int]:
    """Widths from ``least`` toward ``natural`` within ``room`` content columns: the columns
    nearest their natural width first, so that as few cells as possible wrap."""
    widths = list(least)
    extra = room - sum(least)
    for i in sorted(range(len(widths)), key=lambda i: natural[i] - least[i]):
        give = max(0, min(extra, natural[i] - least[i]))
        widths[i] += give
        extra -= give
    return widths


def _keep(
    names: list[str], least: dict[str, int], width: int, priority: Sequence[str], empty: set[str]
) -> list[str]:
    """The columns shown at ``width``: the first of ``priority`` (else the first column) always,
    then the rest of ``priority`` in its order, then the others left to right, columns with no
    value last, each while it still fits."""
    order = [p for p in dict.fromkeys(priority) if p in names] or names[:1]
    order += [n for n in names if n not in order and n not in empty]
    order += [n for n in names if n not in order]
    kept: list[str] = []
    for name in order:
        if not kept or _span([least[k] for k in kept] + [least[name]]) <= width:
            kept.append(name)
    return [n for n in names if n in kept]


def _stacked(view: pd.DataFrame, title: str | None, width: int) -> str:
    """Each row as a block of ``name: value`` lines: a one-row summary, or a table whose
    columns do not fit side by side. A value longer than a whole line is the only one cut."""
    import textwrap

    names = [str(c) for c in view.columns]
    pad = max(_cell_len(n) for n in names) + 2
    blocks = []
    for r in view.itertuples(index=False):
        lines = []
        for name, value in zip(names, r, strict=True):
            text = " ".join(str(value).split())
            if pad + _cell_len(text) <= width:
                lines.append(f"{name}:".ljust(pad) + text)
                continue
            lines.append(f"{name}:")
            lines += textwrap.wrap(
                text, width, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False
            )
        blocks.append("\n".join(line.rstrip() for line in lines))
    text = "\n\n".join(blocks)
    return f"{textwrap.fill(title, width, break_long_words=False)}\n{text}" if title else text


def _table(
    view: pd.DataFrame, title: str | None, width: int | None, priority: Sequence[str] = ()
) -> str:
    """A rich table as wide as its cells. At a narrower ``width`` one row (a summary) is stacked
    as ``name: value`` lines; more rows break headers at ``_`` and cells at spaces, then leave
    columns out (said under the table), or are stacked when fewer than two columns fit. No name,
    number or path is ever cut (a file or pipe, ``width`` None, gets every column whole)."""
    names = [str(c) for c in view.columns]
    cells = {n: [str(v) for v in view[c]] for n, c in zip(names, view.columns, strict=True)}
    natural = {n: max([_cell_len(n)] + [_cell_len(v) for v in cells[n]]) for n in names}
    if width is None or not names or _span(list(natural.values())) <= width:
        span = max(_span(list(natural.values())), _cell_len(title or ""))
        return _draw(
            view, names, title, list(natural.values()), span, wrap_headers=False, width=width
        )
    if len(view) == 1:  # a summary: one `name: value` line each reads better than a grid
        return _stacked(view, title, width)
    least = {n: _least(n, cells[n]) for n in names}
    kept = names
    if _span(list(least.values())) > width:
        empty = {n for n in names if not any(v.strip() for v in cells[n])}
        kept = _keep(names, least, width, priority, empty)
        if len(kept) < 2:
            return _stacked(view, title, width)
    room = width - _span([0] * len(kept))
    widths = _spread([natural[n] for n in kept], [least[n] for n in kept], room)
    text = _draw(
        view[[view.columns[names.index(n)] for n in kept]],
        kept,
        title,
        widths,
        _span(widths),
        wrap_headers=True,
        width=width,
    )
    left_out = [n for n in names if n not in kept]
    if left_out:
        import textwrap

        note = (
            f"(columns left out to fit {width}: {', '.join(left_out)}; "
            "--format csv or a wider terminal shows them)"
        )
        text += "\n" + textwrap.fill(note, width, break_long_words=False, break_on_hyphens=False)
    return text


def _draw(
    view: pd.DataFrame,
    names: list[str],
    title: str | None,
    widths: list[int],
    span: int,
    *,
    wrap_headers: bool,
    width: int | None,
) -> str:
    """The table at content ``widths``, its title centred over it; a title wider than the
    table goes above it as a line (broken between words at ``width``): rich would break it to
    the table's width, a word or two a line."""
    import textwrap
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    above = ""
    if title and _cell_len(title) > _span(widths):
        above = textwrap.fill(title, width or len(title), break_long_words=False) + "\n"
        title, span = None, _span(widths)
    table = Table(title=title, show_lines=False)
    for name, w in zip(names, widths, strict=True):
        header = _wrap_header(name, w) if wrap_headers else name
        table.add_column(header, width=w, overflow="fold")
    for r in view.itertuples(index=False):
        table.add_row(*(str(v) for v in r))
    buf = StringIO()
    Console(file=buf, width=span, force_terminal=False).print(table)
    return above + buf.getvalue().rstrip("\n")


def render_text(
    rows: Sequence[Any] | pd.DataFrame,
    fmt: Format | str,
    *,
    columns: Sequence[str] | None = None,
    formatters: dict[str, Callable[[Any], str]] | None = None,
    title: str | None = None,
    width: int | None = None,
    priority: Sequence[str] = (),
) -> str:
    """Rows as text. ``columns`` and ``formatters`` shape the human formats only: JSON and CSV
    always carry every field, unformatted, for programs to read. ``width`` caps a table's
    width (see :func:`_table`: nothing is cut mid-word; columns that do not fit are left out,
    the first always kept, then those in ``priority``, then left to right); None: as wide as
    its cells, every column."""
    fmt = Format(fmt)
    df = to_frame(rows)
    if fmt is Format.json:
        records = [{k: _clean(v) for k, v in r.items()} for r in df.to_dict(orient="records")]
        return json.dumps(records, indent=2, default=_json_default)
    if fmt is Format.csv:
        return df.to_csv(index=False)
    view = df[[c for c in columns if c in df.columns]] if columns else df
    view = view.astype(object).where(view.notna(), None)
    for col, f in (formatters or {}).items():
        if col in view.columns:
            view[col] = view[col].map(lambda v, f=f: "" if _clean(v) is None else f(v))
    view = view.where(view.notna(), "")
    if fmt is Format.markdown:
        return _markdown(view, title)
    return _table(view, title, width, priority)


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
    """Render rows, print them (stdout) or write them to ``output``; returns the text.

    A table on stdout fits the terminal (:func:`terminal_width`); in a file it is not wrapped.
    """
    if output is None and "width" not in kwargs:
        kwargs["width"] = terminal_width()
    text = render_text(rows, fmt, **kwargs)
    if output is not None:
        write_text(text, output)
        print(f"wrote {output}", file=sys.stderr)
    else:
        print(text.rstrip("\n"))  # CSV ends with a newline: no blank line after it
    return text
