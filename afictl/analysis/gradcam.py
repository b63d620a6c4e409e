"""Grad-CAM heatmaps of one or more checkpoints on the same images (paper section 4.2, Figure 3).

The heatmaps come from pytorch-grad-cam (``GradCAM``, used as a context manager so its hooks are
removed afterwards). The target layer is ``model.feature_layer()`` (the last block of the last
stage) unless a module path is given. Each heatmap also gets the paper's "area paid most
attention to": the share of the input with activation above half the maximum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..checkpoint import model_from_checkpoint
from ..errors import UserError
from ..models import StageError, UnknownModelError
from .inputs import class_name, load_image, model_input, resolve_class, thumbnail, view_of

__all__ = ["CamResult", "GradCamReport", "attention_area", "grad_cam", "resolve_layer", "run_gradcam"]


@dataclass
class CamResult:
    """One heatmap: an image seen by one checkpoint."""

    image: str
    checkpoint: str
    arch: str
    predicted_index: int
    predicted_class: str
    probability: float
    target_index: int
    target_class: str
    target_probability: float
    attention_area: float
    layer: str
    heatmap: np.ndarray = field(repr=False)  # (S, S) in [0, 1], at the model's input size
    view: np.ndarray = field(repr=False)  # (h, w, 3) in [0, 1]: what the model saw

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("heatmap", "view")}


@dataclass
class GradCamReport:
    """Every heatmap computed, the images in order, and one line per input that failed."""

    results: list[CamResult]
    images: list[str]
    originals: dict[str, np.ndarray]
    checkpoints: list[str]
    errors: list[str]

    def rows(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.results]


def attention_area(heatmap: np.ndarray) -> float:
    """Share of the pixels above half the heatmap's maximum (0 for an all-zero heatmap)."""
    peak = float(np.max(heatmap)) if heatmap.size else 0.0
    if peak <= 0.0:
        return 0.0
    return float(np.mean(heatmap > 0.5 * peak))


def resolve_layer(model: nn.Module, layer: str | None) -> tuple[nn.Module, str]:
    """The Grad-CAM target: ``feature_layer()`` by default, else a module path or a stage name."""
    default = model.feature_layer()
    default_name = next((n for n, m in model.named_modules() if m is default), "feature_layer")
    if layer is None:
        return default, default_name
    # Stage names first: on ResNets ``conv1`` is also the stem's module path, but the paper's
    # (and afictl's) conv1 is the first residual stage.
    try:
        stage = model.resolve_stage(layer)
        return model.get_stage(stage), stage
    except StageError:
        pass
    try:
        return model.get_submodule(layer), layer
    except AttributeError:
        pass
    raise UserError(
        f"--layer {layer!r}: no such module in {getattr(model, 'arch', 'the model')}; give a module "
        f"path such as {default_name} or a stage name ({', '.join(model.stage_names)})"
    )


def grad_cam(
    model: nn.Module, batch: torch.Tensor, layer: nn.Module, targets: Sequence[int] | None = None
) -> tuple[np.ndarray, torch.Tensor]:
    """Heatmaps (B, S, S) in [0, 1] and the logits, for ``targets`` or the predicted classes."""
    # pytorch-grad-cam pulls in scikit-learn and OpenCV (2 s): import it only when a CAM is drawn.
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam_targets = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
    with torch.enable_grad(), GradCAM(model=model, target_layers=[layer]) as cam:
        heat = cam(input_tensor=batch, targets=cam_targets)
        logits = cam.outputs.detach()
    return np.clip(heat.astype(np.float32), 0.0, 1.0), logits


def run_gradcam(
    images: Sequence[str | Path],
    checkpoints: Sequence[str | Path],
    *,
    target_class: str | None = None,
    layer: str | None = None,
) -> GradCamReport:
    """Grad-CAM of every image under every checkpoint; bad inputs become error lines."""
    errors: list[str] = []
    loaded: dict[str, Image.Image] = {}
    for path in images:
        try:
            loaded[str(path)] = load_image(path)
        except UserError as exc:
            errors.append(str(exc))
    results: list[CamResult] = []
    used: list[str] = []
    for ckpt_path in checkpoints:
        try:
            model, ckpt = model_from_checkpoint(ckpt_path)
            target_layer, layer_name = resolve_layer(model, layer)
            target = None if target_class is None else resolve_class(ckpt, target_class)
        except (UserError, UnknownModelError) as exc:
            errors.append(str(exc))
            continue
        except KeyError as exc:  # an afictl checkpoint missing a field
            errors.append(f"{ckpt_path} is not a complete afictl checkpoint (no {exc} field)")
            continue
        used.append(str(ckpt_path))
        if not loaded:
            continue
        spec = model_input(ckpt)
        names = list(loaded)
        batch = torch.stack([spec.tensor(loaded[n]) for n in names])
        targets = None if target is None else [target] * len(names)
        heat, logits = grad_cam(model, batch, target_layer, targets)
        probs = torch.softmax(logits.float(), dim=1)
        for i, name in enumerate(names):
            pred = int(probs[i].argmax())
            tgt = pred if target is None else target
            results.append(CamResult(
                image=name,
                checkpoint=str(ckpt_path),
                arch=ckpt["arch"],
                predicted_index=pred,
                predicted_class=class_name(ckpt, pred),
                probability=round(float(probs[i, pred]), 6),
                target_index=tgt,
                target_class=class_name(ckpt, tgt),
                target_probability=round(float(probs[i, tgt]), 6),
                attention_area=round(attention_area(heat[i]), 6),
                layer=layer_name,
                heatmap=heat[i],
                view=view_of(loaded[name], spec.input_size),
            ))
    originals = {n: thumbnail(img) for n, img in loaded.items()}
    return GradCamReport(results, list(loaded), originals, used, errors)
