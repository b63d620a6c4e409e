"""What the analyses feed a checkpoint: its images, preprocessed as it was trained, and its data.

Preprocessing comes from the checkpoint's recorded dataset and input size
(:func:`afictl.data.eval_transform`): a 32-pixel CIFAR model sees the image resized to 32x32, a
224-pixel model sees resize 256 + center crop 224.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader

from ..data import eval_transform
from ..data.decode import check_claim
from ..data.loaders import GuardedLoader
from ..data.transforms import is_small, normalization
from ..errors import UserError
from ..models import get_model_info

__all__ = [
    "ModelInput",
    "class_name",
    "eval_loader",
    "load_image",
    "model_input",
    "model_view",
    "resolve_class",
    "thumbnail",
    "view_of",
]


def load_image(path: str | Path) -> Image.Image:
    """An RGB image, or :class:`UserError` naming the file (missing, a folder, not an image)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"image not found: {path}")
    if not path.is_file():
        raise UserError(f"{path} is not an image file")
    try:
        with warnings.catch_warnings():  # PIL's warning would precede our one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            check_claim(img.size)  # PIL only warns between 1x and 2x its pixel limit
            return img.convert("RGB")
    # DecompressionBombError: the header claims more pixels than PIL agrees to decode
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path} is not a readable image ({reason[:120]})") from None


@dataclass(frozen=True)
class ModelInput:
    """How a checkpoint wants its input: dataset (for normalisation) and input size."""

    dataset: str
    input_size: int

    @classmethod
    def of(cls, ckpt: dict[str, Any]) -> ModelInput:
        config = ckpt.get("config") or {}
        info = get_model_info(ckpt["arch"])
        return cls(
            config.get("dataset") or info.home_dataset,
            int(config.get("input_size") or info.input_size),
        )

    def tensor(self, image: Image.Image) -> torch.Tensor:
        """The normalised (3, S, S) tensor the model was evaluated on."""
        return eval_transform(self.dataset, self.input_size)(image)

    def view(self, image: Image.Image) -> np.ndarray:
        """:meth:`tensor` un-normalised: the (S, S, 3) RGB in [0, 1] the model saw."""
        return model_view(self.tensor(image), self.dataset)


def model_input(ckpt: dict[str, Any]) -> ModelInput:
    """How ``ckpt`` wants its input (its recorded dataset and input size)."""
    return ModelInput.of(ckpt)


def model_view(x: torch.Tensor, dataset: str) -> np.ndarray:
    """A normalised (3, S, S) input as (S, S, 3) RGB in [0, 1]: exactly the pixels the model got
    (squashed to S x S, or center-cropped), for figures that draw a heatmap over them."""
    mean, std = normalization(dataset)
    rgb = x.detach().cpu().float() * torch.tensor(std)[:, None, None]
    rgb = rgb + torch.tensor(mean)[:, None, None]
    return rgb.clamp(0.0, 1.0).permute(1, 2, 0).numpy().astype(np.float32)


def view_of(image: Image.Image, input_size: int, max_side: int = 256) -> np.ndarray:
    """The part of ``image`` the model sees, at the photo's resolution and aspect, as float RGB
    in [0, 1] (for the model's own pixels, squashed to S x S, see :meth:`ModelInput.view`).

    Small-input pipelines take the whole image; ImageNet pipelines the center square of side
    ``min(w, h) * 224 / 256``. The view is scaled so that its longer side is at most
    ``max_side`` pixels (figure size).
    """
    w, h = image.size
    if not is_small(input_size):
        side = min(w, h) * input_size / round(input_size * 256 / 224)
        left, top = (w - side) / 2, (h - side) / 2
        image = image.crop((round(left), round(top), round(left + side), round(top + side)))
        w, h = image.size
    return thumbnail(image, max_side)


def thumbnail(image: Image.Image, max_side: int = 256) -> np.ndarray:
    """``image`` as float RGB in [0, 1], scaled down so that its longer side is ``max_side``."""
    w, h = image.size
    scale = min(1.0, max_side / max(w, h))
    if scale < 1.0:
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255.0


def class_name(ckpt: dict[str, Any], index: int) -> str:
    """The class's name when the checkpoint recorded them, else its index as text."""
    names = ckpt.get("class_names")
    return str(names[index]) if names and 0 <= index < len(names) else str(index)


def resolve_class(ckpt: dict[str, Any], target: str) -> int:
    """``--target-class``: an index, or a class name recorded in the checkpoint (any case)."""
    n = int(ckpt["num_classes"])
    names = [str(c) for c in ckpt.get("class_names") or []]
    if target.strip().lstrip("-").isdigit():
        idx = int(target)
        if not 0 <= idx < n:
            raise UserError(f"--target-class {idx} out of range 0..{n - 1} for {ckpt['path']}")
        return idx
    lowered = [c.lower() for c in names]
    if target.strip().lower() in lowered:
        return lowered.index(target.strip().lower())
    hint = (
        f"; classes: {', '.join(names[:12])}{', ...' if len(names) > 12 else ''}"
        if names
        else " (the checkpoint records no class names; give an index)"
    )
    raise UserError(f"unknown class {target!r} for {ckpt['path']}{hint}")


def eval_loader(
    ckpt: dict[str, Any],
    data: str | None = None,
    data_root: str | Path | None = None,
    *,
    batch_size: int = 128,
    workers: int = 0,
) -> DataLoader:
    """The evaluation data of a checkpoint: ``data``/``data_root`` if given, else its recorded run.

    With no ``data``, the dataset, root, split, size and seed come from the checkpoint's run
    configuration (``afictl selectivity --stage conv3`` needs nothing else).
    """
    from ..data import build_dataset  # the data package builds every dataset by name

    config = ckpt.get("config") or {}
    spec = model_input(ckpt)
    if data is None:
        data = config.get("dataset") or spec.dataset
        root = data_root if data_root is not None else config.get("data_root")
        split = config.get("eval_split") or "eval"
        size = config.get("data_size")
        seed = int(config.get("seed") or 0)
    else:
        root, split, size, seed = data_root, "eval", None, 0
        if data == config.get("dataset") and data_root is None:
            root = config.get("data_root")  # same dataset as trained on: its recorded root
        if data == config.get("dataset"):
            size, seed = config.get("data_size"), int(config.get("seed") or 0)
    dataset = build_dataset(
        data, root, split, input_size=spec.input_size, size=size, seed=seed, train_transforms=False
    )
    classes = getattr(dataset, "classes", None)
    if classes is not None and len(classes) != int(ckpt["num_classes"]):
        raise UserError(
            f"{data} has {len(classes)} classes but {ckpt['path']} was trained for "
            f"{ckpt['num_classes']}; pass the dataset it was trained on with --data"
        )
    # guarded: a worker that dies is one line and exit 2, as in training (data/loaders.py)
    return GuardedLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
