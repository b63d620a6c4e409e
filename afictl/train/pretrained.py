"""Initial weights from another run's checkpoint, all but the classifier (fine-tuning)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..checkpoint import CheckpointError, load_checkpoint, validate_checkpoint

__all__ = ["load_pretrained"]


def load_pretrained(model: nn.Module, path: str | Path, arch: str) -> dict:
    """Copy every weight of the checkpoint except the classifier's into ``model``.

    The classifier is new (other classes), so its keys are skipped; every other key must fit.
    Returns the checkpoint (for its metadata).
    """
    ckpt = load_checkpoint(path)
    if ckpt.get("arch") != arch:
        raise CheckpointError(f"{ckpt['path']} holds a {ckpt.get('arch')} checkpoint, not {arch}")
    validate_checkpoint(ckpt, model=True)
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    head = {name for name, p in model.named_parameters() if id(p) in head_ids}
    state = {k: v for k, v in ckpt["model"].items() if k not in head}
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = sorted(set(missing) - head) + [k for k in unexpected if k not in head]
    if bad:
        raise CheckpointError(
            f"{ckpt['path']}: weights do not fit {arch} ({', '.join(bad[:3])} ...)"
        )
    return ckpt
