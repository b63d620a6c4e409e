"""Small-image datasets decoded once into one uint8 tensor, cached between runs.

A CIFAR-size ImageFolder of 50,000 JPEGs costs seconds to decode; decoding it again every
epoch, one image at a time, is what made the input pipeline a fifth of a CIFAR epoch. Here a
split is decoded once into ``images`` (N, 3, H, W, uint8) and ``labels`` (N, int64) and saved
as a safetensors file (raw arrays: reading it executes nothing) under the cache folder
(``$AFICTL_CACHE``, else ``$XDG_CACHE_HOME/afictl``, else ``~/.cache/afictl``). The file's name
is a digest of the source files' relative names, sizes and modification times, so a changed
folder is decoded again; a cache file that cannot be read or does not hold what its name
promises is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..fileio import atomic_write

__all__ = [
    "DecodedSplit",
    "cache_folder",
    "cached_split",
    "decode_files",
    "source_digest",
]

#: bump when the file layout changes: older cache files are then simply not found
_FORMAT = "afictl-decoded-1"


@dataclass(frozen=True)
class DecodedSplit:
    """A whole split in memory: uint8 images (N, 3, H, W), int64 labels (N,), class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        """Memory the split holds (images and labels)."""
        return sum(t.numel() * t.element_size() for t in (self.images, self.labels))


def cache_folder() -> Path:
    """``$AFICTL_CACHE``, else the user's cache folder (XDG) + ``afictl``."""
    if os.environ.get("AFICTL_CACHE"):
        return Path(os.environ["AFICTL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "afictl"


def source_digest(files: Sequence[Path], root: Path, extra: str = "") -> str:
    """A digest of the files' paths relative to ``root``, sizes and mtimes (and ``extra``)."""
    h = hashlib.sha256(f"{_FORMAT}\0{extra}\0".encode())
    for path in files:
        st = path.stat()
        h.update(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def decode_files(
    files: Sequence[Path],
    labels: Sequence[int],
    classes: list[str],
    load: Callable[[str], torch.Tensor],
    progress: Callable[[], None] | None = None,
) -> DecodedSplit:
    """Decode every file with ``load`` (path -> uint8 (3, H, W)) into one tensor; all images
    must have one size (a :class:`ValueError` names the first that differs)."""
    first = load(str(files[0])) if files else torch.empty(3, 0, 0, dtype=torch.uint8)
    images = torch.empty((len(files), *first.shape), dtype=torch.uint8)
    for i, path in enumerate(files):
        img = first if i == 0 else load(str(path))
        if img.shape != first.shape:
            raise ValueError(f"{path} is {tuple(img.shape)}, not {tuple(first.shape)} as the first")
        images[i] = img
        if progress is not None:
            progress()
    return DecodedSplit(images, torch.as_tensor(list(labels), dtype=torch.int64), list(classes))


def _read(path: Path, digest: str) -> DecodedSplit | None:
    """The split in ``path`` if it is whole and holds what ``digest`` names, else None."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != _FORMAT or meta.get("digest") != digest:
                return None
            images, labels = f.get_tensor("images"), f.get_tensor("labels")
            classes = json.loads(meta["classes"])
    except (OSError, SafetensorError, KeyError, ValueError):
        return None
    ok = images.dtype == torch.uint8 and images.dim() == 4 and labels.dtype == torch.int64
    ok = ok and labels.shape == (len(images),) and isinstance(classes, list)
    if not ok or (len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(classes)):
        return None
    return DecodedSplit(images, labels, [str(c) for c in classes])


def _write(path: Path, split: DecodedSplit, digest: str) -> None:
    """Save atomically: a crash leaves the old file or none, never half a file."""
    from safetensors.torch import save_file

    meta = {"format": _FORMAT, "digest": digest, "classes": json.dumps(split.classes)}
    tensors = {"images": split.images, "labels": split.labels}
    # a cache that can be rebuilt: no fsync, whose cost grows with the split
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta), fsync=False)


def cached_split(
    name: str, digest: str, build: Callable[[], DecodedSplit], folder: Path | None = None
) -> tuple[DecodedSplit, bool]:
    """The split cached under ``name``-``digest``, else ``build()`` saved there; and whether
    the cache was hit. A cache folder that cannot be written costs the cache, not the run."""
    path = (folder or cache_folder()) / f"{name}-{digest}.safetensors"
    if path.is_file():
        found = _read(path, digest)
        if found is not None:
            return found, True
    split = build()
    try:
        _write(path, split, digest)
    except OSError as exc:  # read-only or full cache folder: decode again next time
        print(f"afictl: warning: cannot cache {name} in {path.parent}: {exc}", file=sys.stderr)
    return split, False
