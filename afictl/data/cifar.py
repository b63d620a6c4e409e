"""CIFAR-10 and CIFAR-100 through torchvision's loaders (python pickle batches).

torchvision checks the MD5 of every batch file on each load; we check that the files exist
and let unpickling fail loudly instead, so that a re-packed or reduced copy (and the tests'
tiny fake batches) load too. ``--download`` uses torchvision's downloader, which does verify
the archive's MD5.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from torchvision.datasets import CIFAR10, CIFAR100

from .errors import DataMissingError

__all__ = ["CIFAR_CLASSES", "cifar"]


class _Present:
    """Mixin: files present is enough (no per-load MD5 of 180 MB)."""

    base_folder: str
    train_list: list
    test_list: list
    meta: dict
    root: str

    def _check_integrity(self) -> bool:
        files = [f for f, _ in self.train_list + self.test_list] + [self.meta["filename"]]
        return all(os.path.isfile(os.path.join(self.root, self.base_folder, f)) for f in files)

    def _load_meta(self) -> None:
        with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
            data = pickle.load(f, encoding="latin1")
        self.classes = data[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class Cifar10(_Present, CIFAR10):
    pass


class Cifar100(_Present, CIFAR100):
    pass


CIFAR_CLASSES = {"cifar10": Cifar10, "cifar100": Cifar100}
_PRETTY = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


def cifar(name: str, root: Path, split: str, transform, download: bool = False):
    """The train or test split of CIFAR-10/100 stored under ``root``."""
    cls = CIFAR_CLASSES[name]
    if root.name == cls.base_folder:  # the user pointed at the batches folder itself
        root = root.parent
    probe = cls.__new__(cls)
    probe.root = str(root)
    if not probe._check_integrity():
        if not download:
            raise DataMissingError(
                f"no {_PRETTY[name]} data in {root} (expected {root / cls.base_folder}/, the "
                f"python version from {cls.url} unpacked there); pass --download to fetch it, "
                "--data-root DIR or AFICTL_DATA to look elsewhere, or train offline with --data shapes"
            )
        try:
            root.mkdir(parents=True, exist_ok=True)
            cls(str(root), train=True, download=True)
        except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
            raise DataMissingError(
                f"could not download {_PRETTY[name]} into {root} ({str(exc).splitlines()[0][:100]}); "
                f"fetch {cls.url} by hand and unpack it there, or train offline with --data shapes"
            ) from None
    try:
        return cls(str(root), train=split == "train", transform=transform)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError) as exc:
        raise DataMissingError(
            f"{root / cls.base_folder} is not readable {_PRETTY[name]} data ({type(exc).__name__}: "
            f"{str(exc)[:100]})"
        ) from None
