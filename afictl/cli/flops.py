"""``afictl flops``: parameters and FLOPs in the paper's convention (Tables 2, 4, 5).

Light at import (``--help`` must not import torch): the counting modules are imported inside
the functions that count.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import UserError
from ..model_options import MODEL_OPTIONS
from ..render import Format, human, render, signed_pct
from ._util import ArchOpt, FormatOpt, OutputOpt, model_option_flags

_ARCH_COLUMNS = [
    "arch",
    "params",
    "flops",
    "flops_with_aggregation",
    "flops_exact",
    "baseline",
    "params_delta_pct",
    "flops_delta_pct",
]
_TABLE_COLUMNS = [
    "table",
    "model",
    "arch",
    "params",
    "paper_params",
    "params_diff_pct",
    "flops",
    "paper_flops",
    "flops_diff_pct",
    "params_delta_pct",
    "flops_delta_pct",
]
#: what a narrow terminal keeps first: our counts and how they differ (the rest: --format csv)
_PRIORITY = [
    "arch",
    "params",
    "flops",
    "params_diff_pct",
    "flops_diff_pct",
    "params_delta_pct",
    "flops_delta_pct",
]
_PCTS = ("params_diff_pct", "flops_diff_pct", "params_delta_pct", "flops_delta_pct")
_COUNTS = ("params", "flops", "flops_with_aggregation", "flops_exact", "paper_params")


def _formatters() -> dict[str, Callable]:
    return {c: human for c in (*_COUNTS, "paper_flops")} | {c: signed_pct for c in _PCTS}


@contextmanager
def _progress(total: int, what: str) -> Iterator[Callable[[str], None]]:
    """Progress on stderr (stdout carries the results): a bar, or lines in a log file;
    yields ``advance(arch)``."""
    from ..progress import progress

    with progress(what, total) as job:
        yield lambda arch: job.advance(1, model=arch)


def _model_kwargs(arch: list[str], options: dict[str, Any]) -> dict:
    """The model options given, checked against each model of ``arch`` that takes them (an AFI
    model's baseline gets those it shares: afictl.models.options_of)."""
    from ..models import check_model_options, get_model_info, options_of

    infos = [get_model_info(name) for name in arch]  # unknown names fail before any counting
    unused = [k for k in options if not any(k in i.options for i in infos)]
    if unused and arch:
        flags = ", ".join(MODEL_OPTIONS[k].flag for k in unused)
        raise UserError(f"{flags}: none of {', '.join(arch)} takes it")
    for name in arch:
        check_model_options(name, options_of(name, options))
    return options


def _stage_rows(arch: list[str], as_table2: bool, kwargs: dict, **sizes) -> list:
    """Per-stage rows (Table 2 beside the paper's when asked or when no --arch was given)."""
    from ..models import options_of
    from ..profiling.compare import paper_table
    from ..profiling.flops import stage_report

    names = arch or ["resnet32", "afi_resnet32"]
    rows = []
    with _progress(len(names), "counting stages") as advance:
        for a in names:
            rows += stage_report(a, **sizes, **options_of(a, kwargs))
            advance(a)
    return paper_table(2, rows) if as_table2 or not arch else rows


def _arch_rows(arch: list[str], kwargs: dict, use_cache: bool, **options) -> list:
    from ..profiling.flops import flops_report, models_to_count

    with _progress(len(models_to_count(arch, **kwargs)), "counting") as advance:
        return flops_report(arch, use_cache=use_cache, progress=advance, **options, **kwargs)


def _paper_rows(tables: list[int], batch_size: int, exact: bool, use_cache: bool) -> list[dict]:
    from ..models import list_models
    from ..profiling.compare import paper_tables, tables_to_count

    for t in tables:
        if t not in (4, 5):
            raise UserError(f"--table {t}: the paper tables with models are 2, 4 and 5")
    registered = set(list_models())
    with _progress(tables_to_count(tables, registered), "counting") as advance:
        return paper_tables(
            tables,
            batch_size=batch_size,
            exact=exact,
            registered=registered,
            use_cache=use_cache,
            progress=advance,
        )


TableOpt = Annotated[
    list[int] | None,
    typer.Option(
        "--table", "-t", help="Print a paper table with ours beside it: 2, 4 or 5 (repeatable)."
    ),
]
BatchOpt = Annotated[
    int, typer.Option("--batch-size", "-b", min=1, help="Batch size of the paper's convention.")
]
InputSizeOpt = Annotated[
    int | None, typer.Option(min=8, help="Input resolution (default: the model's).")
]
ClassesOpt = Annotated[
    int | None, typer.Option(min=1, help="Classes (default: 100 CIFAR, 1000 ImageNet).")
]
PerStageOpt = Annotated[
    bool, typer.Option("--per-stage", help="Per-stage parameters and FLOPs (Table 2).")
]
ExactOpt = Annotated[
    bool | None,
    typer.Option(
        help="Also count with torch's FlopCounterMode (flops_exact); default: with --arch only."
    ),
]
CacheOpt = Annotated[
    bool,
    typer.Option(
        "--cache/--no-cache",
        help="Take the counts shipped for the registry's models at their default options "
        "(checked against each model's structure); --no-cache counts everything live.",
    ),
]


@model_option_flags
def flops_cli(
    arch: ArchOpt = None,
    table: TableOpt = None,
    batch_size: BatchOpt = 32,
    input_size: InputSizeOpt = None,
    num_classes: ClassesOpt = None,
    per_stage: PerStageOpt = False,
    exact: ExactOpt = None,
    use_cache: CacheOpt = True,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    model_options: dict[str, Any] | None = None,
) -> None:
    """Parameters and FLOPs (thop MACs x batch size, the paper's convention).

    With no options, prints the paper's Tables 4 and 5 with our counts beside the paper's.
    Each AFI model is compared with its baseline. `flops_with_aggregation` adds the AFI
    weighted sum that Eq. 10 leaves out; `flops_exact` is torch's FlopCounterMode (2 FLOPs
    per multiply-accumulate) at the same batch. Counts of the registry's models at their
    default options come from a file shipped with afictl (`--no-cache`: count live); other
    options are counted live. The model options (--afi-stages, --reduction, --width, ...)
    build each model given with --arch that takes them; a baseline shares the non-AFI ones.
    """
    arch = arch or []
    kwargs = _model_kwargs(arch, model_options or {})
    sizes = dict(batch_size=batch_size, input_size=input_size, num_classes=num_classes)
    show = dict(formatters=_formatters())
    try:
        if per_stage or table == [2]:
            rows = _stage_rows(arch, table == [2], kwargs, **sizes)
            render(rows, fmt, output, **show, title="Per-stage parameters and FLOPs")
            return
        if arch:
            rows = _arch_rows(arch, kwargs, use_cache, exact=exact is not False, **sizes)
            title = f"Parameters and FLOPs (batch {batch_size})"
            render(
                rows, fmt, output, columns=_ARCH_COLUMNS, priority=_PRIORITY, **show, title=title
            )
            return
    except ValueError as exc:  # bad option values reaching a builder (afi_stages out of range)
        raise UserError(str(exc)) from None
    _render_paper_tables(table or [4, 5], batch_size, bool(exact), use_cache, fmt, output)


def _render_paper_tables(
    tables: list[int],
    batch_size: int,
    exact: bool,
    use_cache: bool,
    fmt: Format,
    output: Path | None,
) -> None:
    """The bare command: paper Tables 4 and 5 (or those asked) with our counts beside."""
    # the paper tables skip the cross-check by default: it doubles the time of the bare line
    rows = _paper_rows(tables, batch_size, exact, use_cache)
    names = ", ".join(map(str, tables))
    title = f"Paper Tables {names}: ours vs the paper (FLOPs at batch {batch_size})"
    render(
        rows,
        fmt,
        output,
        columns=_TABLE_COLUMNS,
        formatters=_formatters(),
        priority=_PRIORITY,
        title=title,
    )
    missing = [r["arch"] for r in rows if r["params"] is None]
    if missing:
        print(f"not yet in the registry (empty cells): {', '.join(missing)}", file=sys.stderr)
