"""``afictl flops``: parameters and FLOPs in the paper's convention (Tables 2, 4, 5)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..errors import UserError
from ..models import get_model_info, list_models
from ..profiling.compare import paper_table
from ..profiling.flops import flops_report, stage_report
from ..render import Format, human, render
from ..validate import check_option, check_stages_of
from ._util import ArchOpt, FormatOpt, OutputOpt

_PCT = "{:+.2f}%".format


def flops_cli(
    arch: ArchOpt = None,
    table: Annotated[
        list[int] | None,
        typer.Option(
            "--table", "-t", help="Print a paper table with ours beside it: 2, 4 or 5 (repeatable)."
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Batch size of the paper's convention.")
    ] = 32,
    input_size: Annotated[
        int | None, typer.Option(min=8, help="Input resolution (default: the model's).")
    ] = None,
    num_classes: Annotated[
        int | None, typer.Option(min=1, help="Classes (default: 100 CIFAR, 1000 ImageNet).")
    ] = None,
    per_stage: Annotated[
        bool, typer.Option("--per-stage", help="Per-stage parameters and FLOPs (Table 2).")
    ] = False,
    afi_stages: Annotated[
        str | None, typer.Option(help="Stages with AFI blocks, e.g. '1' or '1,2' (Table 7).")
    ] = None,
    reduction: Annotated[
        int | None,
        typer.Option("--reduction", "-r", min=1, help="AFI reduction ratio r (Table 8)."),
    ] = None,
    exact: Annotated[
        bool | None,
        typer.Option(
            help="Also count with torch's FlopCounterMode (flops_exact); default: with --arch only."
        ),
    ] = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """Parameters and FLOPs (thop MACs x batch size, the paper's convention).

    With no options, prints the paper's Tables 4 and 5 with our counts beside the paper's.
    Each AFI model is compared with its baseline. `flops_with_aggregation` adds the AFI
    weighted sum that Eq. 10 leaves out; `flops_exact` is torch's FlopCounterMode (2 FLOPs
    per multiply-accumulate) at the same batch.
    """
    kwargs = {}
    if afi_stages is not None:  # the check train uses (afictl/validate.py)
        kwargs["afi_stages"] = check_option("afi_stages", afi_stages)
        for name in arch or []:
            check_stages_of(kwargs["afi_stages"], name, get_model_info(name).num_stages)
    if reduction is not None:
        kwargs["reduction"] = reduction
    for name in arch or []:
        get_model_info(name)  # unknown names fail before any counting
    if kwargs and any(not get_model_info(a).is_afi for a in arch or []):
        raise UserError("--afi-stages/--reduction apply to AFI models only")
    try:
        if per_stage or table == [2]:
            names = arch or ["resnet32", "afi_resnet32"]
            rows = [
                r
                for a in names
                for r in stage_report(
                    a,
                    batch_size=batch_size,
                    input_size=input_size,
                    num_classes=num_classes,
                    **(kwargs if get_model_info(a).is_afi else {}),
                )
            ]
            if table == [2] or not arch:
                rows = paper_table(2, rows)
            render(
                rows,
                fmt,
                output,
                formatters={c: human for c in ("params", "flops", "paper_params", "paper_flops")}
                | {c: _PCT for c in ("params_diff_pct", "flops_diff_pct")},
                title="Per-stage parameters and FLOPs",
            )
            return
        if arch:
            rows = flops_report(
                arch,
                batch_size=batch_size,
                input_size=input_size,
                num_classes=num_classes,
                exact=exact is not False,
                **kwargs,
            )
            render(
                rows,
                fmt,
                output,
                columns=[
                    "arch",
                    "params",
                    "flops",
                    "flops_with_aggregation",
                    "flops_exact",
                    "baseline",
                    "params_delta_pct",
                    "flops_delta_pct",
                ],
                formatters={
                    c: human for c in ("params", "flops", "flops_with_aggregation", "flops_exact")
                }
                | {c: _PCT for c in ("params_delta_pct", "flops_delta_pct")},
                title=f"Parameters and FLOPs (batch {batch_size})",
            )
            return
    except ValueError as exc:  # bad option values reaching a builder (afi_stages out of range)
        raise UserError(str(exc)) from None
    tables = table or [4, 5]
    registered = set(list_models())
    rows = []
    for t in tables:
        if t not in (4, 5):
            raise UserError(f"--table {t}: the paper tables with models are 2, 4 and 5")
        # the paper tables skip the cross-check by default: it doubles the time of the bare line
        rows += paper_table(t, batch_size=batch_size, exact=bool(exact), registered=registered)
    render(
        rows,
        fmt,
        output,
        columns=[
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
        ],
        formatters={c: human for c in ("params", "paper_params", "flops", "paper_flops")}
        | {
            c: _PCT
            for c in ("params_diff_pct", "flops_diff_pct", "params_delta_pct", "flops_delta_pct")
        },
        title=f"Paper Tables {', '.join(map(str, tables))}: ours vs the paper (FLOPs at batch {batch_size})",
    )
    missing = [r["arch"] for r in rows if r["params"] is None]
    if missing:
        print(f"not yet in the registry (empty cells): {', '.join(missing)}", file=sys.stderr)
