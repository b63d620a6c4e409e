"""The uint8 split behind a dataset of small images, for the tensor pipeline.

:func:`decoded_split` takes a dataset as :func:`afictl.data.build_dataset` returns it (its
``--data-size`` subset included) and gives its images as one uint8 tensor at the model's input
size: CIFAR's binaries and the generated shapes are in memory already; an ImageFolder of small
images is decoded once and cached (:mod:`afictl.data.tensor_cache`). It returns None where the
tensor pipeline does not apply (large images, synthetic tensors, an unreadable file), with the
reason, so that ``--pipeline auto`` can fall back to the loader and say why.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from .decode import check_claim, claimed_size, pil_load
from .shapes import ShapesDataset
from .tensor_cache import DecodedSplit, cached_split, decode_files, source_digest
from .transforms import is_small

__all__ = ["TENSOR_MAX_SIZE", "decoded_split"]

#: the largest input size (pixels a side) the tensor pipeline takes; larger: the loader
TENSOR_MAX_SIZE = 64


def _unwrap(ds: Dataset) -> tuple[Dataset, list[int] | None]:
    """The dataset under a :class:`~afictl.data.datasets.SubsetWithClasses`, and its indices."""
    indices = getattr(ds, "indices", None)
    inner = getattr(ds, "dataset", None)
    return (inner, list(indices)) if inner is not None and indices is not None else (ds, None)


def _hwc(images: np.ndarray, input_size: int) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x S x S uint8 (resized only when the size differs)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    if x.shape[-1] != input_size or x.shape[-2] != input_size:
        x = v2.functional.resize(x, [input_size, input_size], antialias=True)
    return x


def _folder_loader(input_size: int) -> Callable[[str], torch.Tensor]:
    def load(path: str) -> torch.Tensor:
        img = v2.functional.pil_to_tensor(pil_load(path))
        return v2.functional.resize(img, [input_size, input_size], antialias=True)

    return load


def _folder(ds, name: str, input_size: int, progress) -> DecodedSplit:
    """Every image of an ImageFolder, decoded (or read from the cache) at ``input_size``."""
    files = [Path(p) for p, _ in ds.samples]
    root = Path(ds.root)
    digest = source_digest(files, root, extra=f"{input_size}")

    def build() -> DecodedSplit:
        labels = [y for _, y in ds.samples]
        return decode_files(files, labels, ds.classes, _folder_loader(input_size), progress)

    return cached_split(f"{name}-{root.name}", digest, build)[0]


def _small_files(ds) -> str | None:
    """Why an ImageFolder's images are too large for the tensor pipeline (None: they are not);
    judged on the first file's header."""
    path = ds.samples[0][0]
    with open(path, "rb") as f:
        size = claimed_size(f.read(1 << 16))
    check_claim(size)
    if size is not None and max(size) > TENSOR_MAX_SIZE:
        return f"its images are {size[0]}x{size[1]} (over {TENSOR_MAX_SIZE} px)"
    return None


def decoded_split(
    ds: Dataset, name: str, input_size: int, progress: Callable[[], None] | None = None
) -> tuple[DecodedSplit | None, str]:
    """The split's uint8 images at ``input_size`` and labels, or (None, why not)."""
    if input_size > TENSOR_MAX_SIZE or not is_small(input_size):
        return None, f"input size {input_size} is over {TENSOR_MAX_SIZE} px"
    base, indices = _unwrap(ds)
    if isinstance(base, ShapesDataset) or hasattr(base, "data"):  # shapes, CIFAR binaries
        images = base.images if isinstance(base, ShapesDataset) else base.data
        split = DecodedSplit(
            _hwc(images, input_size),
            torch.as_tensor(np.asarray(base.targets), dtype=torch.int64),
            list(base.classes),
        )
    elif hasattr(base, "samples"):  # an ImageFolder
        why = _small_files(base) if base.samples else "it has no images"
        if why:
            return None, why
        try:
            split = _folder(base, name, input_size, progress)
        except Exception as exc:  # noqa: BLE001 - any file the decoder refuses: the loader
            # path then reads the folder and handles the file as --bad-images says
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
            return None, f"an image cannot be decoded ({reason})"
    else:
        return None, f"{type(base).__name__} holds no uint8 images"
    if indices is not None:
        chosen = torch.as_tensor(indices, dtype=torch.long)
        split = DecodedSplit(split.images[chosen], split.labels[chosen], split.classes)
    return split, ""
