"""The training checkpoint (``last.pt``, ``best.pt``, ``epoch-<N>.pt``), holding the run's
:class:`~afictl.train.state.RunProgress`: ``to_dict`` flattens it into the keys every version
has used; ``from_dict`` reads every version (1 had no ``best_epoch``, ``partial_ranks``,
``model_ema``, ``checkpoint_hist``), each field of its declared type. :func:`validate_resume`
loads what a resume restores into what the run's config builds on the meta device."""

from __future__ import annotations

import warnings
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_args, get_type_hints

import torch

from ..checkpoint import CHECKPOINT_VERSION, CheckpointError, load_checkpoint, save_checkpoint
from ..checkpoint_format import check_weights, checkpoint_options, is_int, is_number
from ..checkpoint_format import validate_checkpoint as validate
from .metrics import Sums
from .optim import build_optimizer, build_scheduler
from .state import CUDA_KEYS, RunProgress, cuda_state_problem, get_rng_state, set_rng_state

__all__ = ["TrainCheckpoint", "ema_weights", "repair_best", "validate_resume"]

_SCALER_KEYS = {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}
#: The progress as stored: key -> RunProgress field (and ``partial``: the sums of all ranks).
_STORED = {k: k for k in ("epoch", "step", "best_top1", "best_epoch", "metrics")}
_STORED["partial_seconds"] = "seconds"


@dataclass
class TrainCheckpoint:
    """Everything a run needs to continue exactly where it stopped."""

    arch: str
    num_classes: int
    model_kwargs: dict
    model: dict  # the raw weights (state_dict)
    optimizer: dict
    scheduler: dict
    scaler: dict
    config: dict
    progress: RunProgress = field(default_factory=RunProgress)
    partial_ranks: list | None = None  # each process's running sums (five numbers each)
    rng: list = field(default_factory=list)  # one RNG state per process
    class_names: list | None = None
    input_size: int | None = None
    home_dataset: str | None = None
    model_ema: dict | None = None  # ModelEma.state_dict() with --model-ema
    checkpoint_hist: dict | None = None  # CheckpointHistory.state_dict() with --checkpoint-hist
    version: int = CHECKPOINT_VERSION
    path: str | None = None  # where it was read from (not stored)

    def to_dict(self) -> dict[str, Any]:
        """The stored dict; optional parts that are absent are left out."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "path"}
        p, ranks = out.pop("progress"), self.partial_ranks
        out |= {key: getattr(p, name) for key, name in _STORED.items()}
        out["partial"] = [sum(c) for c in zip(*ranks, strict=True)] if ranks else p.sums.as_list()
        out["version"] = CHECKPOINT_VERSION  # written now, in this version's layout
        for key in ("model_ema", "checkpoint_hist", "partial_ranks"):
            if out[key] is None:
                del out[key]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainCheckpoint:
        """A loaded checkpoint of any version, each field of its declared type (else one line)."""
        where = str(d.get("path") or "checkpoint")
        need = [f.name for f in fields(cls) if f.default is MISSING is f.default_factory]
        for no in (k for k in need if k not in d):
            raise CheckpointError(f"{where} is not a complete afictl checkpoint (no {no})")
        own = {k: d[k] for k in get_type_hints(cls) if k in d and k != "progress"}
        kept = {name: d[key] for key, name in _STORED.items() if d.get(key) is not None}
        p = RunProgress(**_typed(where, RunProgress, kept))
        ckpt = cls(**_typed(where, cls, own), progress=p)
        partial, h = [d.get("partial", Sums().as_list())], ckpt.checkpoint_hist
        sums = [*partial, *(ckpt.partial_ranks or [])]
        five = all(isinstance(r, list) and len(r) == 5 and all(map(is_number, r)) for r in sums)
        for ok, problem in (
            (all(isinstance(r, dict) for r in p.metrics), "metrics must be a list of rows"),
            (five, "partial sums must be five numbers (per process)"),
            (h is None or isinstance(h.get("ranking"), list), "checkpoint_hist lacks its ranking"),
        ):
            if not ok:
                raise CheckpointError(f"{where}: {problem}")
        p.sums, p.best_top1, p.seconds = Sums(*partial[0]), float(p.best_top1), float(p.seconds)
        if "best_epoch" not in kept:  # version 1: the first epoch of the best eval top-1
            rows = (int(r["epoch"]) for r in p.metrics if r.get("eval_top1") == p.best_top1)
            p.best_epoch = next(rows, 0)
        return ckpt

    @property
    def where(self) -> str:
        return self.path or "checkpoint"

    def progress_for(self, rank: int, world: int) -> RunProgress:
        """This process's progress: its own sums on as many processes, else rank 0 the total."""
        ranks, total = self.partial_ranks, self.progress.sums if rank == 0 else Sums()
        own = Sums(*ranks[rank]) if ranks is not None and len(ranks) == world else total
        return replace(self.progress, sums=own)

    def best_copy(self, best_of: str) -> TrainCheckpoint:
        """What best.pt holds: this checkpoint, with the EMA weights as ``model`` under
        ``--best-of ema`` (so that eval and every analysis read the weights that ranked best)."""
        if best_of != "ema" or self.model_ema is None:
            return self
        return replace(self, model=ema_weights(self.model_ema))


def _typed(where: str, cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` when each has its ``cls`` field's declared type (an int for a float is fine)."""
    for name, value in values.items():
        kinds = get_args(get_type_hints(cls)[name]) or (get_type_hints(cls)[name],)
        if not any(
            is_int(value) if k is int else is_number(value) if k is float else isinstance(value, k)
            for k in kinds
        ):
            key = {v: k for k, v in _STORED.items()}.get(name, name) if cls is RunProgress else name
            want = " or ".join(k.__name__ for k in kinds)
            raise CheckpointError(f"{where}: {key} must be {want}, not {type(value).__name__}")
    return values


def validate_resume(ckpt: dict[str, Any], cfg: Any) -> TrainCheckpoint:
    """``ckpt`` as the run ``cfg`` (a :class:`~afictl.train.TrainConfig`) will restore it;
    :class:`CheckpointError` (one line, naming the file and the field) otherwise."""
    need = ("arch", "num_classes", "model", "optimizer", "scheduler", "scaler", "config", "epoch")
    where = validate(ckpt, require=need).get("path", "checkpoint")
    try:
        kw = checkpoint_options(where, cfg.arch, cfg.model_kwargs)
        meta = check_weights(where, cfg.arch, ckpt["num_classes"], kw, ckpt["model"])
        optimizer = build_optimizer(meta, cfg)
        scheduler = build_scheduler(optimizer, cfg, 1)
    except (TypeError, ValueError) as exc:  # a config whose options are of the wrong type
        raise CheckpointError(f"{where}: its config does not build the run ({exc})") from None
    _load_optimizer(where, ckpt["optimizer"], optimizer)
    tc = TrainCheckpoint.from_dict(ckpt)
    try:
        with warnings.catch_warnings():  # "the scheduler stepped before the optimizer"
            warnings.simplefilter("ignore")
            scheduler.load_state_dict(tc.scheduler)  # restored as the run will, stepped once
            scheduler.step()
        fits = set(tc.scheduler) == set(scheduler.state_dict())
    except Exception:
        fits = False
    if not fits:
        raise CheckpointError(f"{where}: the scheduler state does not fit the run's schedule")
    keys, numbers = set(tc.scaler), all(map(is_number, tc.scaler.values()))
    if not (keys <= _SCALER_KEYS and numbers) or (cfg.amp == "fp16" and keys != _SCALER_KEYS):
        raise CheckpointError(f"{where}: the gradient-scaler state is not one afictl train writes")
    if getattr(cfg, "model_ema", False):
        ema = ema_weights(tc.model_ema or {})
        check_weights(f"{where} (EMA weights)", cfg.arch, tc.num_classes, kw, ema)
    for rank, rng in enumerate(tc.rng):  # the CUDA part by type and shape: no CUDA here maybe
        problem = cuda_state_problem(rng) if isinstance(rng, dict) else None
        if problem:
            raise CheckpointError(f"{where}: the CUDA RNG state of process {rank} {problem}")
    before = get_rng_state()
    try:  # the rest restored for real, as the run will, then put back
        for rng in tc.rng:
            set_rng_state({k: v for k, v in rng.items() if k not in CUDA_KEYS})
    except Exception:
        raise CheckpointError(f"{where}: the RNG state is not one afictl train writes") from None
    finally:
        set_rng_state(before)
    return tc


def _load_optimizer(where: str, saved: Any, optimizer: torch.optim.Optimizer) -> None:
    """``saved`` loaded into ``optimizer``; then the kinds of its group settings and the shapes
    of its buffers checked (``Optimizer.load_state_dict`` checks neither)."""
    fresh, kind = [dict(g) for g in optimizer.param_groups], type(optimizer).__name__
    try:  # torch refuses other numbers of groups or of parameters
        if set(saved) != {"state", "param_groups"}:
            raise ValueError(f"it holds {', '.join(map(str, saved))}"[:80])
        optimizer.load_state_dict(saved)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        why = f"is not an {kind} state dict that fits: it does not list the run's parameters"
        raise CheckpointError(f"{where}: the optimizer state {why} ({exc})") from None
    shapes: dict[Any, tuple] = {}
    for i, (group, want) in enumerate(zip(saved["param_groups"], fresh, strict=True)):
        shapes |= {k: tuple(p.shape) for k, p in zip(group["params"], want["params"], strict=True)}
        for key, v in group.items():
            if key != "params" and is_number(v) != is_number(want.get(key)):
                raise CheckpointError(f"{where}: optimizer group {i} has {key} = {v!r:.40}")
    for key, entry in saved["state"].items():
        if key not in shapes or not isinstance(entry, dict):
            why = f"the optimizer state has an entry {key!r:.40} for no parameter of the run"
            raise CheckpointError(f"{where}: {why}")
        for name, value in entry.items():
            tensor = isinstance(value, torch.Tensor)
            if tensor and value.dim() and tuple(value.shape) != shapes[key]:
                what = f"has shape {tuple(value.shape)}, the parameter {shapes[key]}"
            elif not tensor and value is not None and not is_number(value):
                what = f"is a {type(value).__name__}"
            else:
                continue
            raise CheckpointError(f"{where}: optimizer {name} of parameter {key} {what}")


def ema_weights(ema_state: dict) -> dict:
    """The model's state_dict inside a ``ModelEma`` (an AveragedModel: ``module.`` + name)."""
    return {k[len("module.") :]: v for k, v in ema_state.items() if k.startswith("module.")}


def repair_best(run_dir: Path, ckpt: TrainCheckpoint, best_of: str, log) -> None:
    """Make best.pt the epoch last.pt records as the best. A kill between the two saves of an
    epoch leaves best.pt one improvement behind (or absent); that epoch is last.pt's own, so
    best.pt is rewritten from it."""
    best_epoch = ckpt.progress.best_epoch
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
    if best_epoch == ckpt.progress.epoch and not ckpt.progress.step:
        save_checkpoint(path, ckpt.best_copy(best_of).to_dict())
        log(
            f"afictl: repaired {path}: it held {was}, the run's best is epoch {best_epoch} "
            "(rewritten from last.pt)"
        )
    else:
        log(
            f"afictl: warning: {path} holds {was} but the run's best is epoch {best_epoch}; "
            "it cannot be restored"
        )
