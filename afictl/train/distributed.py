"""DDP helpers: one process per device, started by ``torchrun`` (env:// rendezvous).

Only rank 0 logs and writes files; metrics are summed across ranks with ``all_reduce``.
Backends: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..errors import UserError

__all__ = [
    "DistContext",
    "all_reduce_sum",
    "any_rank",
    "barrier",
    "broadcast_object",
    "cleanup",
    "pick_device",
    "setup",
    "sync_buffers",
]


@dataclass(frozen=True)
class DistContext:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def pick_device(device: str, local_rank: int = 0, world: int = 1) -> torch.device:
    """The device of this process (``cpu``, ``cuda``, ``cuda:N`` or ``auto``: CUDA when present),
    made CUDA's current device (``torch.cuda.set_device``) when it is one.

    ``cuda`` follows torchrun's and SLURM's conventions: ``local_rank`` indexes the visible
    devices when there are enough, and a process that sees one device (a scheduler giving each
    rank one GPU, e.g. SLURM ``--gpus-per-task=1``) takes it. ``cuda:N`` is for one process:
    under torchrun (``world`` > 1) it would put every rank on the same GPU, a one-line error.
    """
    device = device.lower()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if not re.fullmatch(r"cuda(:\d+)?", device):
        raise UserError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto")
    if not torch.cuda.is_available():
        raise UserError(f"--device {device} asked for, but torch sees no CUDA device; use cpu")
    dev = _cuda_device(device, local_rank, world, torch.cuda.device_count())
    # Always, not only under DDP: pinned-memory copies, NCCL and the caching allocator act on
    # the current device, which stays cuda:0 unless set.
    torch.cuda.set_device(dev)
    return dev


def _cuda_device(device: str, local_rank: int, world: int, count: int) -> torch.device:
    """The CUDA device ``device`` (``cuda`` or ``cuda:N``) means for this rank."""
    if device != "cuda":
        index = int(device.partition(":")[2])
        if world > 1:
            raise UserError(
                f"--device {device} under torchrun would put all {world} ranks on one GPU; "
                "use --device cuda (each rank takes cuda:LOCAL_RANK)"
            )
        if index >= count:
            raise UserError(f"--device {device}: torch sees {count} CUDA device(s)")
        return torch.device("cuda", index)
    if local_rank < count:
        return torch.device("cuda", local_rank)
    if count == 1:  # one GPU made visible to this rank alone (CUDA_VISIBLE_DEVICES per task)
        return torch.device("cuda", 0)
    raise UserError(
        f"LOCAL_RANK {local_rank} but this process sees {count} CUDA devices; start at most "
        f"{count} processes per node, or give each one GPU"
    )


def setup(device: str = "auto") -> DistContext:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1), else run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank, world)  # sets the current CUDA device, before NCCL
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", init_method="env://")
    return DistContext(rank, world, local_rank, dev)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (identity when running alone)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any (ranks agree to stop at the same step)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def sync_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank.

    DDP broadcasts them at the start of each forward, so after the last training step each rank
    holds its own; evaluating and checkpointing rank 0's model everywhere needs them equal.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    for buf in module.buffers():
        dist.broadcast(buf, src=0)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. the run folder's name, which has a timestamp)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
