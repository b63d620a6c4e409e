"""Initial weights from a checkpoint or a plain state dict (fine-tuning; an AFI model from its
baseline), by :func:`afictl.weights.init_from_state_dict`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import CheckpointError, validate_checkpoint
from ..models import get_model_info
from ..weights import init_from_state_dict, read_weights

__all__ = ["load_pretrained"]


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it is inside it (the line stays short)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _check_arch(ckpt: dict[str, Any], arch: str) -> None:
    """An afictl checkpoint of ``arch`` or of its baseline (an AFI model starts from it)."""
    saved, baseline = ckpt.get("arch"), get_model_info(arch).baseline
    if saved not in (arch, baseline):
        also = f" or its baseline {baseline}" if baseline else ""
        raise CheckpointError(f"{ckpt['path']} holds a {saved} checkpoint, not {arch}{also}")
    validate_checkpoint(ckpt, model=True)


def load_pretrained(model: nn.Module, path: str | Path, arch: str) -> dict[str, Any]:
    """Initialise ``model`` (of ``arch``) from the weights in ``path``: an afictl checkpoint of
    ``arch`` or of its baseline, a plain state dict or a ``.safetensors`` file.

    Every tensor whose name and shape fit is copied; an AFI model's halved first convolutions
    take the first half of the baseline's; the AFI modules and a classifier of another number
    of classes keep their initialisation (:func:`afictl.weights.init_from_state_dict`). Says
    so in one line on stderr (rank 0) and returns the checkpoint (for a plain file ``path`` and
    ``model``) with that account under ``"pretrained"``.
    """
    f = read_weights(path)
    if f.checkpoint is not None:
        _check_arch(f.checkpoint, arch)
    report = init_from_state_dict(model, f.state, arch, where=_shown(f.path))
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0):
        print(report.line(), file=sys.stderr, flush=True)
    out = dict(f.checkpoint or {"path": str(f.path), "model": f.state})
    out["pretrained"] = report.to_dict()
    return out
