"""What an AFI module integrates: its inputs X(1..n), its output R and its weights S~ (Figure 2).

Eq. 2 says ``R = sum_j S~[j] * X(j)`` channel by channel, and section 3.3 (Eq. 8) reads S~ as the
coefficients alpha_j^(i) of a linear multistep method: block i of a stage mixes the residual
estimates of blocks 1..i-1 with per-channel weights that sum to 1. This module reads those
tensors from a trained checkpoint (forward hooks; the attention through
:func:`afictl.layers.record_attention`), for one image and averaged over a dataset.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoint import model_from_checkpoint
from ..errors import UserError
from ..layers import AFIModule, record_attention
from .inputs import load_image, model_input, model_view

__all__ = [
    "AFIFeatures",
    "afi_block",
    "attention_rows",
    "dataset_attention",
    "image_features",
    "run_features",
]


def _afi_blocks(model: nn.Module, stage: str) -> list[int]:
    return [
        i
        for i, b in enumerate(model.blocks(stage), start=1)
        if getattr(b.join, "afi", None) is not None
    ]


def afi_block(
    model: nn.Module, stage: str | None, block: int | None
) -> tuple[str, int, str, AFIModule]:
    """(paper stage name, 1-based block, module name, AFI module).

    Defaults: the last AFI stage and block.
    """
    arch = getattr(model, "arch", type(model).__name__)
    if stage is None:
        with_afi = [s for s in model.stage_names if _afi_blocks(model, s)]
        if not with_afi:
            raise UserError(f"{arch} has no AFI module (a baseline?); give an AFI checkpoint")
        stage = with_afi[-1]
    stage = model.resolve_stage(stage)
    valid = _afi_blocks(model, stage)
    if not valid:
        raise UserError(f"stage {stage} of {arch} has no AFI module (a baseline stage)")
    if block is None:
        block = valid[-1]
    if block not in valid:
        n = len(model.blocks(stage))
        raise UserError(
            f"block {block} of {stage} in {arch} has no AFI module; AFI modules sit in blocks "
            f"{valid[0]}..{valid[-1]} of {n} (block 1 has no input, block 2 only one)"
        )
    module = model.blocks(stage)[block - 1].join.afi
    name = next(n for n, m in model.named_modules() if m is module)
    return stage, block, name, module


@dataclass
class AFIFeatures:
    """One AFI module's view of one image (and, optionally, of a dataset)."""

    checkpoint: str
    arch: str
    stage: str
    block: int
    module: str
    image: str | None = None
    view: np.ndarray | None = field(default=None, repr=False)  # (S, S, 3) the model's input
    inputs: list[np.ndarray] = field(default_factory=list, repr=False)  # X(j): (C, h, w) each
    output: np.ndarray | None = field(default=None, repr=False)  # R: (C, h, w)
    attention: np.ndarray | None = field(default=None, repr=False)  # S~ (n, C) of the image
    dataset_attention: np.ndarray | None = field(default=None, repr=False)  # mean S~ (n, C)
    dataset_images: int = 0
    dataset: str | None = None  # the dataset averaged over (its name)
    #: mean alpha of every AFI module of the stage: {block i: (i-1,) over channels and images}
    stage_alpha: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def weights(self) -> np.ndarray:
        """The S~ shown: the dataset average when there is one, else the image's."""
        w = self.dataset_attention if self.dataset_attention is not None else self.attention
        if w is None:
            raise ValueError("no attention recorded")
        return w


def _device_of(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters are (inputs go there; results come back to the CPU)."""
    return next(model.parameters(), torch.empty(0)).device


def image_features(
    model: nn.Module, module_name: str, module: AFIModule, x: torch.Tensor
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """X(1..n), R and S~ of ``module`` for a batch of one image; plus every module's S~.

    Read with a forward hook on the module itself: its inputs are X(1..n), its output R (Eq. 2).
    """
    captured: dict[str, Any] = {}

    # .cpu() before .numpy(): the model may be on a GPU (a copy there, a no-op on the CPU)
    def hook(_m, args, out):
        captured["inputs"] = [t.detach()[0].cpu().numpy().copy() for t in args[0]]
        captured["output"] = out.detach()[0].cpu().numpy().copy()

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad(), record_attention(model) as records:
            model(x.to(_device_of(model)))
    finally:
        handle.remove()
    attention = records[module_name][0][0].cpu().numpy()
    every = {name: rec[0][0].cpu().numpy() for name, rec in records.items() if rec}
    return captured["inputs"], captured["output"], attention, every


def dataset_attention(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    max_batches: int | None = None,
    progress: Any = None,
) -> tuple[dict[str, np.ndarray], int]:
    """Mean S~ (n, C) of every AFI module over a dataset, and the number of images."""
    sums: dict[str, torch.Tensor] = {}  # on the model's device: no copy per batch
    images = 0
    device = _device_of(model)
    model.eval()
    with torch.no_grad(), record_attention(model) as records:
        for step, batch in enumerate(batches):
            if max_batches is not None and step >= max_batches:
                break
            x = batch[0] if isinstance(batch, list | tuple) else batch
            model(x.to(device, non_blocking=True))
            images += x.shape[0]
            for name, recs in records.items():
                for s in recs:
                    total = s.double().sum(dim=0)
                    sums[name] = total if name not in sums else sums[name] + total
                recs.clear()  # keep memory flat: only the running sums stay
            if progress is not None:
                progress()
    if images == 0:
        raise UserError("the dataset is empty: no attention to average")
    return {n: (s / images).cpu().numpy() for n, s in sums.items()}, images


def _stage_alpha(
    model: nn.Module, stage: str, per_module: dict[str, np.ndarray]
) -> dict[int, np.ndarray]:
    names = {m: n for n, m in model.named_modules() if isinstance(m, AFIModule)}
    out = {}
    for i, b in enumerate(model.blocks(stage), start=1):
        afi = getattr(b.join, "afi", None)
        if afi is not None and names[afi] in per_module:
            out[i] = per_module[names[afi]].mean(axis=1)
    return out


def attention_rows(result: AFIFeatures) -> list[dict[str, Any]]:
    """Per input X(j) of the module: mean alpha over channels, and the channels it dominates."""
    w = result.weights
    argmax = w.argmax(axis=0)
    rows = []
    for j in range(w.shape[0]):
        rows.append(
            {
                "checkpoint": result.checkpoint,
                "arch": result.arch,
                "stage": result.stage,
                "block": result.block,
                "input": f"X({j + 1})",
                "source_block": j + 1,
                "mean_alpha": round(float(w[j].mean()), 6),
                "max_alpha": round(float(w[j].max()), 6),
                "channels_dominated": int((argmax == j).sum()),
                "channels": int(w.shape[1]),
                "averaged_over": result.dataset_images
                if result.dataset_attention is not None
                else 1,
            }
        )
    return rows


def run_features(
    checkpoint: str | Path,
    image: str | Path | None = None,
    *,
    arch: str | None = None,
    stage: str | None = None,
    block: int | None = None,
    data: str | None = None,
    data_root: str | Path | None = None,
    max_batches: int | None = None,
    batch_size: int = 128,
    progress: Any = None,
) -> AFIFeatures:
    """Everything ``afictl features`` shows, for one AFI checkpoint (``arch``: the model of a
    plain state dict or ``.safetensors``, or the expected one).

    With ``image``: its feature maps and S~. With ``data`` or ``data_root``, or without
    ``image``: S~ averaged over a dataset, ``data`` or else the one recorded in the checkpoint
    (its root, subset size and seed; :func:`~afictl.analysis.inputs.eval_loader`).
    """
    model, ckpt = model_from_checkpoint(checkpoint, arch=arch)
    stage_name, block_no, module_name, module = afi_block(model, stage, block)
    result = AFIFeatures(str(checkpoint), ckpt["arch"], stage_name, block_no, module_name)
    per_module: dict[str, np.ndarray] = {}
    if image is not None:
        img = load_image(image)
        spec = model_input(ckpt)
        x = spec.tensor(img)[None]
        result.inputs, result.output, result.attention, per_module = image_features(
            model, module_name, module, x
        )
        result.image = str(image)
        result.view = model_view(x[0], spec.dataset)
    if image is None or data is not None or data_root is not None:
        from .inputs import eval_loader

        loader = eval_loader(ckpt, data, data_root, batch_size=batch_size)
        result.dataset = data or model_input(ckpt).dataset
        total = len(loader) if max_batches is None else min(len(loader), max_batches)
        tick = progress(f"{ckpt['arch']} attention", total) if progress else None
        per_module, result.dataset_images = dataset_attention(
            model, loader, max_batches=max_batches, progress=tick
        )
        result.dataset_attention = per_module[module_name]
    result.stage_alpha = _stage_alpha(model, stage_name, per_module)
    return result
