"""Top-1/top-5 accuracy and loss of a checkpoint on a dataset split (``afictl eval``), its
throughput (images per second of the forward passes) and, when asked, its confusion matrix.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..checkpoint import CheckpointError, model_from_checkpoint
from ..data import build_dataset, make_loader
from ..data.pipeline import eval_tensor_loader
from ..models import get_model_info
from ..validate import check_options
from .config import default_workers
from .confusion import ConfusionMeter
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


class _Watch:
    """What :func:`afictl.train.engine.evaluate` computes, watched from outside its loop: the
    wall time of each forward pass (hooks on the model) and, with a :class:`ConfusionMeter`,
    each batch's logits against its targets (the engine stays unaware; no second pass).

    Every non-empty batch the loader yields is followed by exactly one forward pass, so the
    targets last seen in :meth:`batches` belong to the logits the forward hook receives. On
    CUDA the time comes from events read once at the end: no synchronisation per batch.
    """

    def __init__(self, model: Any, device: Any, meter: ConfusionMeter | None) -> None:
        self.meter, self.cuda = meter, device.type == "cuda"
        self._targets: Any = None
        self._start: Any = None
        self._events: list[tuple[Any, Any]] = []
        self.seconds = 0.0
        self._hooks = [
            model.register_forward_pre_hook(self._before),
            model.register_forward_hook(self._after),
        ]

    def batches(self, loader: Iterable) -> Iterator:
        for batch in loader:
            self._targets = batch.targets
            yield batch

    def _now(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        import torch

        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _before(self, *_: Any) -> None:
        self._start = self._now()

    def _after(self, _module: Any, _inputs: Any, logits: Any) -> None:
        end = self._now()
        if self.cuda:
            self._events.append((self._start, end))
        else:
            self.seconds += end - self._start
        if self.meter is not None:
            self.meter.update(logits, self._targets)

    def close(self) -> float:
        """Remove the hooks; the forward passes' total wall time in seconds."""
        for hook in self._hooks:
            hook.remove()
        if self._events:
            self._events[-1][1].synchronize()
            self.seconds = sum(a.elapsed_time(b) for a, b in self._events) / 1000.0
            self._events.clear()
        return self.seconds


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
        input_size=_input_size(ckpt),
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


def _input_size(ckpt: dict) -> int:
    """The pixels the checkpoint's model was trained at."""
    config = ckpt.get("config") or {}
    info = get_model_info(ckpt["arch"])
    return int(config.get("input_size") or ckpt.get("input_size") or info.input_size)


def _loader(dataset: Any, data: str, input_size: int, opts: dict, dev: Any) -> Iterable:
    """Small images through the tensor pipeline (decoded once, cached); others a DataLoader."""
    fast = eval_tensor_loader(dataset, data, input_size, opts["batch_size"], dev)
    if fast is not None:
        return fast
    workers = opts["workers"]
    return make_loader(
        dataset,
        opts["batch_size"],
        train=False,
        workers=default_workers(data) if workers is None else workers,
        pin_memory=dev.type == "cuda",
    )


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


def _result(ckpt: dict, data: str, split: str, sums: Any, seconds: float) -> dict[str, Any]:
    def r(x: float) -> float | None:
        return None if math.isnan(x) else round(x, 4)

    rate = sums.n / seconds if sums.n and seconds > 0 else None

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
        "images_per_sec": None if rate is None else round(rate, 1),
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
    confusion: bool = False,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` with the paper's eval transforms.

    ``data`` defaults to the dataset the checkpoint was trained on; when it is that dataset, the
    recorded root, size and seed are used unless given. ``arch``, when given, must match.
    ``progress(done, total)`` is called after every batch.

    The result has ``images_per_sec``: images over the wall time of the forward passes alone
    (not the data loading). With ``confusion``, ``result["confusion"]`` is the
    :class:`~afictl.train.confusion.Confusion` of the same pass (per-class rows, matrix).
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
    loader = _loader(dataset, data, _input_size(ckpt), opts, dev)
    ctx = DistContext(0, 1, 0, dev)
    meter = ConfusionMeter(int(ckpt["num_classes"]), dev) if confusion else None
    sums, seconds = _run(ctx, model, _counted(loader, progress), opts, meter)
    result = _result(ckpt, data, opts["split"], sums, seconds)
    if meter is not None:
        meter.all_reduce(ctx)  # summed over ranks as the evaluation's own sums are
        result["confusion"] = meter.result(_class_names(ckpt, dataset))
    return result


def _run(
    ctx: DistContext, model: Any, batches: Iterable, opts: dict, meter: ConfusionMeter | None
) -> tuple[Any, float]:
    """The evaluation's sums and the wall time of its forward passes (seconds); its warnings
    (skipped images) on stderr."""
    warnings: list[str] = []
    watch = _Watch(model, ctx.device, meter)
    try:
        sums = evaluate(
            ctx=ctx,
            model=model,
            loader=watch.batches(batches),
            amp=opts["amp"],
            bad_images=opts["bad_images"],
            warn=warnings.append,
        )
    finally:
        seconds = watch.close()
    for w in warnings:
        print(w, file=sys.stderr)
    return sums, seconds


def _class_names(ckpt: dict, dataset: Any) -> list[str]:
    """The names the labels index: the dataset's classes, else the checkpoint's, else numbers."""
    n = int(ckpt["num_classes"])
    for names in (getattr(dataset, "classes", None), ckpt.get("class_names")):
        if names is not None and len(names) == n:
            return [str(c) for c in names]
    return [str(i) for i in range(n)]
