"""Checkpoints that lose nothing and execute nothing.

- Written atomically: temp file in the same folder, flush + fsync, then ``os.replace``; a crash
  mid-write leaves the previous checkpoint intact.
- Read with ``torch.load(weights_only=True)``: a pickle that would run code is refused. Every
  value stored is a tensor or a plain type (config and metadata as dicts of str/int/float/...).
- Checked before use (:func:`validate_checkpoint`, called by every reader): each field has the
  type afictl writes, the weights fit the architecture (compared on the meta device, so a crafted
  ``num_classes`` allocates nothing), and a checkpoint to resume holds an optimizer, scheduler,
  scaler and RNG state that the run's configuration can restore.

A checkpoint is a dict with at least::

    format: "afictl-checkpoint", version: 1,
    arch: registry name, num_classes: int,
    model_kwargs: {"afi_stages": [...], "reduction": 4} or {},
    model: state_dict, epoch: int (epochs completed),
    config: the run's resolved configuration (dataset, data_root, input_size, ...),
    class_names: list[str] | None

and, when written by ``afictl train`` (:class:`afictl.train.checkpointing.TrainCheckpoint`):
optimizer, scheduler, scaler, rng, metrics, best_top1, best_epoch, the running sums of an
interrupted epoch, and with ``--model-ema`` / ``--checkpoint-hist`` model_ema / checkpoint_hist.
"""

from __future__ import annotations

import os
import pickletools
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UnknownModelError, UserError
from .models import create_meta_model, create_model, get_model_info

__all__ = [
    "CHECKPOINT_FORMAT",
    "MAX_CLASSES",
    "CheckpointError",
    "CheckpointWriteError",
    "load_checkpoint",
    "model_from_checkpoint",
    "read_torch_file",
    "save_checkpoint",
    "validate_checkpoint",
]

CHECKPOINT_FORMAT = "afictl-checkpoint"
#: 2: the training checkpoint as a dataclass (afictl.train.checkpointing), model_ema,
#: checkpoint_hist; version-1 files load as they are
CHECKPOINT_VERSION = 2
#: The most classes a checkpoint may declare (ImageNet-21k has 21,841); more is a crafted file.
MAX_CLASSES = 100_000


class CheckpointError(UserError):
    """A file that is missing, unreadable, unsafe, or not an afictl checkpoint."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint that could not be written (disk full, read-only place, ...): one line naming
    the path and the OS reason; the file at that path, if any, is untouched. ``errno`` is the
    OS's."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


def _write_error(path: Path, exc: OSError) -> CheckpointWriteError:
    kept = "the previous checkpoint there is intact" if path.is_file() else "nothing was written"
    return CheckpointWriteError(
        f"cannot write checkpoint {path}: {exc.strerror or exc}; {kept}", exc.errno
    )


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (format/version keys are added) to ``path``.

    An OS error (``ENOSPC``, ``EROFS``, ``EACCES``, ...) becomes :class:`CheckpointWriteError`
    naming the path and the reason, after the temporary file is removed.
    """
    path = Path(path)
    data = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from exc
        raise
    # make the rename itself durable
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    mmap: bool = False,
    state_dict: bool = False,
    arch: str | None = None,
) -> dict[str, Any]:
    """Read a checkpoint safely; :class:`CheckpointError` (one line) on any problem.

    The fields present are checked (:func:`validate_checkpoint`); ``mmap`` maps the tensors
    instead of reading them (scanning many runs for their metadata). ``state_dict=True`` also
    takes a plain state dict or a ``.safetensors`` file, of the model ``arch`` names, as a
    checkpoint (:func:`afictl.weights.load_weights`).
    """
    if state_dict:
        from .weights import load_weights

        return load_weights(path, arch=arch, map_location=map_location)
    data, path = read_torch_file(path, map_location, mmap=mmap)
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an afictl checkpoint")
    data["path"] = str(path)
    return validate_checkpoint(data)


def read_torch_file(
    path: str | Path, map_location: str | torch.device = "cpu", *, mmap: bool = False
) -> tuple[Any, Path]:
    """``torch.load(weights_only=True)`` of a file (a run folder: its best.pt, else last.pt),
    and the file's path; :class:`CheckpointError` (one line) when it is missing, unsafe or
    not a torch file."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                path = path / name
                break
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols: one line is the rule
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # refused by weights_only, truncated, random bytes, not a torch file
        raise CheckpointError(_refusal(path, exc)) from None
    return data, path


#: Pickle opcodes that call or import something: what ``weights_only`` refuses in a stream that
#: is otherwise well formed.
_CALLING_OPCODES = {
    "GLOBAL",
    "STACK_GLOBAL",
    "REDUCE",
    "INST",
    "OBJ",
    "NEWOBJ",
    "NEWOBJ_EX",
    "BUILD",
}


def _refusal(path: Path, exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` failed, told apart without running anything:
    a well-formed pickle that imports or calls objects (unsafe), or not a checkpoint at all."""
    text = str(exc)
    if "Unsupported global" in text:
        name = text.split("Unsupported global:", 1)[1].split(" was not", 1)[0].strip()
        return (
            f"{path} is not a safe checkpoint: it holds Python objects beyond tensors and plain "
            f"types ({name[:80]}), and was refused without running them"
        )
    try:  # the pickle stream: data.pkl of torch's zip format, or the file itself (legacy / plain)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                name = next(n for n in zf.namelist() if n.endswith("data.pkl"))
                stream = zf.read(name)
        else:
            stream = path.read_bytes()
        ops = {op.name for op, _, _ in pickletools.genops(stream)}  # parses, never executes
    except Exception:
        ops = None
    if ops is not None and ops & _CALLING_OPCODES:
        return (
            f"{path} is not a safe checkpoint: it holds Python objects beyond tensors and plain "
            "types, and was refused without running them"
        )
    return (
        f"{path} is not a checkpoint: the file is corrupt, truncated or not a torch file "
        f"({type(exc).__name__})"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_model_kwargs(where: str, arch: str, kw: Any) -> dict[str, Any]:
    """The options a checkpoint records, each of the type its builder takes."""
    if not isinstance(kw, dict):
        raise CheckpointError(f"{where}: model_kwargs must be a dict, not {type(kw).__name__}")
    kw = dict(kw)
    if "r" in kw:
        kw["reduction"] = kw.pop("r")
    info = get_model_info(arch)
    unknown = sorted(str(k) for k in set(kw) - set(info.options))
    if unknown:
        takes = ", ".join(info.options) or "no options"
        raise CheckpointError(
            f"{where}: model_kwargs {', '.join(unknown)} are not options of {arch} "
            f"(it takes {takes})"
        )
    stages = kw.get("afi_stages")
    if stages is not None and not (
        isinstance(stages, (list, tuple))
        and stages
        and all(_is_int(s) and 1 <= s <= info.num_stages for s in stages)
    ):
        raise CheckpointError(
            f"{where}: model_kwargs afi_stages must be stage numbers in 1..{info.num_stages}, "
            f"got {stages!r:.60}"
        )
    checks = {
        "reduction": (lambda v: _is_int(v) and 1 <= v <= 4096, "an integer in 1..4096"),
        "memory_efficient": (lambda v: isinstance(v, bool), "true or false"),
        "attn": (lambda v: v is None or isinstance(v, str), "an attention name"),
        "width": (lambda v: _is_number(v), "a number"),
        "dropout": (lambda v: v is None or (_is_number(v) and 0 <= v < 1), "a number in [0, 1)"),
    }
    for key, (ok, what) in checks.items():
        if key in kw and not ok(kw[key]):
            raise CheckpointError(
                f"{where}: model_kwargs {key} must be {what}, got {kw[key]!r:.60}"
            )
    return kw


def _check_weights(
    where: str, arch: str, num_classes: int, kw: dict[str, Any], state: dict
) -> nn.Module:
    """The model of ``arch`` on the meta device, after checking that ``state`` fits it exactly."""
    try:
        meta = create_meta_model(arch, num_classes=num_classes, **kw)
    except (UserError, ValueError, TypeError, ZeroDivisionError) as exc:
        raise CheckpointError(
            f"{where}: its model options do not build {arch} ({str(exc).splitlines()[0][:120]})"
        ) from None
    expected = meta.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        what = (
            (f"missing {', '.join(missing[:3])}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unexpected {', '.join(map(str, extra[:3]))}" if extra else "")
        )
        raise CheckpointError(f"{where}: weights do not fit {arch} ({what})")
    for key, ref in expected.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{where}: weights do not fit {arch} ({key} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(ref.shape)})"
            )
    return meta


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
    if _is_number(fresh):
        return _is_number(saved)
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
    checked = _check_model_kwargs(where, cfg.arch, kw)
    meta = _check_weights(where, cfg.arch, ckpt["num_classes"], checked, ckpt["model"])
    return meta, checked


def _build_optim(where: str, meta: nn.Module, cfg: Any) -> tuple[Any, Any]:
    """The optimizer and scheduler the run's configuration builds for ``meta``."""
    from .train.optim import build_optimizer, build_scheduler  # training imports this module

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
            or not all(_is_int(p) for p in ids)
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
            elif value is not None and not _is_number(value):
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
            f"{where}: the optimizer state is not an SGD state dict (state, param_groups)"
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
        or not all(map(_is_number, scaler.values()))
        or (cfg.amp == "fp16" and set(scaler) != _SCALER_KEYS)
    ):
        raise CheckpointError(f"{where}: the gradient-scaler state is not one afictl train writes")


def _check_rng(where: str, ckpt: dict[str, Any]) -> None:
    """Each process's RNG state restores: the CUDA part checked by type and shape (it cannot be
    tried where there is no CUDA), the rest tried for real, then the current state put back."""
    from .train.state import CUDA_KEYS, cuda_state_problem, get_rng_state, set_rng_state

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
    if not isinstance(partial, list) or not all(map(_is_number, partial)):
        raise CheckpointError(
            f"{where}: partial (the running sums of an interrupted epoch) must be numbers"
        )
    for key in ("best_top1", "partial_seconds"):
        if key in ckpt and not _is_number(ckpt[key]):
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
    _check_weights(f"{where} (EMA weights)", cfg.arch, ckpt["num_classes"], kw, inner)


def _check_present(where: str, ckpt: dict[str, Any], model: bool, resume: Any) -> None:
    """The fields that rebuilding the network (``model``) or resuming (``resume``) needs."""
    need = ("arch", "num_classes", "model") if model or resume is not None else ()
    if resume is not None:
        need += ("optimizer", "scheduler", "scaler", "config", "epoch")
    absent = [k for k in need if k not in ckpt]
    if absent:
        raise CheckpointError(
            f"{where} is not a complete afictl checkpoint (no {', '.join(absent)})"
        )


def _check_model_fields(where: str, ckpt: dict[str, Any]) -> None:
    """``arch`` a registered name, ``num_classes`` in range, ``model_kwargs`` options of
    ``arch``, ``model`` a dict of dense tensors."""
    arch = ckpt.get("arch")
    if "arch" in ckpt:
        if not isinstance(arch, str):
            raise CheckpointError(f"{where}: arch must be a model name, not {type(arch).__name__}")
        try:
            get_model_info(arch)
        except UnknownModelError as exc:
            raise CheckpointError(f"{where}: {exc}") from None
    n = ckpt.get("num_classes")
    if "num_classes" in ckpt and not (_is_int(n) and 1 <= n <= MAX_CLASSES):
        raise CheckpointError(
            f"{where}: num_classes must be an integer in 1..{MAX_CLASSES:,}, got {n!r:.40}"
        )
    if "model_kwargs" in ckpt and arch is not None:
        _check_model_kwargs(where, arch, ckpt["model_kwargs"] or {})
    state = ckpt.get("model")
    if "model" in ckpt and not (
        isinstance(state, dict)
        and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) and v.layout == torch.strided
            for k, v in state.items()
        )
    ):
        raise CheckpointError(f"{where}: model must map weight names to tensors")


def _check_fields(where: str, ckpt: dict[str, Any]) -> None:
    """The model fields, then ``epoch``/``step`` counters and one class name per class."""
    _check_model_fields(where, ckpt)
    for key in ("epoch", "step"):
        if key in ckpt and not (_is_int(ckpt[key]) and ckpt[key] >= 0):
            raise CheckpointError(
                f"{where}: {key} must be a non-negative integer, got {ckpt[key]!r:.40}"
            )
    n = ckpt.get("num_classes")
    names = ckpt.get("class_names")
    if names is not None and not (
        isinstance(names, list)
        and all(isinstance(c, str) for c in names)
        and (n is None or len(names) == n)
    ):
        raise CheckpointError(
            f"{where}: class_names must be {n if n is not None else 'one'} class name(s)"
        )


def _check_config_fields(where: str, ckpt: dict[str, Any]) -> None:
    """``config`` a dict whose arch agrees with the checkpoint's and whose data fields (names,
    sizes, seed) are plain; ``input_size`` at the top level too."""
    arch = ckpt.get("arch")
    config = ckpt.get("config")
    if config is not None and not isinstance(config, dict):
        raise CheckpointError(f"{where}: config must be a dict, not {type(config).__name__}")
    config = config or {}
    if config.get("arch") is not None and config.get("arch") != arch:
        raise CheckpointError(
            f"{where}: it holds a {arch} checkpoint "
            f"but its config records arch {config['arch']!r:.40}; refused"
        )
    for key in ("dataset", "data_root", "eval_split"):
        if config.get(key) is not None and not isinstance(config[key], str):
            raise CheckpointError(
                f"{where}: config {key} must be a string, not {type(config[key]).__name__}"
            )
    for key, source in (
        ("input_size", config),
        ("input_size", ckpt),
        ("data_size", config),
        ("seed", config),
    ):
        value = source.get(key)
        if value is not None and not (_is_int(value) and (key == "seed" or 1 <= value <= 100_000)):
            raise CheckpointError(f"{where}: {key} must be a positive integer, got {value!r:.40}")


def validate_checkpoint(
    ckpt: dict[str, Any], *, model: bool = False, resume: Any = None
) -> dict[str, Any]:
    """Check a loaded checkpoint before anything uses it; :class:`CheckpointError` (one line,
    naming the file and the field) otherwise. Returns ``ckpt``.

    Always (every reader, through :func:`load_checkpoint`): the fields present have the types
    afictl writes: ``arch`` a registered name that agrees with ``config["arch"]``,
    ``num_classes`` an integer in 1..:data:`MAX_CLASSES`, ``model_kwargs`` options of ``arch``
    of the right types, ``model`` a dict of tensors, ``epoch``/``step`` non-negative integers,
    ``class_names`` one string per class, ``config`` a dict whose data fields are plain.

    ``model=True`` (rebuilding the network): ``arch``, ``num_classes`` and ``model`` present,
    and every weight's name and shape equal to those of the model built on the meta device.

    ``resume=cfg`` (the run's :class:`~afictl.train.TrainConfig`): also the optimizer state
    (groups, one entry per parameter, every buffer of its parameter's shape), the scheduler and
    scaler states, and the RNG states fit what ``cfg`` builds.
    """
    where = ckpt.get("path", "checkpoint")
    _check_present(where, ckpt, model, resume)
    _check_fields(where, ckpt)
    _check_config_fields(where, ckpt)
    if model or resume is not None:
        arch = ckpt.get("arch")
        kw = _check_model_kwargs(where, arch, ckpt.get("model_kwargs") or {})
        if resume is None:
            _check_weights(where, arch, ckpt.get("num_classes"), kw, ckpt.get("model"))
        else:
            _check_resume(where, ckpt, resume)
    return ckpt


def model_kwargs(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The model options a checkpoint records (``r``, the name before ``reduction``, accepted)."""
    kw = dict(ckpt.get("model_kwargs") or {})
    if "r" in kw:
        kw["reduction"] = kw.pop("r")
    return kw


def model_from_checkpoint(
    path: str | Path, *, arch: str | None = None, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained with and load its weights (eval mode).

    ``arch`` (optional) is what the caller expects; a checkpoint of another architecture gives
    an error naming both. A plain state dict or a ``.safetensors`` file is read as a
    checkpoint of ``arch`` (:func:`afictl.weights.load_weights`).
    """
    ckpt = load_checkpoint(path, map_location, state_dict=True, arch=arch)
    saved = ckpt.get("arch")
    if arch is not None and saved != arch:
        raise CheckpointError(f"{ckpt['path']} holds a {saved} checkpoint, not {arch}")
    validate_checkpoint(ckpt, model=True)
    model = create_model(saved, num_classes=ckpt["num_classes"], **model_kwargs(ckpt))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"{ckpt['path']}: weights do not fit {saved} ({str(exc).splitlines()[0]})"
        ) from None
    model.to(map_location).eval()
    return model, ckpt
