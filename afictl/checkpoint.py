"""Checkpoints that lose nothing and execute nothing.

- Written atomically: temp file in the same folder, flush + fsync, then ``os.replace``; a crash
  mid-write leaves the previous checkpoint intact.
- Read with ``torch.load(weights_only=True)``: a pickle that would run code is refused. Every
  value stored is a tensor or a plain type (config and metadata as dicts of str/int/float/...).

A checkpoint is a dict with at least::

    format: "afictl-checkpoint", version: 1,
    arch: registry name, num_classes: int, model_kwargs: {"afi_stages": [...], "reduction": 4} or {},
    model: state_dict, epoch: int (epochs completed),
    config: the run's resolved configuration (dataset, data_root, input_size, ...),
    class_names: list[str] | None

and, when written by ``afictl train``: optimizer, scheduler, scaler, rng, metrics.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UserError
from .models import create_model, get_model_info

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "load_checkpoint",
    "model_from_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "afictl-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(UserError):
    """A file that is missing, unreadable, unsafe, or not an afictl checkpoint."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (format/version keys are added) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # make the rename itself durable
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely; :class:`CheckpointError` (one line) on any problem."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                path = path / name
                break
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused an object that could run code
        raise CheckpointError(
            f"{path} is not a safe checkpoint: it holds Python objects beyond tensors and plain "
            "types, and was refused without running them"
        ) from None
    except Exception as exc:  # truncated file, not a torch file at all
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(exc).__name__}: truncated or not a torch file)") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an afictl checkpoint")
    data["path"] = str(path)
    return data


def model_kwargs(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The model options a checkpoint records (``r``, the name before ``reduction``, accepted)."""
    kw = dict(ckpt.get("model_kwargs") or {})
    if "r" in kw:
        kw["reduction"] = kw.pop("r")
    return kw


def model_from_checkpoint(
    path: str | Path, *, arch: str | None = None, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained with and load its weights (eval mode).

    ``arch`` (optional) is what the caller expects; a checkpoint of another architecture gives
    an error naming both.
    """
    ckpt = load_checkpoint(path, map_location)
    saved = ckpt.get("arch")
    if arch is not None and saved != arch:
        raise CheckpointError(f"{ckpt['path']} holds a {saved} checkpoint, not {arch}")
    get_model_info(saved)
    model = create_model(saved, num_classes=ckpt["num_classes"], **model_kwargs(ckpt))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{ckpt['path']}: weights do not fit {saved} ({str(exc).splitlines()[0]})") from None
    model.to(map_location).eval()
    return model, ckpt
