"""The checkpoint file: its format, read without executing anything, every field checked.

- Read with ``torch.load(weights_only=True)`` (:func:`read_torch_file`): a pickle that would run
  code is refused, and told apart from a file that is no checkpoint at all.
- Checked before use (:func:`validate_checkpoint`, called by every reader): each field has the
  type afictl writes, and the weights fit the architecture (compared on the meta device, so a
  crafted ``num_classes`` allocates nothing).

The lowest layer of checkpoints: it imports the model registry and nothing that reads or
writes checkpoints, so :mod:`afictl.weights` (plain state dicts, safetensors) and
:mod:`afictl.checkpoint` (saving, loading any of them) both build on it, and training adds its
resume checks on top (:func:`afictl.train.resume_check.validate_resume`).
"""

from __future__ import annotations

import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UnknownModelError, UserError
from .models import create_meta_model, get_model_info

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "MAX_CLASSES",
    "MODEL_FIELDS",
    "CheckpointError",
    "check_model_kwargs",
    "check_weights",
    "is_int",
    "is_number",
    "model_kwargs",
    "read_torch_file",
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


#: The fields that rebuilding the network needs.
MODEL_FIELDS = ("arch", "num_classes", "model")


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


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_model_kwargs(where: str, arch: str, kw: Any) -> dict[str, Any]:
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
        and all(is_int(s) and 1 <= s <= info.num_stages for s in stages)
    ):
        raise CheckpointError(
            f"{where}: model_kwargs afi_stages must be stage numbers in 1..{info.num_stages}, "
            f"got {stages!r:.60}"
        )
    checks = {
        "reduction": (lambda v: is_int(v) and 1 <= v <= 4096, "an integer in 1..4096"),
        "memory_efficient": (lambda v: isinstance(v, bool), "true or false"),
        "attn": (lambda v: v is None or isinstance(v, str), "an attention name"),
        "width": (lambda v: is_number(v), "a number"),
        "dropout": (lambda v: v is None or (is_number(v) and 0 <= v < 1), "a number in [0, 1)"),
    }
    for key, (ok, what) in checks.items():
        if key in kw and not ok(kw[key]):
            raise CheckpointError(
                f"{where}: model_kwargs {key} must be {what}, got {kw[key]!r:.60}"
            )
    return kw


def check_weights(
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


def _check_present(where: str, ckpt: dict[str, Any], model: bool, require: tuple[str, ...]) -> None:
    """The fields that rebuilding the network (``model``) needs, and those ``require`` names."""
    need = MODEL_FIELDS if model else ()
    need += tuple(k for k in require if k not in need)
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
    if "num_classes" in ckpt and not (is_int(n) and 1 <= n <= MAX_CLASSES):
        raise CheckpointError(
            f"{where}: num_classes must be an integer in 1..{MAX_CLASSES:,}, got {n!r:.40}"
        )
    if "model_kwargs" in ckpt and arch is not None:
        check_model_kwargs(where, arch, ckpt["model_kwargs"] or {})
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
        if key in ckpt and not (is_int(ckpt[key]) and ckpt[key] >= 0):
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
        if value is not None and not (is_int(value) and (key == "seed" or 1 <= value <= 100_000)):
            raise CheckpointError(f"{where}: {key} must be a positive integer, got {value!r:.40}")


def validate_checkpoint(
    ckpt: dict[str, Any], *, model: bool = False, require: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Check a loaded checkpoint before anything uses it; :class:`CheckpointError` (one line,
    naming the file and the field) otherwise. Returns ``ckpt``.

    Always (every reader, through :func:`afictl.checkpoint.load_checkpoint`): the fields present
    have the types afictl writes: ``arch`` a registered name that agrees with
    ``config["arch"]``, ``num_classes`` an integer in 1..:data:`MAX_CLASSES`, ``model_kwargs``
    options of ``arch`` of the right types, ``model`` a dict of tensors, ``epoch``/``step``
    non-negative integers, ``class_names`` one string per class, ``config`` a dict whose data
    fields are plain.

    ``model=True`` (rebuilding the network): ``arch``, ``num_classes`` and ``model`` present,
    and every weight's name and shape equal to those of the model built on the meta device.
    ``require``: further fields that must be present (checked first, with the model's).
    Resuming a run checks more: :func:`afictl.train.resume_check.validate_resume`.
    """
    where = ckpt.get("path", "checkpoint")
    _check_present(where, ckpt, model, require)
    _check_fields(where, ckpt)
    _check_config_fields(where, ckpt)
    if model:
        arch = ckpt.get("arch")
        kw = check_model_kwargs(where, arch, ckpt.get("model_kwargs") or {})
        check_weights(where, arch, ckpt.get("num_classes"), kw, ckpt.get("model"))
    return ckpt


def model_kwargs(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The model options a checkpoint records (``r``, the name before ``reduction``, accepted)."""
    kw = dict(ckpt.get("model_kwargs") or {})
    if "r" in kw:
        kw["reduction"] = kw.pop("r")
    return kw
