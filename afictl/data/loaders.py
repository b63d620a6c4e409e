"""Data loaders for training and evaluation, single-process or one shard per DDP rank.

- Training order: ``DistributedSampler`` (also with one process, so one code path), reshuffled
  per epoch from ``(seed, epoch)``; it can start part-way into an epoch (resume after SIGTERM).
- Evaluation: every image exactly once across ranks (no padding, unlike DistributedSampler),
  so reduced metrics are exact.
- Unreadable images (:class:`BrokenImage`) are dropped from the batch and handed to the
  caller, which counts them or stops (``--bad-images``).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from torch.utils.data import default_collate as _default_collate

from .errors import BrokenImage

__all__ = ["Batch", "ResumableSampler", "ShardSampler", "collate_skip_broken", "make_loader"]


class Batch(NamedTuple):
    images: torch.Tensor
    targets: torch.Tensor
    broken: list[BrokenImage]


def collate_skip_broken(samples: list) -> Batch:
    """Default collation of the readable samples; the unreadable ones listed in ``broken``."""
    good = [s for s in samples if not isinstance(s[0], BrokenImage)]
    broken = [s[0] for s in samples if isinstance(s[0], BrokenImage)]
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), broken)
    images, targets = _default_collate(good)
    return Batch(images, targets, broken)


class ResumableSampler(Sampler[int]):
    """A ``DistributedSampler`` whose epoch can start after its first ``skip`` samples."""

    def __init__(
        self, dataset: Dataset, *, world: int, rank: int, seed: int, shuffle: bool = True
    ) -> None:
        self.inner = DistributedSampler(
            dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed
        )
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        indices = list(self.inner)
        return iter(indices[self.skip :])

    def __len__(self) -> int:
        return len(self.inner) - self.skip


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: each image on exactly one rank, none repeated."""

    def __init__(self, n: int, world: int = 1, rank: int = 0) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _worker_init(_: int) -> None:
    # Ctrl-C, and a SIGTERM sent to the process group (schedulers, `kill -- -PGID`), reach the
    # workers too; they leave it to the main process, which finishes its step, writes a
    # checkpoint and shuts them down (a worker killed by the signal would abort all that).
    # Orphaned workers still exit: they watch their parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    workers: int = 0,
    seed: int = 0,
    world: int = 1,
    rank: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A loader yielding :class:`Batch`; ``batch_size`` is per process."""
    if train:
        sampler: Sampler[int] = ResumableSampler(dataset, world=world, rank=rank, seed=seed)
        # drop the ragged last batch (a batch of one breaks BatchNorm), unless that is all there is
        drop_last = len(sampler) >= batch_size
    else:
        sampler, drop_last = ShardSampler(len(dataset), world, rank), False
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_skip_broken,
        pin_memory=pin_memory,
        drop_last=drop_last,
        # training workers start afresh each epoch, seeded from the loader's generator, which the
        # loop reseeds from (seed, epoch): augmentation then resumes exactly at epoch boundaries
        persistent_workers=workers > 0 and not train,
        worker_init_fn=_worker_init if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
    )
