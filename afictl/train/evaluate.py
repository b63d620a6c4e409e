"""Top-1/top-5 accuracy and loss of a checkpoint on a dataset split (``afictl eval``)."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..checkpoint import CheckpointError, model_from_checkpoint
from ..data import build_dataset, make_loader
from ..models import get_model_info
from ..validate import check_options
from .config import default_workers
from .distributed import DistContext, pick_device
from .engine import evaluate

__all__ = ["evaluate_checkpoint"]

#: ``progress(done, total)``: batches evaluated so far, and the loader's length.
Progress = Callable[[int, int], None]


def _counted(loader: Iterable, progress: Progress | None) -> Iterator:
    """The loader's batches, reporting each one to ``progress`` (the engine stays unaware)."""
    total = len(loader) if hasattr(loader, "__len__") else 0
    for done, batch in enumerate(loader, 1):
        yield batch
        if progress is not None:
            progress(done, total)


def _dataset(ckpt: dict, data: str | None, opts: dict, data_root: Any, download: bool):
    """The dataset to evaluate on: the checkpoint's own (its recorded root, size and seed)
    unless ``data`` names another; its class count must match the checkpoint's."""
    config = ckpt.get("config") or {}
    info = get_model_info(ckpt["arch"])
    same = data is None or data == config.get("dataset")
    data = data or config.get("dataset") or info.home_dataset
    size = opts["data_size"]
    dataset = build_dataset(
        data,
        data_root if data_root is not None else (config.get("data_root") if same else None),
        opts["split"],
        input_size=int(config.get("input_size") or ckpt.get("input_size") or info.input_size),
        download=download,
        size=size if size is not None else (config.get("data_size") if same else None),
        seed=int(config.get("seed") or 0) if same else 0,
        train_transforms=False,
        on_error="mark",
    )
    if len(dataset.classes) != ckpt["num_classes"]:
        raise CheckpointError(
            f"{data} has {len(dataset.classes)} classes but {ckpt['path']} was trained for "
            f"{ckpt['num_classes']}; evaluate it on the data it was trained on"
        )
    return data, dataset


#: What evaluation reads of a checkpoint besides the model's weights (small metadata).
_KEPT = ("arch", "path", "epoch", "num_classes", "config", "input_size", "class_names")


def _model_on(checkpoint: str | Path, arch: str | None, dev: Any) -> tuple[Any, dict]:
    """The checkpoint's model on ``dev`` and its metadata; the rest is dropped.

    Loaded on the CPU: mapping the file onto the GPU would put the optimizer state and the EMA
    weights there too, held as long as the checkpoint dict lives; only the model is moved.
    """
    model, ckpt = model_from_checkpoint(checkpoint, arch=arch, map_location="cpu")
    model.to(dev)
    return model, {k: ckpt[k] for k in _KEPT if k in ckpt}


def _result(ckpt: dict, data: str, split: str, sums: Any) -> dict[str, Any]:
    def r(x: float) -> float | None:
        return None if math.isnan(x) else round(x, 4)

    return {
        "arch": ckpt["arch"],
        "checkpoint": ckpt["path"],
        "epoch": ckpt.get("epoch"),
        "dataset": data,
        "split": split,
        "images": int(sums.n),
        "loss": r(sums.mean_loss()),
        "top1": r(sums.pct("top1")),
        "top5": r(sums.pct("top5")),
        "skipped_images": int(sums.skipped),
    }


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | None = None,
    data_root: str | Path | None = None,
    *,
    split: str = "eval",
    arch: str | None = None,
    data_size: int | None = None,
    batch_size: int = 256,
    workers: int | None = None,
    device: str = "auto",
    amp: str = "none",
    bad_images: str = "skip",
    download: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` with the paper's eval transforms.

    ``data`` defaults to the dataset the checkpoint was trained on; when it is that dataset, the
    recorded root, size and seed are used unless given. ``arch``, when given, must match.
    ``progress(done, total)`` is called after every batch.
    """
    # The options first (afictl/validate.py, shared with train): one line before any loading.
    opts = check_options(
        dict(
            split=split,
            data_size=data_size,
            batch_size=batch_size,
            workers=workers,
            device=device,
            amp=amp,
            bad_images=bad_images,
        )
    )
    dev = pick_device(opts["device"])
    model, ckpt = _model_on(checkpoint, arch, dev)
    data, dataset = _dataset(ckpt, data, opts, data_root, download)
    workers = opts["workers"]
    loader = make_loader(
        dataset,
        opts["batch_size"],
        train=False,
        workers=default_workers(data) if workers is None else workers,
        pin_memory=dev.type == "cuda",
    )
    warnings: list[str] = []
    sums = evaluate(
        ctx=DistContext(0, 1, 0, dev),
        model=model,
        loader=_counted(loader, progress),
        amp=opts["amp"],
        bad_images=opts["bad_images"],
        warn=warnings.append,
    )
    for w in warnings:
        print(w, file=sys.stderr)
    return _result(ckpt, data, opts["split"], sums)
