"""The paper's tables (3-9) from measured runs and analysis outputs, beside the paper's numbers.

Every "ours" cell comes from a run folder or an analysis JSON file; a missing run is an empty
cell (None), never a number from elsewhere. Parameters and FLOPs are counted here, on the meta
device, for every model of Tables 4 and 5.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

import pandas as pd

from ..models import get_model_info, list_models
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

__all__ = ["TABLE_BUILDERS", "build_tables", "measured_models", "pick_run"]

MIB = 2**20


def _delta(value, ref):
    return None if value is None or ref is None else round(value - ref, 2)


@cache
def _counts(arch: str) -> tuple[int | None, float | None]:
    from ..profiling.flops import count_flops

    if arch not in set(list_models()):
        return None, None
    r = count_flops(arch, exact=False)
    return r.params, r.flops


def pick_run(
    runs: pd.DataFrame,
    arch: str,
    dataset: str,
    *,
    afi_stages: str | None = None,
    reduction: int | None = None,
) -> pd.Series | None:
    """The newest complete run of a configuration (else the newest one), or None.

    ``afi_stages=None`` / ``reduction=None`` select the model's defaults (all stages, r = 4).
    """
    if runs.empty:
        return None
    sel = runs[(runs["arch"] == arch) & (runs["dataset"] == dataset)]
    if sel.empty:
        return None
    info = get_model_info(arch) if arch in set(list_models()) else None
    if info is not None and info.is_afi:
        all_stages = ",".join(str(i) for i in range(1, info.num_stages + 1))
        stages = sel["afi_stages"].fillna(all_stages)
        sel = sel[stages == (afi_stages or all_stages)]
        sel = sel[sel["reduction"].fillna(4).astype(int) == (reduction or 4)]
    if sel.empty:
        return None
    complete = sel[sel["complete"]]
    return (complete if not complete.empty else sel).iloc[-1]


def _top(run: pd.Series | None, key: str = "top1") -> float | None:
    if run is None or run.get(key) is None or pd.isna(run.get(key)):
        return None
    return round(float(run[key]), 2)


def _epochs(run: pd.Series | None) -> str | None:
    if run is None:
        return None
    return (
        f"{int(run['epochs_done'])}/{int(run['epochs'])}"
        if run.get("epochs")
        else str(int(run["epochs_done"]))
    )


def table_accuracy(number: int, runs: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Tables 4 (CIFAR-100) and 5 (ImageNet): accuracy, parameters, FLOPs, deltas."""
    rows = []
    for p in TABLES[number]:
        run = pick_run(runs, p.arch, dataset)
        params, flops = _counts(p.arch)
        baseline = get_model_info(p.arch).baseline if p.arch in set(list_models()) else None
        base_run = pick_run(runs, baseline, dataset) if baseline else None
        row = {
            "model": p.label,
            "arch": p.arch,
            "paper_top1": p.top1,
            "top1": _top(run),
            "top1_vs_baseline": _delta(_top(run), _top(base_run)) if baseline else None,
        }
        if number == 5:
            row |= {"paper_top5": p.top5, "top5": _top(run, "top5")}
        row |= {
            "params": params,
            "paper_params": p.params,
            "flops": flops,
            "paper_flops": p.flops,
            "epochs": _epochs(run),
            "run": run["run_dir"] if run is not None else None,
        }
        rows.append(row)
    return pd.DataFrame(rows)


def measured_models(runs: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Every registered architecture with a default-configuration run on ``dataset`` (Figure 4)."""
    from ..paper import paper_row

    rows = []
    registered = set(list_models())
    archs = sorted(set(runs["arch"])) if not runs.empty else []
    for arch in archs:
        run = pick_run(runs, arch, dataset) if arch in registered else None
        if run is None:
            continue
        params, flops = _counts(arch)
        row = paper_row(arch)
        rows.append(
            {
                "model": row.label if row else arch,
                "arch": arch,
                "top1": _top(run),
                "params": params,
                "flops": flops,
                "run": run["run_dir"],
            }
        )
    return pd.DataFrame(rows, columns=["model", "arch", "top1", "params", "flops", "run"])


def table6(memory_rows: Iterable[dict]) -> pd.DataFrame:
    """Table 6: training and inference memory (MiB, batch 64) from `afictl memory` JSON."""
    ours: dict[str, dict] = {}
    for r in memory_rows:
        ours[r["arch"]] = {
            "train": r.get("train_bytes"),
            "infer": r.get("infer_bytes"),
            "batch_size": r.get("batch_size"),
            "device": r.get("device"),
        }
        if r.get("baseline"):
            ours.setdefault(
                r["baseline"],
                {
                    "train": r.get("baseline_train_bytes"),
                    "infer": r.get("baseline_infer_bytes"),
                    "batch_size": r.get("batch_size"),
                    "device": r.get("device"),
                },
            )
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


def table7(runs: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Table 7: AFI blocks in one stage only (``--afi-stages K``) for ResNet-32 and ResNet-110."""
    rows = []
    for base, paper in TABLE7.items():
        afi = f"afi_{base}"
        rows.append(
            {
                "model": base,
                "column": "baseline",
                "paper_top1": paper["baseline"],
                "top1": _top(pick_run(runs, base, dataset)),
            }
        )
        for stage in ("1", "2", "3"):
            run = pick_run(runs, afi, dataset, afi_stages=stage)
            rows.append(
                {
                    "model": afi,
                    "column": f"stage {stage}",
                    "paper_top1": paper[stage],
                    "top1": _top(run),
                }
            )
    df = pd.DataFrame(rows)
    base_top = df[df["column"] == "baseline"].set_index("model")["top1"].to_dict()
    df["top1_vs_baseline"] = [
        _delta(t, base_top.get(m.removeprefix("afi_"))) if c != "baseline" else None
        for m, c, t in zip(df["model"], df["column"], df["top1"], strict=True)
    ]
    return df


def table8(runs: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Table 8: AFI-ResNet-50 with reduction ratio r in (1, 2, 4, 8)."""
    return pd.DataFrame(
        [
            {
                "r": r,
                "paper_top1": top,
                "top1": _top(pick_run(runs, "afi_resnet50", dataset, reduction=r)),
            }
            for r, top in TABLE8.items()
        ]
    )


def table9(runs: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Table 9: MobileNetV2 with AFI and an attention module on the AFI result."""
    rows = [
        {"arch": a, "paper_top1": p, "top1": _top(pick_run(runs, a, dataset))}
        for a, p in TABLE9.items()
    ]
    df = pd.DataFrame(rows)
    base = df.loc[df["arch"] == "mobilenetv2", "top1"].iloc[0]
    df["top1_vs_baseline"] = [
        _delta(t, base) if a != "mobilenetv2" else None
        for a, t in zip(df["arch"], df["top1"], strict=True)
    ]
    return df


def table3(transfer_rows: Iterable[dict]) -> pd.DataFrame:
    """Table 3: Office-Home transfer accuracy per ordered domain pair, from `afictl transfer`."""
    ours: dict[str, dict[str, float]] = {}
    for r in transfer_rows:
        ours.setdefault(r["arch"], {})[r["pair"]] = r["top1"]
    rows = []
    for arch in sorted(
        set(TABLE3) | set(ours), key=lambda a: (a.removeprefix("afi_"), a.startswith("afi_"))
    ):
        for source in ("paper", "ours"):
            vals = (
                TABLE3.get(arch)
                if source == "paper"
                else [ours.get(arch, {}).get(p) for p in OFFICE_HOME_PAIRS]
            )
            if vals is None:
                continue
            row = {"arch": arch, "source": source} | {
                p: v for p, v in zip(OFFICE_HOME_PAIRS, vals, strict=True)
            }
            have = [v for v in vals if v is not None]
            row["avg"] = (
                TABLE3_AVG.get(arch)
                if source == "paper"
                else (round(sum(have) / len(have), 2) if len(have) == len(vals) else None)
            )
            rows.append(row)
    return pd.DataFrame(rows)


TABLE_BUILDERS = (3, 4, 5, 6, 7, 8, 9)


def build_tables(
    runs: pd.DataFrame,
    *,
    cifar_dataset: str = "cifar100",
    imagenet_dataset: str = "imagenet",
    memory_rows: list[dict] | None = None,
    transfer_rows: list[dict] | None = None,
    tables: Iterable[int] = TABLE_BUILDERS,
) -> dict[int, pd.DataFrame]:
    out: dict[int, pd.DataFrame] = {}
    for t in tables:
        if t == 3:
            out[t] = table3(transfer_rows or [])
        elif t == 4:
            out[t] = table_accuracy(4, runs, cifar_dataset)
        elif t == 5:
            out[t] = table_accuracy(5, runs, imagenet_dataset)
        elif t == 6:
            out[t] = table6(memory_rows or [])
        elif t == 7:
            out[t] = table7(runs, cifar_dataset)
        elif t == 8:
            out[t] = table8(runs, imagenet_dataset)
        elif t == 9:
            out[t] = table9(runs, cifar_dataset)
        else:
            raise ValueError(f"no paper table {t} to report (choose from {TABLE_BUILDERS})")
    return out
