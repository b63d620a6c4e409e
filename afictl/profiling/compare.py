"""Our counts side by side with the paper's Tables 2, 4 and 5."""

from __future__ import annotations

from collections.abc import Iterable

from ..paper import TABLE2, TABLES
from .flops import StageReport, flops_report

__all__ = ["paper_table"]


def _diff(ours: float | None, paper: float) -> float | None:
    return None if ours is None else round(100.0 * (ours - paper) / paper, 2)


def paper_table(
    table: int,
    stage_rows: Iterable[StageReport] | None = None,
    *,
    batch_size: int = 32,
    exact: bool = True,
    registered: set[str] | None = None,
) -> list[dict]:
    """Rows of paper table 2, 4 or 5 with our measured counts and the difference in percent.

    Models of the table that are not registered keep empty cells: nothing is invented.
    """
    scale = batch_size / 32  # the paper's FLOPs are at batch 32
    if table == 2:
        rows = []
        for r in stage_rows or []:
            paper = TABLE2.get((r.arch, r.stage))
            rows.append(
                {
                    "arch": r.arch,
                    "stage": r.stage,
                    "params": r.params,
                    "flops": r.flops,
                    "paper_params": paper[0] if paper else None,
                    "paper_flops": paper[1] * scale if paper else None,
                    "params_diff_pct": _diff(r.params, paper[0]) if paper else None,
                    "flops_diff_pct": _diff(r.flops, paper[1] * scale) if paper else None,
                }
            )
        return rows
    paper_rows = TABLES[table]
    names = [p.arch for p in paper_rows if registered is None or p.arch in registered]
    ours = {r.arch: r for r in flops_report(names, batch_size=batch_size, exact=exact)}
    rows = []
    for p in paper_rows:
        o = ours.get(p.arch)
        rows.append(
            {
                "table": table,
                "model": p.label,
                "arch": p.arch,
                "params": o.params if o else None,
                "paper_params": p.params,
                "params_diff_pct": _diff(o.params if o else None, p.params),
                "flops": o.flops if o else None,
                "paper_flops": p.flops * scale,
                "flops_diff_pct": _diff(o.flops if o else None, p.flops * scale),
                "flops_with_aggregation": o.flops_with_aggregation if o else None,
                "flops_exact": o.flops_exact if o else None,
                "baseline": o.baseline if o else None,
                "params_delta_pct": o.params_delta_pct if o else None,
                "flops_delta_pct": o.flops_delta_pct if o else None,
            }
        )
    return rows
