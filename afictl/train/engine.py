"""One training epoch and one evaluation pass: the inner loops, nothing else.

Loss and accuracy are accumulated on the device and read back only every ``sync_every`` steps
(every step on CPU, where reading is free), so the loop does not stall a GPU. At each read the
ranks agree on two flags: stop (SIGINT/SIGTERM seen by any rank) and non-finite loss.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..data import Batch, BrokenImage, CorruptImageError
from ..errors import UserError
from .distributed import DistContext, all_reduce_sum
from .metrics import Sums, topk_correct
from .progress import TrainProgress
from .state import StopFlag

__all__ = ["EpochOutcome", "NonFiniteLossError", "autocast", "evaluate", "train_epoch"]


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite: the run stops, the last good checkpoint is kept."""


@dataclass
class EpochOutcome:
    steps: int  # batches consumed in this epoch so far (including skipped-from-resume ones)
    sums: Sums  # this rank's running sums
    seconds: float  # training time of this epoch so far
    stopped: str | None  # signal name when interrupted
    nonfinite: bool


def autocast(device: torch.device, amp: str):
    """``torch.autocast`` for ``--amp bf16|fp16``; a null context for ``none``."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _to_device(
    batch: Batch, device: torch.device, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    x = batch.images.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, batch.targets.to(device, non_blocking=True)


def handle_broken(
    broken: list[BrokenImage], policy: str, warn: Callable[[str], None], seen: list[int]
) -> None:
    """``stop``: raise naming the file. ``skip``: warn (first 10 files by name), count in ``seen``."""
    for b in broken:
        if policy == "stop":
            raise CorruptImageError(
                f"cannot read image {b.path} ({b.reason}); stopped (--bad-images stop); "
                "remove the file or pass --bad-images skip"
            )
        seen[0] += 1
        if seen[0] <= 10:
            warn(f"afictl: warning: skipped unreadable image {b.path} ({b.reason})")
        elif seen[0] == 11:
            warn(
                "afictl: warning: more unreadable images; only their count is reported from now on"
            )


def _flags(ctx: DistContext, stop: bool, nonfinite: bool) -> tuple[bool, bool]:
    """Both flags OR-ed over the ranks, so every rank leaves the loop at the same step."""
    if not ctx.distributed:
        return stop, nonfinite
    s, n = all_reduce_sum([float(stop), float(nonfinite)], ctx.device)
    return s > 0, n > 0


def train_epoch(
    *,
    ctx: DistContext,
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler,
    amp: str,
    channels_last: bool,
    label_smoothing: float,
    start_step: int,
    sums: Sums,
    seconds: float,
    stop: StopFlag,
    progress: TrainProgress,
    bad_images: str,
    warn: Callable[[str], None],
) -> EpochOutcome:
    """Train until the loader is exhausted, a stop signal arrives, or the loss is not finite."""
    device = ctx.device
    model.train()
    sync_every = 1 if device.type == "cpu" else 20
    step = reported = start_step
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    top1_sum = torch.zeros((), dtype=torch.float64, device=device)
    n_local = 0
    skipped = [0]
    t0 = time.perf_counter()
    stopped: str | None = None
    nonfinite = False
    for batch in loader:
        step += 1
        if batch.broken:
            handle_broken(batch.broken, bad_images, warn, skipped)
        if batch.images.numel() == 0:
            if ctx.distributed:  # the other ranks would wait for this one's gradients forever
                raise CorruptImageError(
                    "every image of a batch was unreadable; fix the data or use --bad-images stop to find the files"
                )
            continue
        x, y = _to_device(batch, device, channels_last)
        with autocast(device, amp):
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        n = y.shape[0]
        n_local += n
        loss_sum += loss.detach().double() * n
        top1_sum += (logits.detach().argmax(1) == y).sum()
        if step % sync_every == 0 or step == start_step + len(loader):
            nonfinite = not math.isfinite(loss_sum.item())
            stop_now, nonfinite = _flags(ctx, bool(stop), nonfinite)
            elapsed = seconds + time.perf_counter() - t0
            total_n = sums.n + n_local
            progress.advance(
                step - reported,
                f"loss {(sums.loss + loss_sum.item()) / max(total_n, 1):.3f}  "
                f"acc {100 * (sums.top1 + top1_sum.item()) / max(total_n, 1):.1f}%  "
                f"{total_n * ctx.world / max(elapsed, 1e-9):.0f} img/s",
            )
            reported = step
            if nonfinite:
                break
            if stop_now:
                stopped = stop.signal_name or "signal"
                break
    if not nonfinite:
        nonfinite = not math.isfinite(loss_sum.item())
        nonfinite = _flags(ctx, False, nonfinite)[1]
    new = Sums(
        sums.loss + loss_sum.item(),
        sums.top1 + top1_sum.item(),
        0.0,
        sums.n + n_local,
        sums.skipped + skipped[0],
    )
    return EpochOutcome(step, new, seconds + time.perf_counter() - t0, stopped, nonfinite)


@torch.no_grad()
def evaluate(
    *,
    ctx: DistContext,
    model: nn.Module,
    loader,
    amp: str = "none",
    channels_last: bool = False,
    progress: TrainProgress | None = None,
    bad_images: str = "skip",
    warn: Callable[[str], None] = print,
) -> Sums:
    """Loss (sum), top-1 and top-5 correct counts over this rank's shard, summed over ranks."""
    device = ctx.device
    was_training = model.training
    model.eval()
    acc = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, n
    skipped = [0]
    for batch in loader:
        if batch.broken:
            handle_broken(batch.broken, bad_images, warn, skipped)
        if batch.images.numel() == 0:
            continue
        x, y = _to_device(batch, device, channels_last)
        with autocast(device, amp):
            logits = model(x)
        logits = logits.float()
        c1, c5 = topk_correct(logits, y)
        acc += torch.stack(
            [
                F.cross_entropy(logits, y, reduction="sum").double(),
                c1.double(),
                c5.double(),
                torch.tensor(float(y.shape[0]), dtype=torch.float64, device=device),
            ]
        )
        if progress is not None:
            progress.advance(1, run=False)
    model.train(was_training)
    loss, top1, top5, n = (
        all_reduce_sum([*acc.tolist()], device) if ctx.distributed else acc.tolist()
    )
    skipped_total = all_reduce_sum([float(skipped[0])], device)[0]
    return Sums(loss, top1, top5, n, skipped_total)
