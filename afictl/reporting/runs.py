"""Collect finished training runs (``runs/*/``) into one DataFrame."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

__all__ = ["RUN_COLUMNS", "collect_runs", "normalise_stages"]

RUN_COLUMNS = [
    "run_dir",
    "arch",
    "dataset",
    "afi_stages",
    "reduction",
    "epochs",
    "epochs_done",
    "complete",
    "top1",
    "top5",
    "final_top1",
    "images_per_sec",
    "mtime",
]


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


def read_run(run_dir: Path) -> dict | None:
    """One run's summary, or None when it has no config or no evaluated epoch yet."""
    cfg_file, metrics_file = run_dir / "config.json", run_dir / "metrics.csv"
    if not cfg_file.is_file() or not metrics_file.is_file():
        return None
    try:
        config = json.loads(cfg_file.read_text())
        metrics = pd.read_csv(metrics_file)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    if metrics.empty or "eval_top1" not in metrics:
        return None
    kw = _model_kwargs(config)
    best = metrics.loc[metrics["eval_top1"].idxmax()]
    epochs = config.get("epochs")
    done = int(metrics["epoch"].max()) if "epoch" in metrics else len(metrics)
    return {
        "run_dir": str(run_dir),
        "arch": config.get("arch"),
        "dataset": config.get("dataset"),
        "afi_stages": normalise_stages(kw.get("afi_stages")),
        "reduction": int(kw["reduction"]) if kw.get("reduction") is not None else None,
        "epochs": epochs,
        "epochs_done": done,
        "complete": epochs is None or done >= int(epochs),
        "top1": float(best["eval_top1"]),
        "top5": float(best["eval_top5"]) if "eval_top5" in best else None,
        "final_top1": float(metrics["eval_top1"].iloc[-1]),
        "images_per_sec": float(metrics["images_per_sec"].median())
        if "images_per_sec" in metrics
        else None,
        "mtime": metrics_file.stat().st_mtime,
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
