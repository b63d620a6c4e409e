"""The parts of a run, one training epoch and one evaluation pass: the inner loops.

:class:`TrainParts` holds what a run builds once (model, loaders, optimizer, scheduler, scaler,
EMA, batch mixer; afictl/train/build.py builds it); :func:`train_epoch` takes it, the run's
config and its :class:`~afictl.train.state.RunProgress`, which it advances. Loss and
accuracy are accumulated on the device and read back only every ``sync_every`` optimizer steps
(every step on CPU, where reading is free), so the loop does not stall a GPU. At each read the
ranks agree on two flags: stop (SIGINT/SIGTERM seen by any rank) and non-finite loss.

One optimizer step takes ``grad_accum_steps`` batches (gradients summed, each batch's loss
divided by the group's size, DDP's all-reduce only on the group's last batch); the gradient
norm is clipped after unscaling; the EMA follows each optimizer step. A stop is taken only at
the end of a group, so a checkpoint never holds half-accumulated gradients.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..data import Batch, BrokenImage, CorruptImageError
from ..errors import UserError
from .distributed import DistContext, all_reduce_sum
from .metrics import Sums, topk_correct
from .progress import TrainProgress
from .state import RunProgress, StopFlag

__all__ = [
    "NonFiniteLossError",
    "RunProgress",
    "TrainParts",
    "autocast",
    "evaluate",
    "group_lrs",
    "head_lr",
    "optimizer_step",
    "train_epoch",
    "unwrap",
]


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite: the run stops, the last good checkpoint is kept."""


@dataclass
class TrainParts:
    """What a run builds once (afictl/train/build.py) and every epoch uses."""

    model: nn.Module  # as trained: wrapped in DDP and/or torch.compile
    train_loader: Any
    eval_loader: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    ema: Any | None = None  # afictl.train.ema.ModelEma with --model-ema
    mixer: Callable | None = None  # (images, labels) -> (images, soft targets) with mixup/cutmix
    # --decode gpu: each split's transforms, applied on the GPU (augmentation: train only)
    train_device_transform: Callable | None = None
    eval_device_transform: Callable | None = None
    batches_per_epoch: int = 0  # of the whole epoch (the loader's length without a resume skip)

    @property
    def module(self) -> nn.Module:
        """The model itself (its weights are what checkpoints hold)."""
        return unwrap(self.model)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside torch.compile and DDP wrappers."""
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP


def autocast(device: torch.device, amp: str):
    """``torch.autocast`` for ``--amp bf16|fp16``; a null context for ``none``."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _to_device(
    batch: Batch, device: torch.device, channels_last: bool, transform: Callable | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch.images, torch.Tensor) and transform is None:
        x = batch.images.to(device, non_blocking=True)
    else:  # --decode gpu: encoded JPEGs, decoded and transformed on the device
        from ..data.decode import on_device

        x = on_device(batch.images, device, transform)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, batch.targets.to(device, non_blocking=True)


def _empty(batch: Batch) -> bool:
    images = batch.images
    return images.numel() == 0 if isinstance(images, torch.Tensor) else len(images) == 0


def handle_broken(
    broken: list[BrokenImage], policy: str, warn: Callable[[str], None], seen: list[int]
) -> None:
    """``stop``: raise naming the file. ``skip``: warn (the first 10 files by name) and count
    them in ``seen``."""
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


def group_size(step: int, total: int, accum: int) -> int:
    """Batches in the accumulation group of batch ``step`` (1-based) of an epoch of ``total``:
    ``accum``, fewer in a last, ragged group."""
    first = (step - 1) // accum * accum
    return min(accum, total - first)


def optimizer_steps_per_epoch(batches: int, accum: int) -> int:
    """Optimizer steps of an epoch of ``batches`` (the scheduler's unit)."""
    return max(1, math.ceil(batches / max(1, accum)))


def _forward_backward(parts: TrainParts, cfg, x, y, divide: int, sync: bool):
    """One batch's forward and backward (gradients added); returns (loss, logits, labels)."""
    if parts.mixer is not None:  # on the device, from the main process's RNG (checkpointed)
        x, target = parts.mixer(x, y)
        labels = target.argmax(1)  # train accuracy: against the dominant label
    else:
        target = labels = y
    no_sync = getattr(parts.model, "no_sync", None)
    with contextlib.nullcontext() if sync or no_sync is None else no_sync():
        with autocast(x.device, cfg.amp):
            logits = parts.model(x)
            loss = F.cross_entropy(logits, target, label_smoothing=cfg.label_smoothing)
        parts.scaler.scale(loss if divide == 1 else loss / divide).backward()
    return loss, logits, labels


def optimizer_step(parts: TrainParts, cfg) -> bool:
    """Clip (after unscaling), step, update the scaler, the schedule and the EMA; returns
    whether the optimizer stepped.

    Under ``--amp fp16`` the scaler skips the step when a gradient is inf/NaN (common in the
    first steps, at scale 65536) and halves its scale: the schedule and the EMA then stay where
    they are, so the learning rate follows the steps actually taken (and torch does not warn
    that the scheduler stepped before the optimizer).
    """
    scaler = parts.scaler
    if cfg.clip_grad:
        scaler.unscale_(parts.optimizer)
        torch.nn.utils.clip_grad_norm_(parts.module.parameters(), cfg.clip_grad)
    # A skipped step is seen the public way: update() lowers the scale exactly then (backoff
    # factor < 1). Read only when enabled: scaler.step() syncs for found-inf anyway then.
    before = scaler.get_scale() if scaler.is_enabled() else None
    scaler.step(parts.optimizer)
    scaler.update()
    if before is not None and scaler.get_scale() < before:
        return False
    parts.scheduler.step()
    if parts.ema is not None:
        parts.ema.update(parts.module)
    return True


class _Running:
    """This epoch's loss and top-1 sums, on the device (read back only at a sync)."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.top1 = torch.zeros((), dtype=torch.float64, device=device)
        self.n = 0
        self.t0 = time.perf_counter()

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        n = labels.shape[0]
        self.n += n
        self.loss += loss.detach().double() * n
        self.top1 += (logits.detach().argmax(1) == labels).sum()

    def stats(self, state: RunProgress, world: int, optimizer) -> dict[str, float]:
        """This rank's running means of the epoch so far, the images/s of all ranks and the
        learning rate (what a progress line shows)."""
        before, n = state.sums, state.sums.n + self.n
        seconds = state.seconds + time.perf_counter() - self.t0
        return {
            "loss": (before.loss + self.loss.item()) / max(n, 1),
            "top1": 100 * (before.top1 + self.top1.item()) / max(n, 1),
            "images_per_sec": n * world / max(seconds, 1e-9),
            "lr": head_lr(optimizer),
        }

    def total(self, before: Sums, skipped: int) -> Sums:
        return Sums(
            before.loss + self.loss.item(),
            before.top1 + self.top1.item(),
            0.0,
            before.n + self.n,
            before.skipped + skipped,
        )


def group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``lr`` (the classifier's group, or the only one) and, when fine-tuning, ``lr_backbone``."""
    lrs: dict[str, float] = {}
    for group in optimizer.param_groups:
        key = "lr_backbone" if str(group.get("name", "")).startswith("backbone") else "lr"
        lrs.setdefault(key, group["lr"])
    return lrs


def head_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate of the classifier's group (the one a run's log states)."""
    lrs = group_lrs(optimizer)
    return lrs.get("lr", lrs.get("lr_backbone", 0.0))


def _log_due(cfg, reported: int, step: int) -> bool:
    """A multiple of ``--log-interval`` batches passed since the last read: read now, so that
    the line is written at its step (a GPU otherwise reads every 20 optimizer steps)."""
    every = getattr(cfg, "log_interval", None)
    return bool(every) and step // every > reported // every


def train_epoch(
    parts: TrainParts,
    cfg,
    ctx: DistContext,
    state: RunProgress,
    *,
    stop: StopFlag,
    progress: TrainProgress | None = None,
    warn: Callable[[str], None] = print,
) -> RunProgress:
    """Train from ``state.step`` until the loader ends, a stop signal (``state.interrupted``)
    or a non-finite loss (``state.nonfinite``); returns ``state``, its step, this rank's sums
    and seconds advanced. ``cfg``: the run's :class:`~afictl.train.config.TrainConfig`."""
    parts.model.train()
    accum = max(1, cfg.grad_accum_steps)
    sync_every = 1 if ctx.device.type == "cpu" else 20
    total = state.step + len(parts.train_loader)
    step = reported = state.step
    run, skipped = _Running(ctx.device), [0]
    stopped, nonfinite, pending = None, False, False
    for batch in parts.train_loader:
        step += 1
        if batch.broken:
            handle_broken(batch.broken, cfg.bad_images, warn, skipped)
        boundary = step % accum == 0 or step == total
        if not _empty(batch):
            if not pending:
                parts.optimizer.zero_grad(set_to_none=True)
            x, y = _to_device(batch, ctx.device, cfg.channels_last, parts.train_device_transform)
            div = group_size(step, total, accum)
            run.add(*_forward_backward(parts, cfg, x, y, div, boundary))
            pending = True
        elif ctx.distributed:  # the other ranks would wait for this one's gradients forever
            raise CorruptImageError(
                "every image of a batch was unreadable; fix the data or use --bad-images stop "
                "to find the files"
            )
        if not boundary:
            continue
        if pending:
            optimizer_step(parts, cfg)
            pending = False
        if (step // accum) % sync_every == 0 or step == total or _log_due(cfg, reported, step):
            nonfinite = not math.isfinite(run.loss.item())
            stop_now, nonfinite = _flags(ctx, bool(stop), nonfinite)
            if progress is not None:
                progress.advance(step - reported, run.stats(state, ctx.world, parts.optimizer))
            reported = step
            if nonfinite:
                break
            if stop_now:
                stopped = stop.signal_name or "signal"
                break
    if not nonfinite:
        nonfinite = _flags(ctx, False, not math.isfinite(run.loss.item()))[1]
    state.seconds += time.perf_counter() - run.t0
    state.step, state.sums = step, run.total(state.sums, skipped[0])
    state.interrupted, state.nonfinite = stopped, nonfinite
    return state


@torch.inference_mode()  # no autograd bookkeeping at all: evaluation keeps no tensor
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
    device_transform: Callable | None = None,
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
        if _empty(batch):
            continue
        x, y = _to_device(batch, device, channels_last, device_transform)
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
