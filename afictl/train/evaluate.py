"""Top-1/top-5 accuracy and loss of a checkpoint on a dataset split (``afictl eval``)."""

from __future__ import annotations

import math
import sys
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
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` with the paper's eval transforms.

    ``data`` defaults to the dataset the checkpoint was trained on; when it is that dataset, the
    recorded root, size and seed are used unless given. ``arch``, when given, must match.
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
    split, data_size, batch_size, workers = (
        opts["split"],
        opts["data_size"],
        opts["batch_size"],
        opts["workers"],
    )
    device, amp, bad_images = opts["device"], opts["amp"], opts["bad_images"]
    dev = pick_device(device)
    model, ckpt = model_from_checkpoint(checkpoint, arch=arch, map_location=dev)
    config = ckpt.get("config") or {}
    info = get_model_info(ckpt["arch"])
    same = data is None or data == config.get("dataset")
    data = data or config.get("dataset") or info.home_dataset
    root = data_root if data_root is not None else (config.get("data_root") if same else None)
    size = data_size if data_size is not None else (config.get("data_size") if same else None)
    seed = int(config.get("seed") or 0) if same else 0
    input_size = int(config.get("input_size") or ckpt.get("input_size") or info.input_size)
    dataset = build_dataset(
        data,
        root,
        split,
        input_size=input_size,
        download=download,
        size=size,
        seed=seed,
        train_transforms=False,
        on_error="mark",
    )
    if len(dataset.classes) != ckpt["num_classes"]:
        raise CheckpointError(
            f"{data} has {len(dataset.classes)} classes but {ckpt['path']} was trained for "
            f"{ckpt['num_classes']}; evaluate it on the data it was trained on"
        )
    loader = make_loader(
        dataset,
        batch_size,
        train=False,
        workers=default_workers(data) if workers is None else workers,
        pin_memory=dev.type == "cuda",
    )
    warnings: list[str] = []
    sums = evaluate(
        ctx=DistContext(0, 1, 0, dev),
        model=model,
        loader=loader,
        amp=amp,
        bad_images=bad_images,
        warn=warnings.append,
    )
    for w in warnings:
        print(w, file=sys.stderr)

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
