"""ImageFolder datasets (ImageNet and any ``<root>/train`` + ``<root>/val|test`` tree).

Two things beyond torchvision's ``ImageFolder``:

- The eval split is indexed with the *train* split's classes, so a validation folder that
  lacks a class cannot silently shift every label after it.
- An unreadable or corrupt file raises :class:`CorruptImageError` naming the file
  (``on_error="raise"``), or comes back as a :class:`BrokenImage` marker (``on_error="mark"``)
  that the training loader drops and counts.
"""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from .errors import BrokenImage, CorruptImageError, DataMissingError

__all__ = ["EVAL_FOLDERS", "SafeImageFolder", "find_split_dir", "image_folder"]

#: Folder names accepted for the evaluation split, in order of preference.
EVAL_FOLDERS = ("val", "test")


class SafeImageFolder(ImageFolder):
    """``ImageFolder`` with a fixed class list and per-file error handling."""

    def __init__(
        self, root: str | Path, classes: list[str] | None = None, on_error: str = "raise", **kw
    ) -> None:
        self._fixed_classes = classes
        self.on_error = on_error
        super().__init__(str(root), **kw)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        if self._fixed_classes is None:
            return super().find_classes(directory)
        present = {p.name for p in Path(directory).iterdir() if p.is_dir()}
        extra = sorted(present - set(self._fixed_classes))
        if extra:
            raise DataMissingError(
                f"{directory} has classes that the train split lacks: {', '.join(extra[:5])}"
            )
        return list(self._fixed_classes), {c: i for i, c in enumerate(self._fixed_classes)}

    @staticmethod
    def make_dataset(
        directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False
    ):
        # A class folder missing from the eval split is fine (its images are just absent).
        return ImageFolder.make_dataset(
            directory,
            class_to_idx,
            extensions=extensions,
            is_valid_file=is_valid_file,
            allow_empty=True,
        )

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        try:
            sample = self.loader(path)
            if self.transform is not None:
                sample = self.transform(sample)
        except Exception as exc:  # PIL raises OSError, UnidentifiedImageError, SyntaxError, ...
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120] or type(exc).__name__
            if self.on_error == "mark":
                return BrokenImage(path, reason), target
            raise CorruptImageError(
                f"cannot read image {path} ({reason}); pass --bad-images skip to skip such files"
            ) from None
        if self.target_transform is not None:
            target = self.target_transform(target)
        return sample, target


def find_split_dir(root: Path, split: str) -> Path | None:
    """``<root>/train`` for the train split; ``<root>/val`` or ``<root>/test`` for eval."""
    names = ("train",) if split == "train" else EVAL_FOLDERS
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def _expect(name: str, root: Path) -> str:
    return (
        f"no {name} data in {root} (expected {root}/train/<class>/*.jpg and "
        f"{root}/val/<class>/*.jpg, or test/ for the eval split); pass --data-root DIR or set "
        "AFICTL_DATA, or train offline with --data shapes"
    )


def image_folder(
    name: str, root: Path, split: str, transform, on_error: str = "raise", loader=None
) -> SafeImageFolder:
    """The ``split`` ("train" or "eval") of an ImageFolder tree under ``root``; ``loader``
    reads one file (default PIL, see :mod:`afictl.data.decode`)."""
    split_dir = find_split_dir(root, split)
    train_dir = find_split_dir(root, "train")
    if split_dir is None:
        raise DataMissingError(_expect(name, root))
    classes = None
    if split != "train" and train_dir is not None:
        classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    try:
        kw = {} if loader is None else {"loader": loader}
        ds = SafeImageFolder(
            split_dir, classes=classes, on_error=on_error, transform=transform, **kw
        )
    except FileNotFoundError as exc:  # no class folders at all
        raise DataMissingError(f"{_expect(name, root)} [{str(exc).splitlines()[0]}]") from None
    if len(ds) == 0:
        exts = " ".join(IMG_EXTENSIONS)
        raise DataMissingError(
            f"no images in {split_dir} (looked for {exts} inside its class folders)"
        )
    return ds
