"""CIFAR-10 and CIFAR-100 from torchvision's python batches, read without running code.

A batch file is a pickle, and unpickling an arbitrary file runs whatever it names. torchvision
guards this with a per-file MD5 of the official files on every load; we read every batch with a
restricted unpickler instead (:class:`BatchUnpickler`), which builds only what the format holds
(dicts, lists, str/bytes, numbers and numpy arrays) and refuses anything else before it is
called, so that re-packed or reduced copies (and the tests' tiny fake batches) load too but no
folder can run code. A refused or malformed file is one line naming it (exit 2). ``--download``
uses torchvision's downloader, which verifies the archive's MD5.
"""

from __future__ import annotations

import _codecs
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.vision import VisionDataset

from .errors import DataMissingError, UnsafeDataError

__all__ = [
    "CIFAR_CLASSES",
    "CIFAR_SIZES",
    "BatchUnpickler",
    "cifar",
    "cifar_files",
    "cifar_missing",
    "cifar_present",
    "cifar_root",
    "read_batch",
]


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only callables a CIFAR batch pickle may name: how numpy pickles arrays (protocols
    2-5, numpy 1 and 2 module names) and how Python 3 pickles bytes under protocol 2."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _codecs.encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


_ALLOWED = _numpy_globals()


class _Refused(pickle.UnpicklingError):
    """A global or reference the CIFAR format never holds (not a malformed stream)."""


class BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches only: any global outside :data:`_ALLOWED` is refused unimported."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"it references {module}.{name}"[:120]) from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("it holds persistent references")


def read_batch(path: str | Path) -> Any:
    """One CIFAR pickle (a batch or the meta file), or :class:`UnsafeDataError` naming it."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return BatchUnpickler(f, encoding="latin1").load()
    except _Refused as exc:
        raise UnsafeDataError(
            f"{path} is not a CIFAR batch file: {exc}, which CIFAR data never holds; "
            "refused without running it"
        ) from None
    except OSError as exc:
        raise DataMissingError(
            f"cannot read {path} ({exc.strerror or type(exc).__name__})"
        ) from None
    except Exception as exc:  # truncated, not a pickle, or an array that does not rebuild
        raise UnsafeDataError(
            f"{path} is not a readable CIFAR batch file ({type(exc).__name__}: {str(exc)[:80]})"
        ) from None


def _batch(path: Path, label_key: str) -> tuple[np.ndarray, list[int]]:
    """The images (N, 3072) uint8 and labels of a batch file, after checking their form."""
    entry = read_batch(path)
    data = entry.get("data") if isinstance(entry, dict) else None
    labels = entry.get(label_key, entry.get("labels")) if isinstance(entry, dict) else None
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == 3072
    ):
        raise UnsafeDataError(
            f"{path} is not a CIFAR batch file: 'data' must be a uint8 array of N x 3072 pixels"
        )
    if not (isinstance(labels, (list, np.ndarray)) and len(labels) == len(data)):
        raise UnsafeDataError(
            f"{path} is not a CIFAR batch file: '{label_key}' must hold one label per image"
        )
    try:
        labels = [int(y) for y in labels]
    except (TypeError, ValueError):
        raise UnsafeDataError(
            f"{path} is not a CIFAR batch file: its labels are not integers"
        ) from None
    return data, labels


class _Present:
    """Mixin: files present is enough (no per-load MD5 of 180 MB); every file is read with
    :class:`BatchUnpickler` instead of ``pickle.load``."""

    base_folder: str
    train_list: list
    test_list: list
    meta: dict
    root: str

    def __init__(
        self,
        root: str | Path,
        train: bool = True,
        transform=None,
        target_transform=None,
        download: bool = False,
    ) -> None:
        VisionDataset.__init__(self, root, transform=transform, target_transform=target_transform)
        self.train = train
        if download:
            self.download()  # torchvision's: verifies the archive's MD5
        if not self._check_integrity():
            raise RuntimeError("Dataset not found. You can use download=True to download it")
        label_key = "fine_labels" if self.meta["key"] == "fine_label_names" else "labels"
        data, targets = [], []
        for name, _ in self.train_list if train else self.test_list:
            images, labels = _batch(Path(self.root, self.base_folder, name), label_key)
            data.append(images)
            targets += labels
        self._load_meta()
        bad = [y for y in targets if not 0 <= y < len(self.classes)]
        if bad:
            raise UnsafeDataError(
                f"{Path(self.root, self.base_folder)} has label {bad[0]} but "
                f"{len(self.classes)} classes"
            )
        self.data = np.vstack(data).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))  # HWC
        self.targets = targets

    def _check_integrity(self) -> bool:
        files = [f for f, _ in self.train_list + self.test_list] + [self.meta["filename"]]
        return all(os.path.isfile(os.path.join(self.root, self.base_folder, f)) for f in files)

    def _load_meta(self) -> None:
        path = Path(self.root, self.base_folder, self.meta["filename"])
        data = read_batch(path)
        classes = data.get(self.meta["key"]) if isinstance(data, dict) else None
        if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
            raise UnsafeDataError(
                f"{path} is not a CIFAR meta file: '{self.meta['key']}' must list the class names"
            )
        self.classes = classes
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class Cifar10(_Present, CIFAR10):
    pass


class Cifar100(_Present, CIFAR100):
    pass


CIFAR_CLASSES = {"cifar10": Cifar10, "cifar100": Cifar100}
_PRETTY = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
#: images per split of the official files (``cifar_plan`` states them without reading 180 MB)
CIFAR_SIZES = {"train": 50000, "eval": 10000}


def cifar_root(name: str, root: Path) -> Path:
    """The folder that holds ``cifar-10-batches-py/`` (or CIFAR-100's): ``root``, or its parent
    when the user pointed at the batches folder itself."""
    return root.parent if root.name == CIFAR_CLASSES[name].base_folder else root


def cifar_files(name: str) -> list[str]:
    """The files a CIFAR dataset reads inside its batches folder, in order."""
    cls = CIFAR_CLASSES[name]
    return [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def cifar_present(name: str, root: Path) -> bool:
    """Every file of :func:`cifar_files` under ``root`` (as :func:`cifar_root` reads it)."""
    folder = cifar_root(name, root) / CIFAR_CLASSES[name].base_folder
    return all((folder / f).is_file() for f in cifar_files(name))


def cifar_missing(name: str, root: Path, download_hint: str | None = None) -> str:
    """The one line for CIFAR files absent from ``root``. ``download_hint``: the option of the
    running command that fetches them (train's ``--download``); None where it has none."""
    cls, root = CIFAR_CLASSES[name], cifar_root(name, root)
    where = (
        f"no {_PRETTY[name]} data in {root} (expected {root / cls.base_folder}/, the python "
        f"version from {cls.url} unpacked there); "
    )
    if download_hint:
        return where + (
            f"pass {download_hint} to fetch it, --data-root DIR or AFICTL_DATA to look "
            "elsewhere, or train offline with --data shapes"
        )
    return where + "pass --data-root DIR or set AFICTL_DATA to look elsewhere"


def cifar(
    name: str,
    root: Path,
    split: str,
    transform,
    download: bool = False,
    download_hint: str | None = None,
):
    """The train or test split of CIFAR-10/100 stored under ``root``; missing files are
    :func:`cifar_missing`'s line (naming ``download_hint``, when the caller has one)."""
    cls, root = CIFAR_CLASSES[name], cifar_root(name, root)
    if not cifar_present(name, root):
        if not download:
            raise DataMissingError(cifar_missing(name, root, download_hint))
        try:
            root.mkdir(parents=True, exist_ok=True)
            cls(str(root), train=True, download=True)
        except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
            raise DataMissingError(
                f"could not download {_PRETTY[name]} into {root} "
                f"({str(exc).splitlines()[0][:100]}); "
                f"fetch {cls.url} by hand and unpack it there, or train offline with --data shapes"
            ) from None
    try:
        return cls(str(root), train=split == "train", transform=transform)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError) as exc:
        raise DataMissingError(
            f"{root / cls.base_folder} is not readable {_PRETTY[name]} data ({type(exc).__name__}: "
            f"{str(exc)[:100]})"
        ) from None
