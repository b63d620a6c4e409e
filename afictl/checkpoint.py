"""Checkpoints that lose nothing and execute nothing.

- Written atomically: temp file in the same folder, flush + fsync, then ``os.replace``; a crash
  mid-write leaves the previous checkpoint intact.
- Read with ``torch.load(weights_only=True)``: a pickle that would run code is refused. Every
  value stored is a tensor or a plain type (config and metadata as dicts of str/int/float/...).
- Checked before use (:func:`validate_checkpoint`, called by every reader): each field has the
  type afictl writes, the weights fit the architecture (compared on the meta device, so a crafted
  ``num_classes`` allocates nothing), and (:func:`afictl.train.resume_check.validate_resume`)
  a checkpoint to resume holds an optimizer, scheduler, scaler and RNG state that the run's
  configuration can restore.

Reading and checking live in :mod:`afictl.checkpoint_format` (which :mod:`afictl.weights` builds
on); this module adds saving, loading a checkpoint or a state dict, and rebuilding its model.

A checkpoint is a dict with at least::

    format: "afictl-checkpoint", version: 1,
    arch: registry name, num_classes: int,
    model_kwargs: {"afi_stages": [...], "reduction": 4} or {},
    model: state_dict, epoch: int (epochs completed),
    config: the run's resolved configuration (dataset, data_root, input_size, ...),
    class_names: list[str] | None

and, when written by ``afictl train`` (:class:`afictl.train.checkpointing.TrainCheckpoint`):
optimizer, scheduler, scaler, rng, metrics, best_top1, best_epoch, the running sums of an
interrupted epoch, and with ``--model-ema`` / ``--checkpoint-hist`` model_ema / checkpoint_hist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint_format import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    MAX_CLASSES,
    CheckpointError,
    model_kwargs,
    read_torch_file,
    validate_checkpoint,
)
from .fileio import atomic_write
from .models import create_model

__all__ = [
    "CHECKPOINT_FORMAT",
    "MAX_CLASSES",
    "CheckpointError",
    "CheckpointWriteError",
    "load_checkpoint",
    "model_from_checkpoint",
    "read_torch_file",
    "save_checkpoint",
    "validate_checkpoint",
]


class CheckpointWriteError(CheckpointError):
    """A checkpoint that could not be written (disk full, read-only place, ...): one line naming
    the path and the OS reason; the file at that path, if any, is untouched. ``errno`` is the
    OS's."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


def _write_error(path: Path, exc: OSError) -> CheckpointWriteError:
    kept = "the previous checkpoint there is intact" if path.is_file() else "nothing was written"
    return CheckpointWriteError(
        f"cannot write checkpoint {path}: {exc.strerror or exc}; {kept}", exc.errno
    )


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (format/version keys are added) to ``path``.

    An OS error (``ENOSPC``, ``EROFS``, ``EACCES``, ...) becomes :class:`CheckpointWriteError`
    naming the path and the reason, after the temporary file is removed.
    """
    path = Path(path)
    data = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}

    def write(tmp: Path) -> None:
        # through a Python file object: a full disk is an OSError, not torch's RuntimeError
        with open(tmp, "wb") as f:
            torch.save(data, f)

    try:
        atomic_write(path, write)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    return path


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    mmap: bool = False,
    state_dict: bool = False,
    arch: str | None = None,
) -> dict[str, Any]:
    """Read a checkpoint safely; :class:`CheckpointError` (one line) on any problem.

    The fields present are checked (:func:`validate_checkpoint`); ``mmap`` maps the tensors
    instead of reading them (scanning many runs for their metadata). ``state_dict=True`` also
    takes a plain state dict or a ``.safetensors`` file, of the model ``arch`` names, as a
    checkpoint (:func:`afictl.weights.load_weights`).
    """
    if state_dict:
        # imported here: afictl.weights imports the data pipeline (torchvision, ~1.5 s), which
        # reading a checkpoint's metadata does not need
        from .weights import load_weights

        return load_weights(path, arch=arch, map_location=map_location)
    data, path = read_torch_file(path, map_location, mmap=mmap)
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an afictl checkpoint")
    data["path"] = str(path)
    return validate_checkpoint(data)


def model_from_checkpoint(
    path: str | Path, *, arch: str | None = None, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained with and load its weights (eval mode).

    ``arch`` (optional) is what the caller expects; a checkpoint of another architecture gives
    an error naming both. A plain state dict or a ``.safetensors`` file is read as a
    checkpoint of ``arch`` (:func:`afictl.weights.load_weights`).
    """
    ckpt = load_checkpoint(path, map_location, state_dict=True, arch=arch)
    saved = ckpt.get("arch")
    if arch is not None and saved != arch:
        raise CheckpointError(f"{ckpt['path']} holds a {saved} checkpoint, not {arch}")
    validate_checkpoint(ckpt, model=True)
    model = create_model(saved, num_classes=ckpt["num_classes"], **model_kwargs(ckpt))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"{ckpt['path']}: weights do not fit {saved} ({str(exc).splitlines()[0]})"
        ) from None
    model.to(map_location).eval()
    return model, ckpt
