"""Data loaders for training and evaluation, single-process or one shard per DDP rank.

- Training order: ``DistributedSampler`` (also with one process, so one code path), reshuffled
  per epoch from ``(seed, epoch)``; it can start part-way into an epoch (resume after SIGTERM).
- Evaluation: every image exactly once across ranks (no padding, unlike DistributedSampler),
  so reduced metrics are exact.
- Unreadable images (:class:`BrokenImage`) are dropped from the batch and handed to the
  caller, which counts them or stops (``--bad-images``).
- Datasets read with ``--decode gpu`` yield encoded JPEGs: their batches carry a list of
  tensors, decoded by :func:`afictl.data.decode.on_device` in the main process.
- A worker process that dies (a native crash in a decoder, the OOM killer) ends the run with
  one line (:class:`DataWorkerError`, exit 2) within torch's liveness check (5 s); the other
  workers are killed, since they ignore SIGTERM (:func:`_worker_init`) and would otherwise
  keep the interpreter's exit waiting for them forever.
- Defaults measured by benchmarks/input_pipeline.py (docs/PERFORMANCE.md, "Input pipeline"):
  :data:`PREFETCH_FACTOR` batches per worker; persistent workers for evaluation only.
"""

from __future__ import annotations

import atexit
import multiprocessing
import re
import signal
import threading
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from torch.utils.data import default_collate as _default_collate

from ..errors import UserError
from .decode import is_raw
from .errors import BrokenImage, DataWorkerError

__all__ = [
    "PREFETCH_FACTOR",
    "Batch",
    "GuardedLoader",
    "ResumableSampler",
    "ShardSampler",
    "collate_skip_broken",
    "make_loader",
]

#: Batches each worker keeps ready (DataLoader's ``prefetch_factor``); measured, see above.
PREFETCH_FACTOR = 2


class Batch(NamedTuple):
    images: torch.Tensor | list[torch.Tensor]  # a list: encoded JPEGs (--decode gpu)
    targets: torch.Tensor
    broken: list[BrokenImage]


def collate_skip_broken(samples: list) -> Batch:
    """Default collation of the readable samples; the unreadable ones listed in ``broken``.

    Under ``--decode gpu`` the samples are uint8 (JPEG bytes, or other formats decoded but not
    transformed) and of different sizes: the batch then holds the list of its images, in order,
    for :func:`afictl.data.decode.on_device`."""
    good = [s for s in samples if not isinstance(s[0], BrokenImage)]
    broken = [s[0] for s in samples if isinstance(s[0], BrokenImage)]
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), broken)
    if any(is_raw(s[0]) for s in good):
        targets = _default_collate([s[1] for s in good])
        return Batch([s[0] for s in good], targets, broken)
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


#: torch's messages for a worker that died (its liveness check, its SIGCHLD handler).
_WORKER_DIED = re.compile(r"DataLoader worker \(pids?(?:\(s\))? ([\d, ]+)\) (.*)")


def _kill_workers() -> None:
    """SIGKILL this process's live daemonic children: DataLoader workers, which ignore SIGTERM,
    the signal ``multiprocessing`` stops them with at exit (the exit would wait forever)."""
    if threading.current_thread() is threading.main_thread():
        # torch's SIGCHLD handler raises in the main thread for each worker that dies, and
        # these are killed on purpose: it would interrupt the joins below at random
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
            child.join(timeout=5)


def _worker_death(exc: BaseException) -> str | None:
    """The one-line reason when ``exc`` is torch's report of a dead worker, else ``None``; the
    signal that killed it (the cause torch chains on) preferred to "exited unexpectedly"."""
    reasons = []
    for err in (exc.__cause__, exc):
        for line in str(err or "").splitlines():
            found = _WORKER_DIED.search(line)
            if found:
                reasons.append(f"worker {found.group(1).strip()} {found.group(2).strip()}")
    return reasons[0].rstrip(". ") if reasons else None


class GuardedLoader(DataLoader):
    """A ``DataLoader`` whose iteration turns a dead worker into :class:`DataWorkerError`
    (one line, exit 2) after killing the surviving workers, instead of a traceback or a hang."""

    def __iter__(self) -> Iterator:
        return self._guarded(super().__iter__())

    @staticmethod
    def _guarded(batches: Iterator) -> Iterator:
        try:
            yield from batches
            return
        except (RuntimeError, ConnectionError, EOFError) as exc:
            # a worker dying while it sends a batch can surface as a reset connection instead
            lost = isinstance(exc, (ConnectionError, EOFError))
            reason = f"worker lost ({type(exc).__name__})" if lost else _worker_death(exc)
            if reason is None:
                raise
        _kill_workers()
        raise DataWorkerError(
            f"a data loader {reason} while reading images; a file that crashes a native decoder "
            "(try --decode pil, which raises on such files) or memory running out (fewer "
            "--workers or a smaller batch)"
        )


_EXIT_HOOKED: list[bool] = []


def _hook_exit() -> None:
    """Once: kill leftover workers at exit, before ``multiprocessing``'s own exit hook (atexit
    runs the last registered first), whatever exception ended the run."""
    if not _EXIT_HOOKED:
        atexit.register(_kill_workers)
        _EXIT_HOOKED.append(True)


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
    persistent_workers: bool | None = None,
    prefetch_factor: int | None = None,
) -> DataLoader:
    """A loader yielding :class:`Batch`; ``batch_size`` is per process.

    ``persistent_workers``: keep the worker processes between epochs; ``None``: for evaluation
    only (training workers restart each epoch, from seeds drawn from ``(seed, epoch)``, which is
    what makes a resume at an epoch boundary exact; ``True`` for training gives that up).
    ``prefetch_factor``: batches per worker kept ready (``None``: :data:`PREFETCH_FACTOR`).
    Both are ignored without workers."""
    if prefetch_factor is not None and prefetch_factor < 1:
        raise UserError(f"prefetch factor must be at least 1, got {prefetch_factor}")
    if train:
        sampler: Sampler[int] = ResumableSampler(dataset, world=world, rank=rank, seed=seed)
        # drop the ragged last batch (a batch of one breaks BatchNorm), unless that is all there is
        drop_last = len(sampler) >= batch_size
    else:
        sampler, drop_last = ShardSampler(len(dataset), world, rank), False
    if workers > 0:
        _hook_exit()
    return GuardedLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_skip_broken,
        pin_memory=pin_memory,
        drop_last=drop_last,
        # training workers start afresh each epoch, seeded from the loader's generator, which the
        # loop reseeds from (seed, epoch): augmentation then resumes exactly at epoch boundaries
        persistent_workers=workers > 0
        and (not train if persistent_workers is None else persistent_workers),
        prefetch_factor=(prefetch_factor or PREFETCH_FACTOR) if workers > 0 else None,
        worker_init_fn=_worker_init if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
    )
