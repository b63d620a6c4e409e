"""Collect training runs (``runs/*/``) into one DataFrame, and choose which of them a report uses.

A run is *finished* when its ``metrics.csv`` holds every epoch its ``config.json`` asks for
(as many rows as ``epochs``, the last one numbered ``epochs``): a run stopped by a signal, or
resumed with a larger ``--epochs`` and not yet done, is unfinished. Both files are what
``afictl train`` writes at the end of every epoch, so this holds for runs of every version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

__all__ = [
    "RUN_COLUMNS",
    "RunFilter",
    "choose_dataset",
    "collect_runs",
    "dataset_family",
    "normalise_stages",
    "read_run",
]

RUN_COLUMNS = [
    "run_dir",
    "arch",
    "dataset",
    "recipe",
    "data_size",
    "input_size",
    "num_classes",
    "model_kwargs",
    "params",
    "afi_stages",
    "reduction",
    "epochs",
    "epochs_done",
    "complete",
    "top1",
    "top5",
    "best_epoch",
    "final_top1",
    "final_top5",
    "images_per_sec",
    "mtime",
]

#: input sizes up to this are CIFAR-style (Tables 4, 7, 9); larger ones ImageNet-style (5, 8)
CIFAR_MAX_INPUT = 64
#: the datasets of the paper's tables, preferred when two datasets have as many runs
PAPER_DATASETS = {"cifar": "cifar100", "imagenet": "imagenet"}


def normalise_stages(value) -> str | None:
    """afi_stages as a canonical string ('1', '1,2,3') or None (the model's default)."""
    if value is None or value == "" or (isinstance(value, float) and pd.isna(value)):
        return None
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", ",").split(",") if p]
    else:
        parts = list(value)
    return ",".join(str(int(p)) for p in sorted(set(int(p) for p in parts)))


def _model_kwargs(config: dict) -> dict:
    kw = dict(config.get("model_kwargs") or {})
    if "afi_stages" not in kw and config.get("afi_stages") is not None:
        kw["afi_stages"] = config["afi_stages"]
    if "r" in kw:  # checkpoints and configs written before the option was named ``reduction``
        kw["reduction"] = kw.pop("r")
    if "reduction" not in kw:
        for key in ("reduction", "r"):
            if config.get(key) is not None:
                kw["reduction"] = config[key]
    return kw


def _int_or_none(value) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _metric(row: pd.Series, key: str) -> float | None:
    return float(row[key]) if key in row and pd.notna(row[key]) else None


def _read(run_dir: Path) -> tuple[dict, pd.DataFrame] | None:
    cfg_file, metrics_file = run_dir / "config.json", run_dir / "metrics.csv"
    if not cfg_file.is_file() or not metrics_file.is_file():
        return None
    try:
        config = json.loads(cfg_file.read_text())
        metrics = pd.read_csv(metrics_file)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    if not isinstance(config, dict) or metrics.empty or "eval_top1" not in metrics:
        return None
    return config, metrics.dropna(subset=["eval_top1"])


def read_run(run_dir: Path) -> dict | None:
    """One run's summary, or None when it has no config or no evaluated epoch yet."""
    read = _read(run_dir)
    if read is None or read[1].empty:
        return None
    config, metrics = read
    kw = _model_kwargs(config)
    best = metrics.loc[metrics["eval_top1"].idxmax()]
    final = metrics.iloc[-1]
    epochs = _int_or_none(config.get("epochs"))
    done = int(metrics["epoch"].max()) if "epoch" in metrics else len(metrics)
    return {
        "run_dir": str(run_dir),
        "arch": config.get("arch"),
        "dataset": config.get("dataset"),
        "recipe": config.get("recipe"),
        "data_size": _int_or_none(config.get("data_size")),
        "input_size": _int_or_none(config.get("input_size")),
        "num_classes": _int_or_none(config.get("num_classes")),
        "model_kwargs": json.dumps(kw, sort_keys=True),
        "params": _int_or_none(config.get("params")),  # recorded by newer runs; else counted
        "afi_stages": normalise_stages(kw.get("afi_stages")),
        "reduction": _int_or_none(kw.get("reduction")),
        "epochs": epochs,
        "epochs_done": done,
        "complete": epochs is None or (done >= epochs and len(metrics) >= epochs),
        "top1": float(best["eval_top1"]),
        "top5": _metric(best, "eval_top5"),
        "best_epoch": int(best["epoch"]) if "epoch" in best else None,
        "final_top1": float(final["eval_top1"]),
        "final_top5": _metric(final, "eval_top5"),
        "images_per_sec": float(metrics["images_per_sec"].median())
        if "images_per_sec" in metrics
        else None,
        "mtime": (run_dir / "metrics.csv").stat().st_mtime,
    }


def collect_runs(root: str | Path = "runs") -> pd.DataFrame:
    """Every run folder under ``root`` with at least one evaluated epoch (newest last)."""
    root = Path(root)
    rows = (
        [r for d in sorted(root.glob("*/")) if (r := read_run(d)) is not None]
        if root.is_dir()
        else []
    )
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
    return df.sort_values("mtime").reset_index(drop=True) if not df.empty else df


@dataclass(frozen=True)
class RunFilter:
    """Which runs a report uses: finished ones only (unless ``include_unfinished``), of the
    given recipes (all when empty), with at least ``min_epochs`` epochs done."""

    include_unfinished: bool = False
    recipes: tuple[str, ...] = ()
    min_epochs: int | None = None

    def apply(self, runs: pd.DataFrame) -> pd.DataFrame:
        """The runs that pass, in the same order."""
        if runs.empty:
            return runs
        keep = pd.Series(True, index=runs.index)
        if not self.include_unfinished:
            keep &= runs["complete"].astype(bool)
        if self.recipes:
            keep &= runs["recipe"].isin(self.recipes)
        if self.min_epochs is not None:
            keep &= runs["epochs_done"] >= self.min_epochs
        return runs[keep]


def dataset_family(dataset: str | None, input_size: float | None) -> str:
    """'cifar' (Tables 4, 7, 9) or 'imagenet' (Tables 5, 8), from the run's input size."""
    if input_size is not None and not pd.isna(input_size):
        return "cifar" if int(input_size) <= CIFAR_MAX_INPUT else "imagenet"
    return "imagenet" if dataset in ("imagenet", "imagefolder") else "cifar"


def choose_dataset(runs: pd.DataFrame, family: str) -> tuple[str, dict[str, int]]:
    """The dataset of ``family`` with the most runs (the paper's one on a tie, else the one
    with the newest run), and the run count of every dataset of the family; the paper's
    dataset when there is no run."""
    counts: dict[str, int] = {}
    newest: dict[str, float] = {}
    for _, r in runs.iterrows():
        if r["dataset"] is None or dataset_family(r["dataset"], r["input_size"]) != family:
            continue
        counts[r["dataset"]] = counts.get(r["dataset"], 0) + 1
        newest[r["dataset"]] = max(newest.get(r["dataset"], 0.0), float(r["mtime"]))
    if not counts:
        return PAPER_DATASETS[family], counts
    paper = PAPER_DATASETS[family]
    best = max(counts, key=lambda d: (counts[d], d == paper, newest[d]))
    return best, dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
