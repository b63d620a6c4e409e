"""Dataset name + root -> dataset: the one place every command gets its images from.

Names: ``cifar10``, ``cifar100`` (torchvision pickle batches), ``imagenet`` and
``imagefolder`` (``<root>/train`` and ``<root>/val`` or ``<root>/test``), ``shapes``
(generated, no download) and ``synthetic`` (random tensors in memory, for throughput benchmarks).
Roots: ``--data-root``, else ``$AFICTL_DATA/<name>``, else ``./data/<name>``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from ..errors import UserError
from .cifar import (
    CIFAR_CLASSES,
    CIFAR_SIZES,
    cifar,
    cifar_files,
    cifar_missing,
    cifar_present,
    cifar_root,
)
from .decode import make_loader_fn, resolve_decode
from .folders import _expect, find_split_dir, image_folder
from .shapes import SHAPE_CLASSES, ShapesDataset
from .transforms import eval_resize, eval_transform, is_small, train_transform

__all__ = [
    "DATASETS",
    "DataPlan",
    "DatasetSpec",
    "SubsetWithClasses",
    "SyntheticDataset",
    "build_dataset",
    "dataset_spec",
    "default_data_root",
    "plan_data",
    "resolve_data_root",
]


@dataclass(frozen=True)
class DatasetSpec:
    """What we know about a dataset name before reading any file."""

    name: str
    native_size: int | None  # image size of the files (None: any, resized by the transforms)
    needs_root: bool
    default_size: int | None = None  # images per split when generated
    help: str = ""


DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        DatasetSpec("cifar10", 32, True, help="CIFAR-10 (torchvision python batches; --download)"),
        DatasetSpec(
            "cifar100", 32, True, help="CIFAR-100 (torchvision python batches; --download)"
        ),
        DatasetSpec("imagenet", None, True, help="ImageNet as an ImageFolder: train/ and val/"),
        DatasetSpec(
            "imagefolder", None, True, help="any ImageFolder tree: train/ and val/ or test/"
        ),
        DatasetSpec("shapes", 32, False, 4000, "8 classes of generated coloured shapes, offline"),
        DatasetSpec("synthetic", None, False, 512, "random tensors in memory (benchmarks only)"),
    )
}

#: Environment variable naming a folder that holds one sub-folder per dataset.
DATA_ENV = "AFICTL_DATA"


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of ``name``; :class:`UserError` listing the valid names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None


def default_data_root(name: str) -> Path:
    """``$AFICTL_DATA/<name>`` if the variable is set, else ``./data/<name>`` (absolute)."""
    base = os.environ.get(DATA_ENV)
    return (Path(base).expanduser() / name if base else Path("data") / name).absolute()


def resolve_data_root(name: str, root: str | Path | None) -> Path | None:
    """The folder ``name`` is read from: ``root`` if given, else :func:`default_data_root`;
    ``None`` for generated datasets."""
    if not dataset_spec(name).needs_root:
        return None
    if root is None:
        return default_data_root(name)
    from ..validate import check_option  # every command's --data-root passes here

    return Path(check_option("data_root", str(root))).expanduser().absolute()


class SubsetWithClasses(Dataset):
    """A fixed subset of a dataset that keeps its ``classes`` and ``device_transform``."""

    def __init__(self, dataset: Dataset, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices
        self.classes = list(dataset.classes)
        self.device_transform = getattr(dataset, "device_transform", None)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]


SYNTHETIC_CLASSES = 10
_CLASSES = {"shapes": len(SHAPE_CLASSES), "synthetic": SYNTHETIC_CLASSES, "cifar10": 10}
_CLASSES["cifar100"] = 100


class SyntheticDataset(Dataset):
    """``n`` random normalised images with random labels, all in memory (benchmarks)."""

    def __init__(
        self, n: int, input_size: int, num_classes: int = SYNTHETIC_CLASSES, seed: int = 0
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, input_size, input_size, generator=g)
        self.targets = torch.randint(0, num_classes, (n,), generator=g).tolist()
        self.classes = [f"class{i}" for i in range(num_classes)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.images[i], self.targets[i]


def build_dataset(
    name: str,
    root: str | Path | None,
    split: str,
    *,
    input_size: int | None = None,
    download: bool = False,
    size: int | None = None,
    seed: int = 0,
    train_transforms: bool | None = None,
    on_error: str = "raise",
    aa: str | None = None,
    reprob: float = 0.0,
    decode: str = "auto",
    download_hint: str | None = None,
) -> Dataset:
    """The ``split`` ("train" or "eval") of dataset ``name``, with the paper's transforms.

    - ``root``: where the files are (``None``: ``$AFICTL_DATA/<name>`` or ``./data/<name>``).
    - ``input_size``: pixels fed to the model (default: the files' own size, 224 for ImageFolder).
    - ``size``: images per split; generated datasets make that many, others keep a fixed random
      subset (drawn from ``seed``).
    - ``train_transforms``: augment (random crop/flip) or not; ``None``: the train split only.
    - ``on_error``: an unreadable image raises :class:`CorruptImageError` (``"raise"``) or comes
      back as a :class:`BrokenImage` (``"mark"``, what the training loader uses).
    - ``aa``, ``reprob``: timm's ``--aa`` policy and random-erasing probability, for augmented
      splits only (see :func:`afictl.data.transforms.train_transform`).
    - ``download_hint``: the caller's option that downloads CIFAR (train's ``--download``).
    - ``decode``: how ImageFolder files are decoded (:mod:`afictl.data.decode`); under ``"gpu"``
      the dataset yields encoded JPEGs and carries its transform as ``device_transform`` for
      :func:`afictl.data.decode.on_device`. Other datasets are in memory: only ``auto``/``pil``.

    The dataset has ``classes: list[str]`` and ``device_transform`` (``None`` unless
    ``decode="gpu"``). Missing files: :class:`DataMissingError`, naming ``download_hint``.
    """
    spec = dataset_spec(name)
    _check_split_and_size(split, size)
    decode = _check_decode(name, decode, name in ("imagenet", "imagefolder"))
    input_size = input_size or spec.native_size or 224
    augment = split == "train" if train_transforms is None else train_transforms
    transform = _transform(name, input_size, augment, aa=aa, reprob=reprob)
    path = resolve_data_root(name, root)
    generated = name in ("shapes", "synthetic")
    if generated:
        ds = _generated(name, size or spec.default_size, split, transform, input_size, seed)
    else:
        ds = _from_files(
            name,
            path,
            split,
            transform,
            download=download,
            decode=decode,
            on_error=on_error,
            input_size=input_size,
            augment=augment,
            download_hint=download_hint,
        )
    ds.device_transform = getattr(ds, "device_transform", None)
    return ds if generated else _fixed_subset(ds, size, seed, split)


def _check_split_and_size(split: str, size: int | None) -> None:
    """:class:`UserError` for a split other than train/eval or a size below 1."""
    if split not in ("train", "eval"):
        raise UserError(f"unknown split {split!r}; use 'train' or 'eval'")
    if size is not None and size < 1:
        raise UserError(f"--data-size must be at least 1, got {size}")


def _transform(
    name: str, input_size: int, augment: bool, *, aa: str | None, reprob: float
) -> Callable[..., Any]:
    """The paper's training transform if ``augment``, else its eval transform."""
    # built on every split so that bad --aa/--reprob values fail there too; they augment only
    train = train_transform(name, input_size, aa=aa, reprob=reprob)
    return train if augment else eval_transform(name, input_size)


def _generated(
    name: str, n: int, split: str, transform: Callable[..., Any], input_size: int, seed: int
) -> Dataset:
    """``n`` generated images of ``split``: shapes, or synthetic tensors (no transform)."""
    if name == "shapes":
        return ShapesDataset(n, seed=seed, split=split, transform=transform)
    # its own seed for the eval split, so that it does not repeat the train images
    return SyntheticDataset(n, input_size, seed=seed + (split == "eval"))


def _from_files(
    name: str,
    path: Path,
    split: str,
    transform: Callable[..., Any],
    *,
    download: bool,
    decode: str,
    on_error: str,
    input_size: int,
    augment: bool,
    download_hint: str | None = None,
) -> Dataset:
    """A split read from ``path``: CIFAR's pickle batches, or ImageFolder files."""
    if name not in ("imagenet", "imagefolder"):
        return cifar(name, path, split, transform, download=download, download_hint=download_hint)
    if download:
        raise UserError(f"{name} cannot be downloaded; put its train/ and val/ folders in {path}")
    # pil-draft keeps both sides >= what the first resize needs (crop size, eval short side)
    need = input_size if augment or is_small(input_size) else eval_resize(input_size)
    return _folder(name, path, split, transform, decode, need, on_error=on_error)


def _fixed_subset(ds: Dataset, size: int | None, seed: int, split: str) -> Dataset:
    """``size`` images of ``ds`` in their order, the same ones for a given ``seed`` and split;
    ``ds`` itself when it has no more than ``size``."""
    if size is None or size >= len(ds):
        return ds
    g = torch.Generator().manual_seed(seed * 2 + (split == "eval"))
    return SubsetWithClasses(ds, sorted(torch.randperm(len(ds), generator=g)[:size].tolist()))


def _folder(
    name: str, path: Path, split: str, transform, decode: str, need: int, *, on_error: str
) -> Dataset:
    """An ImageFolder split decoded by ``decode``; under "gpu" the transform runs on the device."""
    loader = make_loader_fn(decode, need)
    on_cpu, on_dev = (None, transform) if decode == "gpu" else (transform, None)
    ds = image_folder(name, path, split, on_cpu, on_error=on_error, loader=loader)
    ds.device_transform = on_dev
    return ds


def _check_decode(name: str, decode: str, folder: bool) -> str:
    if folder:
        return resolve_decode(decode)
    if decode not in ("auto", "pil"):
        resolve_decode(decode)  # an unknown value is named as such
        raise UserError(
            f"--decode {decode} applies to files (imagenet, imagefolder); {name} is decoded "
            "in memory: leave --decode auto"
        )
    return "pil"


@dataclass(frozen=True)
class DataPlan:
    """What a run would read, found without reading an image (``afictl train --dry-run``).

    ``problem`` is the one line the run would stop with (None: it can start); image counts are
    per split after ``--data-size``, ``None`` where they are not known without reading files."""

    dataset: str
    root: Path | None
    reads: str  # the files or folders, named relative to the data folder where it has one
    status: str
    train_images: int | None
    eval_images: int | None
    classes: int | None
    counted: str  # how the counts are known
    problem: str | None = None

    def rows(self) -> list[dict[str, Any]]:
        """(option, value, source) rows, as the dry run lists them."""
        rows = [
            ("data reads", self.reads, f"what {self.dataset} expects"),
            ("data status", self.status, "checked on disk" if self.root else "generated"),
            ("train images", self.train_images, self.counted),
            ("eval images", self.eval_images, self.counted),
            ("classes", self.classes, self.counted if self.root else "generated"),
        ]
        return [dict(option=o, value=v, source=s) for o, v, s in rows]


def plan_data(
    name: str,
    root: str | Path | None,
    *,
    size: int | None = None,
    download: bool = False,
    download_hint: str | None = None,
    count: bool = True,
) -> DataPlan:
    """What :func:`build_dataset` would read for ``name``, and the error it would raise (the
    same line), found from file names alone: nothing is created, downloaded or decoded.
    ``count``: count an ImageFolder's files (a walk of the tree; ``False`` skips it)."""
    spec = dataset_spec(name)
    path = resolve_data_root(name, root)
    if path is None:
        n = size or spec.default_size
        how = "as --data-size" if size else f"the default size of {name}"
        return DataPlan(
            name, None, "nothing: generated in memory", "generated", n, n, _CLASSES[name], how
        )
    if name in CIFAR_CLASSES:
        return _cifar_plan(name, path, size, download, download_hint)
    return _folder_plan(name, path, size, download, count)


def _cifar_plan(
    name: str, path: Path, size: int | None, download: bool, hint: str | None
) -> DataPlan:
    """CIFAR: the batch files present or not; the official split sizes (reading 180 MB of
    batches to count them is what a dry run avoids)."""
    folder = cifar_root(name, path) / CIFAR_CLASSES[name].base_folder
    reads = f"{folder.name}/ in {folder.parent}: {', '.join(cifar_files(name))}"
    present = cifar_present(name, path)
    status = "present" if present else f"missing: {CIFAR_CLASSES[name].url} would be downloaded"
    problem = None if present or download else cifar_missing(name, path, hint)
    if problem:
        status = "missing"
    train, test = (min(n, size or n) for n in (CIFAR_SIZES["train"], CIFAR_SIZES["eval"]))
    counted = "the official files (not read)" + (", cut to --data-size" if size else "")
    return DataPlan(name, path, reads, status, train, test, _CLASSES[name], counted, problem)


def _folder_plan(name: str, path: Path, size: int | None, download: bool, count: bool) -> DataPlan:
    """ImageFolder: train/ and val/ (or test/) present, their class folders and files counted."""
    train_dir, eval_dir = find_split_dir(path, "train"), find_split_dir(path, "eval")
    reads = f"train/<class>/<image> and val/ (or test/) in {path}"
    problem = None
    if download:
        problem = f"{name} cannot be downloaded; put its train/ and val/ folders in {path}"
    elif train_dir is None or eval_dir is None:
        problem = _expect(name, path)
    if problem or not count:
        status = "missing" if problem else "present"
        return DataPlan(name, path, reads, status, None, None, None, "not counted", problem)

    classes = [p for p in train_dir.iterdir() if p.is_dir()]
    # ImageFolder's walk (links followed), by file name: what it would index, none decoded
    found = (
        sum(
            f.lower().endswith(IMG_EXTENSIONS)
            for _, _, names in os.walk(d, followlinks=True)
            for f in names
        )
        for d in (train_dir, eval_dir)
    )
    train, test = (min(n, size or n) for n in found)
    counted = "files counted, not decoded"
    return DataPlan(name, path, reads, "present", train, test, len(classes), counted)
