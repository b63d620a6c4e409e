"""Training: the paper's recipes, the loop, checkpoints that lose nothing, DDP, evaluation.

Modules: ``options`` (every option, declared once; no torch), ``config`` (recipes +
resolution), ``optim`` (optimizers + schedules), ``engine`` (the parts of a run, one epoch, one
evaluation), ``run`` (a whole run: data, model, run folder, checkpoints, resume),
``checkpointing`` (the training checkpoint as a dataclass), ``metrics`` (top-k,
CSV/JSONL/TensorBoard), ``distributed`` (torchrun/DDP helpers), ``state`` (seeding, RNG states,
the SIGINT/SIGTERM flag), ``progress`` (rich bars), ``evaluate`` (a checkpoint on a dataset).

The names below are imported on first use, so that ``afictl.train.options`` (what
``afictl train --help`` reads) loads without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "METRIC_COLUMNS": "metrics",
    "RECIPES": "config",
    "NonFiniteLossError": "engine",
    "TrainCheckpoint": "checkpointing",
    "TrainConfig": "config",
    "TrainParts": "engine",
    "TrainResult": "run",
    "default_run_dir": "run",
    "evaluate_checkpoint": "evaluate",
    "load_config_file": "config",
    "load_resume": "run",
    "resolve_config": "config",
    "train": "run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
