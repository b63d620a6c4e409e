"""Build the parts of a run once (torchvision references' shape): data, model, loaders,
optimizer, scheduler, scaler, EMA, batch mixer; restore them from a checkpoint; wrap for DDP.

The order is part of exact resume and reproducibility: the model is created right after the
seed (its initial weights draw from it), and the RNG states are restored (or, per DDP rank,
seeded) after everything that draws from them is built.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from torch.utils.data import Dataset

from ..checkpoint import CheckpointError
from ..data import build_dataset, make_loader
from ..data.pipeline import Pipeline, choose_pipeline, tensor_loaders
from ..errors import UserError
from ..models import create_model
from . import distributed as D
from .checkpointing import TrainCheckpoint
from .config import TrainConfig, check_accumulation, default_workers
from .engine import TrainParts, optimizer_steps_per_epoch
from .optim import build_optimizer, build_scheduler
from .pretrained import load_pretrained
from .state import DeviceLayoutError, seed_all, set_rng_state

__all__ = ["build_datasets", "build_model", "build_parts", "runtime_config"]


def build_datasets(cfg: TrainConfig) -> tuple[Dataset, Dataset]:
    """The train and eval splits the config names (augmentation options: train split only)."""
    common = dict(input_size=cfg.input_size, size=cfg.data_size, seed=cfg.seed, on_error="mark")
    extra = {}  # only what is not the default, so that build_dataset's defaults stay its own
    if cfg.augment_policy is not None:
        extra["aa"] = cfg.augment_policy
    if cfg.reprob:
        extra["reprob"] = cfg.reprob
    if cfg.decode != "auto":
        extra["decode"] = cfg.decode
    train_ds = build_dataset(
        cfg.dataset,
        cfg.data_root,
        "train",
        download=cfg.download,
        download_hint="--download",
        **common,
        **extra,
    )
    decode = {"decode": extra["decode"]} if "decode" in extra else {}
    eval_ds = build_dataset(cfg.dataset, cfg.data_root, "eval", download=False, **common, **decode)
    return train_ds, eval_ds


def runtime_config(
    cfg: TrainConfig, ctx: D.DistContext, classes: list, resume: TrainCheckpoint | None
) -> TrainConfig:
    """The config with what the run derives: world size, workers, number of classes."""
    if cfg.batch_size % ctx.world:
        raise UserError(
            f"--batch-size {cfg.batch_size} (global) does not split evenly over {ctx.world} "
            "processes"
        )
    if cfg.amp == "fp16" and ctx.device.type != "cuda":
        raise UserError("--amp fp16 needs CUDA; use --amp bf16 on CPU, or none")
    if cfg.decode == "gpu" and ctx.device.type != "cuda":
        raise UserError("--decode gpu needs a CUDA device; use --decode auto")
    if resume is not None and resume.num_classes != len(classes):
        raise CheckpointError(
            f"the run has {resume.num_classes} classes but the data now has {len(classes)}"
        )
    workers = cfg.workers if cfg.workers is not None else default_workers(cfg.dataset)
    return replace(cfg, world_size=ctx.world, workers=workers, num_classes=len(classes))


def build_model(cfg: TrainConfig, ctx: D.DistContext, fresh: bool) -> tuple[nn.Module, int]:
    """The network on the device (and its parameter count); pretrained weights on a new run."""
    model = create_model(cfg.arch, num_classes=cfg.num_classes, **cfg.model_kwargs)
    if cfg.pretrained and fresh:
        load_pretrained(model, cfg.pretrained, cfg.arch)
    params = sum(p.numel() for p in model.parameters())
    if cfg.sync_bn and ctx.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(
        ctx.device,
        memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format,
    )
    return model, params


def _loaders(cfg: TrainConfig, ctx: D.DistContext, train_ds: Dataset, eval_ds: Dataset):
    per_rank = cfg.batch_size // ctx.world
    pipe = choose_pipeline(
        cfg.pipeline,
        cfg.dataset,
        (train_ds, eval_ds),
        cfg.input_size,
        decode=cfg.decode,
    )
    if pipe.kind == "tensor":
        loaders = tensor_loaders(
            pipe,
            cfg.dataset,
            cfg.input_size,
            per_rank,
            device=ctx.device,
            on_device=_data_on_device(cfg, ctx, pipe),
            seed=cfg.seed,
            world=ctx.world,
            rank=ctx.rank,
            aa=cfg.augment_policy,
            reprob=cfg.reprob,
            eval_batch_size=EVAL_BATCH_FACTOR * per_rank,
        )
    else:
        common = dict(
            workers=cfg.workers,
            seed=cfg.seed,
            world=ctx.world,
            rank=ctx.rank,
            pin_memory=ctx.device.type == "cuda",
        )
        loaders = (
            make_loader(train_ds, per_rank, train=True, **common),
            make_loader(eval_ds, per_rank, train=False, **common),
        )
    for loader in loaders:
        loader.pipeline = pipe  # what the run reports: the pipeline and why
    return loaders


#: Evaluation batches of the tensor pipeline are this many training batches (no gradients, so
#: memory allows it; results do not depend on the batch in eval mode).
EVAL_BATCH_FACTOR = 2
#: On CUDA the dataset moves to the GPU when it takes at most this share of its free memory.
DEVICE_DATA_SHARE = 0.25


def _data_on_device(cfg: TrainConfig, ctx: D.DistContext, pipe: Pipeline) -> bool:
    """``--data-on-device``, or by default: on CUDA when both splits fit in a quarter of the
    free memory."""
    asked = cfg.data_on_device
    if asked is not None or ctx.device.type != "cuda":
        return bool(asked) and ctx.device.type != "cpu"
    need = pipe.train.nbytes + pipe.eval.nbytes
    return need <= DEVICE_DATA_SHARE * torch.cuda.mem_get_info(ctx.device)[0]


def _extras(cfg: TrainConfig, model: nn.Module):
    """The EMA and the batch mixer the config asks for (None each when off)."""
    ema = mixer = None
    if cfg.model_ema:
        from .ema import ModelEma

        ema = ModelEma(model, cfg.model_ema_decay)
    if cfg.mixing:
        from ..data.mixing import build_mixer

        mixer = build_mixer(
            num_classes=cfg.num_classes, mixup=cfg.mixup, cutmix=cfg.cutmix, prob=cfg.mixup_prob
        )
    return ema, mixer


def build_parts(
    cfg: TrainConfig,
    ctx: D.DistContext,
    datasets: tuple[Dataset, Dataset],
    resume: TrainCheckpoint | None,
) -> tuple[TrainParts, int]:
    """Every part of the run (restored from ``resume`` when given), wrapped for DDP/compile;
    and the model's parameter count."""
    model, params = build_model(cfg, ctx, resume is None)
    train_loader, eval_loader = _loaders(cfg, ctx, *datasets)
    batches = len(train_loader)
    # the data's size is known only now when --data-size does not give it (before any folder)
    check_accumulation(cfg, batches, f"the training split in batches of {cfg.batch_size}")
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(
        optimizer, cfg, optimizer_steps_per_epoch(batches, cfg.grad_accum_steps)
    )
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.amp == "fp16")
    ema, mixer = _extras(cfg, model)
    parts = TrainParts(
        model=model,
        train_loader=train_loader,
        eval_loader=eval_loader,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        ema=ema,
        mixer=mixer,
        train_device_transform=getattr(datasets[0], "device_transform", None),
        eval_device_transform=getattr(datasets[1], "device_transform", None),
        batches_per_epoch=batches,
    )
    if resume is not None:
        _restore(parts, resume)
    _seed_rngs(cfg, ctx, resume)
    if ctx.distributed:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        parts.model = nn.parallel.DistributedDataParallel(parts.model, device_ids=ids)
    if cfg.compile:
        parts.model = torch.compile(parts.model)
    return parts, params


def _restore(parts: TrainParts, ckpt: TrainCheckpoint) -> None:
    """Weights, optimizer, schedule, scaler and EMA as the checkpoint holds them."""
    parts.model.load_state_dict(ckpt.model)
    parts.optimizer.load_state_dict(ckpt.optimizer)
    parts.scheduler.load_state_dict(ckpt.scheduler)
    parts.scaler.load_state_dict(ckpt.scaler)
    if parts.ema is not None:
        if ckpt.model_ema is None:
            raise CheckpointError(f"{ckpt.where}: the run has --model-ema but no EMA weights")
        try:
            parts.ema.load_state_dict(ckpt.model_ema)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{ckpt.where}: the EMA weights do not fit ({str(exc).splitlines()[0][:100]})"
            ) from None


def _seed_rngs(cfg: TrainConfig, ctx: D.DistContext, resume: TrainCheckpoint | None) -> None:
    if resume is not None:
        if len(resume.rng) == ctx.world:
            _restore_rng(resume.rng[ctx.rank], ctx)
        else:  # resumed on another number of processes: fresh, distinct streams
            seed_all(cfg.seed + 1000 * ctx.rank + resume.progress.epoch)
    elif ctx.rank:
        seed_all(cfg.seed + 1000 * ctx.rank)  # distinct augmentation per rank


def _restore_rng(state: dict, ctx: D.DistContext) -> None:
    """This rank's saved RNG states; the CUDA one onto this rank's device. A rank whose device
    has no saved state (an old checkpoint, another layout) fails, and so does every rank with
    it: the others would wait for it forever at the next collective."""
    problem = None
    try:
        set_rng_state(state, ctx.device)
    except DeviceLayoutError as exc:
        problem = exc
    if D.any_rank(problem is not None, ctx.device):
        raise problem or DeviceLayoutError(
            "another process found no CUDA RNG state for its GPU in the checkpoint: the device "
            "layout changed; resume with the GPUs each process saw when it was written"
        )
