"""The paper's tables (3-9) from measured runs and analysis outputs, beside the paper's numbers.

Every "ours" cell comes from a run folder or an analysis JSON file; a missing run is an empty
cell (None), never a number from elsewhere. Each accuracy cell is named for what it is:
``top1_best`` (the best epoch's eval top-1, the default) or ``top1_final`` (the last epoch's),
and sits beside the recipe, epochs and data size of the run it comes from.

``params``/``flops`` of Tables 4 and 5 are the registry model's (the paper's class count and
input size, comparable with ``paper_params``/``paper_flops``); ``run_params`` and Figure 4 are
the trained model's (its own class count, input size and AFI options).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pandas as pd

from ..models import counterpart, get_model_info, list_models
from ..paper import (
    OFFICE_HOME_PAIRS,
    TABLE3,
    TABLE3_AVG,
    TABLE6,
    TABLE7,
    TABLE8,
    TABLE9,
    TABLES,
)
from ..transfer.protocol import pair_average
from .budget import BUDGET_FIELDS, budget_mismatch, mismatch_note

__all__ = [
    "ACCURACIES",
    "FIGURE_COLUMNS",
    "TABLE_BUILDERS",
    "TableContext",
    "budget_cell",
    "build_tables",
    "count_keys",
    "measured_models",
    "pick_pair",
    "pick_run",
    "registry_counts",
    "run_budget",
    "run_counts",
    "warm_count",
]

MIB = 2**20
ACCURACIES = ("best", "final")
TABLE_BUILDERS = (3, 4, 5, 6, 7, 8, 9)
#: Figure 4's points, as written beside the figure (``figure4_table4.csv``)
FIGURE_COLUMNS = [
    "arch",
    "dataset",
    "top1",
    "params",
    "flops",
    "run",
    "model",
    "accuracy",
    "recipe",
    "epochs",
    "data_size",
    "finished",
    "budget",
]


@dataclass(frozen=True)
class TableContext:
    """What every run-based table reads: the runs (already filtered) and which accuracy.

    ``unequal`` collects, while the tables are built, every pair compared across unequal
    budgets: ``(model, baseline) -> mismatch note``, for the report's one warning line.
    """

    runs: pd.DataFrame
    accuracy: str = "best"
    unequal: dict[tuple[str, str], str] = field(default_factory=dict, compare=False)

    def column(self, which: str = "top1") -> str:
        return f"{which}_{self.accuracy}"


def _delta(value, ref):
    return None if value is None or ref is None else round(value - ref, 2)


def _registered(arch: str | None) -> bool:
    return arch is not None and arch in set(list_models())


def _pair_key(arch: str) -> tuple[str, bool, str]:
    """Sort key putting each AFI model right after its baseline, as the registry declares it
    (``afi_mobilenetv2_se`` after ``mobilenetv2``); an unregistered name is its own baseline."""
    info = get_model_info(arch) if _registered(arch) else None
    return (info.baseline or arch, info.is_afi, arch) if info else (arch, False, arch)


@cache
def _count(arch: str, num_classes: int | None, input_size: int | None, kwargs: str):
    from ..profiling.flops import count_flops

    r = count_flops(
        arch, num_classes=num_classes, input_size=input_size, exact=False, **json.loads(kwargs)
    )
    return r.params, r.flops


def registry_counts(arch: str) -> tuple[int | None, float | None]:
    """Parameters and FLOPs (batch 32) of the registry model, as the paper counts them."""
    return _count(arch, None, None, "{}") if _registered(arch) else (None, None)


def _run_key(run: pd.Series) -> tuple[str, int | None, int | None, str]:
    def opt(key):
        v = run.get(key)
        return None if v is None or pd.isna(v) else int(v)

    return run["arch"], opt("num_classes"), opt("input_size"), run.get("model_kwargs") or "{}"


def run_counts(run: pd.Series) -> tuple[int | None, float | None]:
    """Parameters and FLOPs (batch 32) of the model a run trained: its class count, input size
    and AFI options, from its config.json (the parameter count the run recorded, if any)."""
    if not _registered(run["arch"]):
        return None, None
    params, flops = _count(*_run_key(run))
    recorded = run.get("params")
    return (int(recorded) if recorded is not None and pd.notna(recorded) else params), flops


def _figure_runs(ctx: TableContext, dataset: str) -> list[pd.Series]:
    """The run of each registered architecture's default configuration on ``dataset``, an AFI
    model and its baseline chosen together (:func:`table_runs`)."""
    archs = sorted(set(ctx.runs["arch"].dropna())) if not ctx.runs.empty else []
    runs, _ = table_runs(ctx, [a for a in archs if _registered(a)], dataset)
    return [r for r in runs.values() if r is not None]


def count_keys(ctx: TableContext, tables: Iterable[int], datasets: dict[int, str]) -> list:
    """Every model count the tables need (the slow part of a report), for a progress bar."""
    keys: list = []
    for number in (4, 5):
        if number in tables:
            keys += [(p.arch, None, None, "{}") for p in TABLES[number] if _registered(p.arch)]
            keys += [_run_key(r) for r in _figure_runs(ctx, datasets[number])]
    return list(dict.fromkeys(keys))


def warm_count(key: tuple) -> None:
    """Count one model now (cached for the tables)."""
    _count(*key)


def run_budget(run: pd.Series | dict) -> dict[str, Any]:
    """The budget fields of a run's row (``collect_runs``): dataset, data size (None for the
    whole dataset), epochs asked and recipe, as config.json has them."""
    out = {}
    for name in BUDGET_FIELDS:
        value = run.get(name)
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            value = None
        elif name in ("data_size", "epochs"):
            value = int(value)
        out[name] = value
    return out


def pick_run(
    runs: pd.DataFrame,
    arch: str,
    dataset: str,
    *,
    afi_stages: str | None = None,
    reduction: int | None = None,
    like: dict[str, Any] | None = None,
) -> pd.Series | None:
    """The newest finished run of a configuration (else the newest one), or None.

    ``afi_stages=None`` / ``reduction=None`` select the model's defaults (all stages, r = 4).
    ``like``: only runs of this budget (:func:`run_budget`).
    """
    if runs.empty:
        return None
    sel = runs[(runs["arch"] == arch) & (runs["dataset"] == dataset)]
    if sel.empty:
        return None
    info = get_model_info(arch) if _registered(arch) else None
    if info is not None and info.is_afi:
        all_stages = ",".join(str(i) for i in range(1, info.num_stages + 1))
        stages = sel["afi_stages"].fillna(all_stages)
        sel = sel[stages == (afi_stages or all_stages)]
        sel = sel[sel["reduction"].fillna(4).astype(int) == (reduction or 4)]
    if like is not None and not sel.empty:
        same = [not budget_mismatch(run_budget(r), like) for _, r in sel.iterrows()]
        sel = sel[same]
    if sel.empty:
        return None
    complete = sel[sel["complete"].astype(bool)]
    return (complete if not complete.empty else sel).iloc[-1]


def pick_pair(
    runs: pd.DataFrame, arch: str, baseline: str, dataset: str, **options: Any
) -> tuple[pd.Series | None, pd.Series | None]:
    """The runs of ``arch`` (an AFI model, ``options`` as :func:`pick_run`) and of its
    ``baseline`` to compare: the newest of each when they share a budget; else the pair of
    equal budgets with the newest run, if any; else the newest of each (unequal: the caller
    marks it)."""
    run, base = pick_run(runs, arch, dataset, **options), pick_run(runs, baseline, dataset)
    if run is None or base is None or not budget_mismatch(run_budget(run), run_budget(base)):
        return run, base
    pairs = []
    for _, candidate in runs[(runs["arch"] == arch) & (runs["dataset"] == dataset)].iterrows():
        like = run_budget(candidate)
        a, b = pick_run(runs, arch, dataset, like=like, **options), None
        if a is not None:
            b = pick_run(runs, baseline, dataset, like=like)
        if b is not None:
            pairs.append((a, b))
    if not pairs:
        return run, base
    return max(pairs, key=lambda p: (max(p[0]["mtime"], p[1]["mtime"]), p[0]["run_dir"]))


def budget_cell(
    ctx: TableContext, run: pd.Series | None, base: pd.Series | None, names: tuple[str, str]
) -> str | None:
    """A row's ``budget`` cell: ``'same'`` when its run and its baseline's share a budget,
    ``'unequal: data_size 400 vs full'`` (the row's vs the baseline's) when not (recorded in
    ``ctx.unequal`` under ``names``), None without both runs."""
    if run is None or base is None:
        return None
    diffs = budget_mismatch(run_budget(run), run_budget(base))
    if not diffs:
        return "same"
    ctx.unequal.setdefault(names, mismatch_note(*names, diffs))
    return "unequal: " + "; ".join(diffs)


def table_runs(
    ctx: TableContext, archs: Iterable[str], dataset: str
) -> tuple[dict[str, pd.Series | None], dict[str, pd.Series | None]]:
    """The run shown for each architecture and, for each AFI model, its baseline's run to
    compare with (:func:`pick_pair`); a baseline's own row shows the run its AFI model (the
    one :func:`afictl.models.counterpart` names) is compared with, so that the delta is the
    difference of the two rows."""
    archs = list(archs)
    shown: dict[str, pd.Series | None] = {}
    bases: dict[str, pd.Series | None] = {}
    for arch in archs:
        baseline = get_model_info(arch).baseline if _registered(arch) else None
        if baseline:
            shown[arch], bases[arch] = pick_pair(ctx.runs, arch, baseline, dataset)
            if baseline in archs and counterpart(baseline) == arch:
                shown[baseline] = bases[arch]
    for arch in archs:
        if arch not in shown or shown[arch] is None:
            shown[arch] = pick_run(ctx.runs, arch, dataset)
    return shown, bases


def _top(run: pd.Series | None, ctx: TableContext, which: str = "top1") -> float | None:
    key = which if ctx.accuracy == "best" else f"final_{which}"
    if run is None or run.get(key) is None or pd.isna(run.get(key)):
        return None
    return round(float(run[key]), 2)


def _epochs(run: pd.Series) -> str:
    done = int(run["epochs_done"])
    if run.get("epochs") is None or pd.isna(run.get("epochs")):
        return str(done)
    text = f"{done}/{int(run['epochs'])}"
    return text if bool(run["complete"]) else f"{text} (partial)"


def run_cells(run: pd.Series | None) -> dict:
    """Recipe, epochs ("done/asked", "(partial)" when unfinished) and data size of a cell's run
    ("all": the whole dataset), None without a run."""
    if run is None:
        return {"recipe": None, "epochs": None, "data_size": None}
    size = run.get("data_size")
    return {
        "recipe": run.get("recipe"),
        "epochs": _epochs(run),
        "data_size": "all" if size is None or pd.isna(size) else int(size),
    }


def _accuracy_row(
    number: int, p, ctx: TableContext, run: pd.Series | None, base_run: pd.Series | None
) -> dict:
    params, flops = registry_counts(p.arch)
    baseline = get_model_info(p.arch).baseline if _registered(p.arch) else None
    top = _top(run, ctx)
    row = {
        "model": p.label,
        "arch": p.arch,
        "paper_top1": p.top1,
        ctx.column(): top,
        "top1_vs_baseline": _delta(top, _top(base_run, ctx)) if baseline else None,
        # beside the delta it qualifies: kept when a narrow terminal leaves columns out
        "budget": budget_cell(ctx, run, base_run, (p.arch, baseline or "")),
    }
    if number == 5:
        row |= {"paper_top5": p.top5, ctx.column("top5"): _top(run, ctx, "top5")}
    row |= {
        "params": params,
        "paper_params": p.params,
        "flops": flops,
        "paper_flops": p.flops,
        "run_params": run_counts(run)[0] if run is not None else None,
    }
    return row | run_cells(run) | {"run": run["run_dir"] if run is not None else None}


def table_accuracy(number: int, ctx: TableContext, dataset: str) -> pd.DataFrame:
    """Tables 4 (CIFAR-100) and 5 (ImageNet): accuracy, parameters, FLOPs, deltas; the paper's
    rows, then a row for every other architecture with a run on ``dataset`` (no paper cells).
    Each AFI model is compared with a baseline run of the same budget where there is one
    (:func:`table_runs`); ``budget`` says ``same`` or what differs."""
    from ..paper import PaperRow

    rows = list(TABLES[number])
    listed = {p.arch for p in rows}
    rows += [
        PaperRow(r["arch"], r["arch"], number, None, None)
        for r in sorted(
            _figure_runs(ctx, dataset),
            key=lambda r: _pair_key(r["arch"]),
        )
        if r["arch"] not in listed
    ]
    shown, bases = table_runs(ctx, [p.arch for p in rows], dataset)
    return pd.DataFrame(
        [_accuracy_row(number, p, ctx, shown.get(p.arch), bases.get(p.arch)) for p in rows]
    )


def measured_models(ctx: TableContext, dataset: str) -> pd.DataFrame:
    """Figure 4's points: every registered architecture with a default-configuration run on
    ``dataset``, at the trained model's parameters and FLOPs; an AFI point's ``budget`` says
    whether its baseline's point was trained under the same budget (:func:`budget_cell`)."""
    from ..paper import paper_row

    runs = _figure_runs(ctx, dataset)
    by_arch = {r["arch"]: r for r in runs}
    rows = []
    for run in runs:
        arch = run["arch"]
        params, flops = run_counts(run)
        label = paper_row(arch)
        baseline = get_model_info(arch).baseline
        rows.append(
            {
                "arch": arch,
                "dataset": dataset,
                "top1": _top(run, ctx),
                "params": params,
                "flops": flops,
                "run": run["run_dir"],
                "model": label.label if label else arch,
                "accuracy": ctx.accuracy,
                **run_cells(run),
                "finished": bool(run["complete"]),
                "budget": budget_cell(ctx, run, by_arch.get(baseline), (arch, baseline or "")),
            }
        )
    return pd.DataFrame(rows, columns=FIGURE_COLUMNS)


def _memory_cells(r: dict, prefix: str = "") -> dict:
    return {
        "train": r.get(f"{prefix}train_bytes"),
        "infer": r.get(f"{prefix}infer_bytes"),
        "batch_size": r.get("batch_size"),
        "device": r.get("device"),
    }


def table6(memory_rows: Iterable[dict]) -> pd.DataFrame:
    """Table 6: training and inference memory (MiB, batch 64) from `afictl memory` JSON."""
    ours: dict[str, dict] = {}
    for r in memory_rows:
        ours[r["arch"]] = _memory_cells(r)
        if r.get("baseline"):
            ours.setdefault(r["baseline"], _memory_cells(r, "baseline_"))
    rows = []
    for arch, label in (("resnet50", "ResNet-50"), ("afi_resnet50", "AFI-ResNet-50")):
        o = ours.get(arch, {})
        rows.append(
            {
                "model": label,
                "arch": arch,
                "paper_train_mib": TABLE6[arch]["train_mib"],
                "train_mib": round(o["train"] / MIB, 1) if o.get("train") else None,
                "paper_infer_mib": TABLE6[arch]["infer_mib"],
                "infer_mib": round(o["infer"] / MIB, 1) if o.get("infer") else None,
                "batch_size": o.get("batch_size"),
                "device": o.get("device"),
            }
        )
    return pd.DataFrame(rows)


def table7(ctx: TableContext, dataset: str) -> pd.DataFrame:
    """Table 7: AFI blocks in one stage only (``--afi-stages K``) for ResNet-32 and ResNet-110;
    ``budget`` compares each AFI run with the baseline run of its row."""
    rows, col = [], ctx.column()
    for base, paper in TABLE7.items():
        cells = [(base, "baseline", paper["baseline"], pick_run(ctx.runs, base, dataset))]
        afi = counterpart(base)
        cells += [
            (afi, f"stage {s}", paper[s], pick_run(ctx.runs, afi, dataset, afi_stages=s))
            for s in ("1", "2", "3")
        ]
        base_run = cells[0][3]
        for model, column, ref, run in cells:
            cell = None
            if column != "baseline":
                cell = budget_cell(ctx, run, base_run, (f"{model} ({column})", base))
            rows.append(
                {"model": model, "column": column, "paper_top1": ref, col: _top(run, ctx)}
                | run_cells(run)
                | {"budget": cell}
            )
    df = pd.DataFrame(rows)
    base_top = df[df["column"] == "baseline"].set_index("model")[col].to_dict()
    df.insert(
        4,
        "top1_vs_baseline",
        [
            _delta(t, base_top.get(get_model_info(m).baseline)) if c != "baseline" else None
            for m, c, t in zip(df["model"], df["column"], df[col], strict=True)
        ],
    )
    df.insert(5, "budget", df.pop("budget"))  # beside the delta it qualifies
    return df


def table8(ctx: TableContext, dataset: str) -> pd.DataFrame:
    """Table 8: AFI-ResNet-50 with reduction ratio r in (1, 2, 4, 8)."""
    rows = []
    for r, top in TABLE8.items():
        run = pick_run(ctx.runs, "afi_resnet50", dataset, reduction=r)
        rows.append({"r": r, "paper_top1": top, ctx.column(): _top(run, ctx)} | run_cells(run))
    return pd.DataFrame(rows)


def table9(ctx: TableContext, dataset: str) -> pd.DataFrame:
    """Table 9: MobileNetV2 with AFI and an attention module on the AFI result; ``budget``
    compares each run with the MobileNetV2 run of the table."""
    col = ctx.column()
    base_run = pick_run(ctx.runs, "mobilenetv2", dataset)
    rows = []
    for a, p in TABLE9.items():
        run = pick_run(ctx.runs, a, dataset)
        cell = budget_cell(ctx, run, base_run, (a, "mobilenetv2")) if a != "mobilenetv2" else None
        rows.append(
            {"arch": a, "paper_top1": p, col: _top(run, ctx)} | run_cells(run) | {"budget": cell}
        )
    df = pd.DataFrame(rows)
    base = df.loc[df["arch"] == "mobilenetv2", col].iloc[0]
    df.insert(
        3,
        "top1_vs_baseline",
        [
            _delta(t, base) if a != "mobilenetv2" else None
            for a, t in zip(df["arch"], df[col], strict=True)
        ],
    )
    df.insert(4, "budget", df.pop("budget"))  # beside the delta it qualifies
    return df


def table3(transfer_rows: Iterable[dict]) -> pd.DataFrame:
    """Table 3: Office-Home transfer accuracy per ordered domain pair, from `afictl transfer`;
    ``avg`` is over the pairs measured, ``avg_of`` says how many ("3/12")."""
    ours: dict[str, dict[str, float]] = {}
    for r in transfer_rows:
        ours.setdefault(r["arch"], {})[r["pair"]] = float(r["top1"])
    rows = []
    for arch in sorted(set(TABLE3) | set(ours), key=_pair_key):
        for source in ("paper", "ours"):
            if source == "paper" and arch not in TABLE3:
                continue
            vals = (
                list(TABLE3[arch])
                if source == "paper"
                else [ours.get(arch, {}).get(p) for p in OFFICE_HOME_PAIRS]
            )
            avg, of = pair_average(vals)
            if source == "paper":
                avg = TABLE3_AVG.get(arch, avg)
            cells = [None if v is None else round(v, 2) for v in vals]
            rows.append(
                {"arch": arch, "source": source}
                | dict(zip(OFFICE_HOME_PAIRS, cells, strict=True))
                | {"avg": avg, "avg_of": of}
            )
    return pd.DataFrame(rows)


def build_tables(
    ctx: TableContext,
    *,
    cifar_dataset: str = "cifar100",
    imagenet_dataset: str = "imagenet",
    memory_rows: list[dict] | None = None,
    transfer_rows: list[dict] | None = None,
    tables: Iterable[int] = TABLE_BUILDERS,
) -> dict[int, pd.DataFrame]:
    """The selected tables, each a DataFrame (empty cells: None)."""
    builders = {
        3: lambda: table3(transfer_rows or []),
        4: lambda: table_accuracy(4, ctx, cifar_dataset),
        5: lambda: table_accuracy(5, ctx, imagenet_dataset),
        6: lambda: table6(memory_rows or []),
        7: lambda: table7(ctx, cifar_dataset),
        8: lambda: table8(ctx, imagenet_dataset),
        9: lambda: table9(ctx, cifar_dataset),
    }
    out: dict[int, pd.DataFrame] = {}
    for t in tables:
        if t not in builders:
            raise ValueError(f"no paper table {t} to report (choose from {TABLE_BUILDERS})")
        out[t] = builders[t]()
    return out
