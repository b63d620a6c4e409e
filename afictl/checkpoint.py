"""Checkpoints that lose nothing and execute nothing: saved atomically (temp file, fsync,
``os.replace``), read with ``torch.load(weights_only=True)`` and checked once
(:mod:`afictl.checkpoint_format`); ``afictl train``'s are :mod:`afictl.train.checkpointing`'s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .checkpoint_format import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, read_torch_file
from .checkpoint_format import CheckpointError as CheckpointError  # re-exported, as below
from .checkpoint_format import validate_checkpoint as validate_checkpoint
from .fileio import atomic_write
from .models import create_model


class CheckpointWriteError(CheckpointError):
    """A checkpoint not written (disk full, ...): the path, the OS's reason and ``errno``."""

    errno: int | None = None


def _write_error(path: Path, exc: OSError) -> CheckpointWriteError:
    kept = "the previous checkpoint there is intact" if path.is_file() else "nothing was written"
    error = CheckpointWriteError(f"cannot write checkpoint {path}: {exc.strerror or exc}; {kept}")
    error.errno = exc.errno
    return error


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (with format, version) atomically; an OS error: CheckpointWriteError."""
    path, data = Path(path), {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a Python file: a full disk is an OSError, not a RuntimeError
            torch.save(data, f)

    try:
        return atomic_write(path, write)
    except OSError as exc:
        raise _write_error(path, exc) from exc


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    mmap: bool = False,
    state_dict: bool = False,
    arch: str | None = None,
) -> dict[str, Any]:
    """A checkpoint read safely, its fields checked; :class:`CheckpointError` (one line) on any
    problem. ``mmap`` maps the tensors (scanning many runs); ``state_dict=True`` also takes a
    plain state dict or a ``.safetensors`` file of ``arch`` (:mod:`afictl.weights`)."""
    if state_dict:
        from .weights import load_weights  # the data pipeline (~1.5 s): only when asked for

        return load_weights(path, arch=arch, map_location=map_location)
    data, path = read_torch_file(path, map_location, mmap=mmap)
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an afictl checkpoint")
    return validate_checkpoint(data | {"path": str(path)})


def model_from_checkpoint(
    path: str | Path, *, arch: str | None = None, map_location: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model of a checkpoint (or state dict / ``.safetensors`` of ``arch``), in eval mode."""
    ckpt = load_checkpoint(path, map_location, state_dict=True, arch=arch)
    if arch is not None and ckpt.get("arch") != arch:
        raise CheckpointError(f"{ckpt['path']} holds a {ckpt.get('arch')} checkpoint, not {arch}")
    validate_checkpoint(ckpt, model=True)  # the weights fit, on the meta device: nothing allocated
    model = create_model(ckpt["arch"], num_classes=ckpt["num_classes"], **ckpt["model_kwargs"])
    model.load_state_dict(ckpt["model"])
    return model.to(map_location).eval(), ckpt
