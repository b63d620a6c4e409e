"""Batches of a decoded split (:mod:`afictl.data.tensor_cache`), augmented as whole batches.

A drop-in for the training and evaluation loaders of :func:`afictl.data.loaders.make_loader`:
the same samplers (so the same images in the same order per epoch and per DDP rank, and the
same resume-part-way-into-an-epoch), the same :class:`~afictl.data.loaders.Batch`, but no worker
processes and no per-image work: a batch is one index into the uint8 tensor, padded, cropped,
flipped and normalised at once on the device (:mod:`afictl.data.batch_augment`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from .batch_augment import batch_generator, pad_crop_flip, per_image, pixel_scale
from .loaders import Batch, ResumableSampler, ShardSampler
from .tensor_cache import DecodedSplit

__all__ = ["TensorLoader"]


class _Sized:
    """What the samplers need of a dataset: its length."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class TensorLoader:
    """Batches of ``split`` for one process; ``device`` holds the split when ``on_device``."""

    def __init__(
        self,
        split: DecodedSplit,
        batch_size: int,
        *,
        train: bool,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str = "cpu",
        on_device: bool = False,
        seed: int = 0,
        world: int = 1,
        rank: int = 0,
        pad: int = 4,
        flip: bool = True,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        erase: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.device = torch.device(device)
        store = self.device if on_device else torch.device("cpu")
        self.images, self.labels = split.images.to(store), split.labels.to(store)
        self.dataset = split  # what a DataLoader calls its dataset: len() gives the images
        # the DataLoader's worker-seed generator, which a run reseeds each epoch; unused here:
        # the augmentation is seeded per batch (batch_generator)
        self.generator = torch.Generator()
        self.classes = split.classes
        self.batch_size, self.train = batch_size, train
        self.pad, self.flip = pad, flip
        self._mean, self._std = pixel_scale(mean, std, self.device)  # once, not per batch
        # per image, after the flip on uint8 (--aa) and after normalising (--reprob): timm's order
        self.augment, self.erase = augment, erase
        self.seed, self.rank = seed, rank
        if train:
            self.sampler: ResumableSampler | ShardSampler = ResumableSampler(
                _Sized(len(split)), world=world, rank=rank, seed=seed
            )
            self.drop_last = len(self.sampler) >= batch_size
        else:
            self.sampler, self.drop_last = ShardSampler(len(split), world, rank), False

    @property
    def epoch(self) -> int:
        """The epoch the sampler is set to (``loader.sampler.set_epoch(epoch, skip)``, as for
        the DataLoader): it orders the images and seeds their augmentation."""
        return self.sampler.inner.epoch if isinstance(self.sampler, ResumableSampler) else 0

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        indices = torch.tensor(list(self.sampler), dtype=torch.long)
        first = getattr(self.sampler, "skip", 0) // self.batch_size
        for i in range(len(self)):
            chosen = indices[i * self.batch_size : (i + 1) * self.batch_size]
            yield self._batch(chosen.to(self.images.device), step=first + i)

    def _batch(self, chosen: torch.Tensor, step: int) -> Batch:
        x = self.images[chosen].to(self.device, non_blocking=True)
        g = None
        if self.train:
            g = batch_generator(self.seed, self.epoch, step, self.rank, device=self.device)
            x = pad_crop_flip(x, g, self.pad, self.flip)
            if self.augment is not None:
                x = per_image(x, g, self.augment)
        x = (x.float() - self._mean) / self._std  # batch_augment.normalise
        if g is not None and self.erase is not None:
            x = per_image(x, g, self.erase)
        return Batch(x, self.labels[chosen].to(self.device, non_blocking=True), [])
