"""A whole training run: data, model, run folder, epochs, checkpoints, resume, DDP.

``train(cfg)`` is what ``afictl train`` calls; it returns a :class:`TrainResult`. Files of a run
(rank 0 only): ``config.json``, ``metrics.csv``, ``metrics.jsonl``, ``last.pt`` (every epoch,
and when stopped by SIGINT/SIGTERM), ``best.pt`` (best eval top-1), all written atomically, and
``.lock`` (:mod:`.lock`: rank 0 holds the folder for the run's whole life; one writer per folder).

``last.pt`` is the run's record; everything else follows it: it is saved first at the end of an
epoch, metrics and ``best.pt`` after it, and a resumed run rewrites the metrics files and, when
a kill fell between the two saves, ``best.pt`` from it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint, validate_checkpoint
from ..data import build_dataset, make_loader
from ..errors import UserError
from ..models import create_model, get_model_info
from . import distributed as D
from .config import RUNTIME_KEYS, TrainConfig, default_workers
from .engine import NonFiniteLossError, evaluate, train_epoch
from .lock import RunLock
from .metrics import MetricsLog, Sums
from .optim import build_optimizer, build_scheduler
from .pretrained import load_pretrained
from .progress import TrainProgress
from .state import StopFlag, cpu_threads, deterministic_mode, get_rng_state, seed_all, set_rng_state

__all__ = ["TrainResult", "default_run_dir", "load_resume", "train"]

#: Debugging aid for DDP: every rank writes its final weights to ``$AFICTL_RANK_DUMP/rank<R>.pt``.
RANK_DUMP_ENV = "AFICTL_RANK_DUMP"


@dataclass
class TrainResult:
    """Summary of a run (what ``afictl train --format json`` prints)."""

    arch: str
    dataset: str
    epochs: int  # epochs completed
    eval_top1: float  # percent, last evaluated epoch
    eval_top5: float
    eval_loss: float
    best_top1: float
    train_loss: float
    images_per_sec: float
    params: int
    run_dir: str
    checkpoint: str
    completed: bool
    interrupted: str | None = None

    @property
    def exit_code(self) -> int:
        """0, or 128 + the number of the signal that stopped the run (143 SIGTERM, 130 SIGINT;
        143 when another DDP process got the signal), as shells and schedulers expect."""
        if self.interrupted is None:
            return 0
        try:
            return 128 + signal.Signals[self.interrupted].value
        except KeyError:
            return 128 + signal.SIGTERM.value

    def to_dict(self) -> dict[str, Any]:
        """Plain values; NaN (nothing evaluated yet) becomes None, so the JSON is strict."""
        return {k: None if isinstance(v, float) and v != v else v for k, v in asdict(self).items()}


def default_run_dir(arch: str, dataset: str, root: str | Path = "runs") -> Path:
    """``runs/<arch>-<dataset>-<YYYYmmdd-HHMMSS>`` (a suffix if that exists already)."""
    base = Path(root) / f"{arch}-{dataset}-{datetime.now():%Y%m%d-%H%M%S}"
    path, i = base, 2
    while path.exists():
        path, i = base.with_name(f"{base.name}-{i}"), i + 1
    return path


def load_resume(
    run_dir: str | Path, overrides: dict[str, Any], arch: str | None = None
) -> tuple[TrainConfig, dict]:
    """The config and ``last.pt`` of a run to continue. Only :data:`RUNTIME_KEYS` may change;
    ``arch``, when given, must match the checkpoint's."""
    run_dir = Path(run_dir)
    path = run_dir / "last.pt" if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise CheckpointError(f"nothing to resume: {path} not found")
    ckpt = load_checkpoint(path)
    saved = ckpt.get("arch")
    if arch is not None and arch != saved:
        raise CheckpointError(
            f"{path} holds a {saved} checkpoint, not {arch}; drop --arch or pick another run"
        )
    if "optimizer" not in ckpt or "config" not in ckpt:
        raise CheckpointError(
            f"{path} was not written by afictl train (no optimizer state); cannot resume it"
        )
    try:
        cfg = TrainConfig.from_dict(ckpt["config"])
    except (TypeError, AttributeError):  # not a dict, or without the fields every run records
        raise CheckpointError(f"{path} records an incomplete config; cannot resume it") from None
    validate_checkpoint(ckpt, resume=cfg)  # before anything of the run folder is rewritten
    fixed = {
        k: v
        for k, v in overrides.items()
        if v is not None and k not in RUNTIME_KEYS and getattr(cfg, k, v) != v
    }
    if fixed:
        raise UserError(
            f"cannot change {', '.join(sorted(fixed))} when resuming (the run's settings are in "
            f"{run_dir / 'config.json'}); only {', '.join(sorted(RUNTIME_KEYS))} may change"
        )
    if overrides.get("epochs") is not None and overrides["epochs"] < int(ckpt["epoch"]):
        raise UserError(
            f"{path} has {ckpt['epoch']} epochs done already; --epochs must be at least that"
        )
    for key, value in overrides.items():
        if value is not None and key in RUNTIME_KEYS:
            setattr(cfg, key, value)
    cfg.run_dir = str(path.parent)
    return cfg, ckpt


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP


def _datasets(cfg: TrainConfig) -> tuple[Dataset, Dataset]:
    common = dict(
        input_size=cfg.input_size,
        download=cfg.download,
        size=cfg.data_size,
        seed=cfg.seed,
        on_error="mark",
    )
    train_ds = build_dataset(cfg.dataset, cfg.data_root, "train", **common)
    eval_ds = build_dataset(
        cfg.dataset,
        cfg.data_root,
        "eval",
        download=False,
        **{k: v for k, v in common.items() if k != "download"},
    )
    return train_ds, eval_ds


def _make_run_dir(cfg: TrainConfig, overwrite: bool) -> tuple[Path, RunLock]:
    """The new run's folder, locked (a live run there is named first, then a finished one)."""
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg.arch, cfg.dataset)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir).acquire()
    if (run_dir / "last.pt").exists() and not overwrite:
        lock.release()
        raise UserError(
            f"{run_dir} already holds a run; continue it with --resume {run_dir}, or pass --overwrite"
        )
    return run_dir, lock


def _restored_sums(resume: dict, ctx: D.DistContext) -> Sums:
    """This process's running sums of an interrupted epoch. Each rank gets its own when the run
    resumes on as many processes as it stopped on; otherwise rank 0 takes the total and the
    others start from zero, so the epoch's metrics (a sum over ranks) are still right."""
    ranks = resume.get("partial_ranks")
    if ranks is not None:
        if not (
            isinstance(ranks, list)
            and all(
                isinstance(r, list) and len(r) == 5 and all(isinstance(v, int | float) for v in r)
                for r in ranks
            )
        ):
            raise CheckpointError(
                f"{resume.get('path', 'checkpoint')}: partial_ranks must be five numbers per process"
            )
        if len(ranks) == ctx.world:
            return Sums.from_list(ranks[ctx.rank])
    total = resume.get("partial", Sums().as_list())
    if len(total) != 5:
        raise CheckpointError(f"{resume.get('path', 'checkpoint')}: partial must be five numbers")
    return Sums.from_list(total) if ctx.is_main else Sums()


def _best_epoch(resume: dict, history: list[dict], best: float) -> int:
    """The epoch whose model best.pt should hold: recorded in last.pt (older checkpoints: the first
    epoch of the history with the best eval top-1), 0 before any."""
    recorded = resume.get("best_epoch")
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 0:
        return recorded
    return next((int(r["epoch"]) for r in history if r.get("eval_top1") == best), 0)


def _repair_best(run_dir: Path, resume: dict, best_epoch: int, log) -> None:
    """Make best.pt the epoch last.pt records as the best. A kill between the two saves of an
    epoch leaves best.pt one improvement behind (or absent); that epoch is last.pt's own, so
    best.pt is rewritten from it."""
    if best_epoch < 1:
        return
    path = run_dir / "best.pt"
    try:
        held = int(load_checkpoint(path)["epoch"]) if path.is_file() else None
    except CheckpointError:
        held = None
    if held == best_epoch:
        return
    was = (
        f"epoch {held}" if held is not None else "nothing readable" if path.exists() else "nothing"
    )
    if best_epoch == int(resume["epoch"]) and not int(resume.get("step", 0)):
        save_checkpoint(
            path, {k: v for k, v in resume.items() if k not in ("path", "format", "version")}
        )
        log(
            f"afictl: repaired {path}: it held {was}, the run's best is epoch {best_epoch} (rewritten from last.pt)"
        )
    else:
        log(
            f"afictl: warning: {path} holds {was} but the run's best is epoch {best_epoch}; it cannot be restored"
        )


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _log(ctx: D.DistContext, progress: TrainProgress | None, message: str) -> None:
    if not ctx.is_main:
        return
    if progress is not None and progress.bars.live.is_started and progress.console.is_terminal:
        progress.log(message)
    else:
        print(message, file=sys.stderr, flush=True)


def train(
    cfg: TrainConfig,
    *,
    resume: dict | None = None,
    datasets: tuple[Dataset, Dataset] | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Run (or continue, with ``resume`` = the loaded ``last.pt``) the training ``cfg`` describes.

    ``datasets`` (train, eval) replaces the named dataset, for library use and tests.
    Raises :class:`UserError` subclasses for missing data, bad checkpoints and a non-finite loss.
    """
    ctx = D.setup(cfg.device)
    auto_threads = ctx.device.type == "cpu" and not cfg.deterministic
    try:
        with (
            deterministic_mode(cfg.deterministic),
            cpu_threads(cfg.threads, auto_threads) as note,
            contextlib.ExitStack() as held,
        ):  # the run folder's lock, released however the run ends
            cfg.threads = torch.get_num_threads()  # recorded: a resumed run uses the same count
            return _train(ctx, cfg, resume, datasets, overwrite, note, held)
    finally:
        D.cleanup()


def _train(
    ctx: D.DistContext,
    cfg: TrainConfig,
    resume: dict | None,
    datasets,
    overwrite: bool,
    note: str = "",
    held: contextlib.ExitStack | None = None,
) -> TrainResult:
    if cfg.batch_size % ctx.world:
        raise UserError(
            f"--batch-size {cfg.batch_size} (global) does not split evenly over {ctx.world} processes"
        )
    if cfg.amp == "fp16" and ctx.device.type != "cuda":
        raise UserError("--amp fp16 needs CUDA; use --amp bf16 on CPU, or none")
    cfg.world_size = ctx.world
    if cfg.workers is None:
        cfg.workers = default_workers(cfg.dataset)
    seed_all(cfg.seed)

    # Data first: a missing dataset fails before anything is created on disk.
    train_ds, eval_ds = datasets if datasets is not None else _datasets(cfg)
    classes = list(train_ds.classes)
    if list(eval_ds.classes) != classes:
        raise UserError("the train and eval splits have different classes")
    if resume is not None and resume["num_classes"] != len(classes):
        raise CheckpointError(
            f"the run has {resume['num_classes']} classes but the data now has {len(classes)}"
        )
    cfg.num_classes = len(classes)

    model = create_model(cfg.arch, num_classes=cfg.num_classes, **cfg.model_kwargs)
    if cfg.pretrained and resume is None:
        load_pretrained(model, cfg.pretrained, cfg.arch)
    params = sum(p.numel() for p in model.parameters())
    if cfg.sync_bn and ctx.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(
        ctx.device,
        memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format,
    )

    per_rank = cfg.batch_size // ctx.world
    pin = ctx.device.type == "cuda"
    train_loader = make_loader(
        train_ds,
        per_rank,
        train=True,
        workers=cfg.workers,
        seed=cfg.seed,
        world=ctx.world,
        rank=ctx.rank,
        pin_memory=pin,
    )
    eval_loader = make_loader(
        eval_ds,
        per_rank,
        train=False,
        workers=cfg.workers,
        seed=cfg.seed,
        world=ctx.world,
        rank=ctx.rank,
        pin_memory=pin,
    )
    steps_per_epoch = len(train_loader)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.amp == "fp16")

    epoch, step, best, best_epoch, history = 0, 0, -1.0, 0, []
    partial, partial_seconds = Sums(), 0.0
    if resume is not None:
        _unwrap(model).load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume["scaler"])
        epoch, step = int(resume["epoch"]), int(resume.get("step", 0))
        best, history = float(resume.get("best_top1", -1.0)), list(resume.get("metrics", []))
        best_epoch = _best_epoch(resume, history, best)
        partial = _restored_sums(resume, ctx)  # this rank's own sums, not rank 0's
        partial_seconds = float(resume.get("partial_seconds", 0.0))
        rngs = resume.get("rng") or []
        if len(rngs) == ctx.world:
            set_rng_state(rngs[ctx.rank])
        else:  # resumed on another number of processes: fresh, distinct streams
            seed_all(cfg.seed + 1000 * ctx.rank + epoch)
    elif ctx.rank:
        seed_all(cfg.seed + 1000 * ctx.rank)  # distinct augmentation per rank

    if ctx.distributed:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if cfg.compile:
        model = torch.compile(model)

    run_dir = Path(cfg.run_dir) if resume is not None else None
    problem = None
    if ctx.is_main:  # only rank 0 writes, so only rank 0 holds the folder
        try:
            if run_dir is None:
                run_dir, lock = _make_run_dir(cfg, overwrite)
            else:
                lock = RunLock(run_dir).acquire()
            if held is not None:
                held.callback(lock.release)
        except (UserError, OSError) as exc:
            problem = str(exc)
    # every rank learns the folder (its name has rank 0's timestamp) or rank 0's error
    run_dir_text, problem = D.broadcast_object((str(run_dir) if run_dir else None, problem))
    if problem:
        raise UserError(problem)
    run_dir = Path(run_dir_text)
    cfg.run_dir = str(run_dir)
    log_file: MetricsLog | None = None
    if ctx.is_main:
        _write_json(run_dir / "config.json", cfg.to_dict())
        log_file = MetricsLog(run_dir, cfg.tensorboard)
        log_file.rewrite(history)
        if resume is not None:
            _repair_best(run_dir, resume, best_epoch, lambda m: _log(ctx, None, m))
    info = get_model_info(cfg.arch)

    def payload(
        done_epochs: int, done_steps: int, sums: list[list[float]], seconds: float, rngs: list
    ) -> dict[str, Any]:
        return {
            "arch": cfg.arch,
            "num_classes": cfg.num_classes,
            "model_kwargs": cfg.model_kwargs,
            "model": _unwrap(model).state_dict(),
            "epoch": done_epochs,
            "step": done_steps,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rngs,
            "config": cfg.to_dict(),
            "class_names": classes,
            "metrics": history,
            "best_top1": best,
            "best_epoch": best_epoch,  # what best.pt holds once this checkpoint's epoch is saved
            "partial": [sum(col) for col in zip(*sums, strict=True)],  # every rank's sums added
            "partial_ranks": sums,  # each rank's own (restored per rank on as many processes)
            "partial_seconds": seconds,
            "input_size": cfg.input_size,
            "home_dataset": info.home_dataset,
        }

    def gather(state: Any) -> list:
        """Every rank's ``state``, in rank order."""
        if not ctx.distributed:
            return [state]
        out: list = [None] * ctx.world
        torch.distributed.all_gather_object(out, state)
        return out

    def gather_rng() -> list:
        return gather(get_rng_state())

    total_steps = cfg.epochs * steps_per_epoch
    progress = TrainProgress(
        ctx.is_main, total_steps, min(total_steps, epoch * steps_per_epoch + step)
    )
    last = history[-1] if history else {}
    interrupted: str | None = None
    with StopFlag() as stop, progress:  # from here on SIGINT/SIGTERM end with a checkpoint
        _log(ctx, None, f"run: {run_dir}")
        if note:
            _log(ctx, None, f"afictl: {note}")
        _log(
            ctx,
            None,
            (
                f"train: {cfg.arch} ({params:,} parameters) on {cfg.dataset} ({len(train_ds)} train / "
                f"{len(eval_ds)} eval images, {cfg.num_classes} classes, {cfg.input_size}px), recipe {cfg.recipe}, "
                f"{cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr_effective:g}, {ctx.world} process(es) on "
                f"{ctx.device}"
                + (
                    f", from epoch {epoch + 1}" + (f" step {step}" if step else "")
                    if resume
                    else ""
                )
            ),
        )
        while epoch < cfg.epochs:
            if step >= steps_per_epoch:  # resumed right after the last step of an epoch
                step = 0
            train_loader.sampler.set_epoch(epoch, skip=step * per_rank)
            train_loader.generator.manual_seed(cfg.seed * 100_003 + epoch)
            progress.start(f"epoch {epoch + 1}/{cfg.epochs}", steps_per_epoch, step)
            out = train_epoch(
                ctx=ctx,
                model=model,
                loader=train_loader,
                optimizer=optimizer,
                scheduler=scheduler,
                scaler=scaler,
                amp=cfg.amp,
                channels_last=cfg.channels_last,
                label_smoothing=cfg.label_smoothing,
                start_step=step,
                sums=partial,
                seconds=partial_seconds,
                stop=stop,
                progress=progress,
                bad_images=cfg.bad_images,
                warn=lambda m: _log(ctx, progress, m),
            )
            if out.nonfinite:
                ckpt = run_dir / "last.pt"
                kept = (
                    f"the last good checkpoint {ckpt} (epoch {epoch}) is untouched"
                    if ckpt.exists()
                    else "no checkpoint was written"
                )
                raise NonFiniteLossError(
                    f"the loss became non-finite (NaN/inf) in epoch {epoch + 1}; stopped; {kept}; "
                    "try a lower --lr or --amp none"
                )
            if out.stopped:
                rngs, sums = gather_rng(), gather(out.sums.as_list())
                if ctx.is_main:
                    save_checkpoint(
                        run_dir / "last.pt", payload(epoch, out.steps, sums, out.seconds, rngs)
                    )
                D.barrier()
                interrupted = out.stopped
                _log(
                    ctx,
                    progress,
                    (
                        f"interrupted by {out.stopped} in epoch {epoch + 1} after step {out.steps}/{steps_per_epoch}; "
                        f"checkpoint written to {run_dir / 'last.pt'}; continue with: afictl train --resume {run_dir}"
                    ),
                )
                break
            train_sums = Sums.from_list(D.all_reduce_sum(out.sums.as_list(), ctx.device))
            D.sync_buffers(_unwrap(model))  # every rank evaluates the model rank 0 saves
            eval_start = time.perf_counter()
            progress.start(f"eval {epoch + 1}/{cfg.epochs}", len(eval_loader))
            ev = evaluate(
                ctx=ctx,
                model=_unwrap(model),
                loader=eval_loader,
                amp=cfg.amp,
                channels_last=cfg.channels_last,
                progress=progress,
                bad_images=cfg.bad_images,
                warn=lambda m: _log(ctx, progress, m),
            )
            epoch += 1
            step, partial, partial_seconds = 0, Sums(), 0.0
            top1 = ev.pct("top1")
            row = {
                "epoch": epoch,
                "lr": optimizer.param_groups[0]["lr"],
                "train_loss": train_sums.mean_loss(),
                "train_top1": train_sums.pct("top1"),
                "eval_loss": ev.mean_loss(),
                "eval_top1": top1,
                "eval_top5": ev.pct("top5"),
                "images_per_sec": train_sums.n / max(out.seconds, 1e-9),
                "train_time_s": out.seconds,
                "eval_time_s": time.perf_counter() - eval_start,
                "skipped_images": int(train_sums.skipped + ev.skipped),
            }
            history.append(row)
            improved = top1 > best
            best = max(best, top1)
            best_epoch = epoch if improved else best_epoch
            rngs = gather_rng()
            if ctx.is_main:
                data = payload(epoch, 0, [Sums().as_list()] * ctx.world, 0.0, rngs)
                # last.pt first: metrics and best.pt follow it; a kill before best.pt is saved is
                # repaired by the next start from last.pt's best_epoch (_repair_best)
                save_checkpoint(run_dir / "last.pt", data)
                if improved:
                    save_checkpoint(run_dir / "best.pt", data)
                log_file.append(row)
            D.barrier()
            last = row
            _log(
                ctx,
                progress,
                (
                    f"epoch {epoch}/{cfg.epochs}  train loss {row['train_loss']:.4f} acc {row['train_top1']:.1f}%  "
                    f"eval loss {row['eval_loss']:.4f} top1 {top1:.2f}% top5 {row['eval_top5']:.2f}%  "
                    f"{row['images_per_sec']:.0f} img/s  lr {row['lr']:.3g}"
                    + ("  *best" if improved else "")
                ),
            )
            if epoch < cfg.epochs and D.any_rank(
                bool(stop), ctx.device
            ):  # signal during evaluation
                interrupted = stop.signal_name or "signal"
                _log(
                    ctx,
                    progress,
                    (
                        f"interrupted by {interrupted} after epoch {epoch}; checkpoint written to "
                        f"{run_dir / 'last.pt'}; continue with: afictl train --resume {run_dir}"
                    ),
                )
                break
    if log_file is not None:
        log_file.close()
    if os.environ.get(RANK_DUMP_ENV):
        dump = Path(os.environ[RANK_DUMP_ENV])
        dump.mkdir(parents=True, exist_ok=True)
        torch.save(_unwrap(model).state_dict(), dump / f"rank{ctx.rank}.pt")
    return TrainResult(
        arch=cfg.arch,
        dataset=cfg.dataset,
        epochs=epoch,
        eval_top1=float(last.get("eval_top1", float("nan"))),
        eval_top5=float(last.get("eval_top5", float("nan"))),
        eval_loss=float(last.get("eval_loss", float("nan"))),
        best_top1=best if best >= 0 else float("nan"),
        train_loss=float(last.get("train_loss", float("nan"))),
        images_per_sec=float(last.get("images_per_sec", float("nan"))),
        params=params,
        run_dir=str(run_dir),
        checkpoint=str(run_dir / "last.pt"),
        completed=epoch >= cfg.epochs and interrupted is None,
        interrupted=interrupted,
    )
