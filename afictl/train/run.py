"""A whole training run: data, model, run folder, epochs, checkpoints, resume, DDP.

``train(cfg)`` is what ``afictl train`` calls; it returns a :class:`TrainResult`. The shape is
torchvision references': the parts are built once (:func:`.build.build_parts`), one method of
:class:`_Run` per phase (open the files, one epoch, evaluate, save), the config frozen. Files
of a run (rank 0 only): ``config.json``, ``metrics.csv``, ``metrics.jsonl``, ``last.pt`` (every
epoch, and when stopped by SIGINT/SIGTERM), ``best.pt`` (best eval top-1, of the raw or the EMA
weights: ``--best-of``), ``epoch-<N>.pt`` (``--checkpoint-hist``), all written atomically, and
``.lock`` (:mod:`.lock`: rank 0 holds the folder for the run's whole life; one writer per folder).

``last.pt`` is the run's record; everything else follows it: it is saved first at the end of an
epoch, metrics and ``best.pt`` after it, and a resumed run rewrites the metrics files and, when
a kill fell between the two saves, ``best.pt`` from it. (The history's ``epoch-<N>.pt`` comes
after ``last.pt``, which records the history's ranking as it will be: a disk too full for the
history file costs a warning, never ``last.pt``; a kill between the two leaves at most one file
too many, and a ranked epoch without its file, which is skipped when it is pushed out.)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..allocator import configure_allocator
from ..checkpoint import (
    CheckpointError,
    CheckpointWriteError,
    load_checkpoint,
    save_checkpoint,
)
from ..errors import UserError
from ..fileio import atomic_write
from ..models import get_model_info
from . import distributed as D
from .build import build_datasets, build_parts, runtime_config
from .checkpointing import TrainCheckpoint, repair_best, validate_resume
from .config import RUNTIME_KEYS, TrainConfig
from .engine import NonFiniteLossError, TrainParts, evaluate, group_lrs, train_epoch
from .lock import RunLock
from .metrics import MetricsLog, Sums, metric_columns, require_tensorboard
from .progress import TrainProgress
from .state import RunProgress, StopFlag, cpu_threads, deterministic_mode, get_rng_state, seed_all

__all__ = ["TrainResult", "default_run_dir", "load_resume", "plural", "train"]

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


def plural(n: int, word: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{n} {word}{'' if n == 1 else 'es' if word.endswith('s') else 's'}"


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
    validate_resume(ckpt, cfg)  # before anything of the run folder is rewritten
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
    done = int(ckpt["epoch"])
    if overrides.get("epochs") is not None and overrides["epochs"] < done:
        raise UserError(
            f"{path} has {plural(done, 'epoch')} done already; --epochs must be at least that"
        )
    runtime = {k: v for k, v in overrides.items() if v is not None and k in RUNTIME_KEYS}
    return replace(cfg, **runtime, run_dir=str(path.parent)), ckpt


def _make_run_dir(cfg: TrainConfig, overwrite: bool) -> tuple[Path, RunLock]:
    """The new run's folder, locked (a live run there is named first, then a finished one)."""
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg.arch, cfg.dataset)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir).acquire()
    if (run_dir / "last.pt").exists() and not overwrite:
        lock.release()
        raise UserError(
            f"{run_dir} already holds a run; continue it with --resume {run_dir}, "
            "or pass --overwrite"
        )
    return run_dir, lock


def _open_run_dir(
    cfg: TrainConfig, ctx: D.DistContext, resumed: bool, overwrite: bool, held
) -> tuple[Path, RunLock | None]:
    """The run folder, locked by rank 0 (only rank 0 writes; the lock, None on other ranks);
    every rank learns its name (it has rank 0's timestamp) or rank 0's error."""
    run_dir = Path(cfg.run_dir) if resumed else None
    problem, lock = None, None
    if ctx.is_main:
        try:
            if run_dir is None:
                run_dir, lock = _make_run_dir(cfg, overwrite)
            else:
                lock = RunLock(run_dir).acquire()
            if held is not None:
                held.callback(lock.release)
        except (UserError, OSError) as exc:
            problem = str(exc)
    run_dir_text, problem = D.broadcast_object((str(run_dir) if run_dir else None, problem))
    if problem:
        raise UserError(problem)
    return Path(run_dir_text), lock


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2) + "\n")


def _log(ctx: D.DistContext, progress: TrainProgress | None, message: str) -> None:
    if not ctx.is_main:
        return
    if progress is not None:
        progress.log(message)  # above the bars on a terminal
    else:
        print(message, file=sys.stderr, flush=True)


def _gather(ctx: D.DistContext, state: Any) -> list:
    """Every rank's ``state``, in rank order."""
    if not ctx.distributed:
        return [state]
    out: list = [None] * ctx.world
    torch.distributed.all_gather_object(out, state)
    return out


def batch_text(cfg: TrainConfig) -> str:
    """The batch and learning rate as the log states them (accumulation and scaling shown)."""
    batch = f"batch {cfg.batch_size}"
    if cfg.grad_accum_steps > 1:
        batch += (
            f" x {cfg.grad_accum_steps} accumulation steps = {cfg.effective_batch} per "
            "optimizer step"
        )
    lr = f"lr {cfg.lr_effective:g}"
    if cfg.lr_reference_batch:
        lr += f" ({cfg.lr:g} x {cfg.effective_batch}/{cfg.lr_reference_batch})"
    return f"{batch}, {lr}"


@dataclass
class _Run:
    """One run in progress: its config, parts, state and files; one method per phase."""

    cfg: TrainConfig
    ctx: D.DistContext
    parts: TrainParts
    state: RunProgress
    run_dir: Path
    classes: list
    params: int
    log_file: MetricsLog | None = None
    hist: Any = None  # CheckpointHistory on rank 0 with --checkpoint-hist
    progress: TrainProgress | None = None
    lock: RunLock | None = None  # rank 0's lock of run_dir

    def log(self, message: str) -> None:
        _log(self.ctx, self.progress, message)

    def guard(self) -> None:
        """Before each write of the run's files: the folder is still the one locked (else
        :class:`RunFolderGoneError`, and nothing is written into a new run's folder)."""
        if self.lock is not None:
            self.lock.check()

    def checkpoint(self, sums: list, rngs: list) -> TrainCheckpoint:
        """This moment of the run, as last.pt holds it (``sums``: every rank's running sums)."""
        cfg = self.cfg
        return TrainCheckpoint(
            arch=cfg.arch,
            num_classes=cfg.num_classes,
            model_kwargs=cfg.model_kwargs,
            model=self.parts.module.state_dict(),
            optimizer=self.parts.optimizer.state_dict(),
            scheduler=self.parts.scheduler.state_dict(),
            scaler=self.parts.scaler.state_dict(),
            config=cfg.to_dict(),
            progress=self.state,
            partial_ranks=sums,  # each rank's own (restored per rank on as many processes)
            rng=rngs,
            class_names=self.classes,
            input_size=cfg.input_size,
            home_dataset=get_model_info(cfg.arch).home_dataset,
            model_ema=self.parts.ema.state_dict() if self.parts.ema is not None else None,
            checkpoint_hist=self.hist.state_dict() if self.hist is not None else None,
        )

    def open_files(self, resume: TrainCheckpoint | None) -> None:
        """config.json, the metrics files (rewritten from the history), best.pt repaired,
        the checkpoint history continued (rank 0)."""
        if not self.ctx.is_main:
            return
        cfg = self.cfg
        self.guard()
        _write_json(self.run_dir / "config.json", cfg.to_dict())
        columns = metric_columns(ema=cfg.model_ema, backbone=cfg.backbone_lr_mult != 1.0)
        self.log_file = MetricsLog(self.run_dir, cfg.tensorboard, columns)
        self.log_file.rewrite(self.state.metrics)
        if cfg.checkpoint_hist:
            from .history import CheckpointHistory

            self.hist = CheckpointHistory(self.run_dir, cfg.checkpoint_hist)
            if resume is not None and resume.checkpoint_hist:
                self.hist.load_state_dict(resume.checkpoint_hist)
        if resume is not None:
            repair_best(self.run_dir, resume, cfg.best_of, lambda m: _log(self.ctx, None, m))

    def announce(self, note: str, resumed: bool) -> None:
        cfg, s, ctx = self.cfg, self.state, self.ctx
        train_n, eval_n = (len(loader.dataset) for loader in self.loaders)
        _log(ctx, None, f"run: {self.run_dir}")
        if self.log_file is not None and self.log_file.tb is not None:
            _log(ctx, None, f"tensorboard: --logdir {self.run_dir / 'tensorboard'}")
        if note:
            _log(ctx, None, f"afictl: {note}")
        where = f", from epoch {s.epoch + 1}" + (f" step {s.step}" if s.step else "")
        _log(
            ctx,
            None,
            f"train: {cfg.arch} ({self.params:,} parameters) on {cfg.dataset} ({train_n} train / "
            f"{eval_n} eval images, {cfg.num_classes} classes, {cfg.input_size}px), recipe "
            f"{cfg.recipe}, {plural(cfg.epochs, 'epoch')}, {batch_text(cfg)}, "
            f"{plural(ctx.world, 'process')} on {ctx.device}" + (where if resumed else ""),
        )
        pipe = getattr(self.parts.train_loader, "pipeline", None)
        if pipe is not None:
            _log(ctx, None, f"input pipeline: {pipe.kind} ({pipe.describe()})")

    @property
    def loaders(self) -> tuple:
        return self.parts.train_loader, self.parts.eval_loader

    def run_epochs(self, stop: StopFlag) -> None:
        """Epochs until the last, a signal, or a non-finite loss (raised)."""
        cfg, s, parts = self.cfg, self.state, self.parts
        per_rank = cfg.batch_size // self.ctx.world
        while s.epoch < cfg.epochs:
            if s.step >= parts.batches_per_epoch:  # resumed right after an epoch's last step
                s.step = 0
            parts.train_loader.sampler.set_epoch(s.epoch, skip=s.step * per_rank)
            parts.train_loader.generator.manual_seed(cfg.seed * 100_003 + s.epoch)
            self.progress.start(
                f"epoch {s.epoch + 1}/{cfg.epochs}", parts.batches_per_epoch, s.step
            )
            out = train_epoch(
                parts, cfg, self.ctx, s, stop=stop, progress=self.progress, warn=self.log
            )
            if out.nonfinite:
                self.fail_nonfinite()
            if out.interrupted:
                self.save_interrupted()
                return
            self.finish_epoch(out)
            if s.epoch < cfg.epochs and D.any_rank(bool(stop), self.ctx.device):
                s.interrupted = stop.signal_name or "signal"  # a signal during evaluation
                self.log(
                    f"interrupted by {s.interrupted} after epoch {s.epoch}; checkpoint written "
                    f"to {self.run_dir / 'last.pt'}; continue with: afictl train --resume "
                    f"{self.run_dir}"
                )
                return

    def fail_nonfinite(self) -> None:
        ckpt = self.run_dir / "last.pt"
        kept = (
            f"the last good checkpoint {ckpt} (epoch {self.state.epoch}) is untouched"
            if ckpt.exists()
            else "no checkpoint was written"
        )
        raise NonFiniteLossError(
            f"the loss became non-finite (NaN/inf) in epoch {self.state.epoch + 1}; stopped; "
            f"{kept}; try a lower --lr or --amp none"
        )

    def save_interrupted(self) -> None:
        """last.pt in the middle of an epoch (every rank's RNG and running sums)."""
        s = self.state
        rngs = _gather(self.ctx, get_rng_state(self.ctx.device))
        sums = _gather(self.ctx, s.sums.as_list())
        if self.ctx.is_main:
            data = self.checkpoint(sums, rngs)
            self.guard()
            save_checkpoint(self.run_dir / "last.pt", data.to_dict())
        D.barrier()
        self.log(
            f"interrupted by {s.interrupted} in epoch {s.epoch + 1} after step "
            f"{s.step}/{self.parts.batches_per_epoch}; checkpoint written to "
            f"{self.run_dir / 'last.pt'}; continue with: afictl train --resume {self.run_dir}"
        )

    def evaluate(self) -> dict[str, float]:
        """Eval loss/top-1/top-5 of the weights, and of the EMA weights with --model-ema."""
        cfg, parts, ctx = self.cfg, self.parts, self.ctx
        models = [("", parts.module)]
        if parts.ema is not None:
            D.sync_buffers(parts.ema.module)  # rank 0's averaged BN statistics everywhere
            models.append(("_ema", parts.ema.module))
        row: dict[str, float] = {}
        for suffix, model in models:
            label = f"eval{suffix.replace('_', ' ')} {self.state.epoch + 1}/{cfg.epochs}"
            self.progress.start(label, len(parts.eval_loader), training=False)
            ev = evaluate(
                ctx=ctx,
                model=model,
                loader=parts.eval_loader,
                amp=cfg.amp,
                channels_last=cfg.channels_last,
                progress=self.progress,
                bad_images=cfg.bad_images,
                warn=self.log,
                device_transform=parts.eval_device_transform,  # not the train augmentation
            )
            row |= {
                f"eval_loss{suffix}": ev.mean_loss(),
                f"eval_top1{suffix}": ev.pct("top1"),
                f"eval_top5{suffix}": ev.pct("top5"),
            }
            row["skipped_eval"] = row.get("skipped_eval", 0.0) + ev.skipped * (suffix == "")
        return row

    def finish_epoch(self, out: RunProgress) -> None:
        """Metrics of the epoch ``out`` (the progress train_epoch returned), evaluation, then
        last.pt, best.pt and the history's files."""
        cfg, s = self.cfg, self.state
        train_sums = Sums.from_list(D.all_reduce_sum(out.sums.as_list(), self.ctx.device))
        seconds = out.seconds
        D.sync_buffers(self.parts.module)  # every rank evaluates the model rank 0 saves
        eval_start = time.perf_counter()
        ev = self.evaluate()
        s.epoch += 1
        s.step, s.sums, s.seconds = 0, Sums(), 0.0
        row = {
            "epoch": s.epoch,
            **group_lrs(self.parts.optimizer),
            "train_loss": train_sums.mean_loss(),
            "train_top1": train_sums.pct("top1"),
            **{k: v for k, v in ev.items() if k != "skipped_eval"},
            "images_per_sec": train_sums.n / max(seconds, 1e-9),
            "train_time_s": seconds,
            "eval_time_s": time.perf_counter() - eval_start,
            "skipped_images": int(train_sums.skipped + ev["skipped_eval"]),
        }
        s.metrics.append(row)
        score = row["eval_top1_ema" if cfg.best_of == "ema" else "eval_top1"]
        improved = score > s.best_top1
        s.best_top1, s.best_epoch = max(s.best_top1, score), s.epoch if improved else s.best_epoch
        self.save_epoch(row, score, improved)
        self.log(self.summary(row, improved))

    def save_epoch(self, row: dict, score: float, improved: bool) -> None:
        rngs = _gather(self.ctx, get_rng_state(self.ctx.device))
        if self.ctx.is_main:
            world = self.ctx.world
            data = self.checkpoint([Sums().as_list()] * world, rngs)
            if self.hist is not None:  # last.pt records the history as it will be
                data.checkpoint_hist = self.hist.state_dict_after(self.state.epoch, score)
            # last.pt first: metrics, best.pt and the history follow it; a kill before best.pt
            # is saved is repaired by the next start from last.pt's best_epoch (repair_best)
            self.guard()
            save_checkpoint(self.run_dir / "last.pt", data.to_dict())
            if improved:
                self.guard()
                save_checkpoint(
                    self.run_dir / "best.pt", data.best_copy(self.cfg.best_of).to_dict()
                )
            if self.hist is not None:
                self.guard()
                self.offer_history(score, data)
            self.guard()
            self.log_file.append(row)
        D.barrier()

    def offer_history(self, score: float, data: TrainCheckpoint) -> None:
        """The epoch's ``epoch-<N>.pt`` (after last.pt); a disk too full for it is a warning:
        last.pt holds the run, and the history keeps its earlier files."""
        try:
            self.hist.offer(self.state.epoch, score, data.best_copy(self.cfg.best_of).to_dict())
        except CheckpointWriteError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            self.log(f"warning: {exc}; last.pt is saved, the run goes on")

    def summary(self, row: dict, improved: bool) -> str:
        cfg = self.cfg
        ema = f" (ema {row['eval_top1_ema']:.2f}%)" if "eval_top1_ema" in row else ""
        return (
            f"epoch {row['epoch']}/{cfg.epochs}  train loss {row['train_loss']:.4f} acc "
            f"{row['train_top1']:.1f}%  eval loss {row['eval_loss']:.4f} top1 "
            f"{row['eval_top1']:.2f}%{ema} top5 {row['eval_top5']:.2f}%  "
            f"{row['images_per_sec']:.0f} img/s  lr {row['lr']:.3g}"
            + ("  *best" if improved else "")
        )

    def result(self) -> TrainResult:
        s = self.state
        last = s.metrics[-1] if s.metrics else {}
        nan = float("nan")
        return TrainResult(
            arch=self.cfg.arch,
            dataset=self.cfg.dataset,
            epochs=s.epoch,
            eval_top1=float(last.get("eval_top1", nan)),
            eval_top5=float(last.get("eval_top5", nan)),
            eval_loss=float(last.get("eval_loss", nan)),
            best_top1=s.best_top1 if s.best_top1 >= 0 else nan,
            train_loss=float(last.get("train_loss", nan)),
            images_per_sec=float(last.get("images_per_sec", nan)),
            params=self.params,
            run_dir=str(self.run_dir),
            checkpoint=str(self.run_dir / "last.pt"),
            completed=s.epoch >= self.cfg.epochs and s.interrupted is None,
            interrupted=s.interrupted,
        )


def train(
    cfg: TrainConfig,
    *,
    resume: dict | TrainCheckpoint | None = None,
    datasets: tuple[Dataset, Dataset] | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Run (or continue, with ``resume`` = the loaded ``last.pt``) the training ``cfg`` describes.

    ``datasets`` (train, eval) replaces the named dataset, for library use and tests.
    Raises :class:`UserError` subclasses for missing data, bad checkpoints and a non-finite loss.
    """
    if resume is not None and not isinstance(resume, TrainCheckpoint):
        resume = TrainCheckpoint.from_dict(resume)
    ctx = D.setup(cfg.device)
    auto_threads = ctx.device.type == "cpu" and not cfg.deterministic
    if ctx.device.type == "cpu":
        # freed activations stay in the process: no page faults every step (what afictl bench
        # times with; docs/PERFORMANCE.md, "Input pipeline and training step")
        configure_allocator(True)
    try:
        with (
            deterministic_mode(cfg.deterministic),
            cpu_threads(cfg.threads, auto_threads) as note,
            contextlib.ExitStack() as held,
        ):  # the run folder's lock, released however the run ends
            # the thread count is recorded: a resumed run uses the same one
            cfg = replace(cfg, threads=torch.get_num_threads())
            return _train(ctx, cfg, resume, datasets, overwrite, note, held)
    finally:
        D.cleanup()


def _train(
    ctx: D.DistContext,
    cfg: TrainConfig,
    resume: TrainCheckpoint | None,
    datasets: tuple[Dataset, Dataset] | None,
    overwrite: bool,
    note: str = "",
    held: contextlib.ExitStack | None = None,
) -> TrainResult:
    seed_all(cfg.seed)
    if cfg.tensorboard:
        require_tensorboard()  # before the data and the run folder
    # Data first: a missing dataset fails before anything is created on disk.
    datasets = datasets if datasets is not None else build_datasets(cfg)
    classes = list(datasets[0].classes)
    if list(datasets[1].classes) != classes:
        raise UserError("the train and eval splits have different classes")
    cfg = runtime_config(cfg, ctx, classes, resume)
    parts, params = build_parts(cfg, ctx, datasets, resume)
    run_dir, lock = _open_run_dir(cfg, ctx, resume is not None, overwrite, held)
    cfg = replace(cfg, run_dir=str(run_dir))
    state = resume.progress_for(ctx.rank, ctx.world) if resume is not None else RunProgress()
    run = _Run(cfg, ctx, parts, state, run_dir, classes, params, lock=lock)
    run.open_files(resume)
    total = cfg.epochs * parts.batches_per_epoch
    done = min(total, run.state.epoch * parts.batches_per_epoch + run.state.step)
    scalars = run.log_file.step if run.log_file is not None else None  # rank 0
    run.progress = TrainProgress(ctx.is_main, total, done, every=cfg.log_interval, scalars=scalars)
    with StopFlag() as stop, run.progress:  # from here on SIGINT/SIGTERM end with a checkpoint
        run.announce(note, resume is not None)
        run.run_epochs(stop)
    if run.log_file is not None:
        run.log_file.close()
    if os.environ.get(RANK_DUMP_ENV):
        dump = Path(os.environ[RANK_DUMP_ENV])
        dump.mkdir(parents=True, exist_ok=True)
        torch.save(parts.module.state_dict(), dump / f"rank{ctx.rank}.pt")
    return run.result()
