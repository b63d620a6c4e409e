"""Our counts side by side with the paper's Tables 2, 4 and 5."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..paper import TABLE2, TABLES
from .flops import FlopReport, StageReport, flops_report, models_to_count

__all__ = ["paper_table", "paper_tables", "tables_to_count"]


def _diff(ours: float | None, paper: float) -> float | None:
    # + 0.0: a difference that rounds to zero is 0.0, never -0.0
    return None if ours is None else round(100.0 * (ours - paper) / paper, 2) + 0.0


def _table2(stage_rows: Iterable[StageReport], scale: float) -> list[dict]:
    rows = []
    for r in stage_rows:
        paper = TABLE2.get((r.arch, r.stage))
        rows.append(
            {
                "arch": r.arch,
                "stage": r.stage,
                "params": r.params,
                "flops": r.flops,
                "paper_params": int(paper[0]) if paper else None,
                "paper_flops": round(paper[1] * scale) if paper else None,
                "params_diff_pct": _diff(r.params, paper[0]) if paper else None,
                "flops_diff_pct": _diff(r.flops, paper[1] * scale) if paper else None,
            }
        )
    return rows


def _table_names(table: int, registered: set[str] | None) -> list[str]:
    return [p.arch for p in TABLES[table] if registered is None or p.arch in registered]


def tables_to_count(tables: Iterable[int], registered: set[str] | None = None) -> int:
    """How many models :func:`paper_tables` counts (each once), for a progress bar's total."""
    names = [a for t in tables for a in _table_names(t, registered)]
    return len(models_to_count(names))


def _rows(table: int, ours: dict[str, FlopReport], scale: float) -> list[dict]:
    rows = []
    for p in TABLES[table]:
        o = ours.get(p.arch)
        rows.append(
            {
                "table": table,
                "model": p.label,
                "arch": p.arch,
                "params": o.params if o else None,
                "paper_params": round(p.params),  # the paper's count, printed rounded
                "params_diff_pct": _diff(o.params if o else None, p.params),
                "flops": o.flops if o else None,
                "paper_flops": round(p.flops * scale),
                "flops_diff_pct": _diff(o.flops if o else None, p.flops * scale),
                "flops_with_aggregation": o.flops_with_aggregation if o else None,
                "flops_exact": o.flops_exact if o else None,
                "baseline": o.baseline if o else None,
                "params_delta_pct": o.params_delta_pct if o else None,
                "flops_delta_pct": o.flops_delta_pct if o else None,
            }
        )
    return rows


def paper_tables(
    tables: Iterable[int],
    *,
    batch_size: int = 32,
    exact: bool = True,
    registered: set[str] | None = None,
    use_cache: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Rows of paper tables 4 and/or 5 with our counts and the differences in percent; every
    model of all ``tables`` is counted once. Models of a table that are not registered keep
    empty cells: nothing is invented."""
    tables = list(tables)
    names = list(dict.fromkeys(a for t in tables for a in _table_names(t, registered)))
    reports = flops_report(
        names, batch_size=batch_size, exact=exact, use_cache=use_cache, progress=progress
    )
    ours = {r.arch: r for r in reports}
    scale = batch_size / 32  # the paper's FLOPs are at batch 32
    return [row for t in tables for row in _rows(t, ours, scale)]


def paper_table(
    table: int,
    stage_rows: Iterable[StageReport] | None = None,
    *,
    batch_size: int = 32,
    exact: bool = True,
    registered: set[str] | None = None,
    use_cache: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Rows of paper table 2, 4 or 5 with our measured counts and the difference in percent.

    Table 2 compares the given ``stage_rows``; tables 4 and 5 count their models.
    """
    if table == 2:
        return _table2(stage_rows or [], batch_size / 32)
    return paper_tables(
        [table],
        batch_size=batch_size,
        exact=exact,
        registered=registered,
        use_cache=use_cache,
        progress=progress,
    )
