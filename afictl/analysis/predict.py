"""Top-k classes of a checkpoint for image files (``afictl predict``).

Every image goes through the checkpoint's own eval preprocessing: the transforms ``afictl eval``
applies for its recorded dataset and input size (:func:`afictl.data.eval_transform`: resize,
center crop for ImageNet-sized inputs, the dataset's normalisation). Files are decoded as the
analyses decode them (:func:`afictl.analysis.inputs.load_image`): one that cannot be read is
skipped with a warning; when none can be, that is one error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torchvision.datasets.folder import IMG_EXTENSIONS

from ..checkpoint import model_from_checkpoint
from ..data import eval_transform
from ..errors import UserError
from ..models import get_model_info
from ..validate import check_options
from .inputs import load_image

__all__ = ["Prediction", "PredictReport", "checkpoint_input", "image_files", "predict_images"]


@dataclass(frozen=True)
class Prediction:
    """One of an image's top-k classes: ``rank`` 1 is the most probable; ``probability`` is
    the softmax of the logits (over all classes)."""

    image: str
    rank: int
    class_name: str
    index: int
    probability: float


@dataclass
class PredictReport:
    """The rows (``topk`` per image read, images in the order given) and the images skipped,
    one warning line each (``afictl: warning: ...``)."""

    arch: str
    checkpoint: str
    topk: int
    rows: list[Prediction] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def images(self) -> int:
        return len({r.image for r in self.rows})


def image_files(paths: Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """The files named, and every image file (by extension, as ImageFolder counts them) in
    each folder named and its subfolders, sorted; with a warning for each folder without any.
    Paths that do not exist are kept: reading them gives their warning."""
    files: list[Path] = []
    warnings: list[str] = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(path)
            continue
        found = sorted(
            p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(IMG_EXTENSIONS)
        )
        if not found:
            warnings.append(f"afictl: warning: no image files in folder {path}")
        files += found
    return files, warnings


def checkpoint_input(ckpt: dict[str, Any]) -> tuple[str, int]:
    """(dataset, input size) whose eval transforms the checkpoint's model expects: what
    ``afictl eval`` uses for it without ``--data`` (recorded config, else the model's home)."""
    config = ckpt.get("config") or {}
    info = get_model_info(ckpt["arch"])
    dataset = config.get("dataset") or info.home_dataset
    size = config.get("input_size") or ckpt.get("input_size") or info.input_size
    return str(dataset), int(size)


def _names(ckpt: dict[str, Any]) -> list[str]:
    n = int(ckpt["num_classes"])
    names = ckpt.get("class_names")
    return [str(c) for c in names] if names and len(names) == n else [str(i) for i in range(n)]


def _load(
    checkpoint: str | Path, arch: str | None, device: torch.device
) -> tuple[Any, dict[str, Any]]:
    try:
        model, ckpt = model_from_checkpoint(checkpoint, arch=arch, map_location="cpu")
    except KeyError as exc:  # an afictl checkpoint missing a field
        raise UserError(
            f"{checkpoint} is not a complete afictl checkpoint (no {exc} field)"
        ) from None
    return model.to(device).eval(), ckpt


def _read(files: Sequence[Path], transform: Callable, report: PredictReport) -> list[tuple]:
    """(name, tensor) of each file that reads; a warning in ``report`` for each that does not."""
    read = []
    for path in files:
        try:
            read.append((str(path), transform(load_image(path))))
        except UserError as exc:
            report.skipped.append(f"afictl: warning: {exc}; skipped")
    return read


@torch.no_grad()
def _top(model: Any, batch: list[tuple], names: list[str], k: int, device: Any) -> list:
    x = torch.stack([t for _, t in batch]).to(device)
    probs = model(x).float().softmax(dim=1)
    p, idx = probs.topk(k, dim=1)
    return [
        Prediction(name, rank + 1, names[int(i)], int(i), round(float(q), 6))
        for (name, _), ps, ids in zip(batch, p.cpu(), idx.cpu(), strict=True)
        for rank, (q, i) in enumerate(zip(ps, ids, strict=True))
    ]


def predict_images(
    files: Sequence[str | Path],
    checkpoint: str | Path,
    *,
    arch: str | None = None,
    topk: int = 5,
    batch_size: int = 64,
    device: str = "auto",
    progress: Callable[..., None] | None = None,
) -> PredictReport:
    """The ``topk`` most probable classes of each image file under ``checkpoint``.

    ``arch`` names the model of a plain state dict (or the one expected); ``progress()`` is
    called once per file. ``topk`` above the checkpoint's classes, or no file readable, is a
    :class:`UserError`; an unreadable file is a warning in ``report.skipped``.
    """
    from ..train.distributed import pick_device

    opts = check_options({"device": device, "batch_size": batch_size})
    if topk < 1:
        raise UserError(f"--topk {topk}: give at least 1")
    dev = pick_device(opts["device"])
    model, ckpt = _load(checkpoint, arch, dev)
    names = _names(ckpt)
    if topk > len(names):
        raise UserError(f"--topk {topk} is more than the {len(names)} classes of {ckpt['path']}")
    transform = eval_transform(*checkpoint_input(ckpt))
    report = PredictReport(ckpt["arch"], str(ckpt["path"]), topk)
    size = opts["batch_size"]
    for start in range(0, len(files), size):
        chunk = files[start : start + size]
        batch = _read([Path(f) for f in chunk], transform, report)
        if batch:
            report.rows += _top(model, batch, names, topk, dev)
        if progress is not None:
            for _ in chunk:
                progress()
    if not report.rows:
        if not files:
            raise UserError("no image given")
        first = report.skipped[0].removeprefix("afictl: warning: ").removesuffix("; skipped")
        many = f"none of the {len(files)} images could be read (first: {first})"
        raise UserError(first if len(files) == 1 else many)
    return report
