"""Training: the paper's recipes, the loop, checkpoints that lose nothing, DDP, evaluation.

Modules: ``config`` (recipes + resolution), ``optim`` (SGD + step schedule), ``engine`` (one
epoch, one evaluation), ``run`` (a whole run: data, model, run folder, checkpoints, resume),
``metrics`` (top-k, CSV/JSONL/TensorBoard), ``distributed`` (torchrun/DDP helpers), ``state``
(seeding, RNG states, the SIGINT/SIGTERM flag), ``progress`` (rich bars), ``evaluate``
(a checkpoint on a dataset).
"""

from .config import RECIPES, TrainConfig, load_config_file, resolve_config
from .engine import NonFiniteLossError
from .evaluate import evaluate_checkpoint
from .metrics import METRIC_COLUMNS
from .run import TrainResult, default_run_dir, load_resume, train

__all__ = [
    "METRIC_COLUMNS",
    "RECIPES",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "default_run_dir",
    "evaluate_checkpoint",
    "load_config_file",
    "load_resume",
    "resolve_config",
    "train",
]
