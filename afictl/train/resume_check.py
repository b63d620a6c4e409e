"""What ``afictl train --resume`` restores, checked before a run folder is touched.

:func:`validate_resume` runs every reader's checks
(:func:`afictl.checkpoint_format.validate_checkpoint`) and then those of a resume: the run's
configuration and the checkpoint's architecture agree, and the optimizer state (groups, one
entry per parameter, every buffer of its parameter's shape), the scheduler and scaler states
and the RNG states fit what the configuration builds. Everything is built on the meta device;
nothing is allocated or loaded.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..checkpoint_format import (
    MODEL_FIELDS,
    CheckpointError,
    check_model_kwargs,
    check_weights,
    is_int,
    is_number,
    validate_checkpoint,
)
from .optim import build_optimizer, build_scheduler
from .state import CUDA_KEYS, cuda_state_problem, get_rng_state, set_rng_state

__all__ = ["RESUME_FIELDS", "validate_resume"]

#: The fields a checkpoint to resume holds besides the model's.
RESUME_FIELDS = (*MODEL_FIELDS, "optimizer", "scheduler", "scaler", "config", "epoch")


def validate_resume(ckpt: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """Check ``ckpt`` as every reader does, then that what ``afictl train --resume`` restores
    fits the run's configuration ``cfg`` (a :class:`~afictl.train.TrainConfig`):
    :class:`CheckpointError` (one line, naming the file and the field) otherwise."""
    validate_checkpoint(ckpt, require=RESUME_FIELDS)
    where = ckpt.get("path", "checkpoint")
    check_model_kwargs(where, ckpt.get("arch"), ckpt.get("model_kwargs") or {})
    _check_resume(where, ckpt, cfg)
    return ckpt


def _same_kind(saved: Any, fresh: Any) -> bool:
    """Plain data of the same structure: dict keys, list lengths, number/bool/str/None kinds."""
    if isinstance(fresh, dict):
        return (
            isinstance(saved, dict)
            and set(saved) == set(fresh)
            and all(_same_kind(saved[k], fresh[k]) for k in fresh)
        )
    if isinstance(fresh, (list, tuple)):
        return (
            isinstance(saved, (list, tuple))
            and len(saved) == len(fresh)
            and all(map(_same_kind, saved, fresh))
        )
    if isinstance(fresh, bool):
        return isinstance(saved, bool)
    if is_number(fresh):
        return is_number(saved)
    if fresh is None:
        return saved is None
    return isinstance(saved, type(fresh))


def _check_resume_weights(
    where: str, ckpt: dict[str, Any], cfg: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """The run's architecture and model options agree with the checkpoint and build a model that
    its weights fit; returns that model (meta device) and the checked options."""
    if cfg.arch != ckpt["arch"]:
        raise CheckpointError(
            f"{where}: its config records arch {cfg.arch!r} "
            f"but it holds a {ckpt['arch']} checkpoint"
        )
    try:
        kw = cfg.model_kwargs
    except (TypeError, ValueError):
        raise CheckpointError(
            f"{where}: its config records afi_stages/reduction that are not numbers"
        ) from None
    checked = check_model_kwargs(where, cfg.arch, kw)
    meta = check_weights(where, cfg.arch, ckpt["num_classes"], checked, ckpt["model"])
    return meta, checked


def _build_optim(where: str, meta: nn.Module, cfg: Any) -> tuple[Any, Any]:
    """The optimizer and scheduler the run's configuration builds for ``meta``."""
    try:
        optimizer = build_optimizer(meta, cfg)
        scheduler = build_scheduler(optimizer, cfg, 1)
    except Exception as exc:
        raise CheckpointError(
            f"{where}: its config cannot build the optimizer ({str(exc).splitlines()[0][:100]})"
        ) from None
    return optimizer, scheduler


def _check_param_groups(where: str, groups: list, optimizer: Any) -> dict[int, tuple]:
    """Each saved parameter group lists the run's parameters, with settings of the run's kinds;
    returns the shape of each parameter id."""
    if len(groups) != len(optimizer.param_groups):
        raise CheckpointError(
            f"{where}: the optimizer state has {len(groups)} parameter groups, "
            f"the run has {len(optimizer.param_groups)}"
        )
    shapes: dict[int, tuple] = {}
    for i, (group, fresh) in enumerate(zip(groups, optimizer.param_groups, strict=True)):
        ids = group.get("params") if isinstance(group, dict) else None
        if (
            not isinstance(ids, list)
            or not all(is_int(p) for p in ids)
            or len(ids) != len(fresh["params"])
        ):
            raise CheckpointError(
                f"{where}: optimizer parameter group {i} does not list the run's "
                f"{len(fresh['params'])} parameters"
            )
        for key, value in group.items():
            if key != "params" and key in fresh and not _same_kind(value, fresh[key]):
                raise CheckpointError(
                    f"{where}: optimizer parameter group {i} has {key} = {value!r:.40}"
                )
        shapes.update(
            {p: tuple(param.shape) for p, param in zip(ids, fresh["params"], strict=True)}
        )
    if len(shapes) != sum(len(g["params"]) for g in groups):
        raise CheckpointError(f"{where}: the optimizer state lists a parameter twice")
    return shapes


def _check_optimizer_entries(where: str, state: dict, shapes: dict[int, tuple]) -> None:
    """Every per-parameter entry belongs to a parameter of the run, its buffers of that shape."""
    for key, entry in state.items():
        if key not in shapes or not isinstance(entry, dict):
            raise CheckpointError(
                f"{where}: the optimizer state has an entry {key!r:.40} for no parameter of the run"
            )
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                if value.dim() and tuple(value.shape) != shapes[key]:
                    raise CheckpointError(
                        f"{where}: optimizer {name} of parameter {key} has shape "
                        f"{tuple(value.shape)}, the parameter {shapes[key]}"
                    )
            elif value is not None and not is_number(value):
                raise CheckpointError(
                    f"{where}: optimizer state {name} of parameter {key} "
                    f"is a {type(value).__name__}"
                )


def _check_optimizer_state(where: str, saved: Any, optimizer: Any) -> None:
    """The saved optimizer state dict fits ``optimizer``: groups first, then the entries."""
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    state = saved.get("state") if isinstance(saved, dict) else None
    if (
        not isinstance(groups, list)
        or not isinstance(state, dict)
        or set(saved) != {"state", "param_groups"}
    ):
        raise CheckpointError(
            f"{where}: the optimizer state is not an {type(optimizer).__name__} state dict "
            "(state, param_groups)"
        )
    shapes = _check_param_groups(where, groups, optimizer)
    _check_optimizer_entries(where, state, shapes)


#: The keys of ``torch.amp.GradScaler.state_dict()``: all of them when the run uses fp16.
_SCALER_KEYS = {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}


def _check_scheduler_and_scaler(where: str, ckpt: dict[str, Any], scheduler: Any, cfg: Any) -> None:
    """The scheduler state has the structure of the run's schedule; the scaler state is one
    ``GradScaler`` writes (complete under fp16)."""
    if not _same_kind(ckpt["scheduler"], scheduler.state_dict()):
        raise CheckpointError(
            f"{where}: the scheduler state does not fit the run's learning-rate schedule"
        )
    scaler = ckpt["scaler"]
    if (
        not isinstance(scaler, dict)
        or not set(scaler) <= _SCALER_KEYS
        or not all(map(is_number, scaler.values()))
        or (cfg.amp == "fp16" and set(scaler) != _SCALER_KEYS)
    ):
        raise CheckpointError(f"{where}: the gradient-scaler state is not one afictl train writes")


def _check_rng(where: str, ckpt: dict[str, Any]) -> None:
    """Each process's RNG state restores: the CUDA part checked by type and shape (it cannot be
    tried where there is no CUDA), the rest tried for real, then the current state put back."""
    rngs = ckpt.get("rng") or []
    if not isinstance(rngs, list):
        raise CheckpointError(f"{where}: the RNG state must be a list (one per process)")
    for rank, rng in enumerate(rngs):
        problem = cuda_state_problem(rng) if isinstance(rng, dict) else None
        if problem:
            raise CheckpointError(f"{where}: the CUDA RNG state of process {rank} {problem}")
    before = get_rng_state()
    try:
        for rng in rngs:  # restored exactly as the run will, then put back
            set_rng_state({k: v for k, v in rng.items() if k not in CUDA_KEYS})
    except Exception:
        raise CheckpointError(f"{where}: the RNG state is not one afictl train writes") from None
    finally:
        set_rng_state(before)


def _check_counters(where: str, ckpt: dict[str, Any]) -> None:
    """The running sums of an interrupted epoch, the best accuracy, timings and metric rows."""
    partial = ckpt.get("partial", [])
    if not isinstance(partial, list) or not all(map(is_number, partial)):
        raise CheckpointError(
            f"{where}: partial (the running sums of an interrupted epoch) must be numbers"
        )
    for key in ("best_top1", "partial_seconds"):
        if key in ckpt and not is_number(ckpt[key]):
            raise CheckpointError(
                f"{where}: {key} must be a number, not {type(ckpt[key]).__name__}"
            )
    metrics = ckpt.get("metrics", [])
    if not isinstance(metrics, list) or not all(isinstance(m, dict) for m in metrics):
        raise CheckpointError(f"{where}: metrics must be a list of rows")


def _check_hist(where: str, ckpt: dict[str, Any]) -> None:
    """``--checkpoint-hist``'s record, when present, holds its ranking list."""
    hist = ckpt.get("checkpoint_hist")
    if hist is not None and not (isinstance(hist, dict) and isinstance(hist.get("ranking"), list)):
        raise CheckpointError(f"{where}: checkpoint_hist is not one afictl train writes")


def _check_resume(where: str, ckpt: dict[str, Any], cfg: Any) -> None:
    """What ``afictl train --resume`` restores fits the optimizer, scheduler and scaler that the
    run's configuration builds (built on the meta device; nothing is allocated or loaded)."""
    meta, kw = _check_resume_weights(where, ckpt, cfg)
    optimizer, scheduler = _build_optim(where, meta, cfg)
    _check_optimizer_state(where, ckpt["optimizer"], optimizer)
    _check_scheduler_and_scaler(where, ckpt, scheduler, cfg)
    _check_rng(where, ckpt)
    _check_counters(where, ckpt)
    _check_ema(where, ckpt, cfg, kw)
    _check_hist(where, ckpt)


def _check_ema(where: str, ckpt: dict[str, Any], cfg: Any, kw: dict[str, Any]) -> None:
    """With ``--model-ema`` the EMA state (``module.<weight>`` tensors and ``n_averaged``) fits
    the architecture as the raw weights do."""
    if not getattr(cfg, "model_ema", False):
        return
    ema = ckpt.get("model_ema")
    if not (
        isinstance(ema, dict)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ema.items())
    ):
        raise CheckpointError(
            f"{where}: the run has --model-ema but no EMA state of tensors (model_ema)"
        )
    inner = {k[len("module.") :]: v for k, v in ema.items() if k.startswith("module.")}
    check_weights(f"{where} (EMA weights)", cfg.arch, ckpt["num_classes"], kw, inner)
