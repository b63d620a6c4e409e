"""Which input pipeline a run uses: ``--pipeline auto|tensor|loader``.

- ``tensor``: the split decoded once into a uint8 tensor (:mod:`afictl.data.decoded`), batches
  augmented whole on the training device (:class:`~afictl.data.tensor_loader.TensorLoader`);
  for small images (CIFAR binaries, shapes, ImageFolders up to 64 px).
- ``loader``: per-image decoding and transforms in worker processes (a DataLoader), for
  ImageNet-size data and everything else.
- ``auto``: ``tensor`` where it applies, else ``loader``, saying why in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ..errors import UserError
from ..validate import PIPELINE_CHOICES
from .decoded import decoded_split
from .tensor_cache import DecodedSplit
from .tensor_loader import TensorLoader
from .transforms import auto_augment, normalization

__all__ = ["PIPELINES", "Pipeline", "choose_pipeline", "eval_tensor_loader", "tensor_loaders"]

PIPELINES = PIPELINE_CHOICES


@dataclass(frozen=True)
class Pipeline:
    """The pipeline chosen, why, and (for ``tensor``) the decoded train and eval splits."""

    kind: str
    reason: str
    train: DecodedSplit | None = None
    eval: DecodedSplit | None = None

    def describe(self) -> str:
        """Why this pipeline and, for ``tensor``, the memory its images hold."""
        if self.train is None or self.eval is None:
            return self.reason
        mib = (self.train.nbytes + self.eval.nbytes) / 2**20
        return f"{self.reason}, {mib:.1f} MiB in memory"


def choose_pipeline(
    asked: str,
    name: str,
    datasets: tuple[Dataset, Dataset],
    input_size: int,
    *,
    decode: str = "auto",
    progress: Callable[[], None] | None = None,
) -> Pipeline:
    """The pipeline for ``--pipeline asked``; :class:`UserError` when ``tensor`` cannot be."""
    if asked not in PIPELINES:
        raise UserError(f"unknown --pipeline {asked!r}; choose one of {', '.join(PIPELINES)}")
    if asked == "loader":
        return Pipeline("loader", "--pipeline loader")
    why = ""
    if decode not in ("auto", "pil"):
        why = f"--decode {decode} asks for the loader's decoder"
    splits = []
    for ds in datasets if not why else ():
        split, why = decoded_split(ds, name, input_size, progress)
        if split is None:
            break
        splits.append(split)
    if len(splits) < 2:
        if asked == "tensor":
            raise UserError(f"--pipeline tensor does not apply: {why}; use --pipeline loader")
        return Pipeline("loader", why)
    return Pipeline("tensor", "small images, decoded once", splits[0], splits[1])


def tensor_loaders(
    pipe: Pipeline,
    dataset: str,
    input_size: int,
    batch_size: int,
    *,
    device: torch.device,
    on_device: bool,
    seed: int,
    world: int = 1,
    rank: int = 0,
    aa: str | None = None,
    reprob: float = 0.0,
    eval_batch_size: int | None = None,
) -> tuple[TensorLoader, TensorLoader]:
    """The training and evaluation :class:`TensorLoader` of a ``tensor`` pipeline: the paper's
    CIFAR augmentation (pad input_size/8, crop, flip), ``--aa`` and ``--reprob`` per image."""
    assert pipe.train is not None and pipe.eval is not None
    mean, std = normalization(dataset)
    common = dict(mean=mean, std=std, device=device, on_device=on_device, world=world, rank=rank)
    train = TensorLoader(
        pipe.train,
        batch_size,
        train=True,
        seed=seed,
        pad=input_size // 8,
        augment=auto_augment(aa, input_size) if aa else None,
        erase=v2.RandomErasing(p=reprob, value=0) if reprob > 0 else None,
        **common,
    )
    evaluate = TensorLoader(pipe.eval, eval_batch_size or batch_size, train=False, **common)
    return train, evaluate


def eval_tensor_loader(
    ds: Dataset, name: str, input_size: int, batch_size: int, device: torch.device
) -> TensorLoader | None:
    """The evaluation batches of ``ds`` through the tensor pipeline, or None where it does not
    apply (then the caller's DataLoader reads the files)."""
    split, _ = decoded_split(ds, name, input_size)
    if split is None:
        return None
    mean, std = normalization(name)
    return TensorLoader(split, batch_size, train=False, mean=mean, std=std, device=device)
