"""Where a run stands (:class:`RunProgress`), seeding, RNG state capture/restore, and the stop
flag set by SIGINT/SIGTERM.

RNG states are stored as tensors and plain ints so that checkpoints load with
``torch.load(weights_only=True)``. Each process saves the CUDA generator of its own device only
(``cuda``: one state, ``cuda_device``: that device's index) and restores it onto its own
device, whatever the node's layout at resume; checkpoints written before hold every visible
device's state (a list): the entry of the process's device is taken.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..checkpoint import CheckpointError
from .metrics import Sums

__all__ = [
    "CUDA_KEYS",
    "DeviceLayoutError",
    "RunProgress",
    "StopFlag",
    "cuda_state_problem",
    "cpu_threads",
    "deterministic_mode",
    "get_rng_state",
    "seed_all",
    "set_rng_state",
]


@dataclass
class RunProgress:
    """Where a run stands: epochs and batches done, this process's running sums of the epoch in
    progress, the best so far and every epoch's row. :func:`~afictl.train.engine.train_epoch`
    advances it, the run keeps it, the checkpoint holds it
    (:class:`~afictl.train.checkpointing.TrainCheckpoint`)."""

    epoch: int = 0  # epochs completed
    step: int = 0  # batches into the next epoch (an interruption mid-epoch)
    sums: Sums = field(default_factory=Sums)
    seconds: float = 0.0  # training time of the epoch in progress
    best_top1: float = -1.0
    best_epoch: int = 0  # what best.pt holds (once the current epoch is saved)
    metrics: list = field(default_factory=list)  # every epoch's row
    interrupted: str | None = None  # the signal that stopped the run (not stored)
    nonfinite: bool = False  # the loss became NaN/inf (not stored)


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_mode(on: bool) -> Iterator[None]:
    """Bit-reproducible kernels where torch has them (``--deterministic``), else cuDNN autotuning;
    the process's previous settings come back afterwards (the library may run inside tests)."""
    before = (
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        # warn_only: an op without a deterministic kernel warns instead of killing the run
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[:2]
        torch.use_deterministic_algorithms(before[2], warn_only=before[3])


def _busy_cpus() -> float | None:
    """Other runnable tasks right now (``/proc/loadavg`` field 4, sampled; this process
    excluded)."""
    samples = []
    try:
        for _ in range(5):
            with open("/proc/loadavg") as f:
                samples.append(int(f.read().split()[3].split("/")[0]) - 1)
            time.sleep(0.02)
    except (OSError, ValueError, IndexError):  # not Linux
        return None
    return sorted(samples)[len(samples) // 2]


@contextlib.contextmanager
def cpu_threads(requested: int | None, auto: bool) -> Iterator[str]:
    """Intra-op CPU threads for the run; yields a note for the log ("" when nothing changed).

    ``requested`` wins; else OMP_NUM_THREADS; else torch's default (one per core) unless the
    machine is busy: with other processes running, threads that wait for each other at every
    operation lose most of their time slices (measured on 2 busy cores: 35 images/s with two
    threads, 150 with one), so a busy machine gets one thread per idle core, at least one.
    ``auto`` is off for ``--deterministic`` (results are bit-equal only for equal thread counts,
    so it keeps torch's default) and on GPUs.
    """
    before = torch.get_num_threads()
    n, note = before, ""
    if requested:
        n = requested
    elif auto and "OMP_NUM_THREADS" not in os.environ and before > 1:
        busy = _busy_cpus()
        if busy is not None and busy > 0:
            n = max(1, min(before, (os.cpu_count() or before) - busy))
            if n < before:
                note = (
                    f"{n} CPU thread{'s' if n > 1 else ''} "
                    f"({busy} other busy processes; --threads N to choose)"
                )
    torch.set_num_threads(n)
    try:
        yield note
    finally:
        torch.set_num_threads(before)


#: The keys of a process's RNG state that hold its CUDA generator (absent without CUDA).
CUDA_KEYS = ("cuda", "cuda_device")
#: Sizes of the byte tensor torch's CUDA generator gets and sets: seed and offset, 8 bytes each,
#: or the seed alone (what ``set_rng_state`` accepts besides); other sizes would fail there.
_CUDA_STATE_BYTES = (16, 8)


class DeviceLayoutError(CheckpointError):
    """The checkpoint holds no CUDA RNG state for this process's device (the GPUs visible to
    each process changed since it was written): one line, exit 2."""


def _own_cuda_index(device: torch.device | None) -> int:
    """The CUDA device this process draws from: the run's device, else the current one."""
    if device is not None and device.type == "cuda" and device.index is not None:
        return device.index
    return torch.cuda.current_device()


def get_rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Every RNG the loop draws from, as tensors and plain types; of the CUDA generators only
    that of ``device`` (the run's; the current CUDA device when it is None or the CPU)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "numpy": torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64)),
        "numpy_pos": int(pos),
        "numpy_gauss": [int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        index = _own_cuda_index(device)
        state["cuda"] = torch.cuda.get_rng_state(index)
        state["cuda_device"] = index
    return state


def _cuda_state_for(state: dict[str, Any], index: int) -> torch.Tensor:
    """The saved CUDA generator state that device ``index`` continues."""
    saved = state["cuda"]
    if isinstance(saved, torch.Tensor):  # the process's own stream, whichever device it was on
        return saved.cpu()
    if index < len(saved):  # written before: every visible device's state, this one's by index
        return saved[index].cpu()
    raise DeviceLayoutError(
        f"the checkpoint's CUDA RNG states are of {len(saved)} GPU(s) per process (written by "
        f"an older afictl) and none is of this process's GPU cuda:{index} "
        f"({torch.cuda.device_count()} visible): the device layout changed; resume with the "
        "GPUs each process saw when it was written (CUDA_VISIBLE_DEVICES)"
    )


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore what :func:`get_rng_state` captured; the CUDA generator onto ``device`` (as
    :func:`get_rng_state` picks it). Raises :class:`DeviceLayoutError` for an old checkpoint
    without a state of that device."""
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    has_gauss, gauss = state["numpy_gauss"]
    keys = state["numpy"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], int(has_gauss), float(gauss)))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        index = _own_cuda_index(device)
        torch.cuda.set_rng_state(_cuda_state_for(state, index), index)


def _is_cuda_state(value: Any) -> bool:
    return (
        isinstance(value, torch.Tensor)
        and value.dtype == torch.uint8
        and value.dim() == 1
        and value.numel() in _CUDA_STATE_BYTES
    )


def cuda_state_problem(state: dict[str, Any]) -> str | None:
    """What is wrong with the CUDA part of a saved RNG state (None: nothing, or no CUDA part):
    checked before a resume, since it cannot be tried on a machine without CUDA."""
    if "cuda" not in state:
        return None if "cuda_device" not in state else "has a device index but no state"
    saved = state["cuda"]
    if isinstance(saved, list):  # written before: one per visible device
        ok = bool(saved) and all(map(_is_cuda_state, saved)) and "cuda_device" not in state
        return None if ok else "is not a list of CUDA generator states"
    if not _is_cuda_state(saved):
        return "is not a CUDA generator state (a byte tensor of 8 or 16 bytes)"
    index = state.get("cuda_device")
    if type(index) is not int or index < 0:
        return "has no device index (cuda_device, a non-negative integer)"
    return None


class StopFlag:
    """Context manager: SIGINT/SIGTERM set :attr:`signal_name` instead of killing the process.

    The loop checks it after each step, writes a checkpoint and returns. A second Ctrl-C
    stops at once (KeyboardInterrupt), for when a step hangs.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals stay as they are
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
