"""Collect training runs (``runs/*/``) into one DataFrame, and choose which of them a report uses.

A run is *finished* when its ``metrics.csv`` holds every epoch its ``config.json`` asks for
(as many rows as ``epochs``, the last one numbered ``epochs``): a run stopped by a signal, or
resumed with a larger ``--epochs`` and not yet done, is unfinished. Both files are what
``afictl train`` writes at the end of every epoch, so this holds for runs of every version.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from ..model_options import fold_model_options

__all__ = [
    "CURVE_BOUNDS",
    "RUN_COLUMNS",
    "RUN_STATES",
    "RunConfig",
    "RunDamage",
    "RunDetail",
    "RunFilter",
    "choose_dataset",
    "collect_runs",
    "dataset_family",
    "is_running",
    "list_runs",
    "normalise_stages",
    "parse_metrics",
    "read_config",
    "read_metrics",
    "read_run",
    "run_row",
    "show_run",
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


class RunDamage(ValueError):
    """A run folder's file holds a field that cannot be what ``afictl train`` wrote."""

    def __init__(self, file: Path, field: str, problem: str) -> None:
        super().__init__(f"{file}: field {field!r} {problem}")
        self.file, self.field = file, field


#: (lowest, highest) accepted for each whole-number config field
_COUNT_BOUNDS = {
    "data_size": (0, 10**12),
    "input_size": (1, 2**16),
    "num_classes": (1, 10**7),
    "params": (0, 10**13),
    "epochs": (1, 10**7),
    "reduction": (1, 2**16),
}
_TEXT_FIELDS = ("arch", "dataset", "recipe")
#: the largest stage number a model has (sanity bound: no model here has more)
_MAX_STAGE = 16
#: (lowest, highest) accepted for each metrics.csv column the report reads
_METRIC_BOUNDS = {
    "eval_top1": (0.0, 100.0),
    "eval_top5": (0.0, 100.0),
    "images_per_sec": (0.0, 1e12),
}
_MAX_EPOCH = 10**7


def _count(value: object, file: Path, key: str) -> int | None:
    """A whole number within ``_COUNT_BOUNDS[key]``, or None when absent."""
    if value is None:
        return None
    low, high = _COUNT_BOUNDS[key]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and isinstance(value, float):
        ok = math.isfinite(value) and value.is_integer()
    if not ok or not low <= value <= high:
        raise RunDamage(file, key, f"is {value!r}, not a whole number in {low}..{high}")
    return int(value)


def _text(value: object, file: Path, key: str) -> str | None:
    """A string, or None when absent."""
    if value is not None and not isinstance(value, str):
        raise RunDamage(file, key, f"is {value!r}, not a string")
    return value


def _stages(value: object, file: Path, key: str) -> str | None:
    """afi_stages (a list of stage numbers, or a '1,2' string) as :func:`normalise_stages`."""
    if value is None or value == "":
        return None
    parts = value.replace(" ", ",").split(",") if isinstance(value, str) else value
    bad = f"is {value!r}, not a list of stage numbers in 1..{_MAX_STAGE}"
    if not isinstance(parts, list):
        raise RunDamage(file, key, bad)
    numbers = []
    for p in (p for p in parts if p != ""):
        if isinstance(p, str) and p.strip().isdigit():
            p = int(p)
        if not isinstance(p, int) or isinstance(p, bool) or not 1 <= p <= _MAX_STAGE:
            raise RunDamage(file, key, bad)
        numbers.append(p)
    return ",".join(str(n) for n in sorted(set(numbers))) or None


def _model_kwargs(config: dict, file: Path) -> dict:
    """The model options a config records, under their current names (also those a config
    written before 0.9 has at its top level: afictl/model_options.py)."""
    raw = config.get("model_kwargs")
    if raw is not None and not isinstance(raw, dict):
        raise RunDamage(file, "model_kwargs", f"is {type(raw).__name__}, not an object")
    return fold_model_options(config).get("model_kwargs") or {}


@dataclass(frozen=True)
class RunConfig:
    """The fields of a run's config.json that a report reads, each validated."""

    arch: str | None
    dataset: str | None
    recipe: str | None
    counts: dict[str, int | None]
    model_kwargs: dict
    afi_stages: str | None
    reduction: int | None

    @classmethod
    def parse(cls, config: object, file: Path) -> RunConfig:
        """Validate ``config`` (config.json's content); :class:`RunDamage` names a bad field."""
        if not isinstance(config, dict):
            raise RunDamage(file, "(top level)", "is not a JSON object")
        texts = {k: _text(config.get(k), file, k) for k in _TEXT_FIELDS}
        counts = {k: _count(config.get(k), file, k) for k in _COUNT_BOUNDS if k != "reduction"}
        kw = _model_kwargs(config, file)
        stages = _stages(kw.get("afi_stages"), file, "afi_stages")
        reduction = _count(kw.get("reduction"), file, "reduction")
        try:
            kwargs_text = json.dumps(kw, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise RunDamage(file, "model_kwargs", f"cannot be written back ({exc})") from None
        return cls(
            **texts,
            counts=counts,
            model_kwargs=json.loads(kwargs_text),
            afi_stages=stages,
            reduction=reduction,
        )


def _metric_column(
    metrics: pd.DataFrame, key: str, file: Path, bounds: tuple[float, float] | None = None
) -> None:
    """Check that column ``key`` holds numbers within ``bounds`` (default ``_METRIC_BOUNDS[key]``)
    or nothing (an epoch not evaluated); it is made float."""
    low, high = bounds or _METRIC_BOUNDS[key]
    values = pd.to_numeric(metrics[key], errors="coerce")
    bad = (values.isna() & metrics[key].notna()) | ~(values.between(low, high) | values.isna())
    if bad.any():
        line = int(bad.to_numpy().nonzero()[0][0]) + 2  # 1-based, after the header
        value = metrics[key][bad].iloc[0]
        raise RunDamage(file, key, f"is {value!r} on line {line}, not a number in {low}..{high}")
    metrics[key] = values.astype(float)


def parse_metrics(
    metrics: pd.DataFrame, file: Path, extra: Mapping[str, tuple[float, float]] | None = None
) -> pd.DataFrame:
    """Validate metrics.csv (read as text); :class:`RunDamage` names a bad field. Returns the
    evaluated epochs, numbers as numbers. ``extra``: more columns to check, with their bounds
    (:data:`CURVE_BOUNDS` for learning curves)."""
    if "eval_top1" not in metrics:
        raise RunDamage(file, "eval_top1", "is missing")
    metrics = metrics.copy()
    if "epoch" in metrics:
        epochs = pd.to_numeric(metrics["epoch"], errors="coerce")
        bad = ~(epochs.between(1, _MAX_EPOCH) & (epochs.fillna(0.5) % 1 == 0))
        if bad.any():
            line = int(bad.to_numpy().nonzero()[0][0]) + 2
            value = metrics["epoch"][bad].iloc[0]
            raise RunDamage(file, "epoch", f"is {value!r} on line {line}, not an epoch number")
        metrics["epoch"] = epochs.astype(int)
    for key in _METRIC_BOUNDS:
        if key in metrics:
            _metric_column(metrics, key, file)
    for key, bounds in (extra or {}).items():
        if key in metrics:
            _metric_column(metrics, key, file, bounds)
    return metrics.dropna(subset=["eval_top1"])


def _metric(row: pd.Series, key: str) -> float | None:
    """The row's ``key`` as a float; None when the column is absent or the cell empty."""
    return float(row[key]) if key in row and pd.notna(row[key]) else None


def read_config(run_dir: Path) -> tuple[dict, RunConfig] | None:
    """The run's config.json as written and its validated fields; None when it has none;
    :class:`RunDamage` when it is damaged."""
    cfg_file = Path(run_dir) / "config.json"
    if not cfg_file.is_file():
        return None
    try:
        raw = json.loads(cfg_file.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise RunDamage(cfg_file, "(file)", f"cannot be read ({exc})") from None
    except ValueError:
        raise RunDamage(cfg_file, "(file)", "is not valid JSON") from None
    return raw, RunConfig.parse(raw, cfg_file)


def _read_metrics_file(
    metrics_file: Path, extra: Mapping[str, tuple[float, float]] | None = None
) -> pd.DataFrame | None:
    """metrics.csv's evaluated epochs (:func:`parse_metrics`); None when it is missing or has
    no row yet; :class:`RunDamage` when it is damaged."""
    if not metrics_file.is_file():
        return None
    try:
        metrics = pd.read_csv(metrics_file, dtype=str)
    except pd.errors.EmptyDataError:
        return None
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        raise RunDamage(metrics_file, "(file)", f"is not a readable CSV ({exc})") from None
    if metrics.empty:
        return None
    return parse_metrics(metrics, metrics_file, extra)


def _read(run_dir: Path) -> tuple[RunConfig, pd.DataFrame] | None:
    """The run's validated config and evaluated epochs; None when a file is missing or no
    epoch is evaluated yet (a run just started); :class:`RunDamage` when a file is damaged."""
    if not (run_dir / "metrics.csv").is_file():
        return None
    read = read_config(run_dir)
    if read is None:
        return None
    metrics = _read_metrics_file(run_dir / "metrics.csv")
    return (read[1], metrics) if metrics is not None and not metrics.empty else None


def read_run(run_dir: Path) -> dict | None:
    """One run's summary, or None when it has no config or no evaluated epoch yet; raises
    :class:`RunDamage` (naming the file and the field) when a file of it is damaged."""
    read = _read(run_dir)
    if read is None:
        return None
    config, metrics = read
    best = metrics.loc[metrics["eval_top1"].idxmax()]
    final = metrics.iloc[-1]
    epochs = config.counts["epochs"]
    done = int(metrics["epoch"].max()) if "epoch" in metrics else len(metrics)
    return {
        "run_dir": str(run_dir),
        "arch": config.arch,
        "dataset": config.dataset,
        "recipe": config.recipe,
        "data_size": config.counts["data_size"],
        "input_size": config.counts["input_size"],
        "num_classes": config.counts["num_classes"],
        "model_kwargs": json.dumps(config.model_kwargs, sort_keys=True),
        "params": config.counts["params"],  # recorded by newer runs; else counted
        "afi_stages": config.afi_stages,
        "reduction": config.reduction,
        "epochs": epochs,
        "epochs_done": done,
        "complete": epochs is None or (done >= epochs and len(metrics) >= epochs),
        "top1": float(best["eval_top1"]),
        "top5": _metric(best, "eval_top5"),
        "best_epoch": int(best["epoch"]) if "epoch" in best else None,
        "final_top1": float(final["eval_top1"]),
        "final_top5": _metric(final, "eval_top5"),
        "images_per_sec": float(metrics["images_per_sec"].median())
        if "images_per_sec" in metrics and metrics["images_per_sec"].notna().any()
        else None,
        "mtime": (run_dir / "metrics.csv").stat().st_mtime,
    }


def collect_runs(root: str | Path = "runs", skipped: list[str] | None = None) -> pd.DataFrame:
    """Every run folder under ``root`` with at least one evaluated epoch (newest last). A run
    with a damaged file is left out; one line naming its file and field goes to ``skipped``."""
    rows = _each_run(root, read_run, skipped)
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


# --- `afictl runs` and `afictl curves`: every run folder, its state, one run in full ---------

#: metrics.csv columns a learning curve reads, besides those the report checks, with bounds
CURVE_BOUNDS = {
    "train_loss": (0.0, math.inf),
    "eval_loss": (0.0, math.inf),
    "train_top1": (0.0, 100.0),
}
#: what a run folder can be: a live process holds its lock; its metrics hold every planned
#: epoch; neither (stopped by a signal or a crash, or resumable with more epochs)
RUN_STATES = ("running", "finished", "stopped")


def is_running(run_dir: Path) -> bool:
    """Whether a live process holds the run's lock (afictl/train/lock.py). Probed with a shared,
    non-blocking ``flock`` let go at once: the kernel drops a dead run's lock, so a lock file
    left by a killed run reads as not running. False without ``fcntl`` (Windows: no locks)."""
    from ..train.lock import LOCK_NAME

    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return False
    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY)
    except OSError:  # no lock file: no run ever held it, or the last one ended normally
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # a file system without locks: nothing to tell
        return False
    finally:
        os.close(fd)  # closing drops the probe's shared lock
    return False


def _modified(run_dir: Path) -> float:
    """When the run last wrote its config or metrics (what "newest" means)."""
    times = [
        f.stat().st_mtime for f in (run_dir / "metrics.csv", run_dir / "config.json") if f.is_file()
    ]
    return max(times, default=0.0)


def run_row(run_dir: Path) -> dict | None:
    """One line of ``afictl runs``: what the run trains, how far it got, its best and last
    eval top-1 and its state (:data:`RUN_STATES`); None for a folder without config.json;
    :class:`RunDamage` when a file of it is damaged. A run with no evaluated epoch has
    ``epochs_done`` 0 and no top-1."""
    run_dir = Path(run_dir)
    read = read_config(run_dir)
    if read is None:
        return None
    summary = read_run(run_dir)
    config = read[1]
    done = summary["epochs_done"] if summary else 0
    complete = bool(summary and summary["complete"])
    mtime = _modified(run_dir)
    return {
        "arch": config.arch,
        "dataset": config.dataset,
        "data_size": config.counts["data_size"],
        "recipe": config.recipe,
        "epochs_done": done,
        "epochs": config.counts["epochs"],
        "best_top1": summary["top1"] if summary else None,
        "best_epoch": summary["best_epoch"] if summary else None,
        "last_top1": summary["final_top1"] if summary else None,
        "state": "running" if is_running(run_dir) else "finished" if complete else "stopped",
        "run_dir": str(run_dir),
        "modified": datetime.fromtimestamp(mtime).isoformat(timespec="seconds"),
        "mtime": mtime,
    }


def list_runs(root: str | Path = "runs", skipped: list[str] | None = None) -> list[dict]:
    """:func:`run_row` of every run folder under ``root`` (a folder with config.json), newest
    first. A damaged one is left out; one line naming its file and field goes to ``skipped``."""
    rows = _each_run(root, run_row, skipped)
    return sorted(rows, key=lambda r: (r["mtime"], r["run_dir"]), reverse=True)


def _each_run(root: str | Path, read, skipped: list[str] | None) -> list[dict]:
    """``read(folder)`` of every folder under ``root`` that is not None; a damaged one is left
    out, with one line naming its file and field in ``skipped``."""
    root = Path(root)
    rows = []
    for d in sorted(root.glob("*/")) if root.is_dir() else []:
        try:
            row = read(d)
        except RunDamage as exc:
            if skipped is not None:
                skipped.append(f"skipped a damaged run: {str(exc).splitlines()[0]}")
            continue
        if row is not None:
            rows.append(row)
    return rows


def read_metrics(run_dir: Path) -> pd.DataFrame:
    """The run's evaluated epochs with every column of its metrics.csv, each checked where the
    report or a curve reads it (:data:`CURVE_BOUNDS`), numbers as numbers; empty when there is
    none yet; :class:`RunDamage` when the file is damaged."""
    metrics = _read_metrics_file(Path(run_dir) / "metrics.csv", CURVE_BOUNDS)
    if metrics is None:
        return pd.DataFrame(columns=["epoch", *CURVE_BOUNDS, *_METRIC_BOUNDS])
    for col in metrics.columns:
        if not pd.api.types.is_numeric_dtype(metrics[col]):
            numbers = pd.to_numeric(metrics[col], errors="coerce")
            if numbers.notna().sum() == metrics[col].notna().sum():  # every cell a number
                metrics[col] = numbers
    return metrics.reset_index(drop=True)


@dataclass(frozen=True)
class RunDetail:
    """One run in full (``afictl runs RUN``): its :func:`run_row`, config.json as written (every
    key the run resolved) and its per-epoch metrics."""

    row: dict
    config: dict
    metrics: pd.DataFrame


def show_run(run_dir: str | Path) -> RunDetail:
    """:class:`RunDetail` of ``run_dir``; :class:`~afictl.errors.UserError` when it is not a run
    folder, :class:`RunDamage` when a file of it is damaged."""
    from ..errors import UserError

    run_dir = Path(run_dir)
    row = run_row(run_dir)
    if row is None:
        raise UserError(f"{run_dir} is not a run folder (no config.json)")
    raw, _ = read_config(run_dir) or ({}, None)
    return RunDetail(row=row, config=raw, metrics=read_metrics(run_dir))
