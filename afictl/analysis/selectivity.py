"""Class selectivity index per channel (Morcos et al. 2018; paper section 4.2, Figure 6).

For every channel of the measured tensor: the spatially averaged activity, averaged per class
over the evaluation set (class-conditional means mu_k), then

    index = (mu_max - mu_rest) / (|mu_max| + |mu_rest|),   mu_rest = mean of the other classes' mu_k

which lies in [0, 1]: 0 for a channel whose mean activity is the same for every class, 1 for one
that fires for a single class only. For post-ReLU activity (means >= 0) this is Morcos et al.'s
``(mu_max - mu_rest) / (mu_max + mu_rest)``; the absolute values keep it in [0, 1] for a probe
that is not post-ReLU (DenseNet's, below), whose values are measured as they are, never clamped.
A channel whose class means are all zero never fires: it has no selectivity (0/0); it is flagged
``dead``, given index 0 by convention, and left out of the means and plots (never NaN).

The tensor measured is the ``afi_out`` probe of each block (``model.probes(stage)``): the AFI
output R(i) in AFI blocks 2..n, and the activation of the first convolution in block 1 and in
baseline blocks (the same position, as in the paper's Figure 6). Those are post-ReLU in the
ResNet, ResNeXt, MobileNetV2 and ShuffleNetV2 families (R(i) is a convex combination of
post-activation features); DenseNet's probe is a dense layer's raw convolution output, about half
of it negative (docs/ANALYSES.md, tests/test_bad_inputs.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..checkpoint import model_from_checkpoint
from ..errors import UserError
from .inputs import eval_loader, model_input

__all__ = [
    "IMAGE_SET_FIELDS",
    "ClassMeans",
    "SelectivityResult",
    "channel_csv",
    "class_means",
    "pair_loaders",
    "run_selectivity",
    "selectivity_frame",
    "selectivity_index",
    "shared_image_set",
    "summarize",
]


def selectivity_index(means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index and dead mask per channel from class-conditional means of shape (K classes, C).

    Classes are the rows that were observed; K >= 2. Means may be negative (a probe that is not
    post-ReLU): the denominator is ``|mu_max| + |mu_rest|``, which is ``mu_max + mu_rest`` for
    non-negative means.
    """
    means = np.asarray(means, dtype=np.float64)
    if means.ndim != 2 or means.shape[0] < 2:
        raise ValueError("selectivity needs class means of shape (K >= 2 classes, C channels)")
    k = means.shape[0]
    mu_max = means.max(axis=0)
    mu_rest = (means.sum(axis=0) - mu_max) / (k - 1)
    denom = np.abs(mu_max) + np.abs(mu_rest)
    dead = denom <= 0.0
    index = np.zeros_like(mu_max)
    np.divide(mu_max - mu_rest, denom, out=index, where=~dead)
    return np.clip(index, 0.0, 1.0), dead


@dataclass
class ClassMeans:
    """Class-conditional means of every probe of a model: ``means[b]`` is (K, C_b)."""

    means: list[np.ndarray]
    counts: np.ndarray  # images per class seen

    @property
    def observed(self) -> np.ndarray:
        return self.counts > 0


def class_means(
    model: nn.Module,
    probes: Sequence[nn.Module],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    *,
    max_batches: int | None = None,
    progress: Any = None,
) -> ClassMeans:
    """Accumulate per-class sums of each probe's spatially averaged activity over ``batches``.

    Streaming: only (K, C) sums are kept, so any dataset size fits. The activity is taken as the
    probe carries it: post-ReLU probes are >= 0 already, and a raw one (DenseNet's) keeps its sign.
    """
    sums: list[torch.Tensor | None] = [None] * len(probes)
    counts = torch.zeros(num_classes, dtype=torch.float64)
    current: dict[int, torch.Tensor] = {}

    def make_hook(i: int):
        def hook(_m, _inp, out):
            # to the CPU, where the per-class sums are kept (the model may be on a GPU)
            current[i] = out.detach().mean(dim=(2, 3)).double().cpu()

        return hook

    handles = [p.register_forward_hook(make_hook(i)) for i, p in enumerate(probes)]
    device = next(model.parameters(), torch.empty(0)).device  # inputs go where the model is
    model.eval()
    try:
        with torch.no_grad():
            for step, (x, y) in enumerate(batches):
                if max_batches is not None and step >= max_batches:
                    break
                current.clear()
                model(x.to(device, non_blocking=True))
                y = torch.as_tensor(y, dtype=torch.long).cpu()
                counts += torch.bincount(y, minlength=num_classes).double()
                for i in range(len(probes)):
                    act = current[i]
                    if sums[i] is None:
                        sums[i] = torch.zeros(num_classes, act.shape[1], dtype=torch.float64)
                    sums[i].index_add_(0, y, act)
                if progress is not None:
                    progress()
    finally:
        for h in handles:
            h.remove()
    if counts.sum() == 0:
        raise UserError("the evaluation data is empty: nothing to measure")
    denom = counts.clamp_min(1)[:, None]
    means = [(s / denom).numpy() for s in sums if s is not None]
    return ClassMeans(means, counts.numpy())


@dataclass
class SelectivityResult:
    """Every channel of every probed block of one checkpoint."""

    checkpoint: str
    arch: str
    stage: str
    channels: pd.DataFrame  # one row per channel
    images: int = 0  # evaluation images measured (the same ones for every checkpoint of a run)
    dataset: str | None = None

    def summary(self) -> list[dict[str, Any]]:
        return summarize(self.channels)


def selectivity_frame(
    cm: ClassMeans,
    *,
    checkpoint: str,
    arch: str,
    stage: str,
    class_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per channel: block, channel, index, dead, mu_max, mu_rest, preferred class."""
    observed = np.flatnonzero(cm.observed)
    if observed.size < 2:
        raise UserError(
            f"selectivity needs images of at least two classes; the evaluated data had "
            f"{observed.size} (raise --max-batches)"
        )
    rows = []
    for b, means in enumerate(cm.means, start=1):
        seen = means[observed]
        index, dead = selectivity_index(seen)
        mu_max = seen.max(axis=0)
        mu_rest = (seen.sum(axis=0) - mu_max) / (seen.shape[0] - 1)
        preferred = observed[seen.argmax(axis=0)]
        for c in range(seen.shape[1]):
            pref = (
                ""
                if dead[c]
                else (str(class_names[preferred[c]]) if class_names else str(int(preferred[c])))
            )
            rows.append(
                {
                    "checkpoint": checkpoint,
                    "arch": arch,
                    "stage": stage,
                    "block": b,
                    "channel": c,
                    "index": float(index[c]),
                    "dead": bool(dead[c]),
                    "mu_max": float(mu_max[c]),
                    "mu_rest": float(mu_rest[c]),
                    "preferred_class": pref,
                }
            )
    return pd.DataFrame(rows)


def summarize(channels: pd.DataFrame) -> list[dict[str, Any]]:
    """Per block and checkpoint: mean index over live channels, channel and dead-channel counts."""
    out = []
    for (ckpt, block), g in channels.groupby(["checkpoint", "block"], sort=False):
        live = g[~g["dead"]]
        out.append(
            {
                "stage": g["stage"].iloc[0],
                "block": int(block),
                "checkpoint": ckpt,
                "arch": g["arch"].iloc[0],
                "mean_index": round(float(live["index"].mean()), 6) if len(live) else 0.0,
                "median_index": round(float(live["index"].median()), 6) if len(live) else 0.0,
                "channels": int(len(g)),
                "dead_channels": int(g["dead"].sum()),
            }
        )
    return out


def channel_csv(frames: Sequence[pd.DataFrame], path: str | Path) -> Path:
    """Write every channel's row (all checkpoints) as CSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(list(frames), ignore_index=True).to_csv(path, index=False)
    return path


#: the config fields that name a run's evaluation images (with the dataset)
IMAGE_SET_FIELDS = ("dataset", "data_root", "eval_split", "data_size", "seed")


def shared_image_set(ckpts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The one evaluation set every checkpoint of a comparison is measured on: the recorded set
    (dataset, root, split, data size, seed) of the checkpoint with the smallest data size (a run
    on the whole dataset counts as the largest; on a tie, the first checkpoint's)."""

    def size(ckpt: dict[str, Any]) -> float:
        value = (ckpt.get("config") or {}).get("data_size")
        return float("inf") if value is None else float(value)

    chosen = min(ckpts, key=size)  # min keeps the first of equals
    config = chosen.get("config") or {}
    images = {k: config.get(k) for k in IMAGE_SET_FIELDS}
    if images["dataset"] is None:  # an old run: each model's own (home) dataset, as before
        del images["dataset"]
    return images


def pair_loaders(
    ckpts: Sequence[dict[str, Any]],
    data: str | None = None,
    data_root: str | Path | None = None,
    *,
    batch_size: int = 128,
    workers: int = 0,
) -> list[Any]:
    """One evaluation loader per checkpoint, all over the same images (:func:`shared_image_set`;
    each resized and normalised as its model expects): one loader shared by the models that
    take the same input."""
    images = shared_image_set(ckpts) if len(ckpts) > 1 else None
    made: dict[tuple[Any, ...], Any] = {}
    loaders = []
    for ckpt in ckpts:
        if images is not None:
            # as if this run had recorded the shared set: eval_loader reads it from there
            ckpt = {**ckpt, "config": {**(ckpt.get("config") or {}), **images}}
        spec = model_input(ckpt)
        key = (spec.dataset, spec.input_size, int(ckpt["num_classes"]))
        if key not in made:
            made[key] = eval_loader(ckpt, data, data_root, batch_size=batch_size, workers=workers)
        loaders.append(made[key])
    return loaders


def run_selectivity(
    checkpoints: Sequence[str | Path],
    stage: str,
    *,
    archs: Sequence[str | None] | None = None,
    data: str | None = None,
    data_root: str | Path | None = None,
    max_batches: int | None = None,
    batch_size: int = 128,
    workers: int = 0,
    progress: Any = None,
) -> list[SelectivityResult]:
    """Selectivity of every probed channel of ``stage`` for each checkpoint, all measured on
    the same evaluation images (:func:`pair_loaders`).

    ``archs`` (one per checkpoint) names the model of a plain state dict or ``.safetensors``.
    ``progress(description, total)`` (optional) returns a per-batch callback.
    """
    # Load and resolve every checkpoint first: a bad stage name fails before any data is read.
    loaded = []
    for path, arch in zip(checkpoints, archs or [None] * len(checkpoints), strict=True):
        model, ckpt = model_from_checkpoint(path, arch=arch)
        loaded.append((str(path), model, ckpt, model.resolve_stage(stage)))
    loaders = pair_loaders(
        [c for _, _, c, _ in loaded], data, data_root, batch_size=batch_size, workers=workers
    )
    results = []
    for (path, model, ckpt, paper_stage), loader in zip(loaded, loaders, strict=True):
        total = len(loader) if max_batches is None else min(len(loader), max_batches)
        tick = progress(f"selectivity {ckpt['arch']} {paper_stage}", total) if progress else None
        cm = class_means(
            model,
            model.probes(paper_stage),
            loader,
            int(ckpt["num_classes"]),
            max_batches=max_batches,
            progress=tick,
        )
        names = ckpt.get("class_names") or getattr(loader.dataset, "classes", None)
        frame = selectivity_frame(
            cm, checkpoint=path, arch=ckpt["arch"], stage=paper_stage, class_names=names
        )
        dataset = data or model_input(ckpt).dataset
        results.append(
            SelectivityResult(path, ckpt["arch"], paper_stage, frame, int(cm.counts.sum()), dataset)
        )
    return results
