"""The checkpoint file, in the shape of timm's ``_helpers.py`` and below every reader of it:
read with ``torch.load(weights_only=True)``, the fields a reader uses checked once, the weights
loaded with ``strict=True`` into the model built on the meta device (nothing allocated)."""

from __future__ import annotations

import pickletools
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from .checks import Bound
from .errors import ModelOptionError, UnknownModelError, UserError
from .model_options import canonical_options
from .models import check_model_options, create_meta_model, get_model_info

CHECKPOINT_FORMAT = "afictl-checkpoint"
CHECKPOINT_VERSION = 2  # 2: afictl.train.checkpointing's dataclass; version 1 loads as it is
#: The most classes a checkpoint may declare (ImageNet-21k has 21,841); more is a crafted file.
MAX_CLASSES = 100_000
MODEL_FIELDS = ("arch", "num_classes", "model")  # what rebuilding the network needs
#: Pickle opcodes that import or call: what ``weights_only`` refuses in a well-formed stream.
_CALLING = {"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD"}


class CheckpointError(UserError):
    """A file that is missing, unreadable, unsafe, or not an afictl checkpoint."""


def is_int(value: Any) -> bool:
    """An integer, not a bool (with :func:`is_number`, afictl's one pair of number tests)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_torch_file(
    path: str | Path, map_location: str | torch.device = "cpu", *, mmap: bool = False
) -> tuple[Any, Path]:
    """``torch.load(weights_only=True)`` of a file (a run folder: its best.pt, else last.pt) and
    its path; :class:`CheckpointError` (one line) when missing, unsafe or not a torch file."""
    path = Path(path)
    if path.is_dir():
        path = next((path / n for n in ("best.pt", "last.pt") if (path / n).is_file()), path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols: one line is the rule
            warnings.simplefilter("ignore")
            return torch.load(path, map_location, weights_only=True, mmap=mmap), path
    except Exception as exc:  # refused by weights_only, truncated, random bytes, not a torch file
        try:  # a plain pickle that calls something: parsed by pickletools, never run
            calls = {op.name for op, _, _ in pickletools.genops(path.read_bytes())} & _CALLING
        except Exception:
            calls = set()
        if calls or "Unsupported global" in str(exc):
            why = "holds Python objects beyond tensors and plain types, and was refused"
            raise CheckpointError(
                f"{path} is not a safe checkpoint: it {why} without running them"
            ) from None
        why = f"the file is corrupt, truncated or not a torch file ({type(exc).__name__})"
        raise CheckpointError(f"{path} is not a checkpoint: {why}") from None


def checkpoint_options(where: str, arch: str, kw: Any) -> dict[str, Any]:
    """The model options a checkpoint records, as :func:`~afictl.models.check_model_options`
    returns them (legacy names mapped); one line naming the file and the option otherwise."""
    if not isinstance(kw, dict):
        raise CheckpointError(f"{where}: model_kwargs must be a dict, not {type(kw).__name__}")
    info, checked = get_model_info(arch), {}
    for key, value in canonical_options(kw).items():
        try:  # one option at a time: the error names it
            checked |= check_model_options(arch, {key: value}, legacy=False)
        except ModelOptionError as exc:  # in the words checkpoint errors have always used
            option, got, why = info.options.get(key), f"got {value!r:.60}", str(exc)
            if option is None:
                takes = ", ".join(info.options) or "no options"
                why = f"{key} are not options of {arch} (it takes {takes})"
            elif option.kind == "stages":
                why = f"{key} must be stage numbers in 1..{info.num_stages}, {got}"
            elif isinstance(option.check, Bound) and option.check.integer:
                why = f"{key} must be an integer in {option.check.lo}..{option.check.hi}, {got}"
            raise CheckpointError(f"{where}: model_kwargs {why}") from None
    return checked


def check_weights(where: str, arch: str, n: int, kw: dict, state: dict) -> torch.nn.Module:
    """The model of ``arch`` on the meta device, after ``state`` loaded into it strictly."""
    meta = create_meta_model(arch, num_classes=n, **kw)
    try:
        with warnings.catch_warnings():  # "copying into a meta parameter is a no-op": the point
            warnings.simplefilter("ignore")
            meta.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # torch's first complaint, in one line
        first = [*str(exc).split("\n\t"), str(exc)][1].rstrip(". ").replace('"', "")
        first = re.sub(r"(\w+) key\(s\) in state_dict:", lambda m: m[1].lower(), first)
        size = re.match(r"size mismatch for (\S+): .*?Size\((.*?)\).*Size\((.*?)\)", first)
        if size:
            got, want = (tuple(map(int, re.findall(r"\d+", t))) for t in size.groups()[1:])
            first = f"{size[1]} has shape {got}, expected {want}"
        raise CheckpointError(f"{where}: weights do not fit {arch} ({first[:160]})") from None
    return meta


def validate_checkpoint(
    ckpt: dict[str, Any], *, model: bool = False, require: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``ckpt`` (returned, its ``model_kwargs`` normalised) when the fields a reader uses have
    the types afictl writes, the ``require``-d ones are present, and (``model=True``) the weights
    fit; :class:`CheckpointError` (one line naming the file and the field) otherwise."""
    where, arch, n = ckpt.get("path", "checkpoint"), ckpt.get("arch"), ckpt.get("num_classes")
    config, state, names = ckpt.get("config") or {}, ckpt.get("model", {}), ckpt.get("class_names")

    def bad(problem: str) -> CheckpointError:
        return CheckpointError(f"{where}: {problem}")

    for absent in (k for k in (*(MODEL_FIELDS if model else ()), *require) if k not in ckpt):
        raise CheckpointError(f"{where} is not a complete afictl checkpoint (no {absent})")
    if "arch" in ckpt and not isinstance(arch, str):
        raise bad(f"arch must be a model name, not {type(arch).__name__}")
    try:
        if arch is not None:
            get_model_info(arch)
    except UnknownModelError as exc:  # one line, with the nearest names
        raise bad(str(exc)) from None
    if "num_classes" in ckpt and not (is_int(n) and 1 <= n <= MAX_CLASSES):
        raise bad(f"num_classes must be an integer in 1..{MAX_CLASSES:,}, got {n!r:.40}")
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) and v.layout == torch.strided
        for k, v in state.items()
    ):
        raise bad("model must map weight names to tensors")
    for key in (k for k in ("epoch", "step") if k in ckpt):
        if not (is_int(ckpt[key]) and ckpt[key] >= 0):
            raise bad(f"{key} must be a non-negative integer, got {ckpt[key]!r:.40}")
    if names is not None and not (
        isinstance(names, list) and all(isinstance(c, str) for c in names) and len(names) == n
    ):
        raise bad(f"class_names must be {n} class name(s)")
    if not isinstance(config, dict):
        raise bad(f"config must be a dict, not {type(config).__name__}")
    if config.get("arch") not in (None, arch):
        raise bad(
            f"it holds a {arch} checkpoint but its config records arch {config['arch']!r:.40}"
        )
    sizes = [(k, config.get(k)) for k in ("input_size", "data_size", "seed")]
    for key, value in [*sizes, ("input_size", ckpt.get("input_size"))]:
        if value is not None and not (is_int(value) and (key == "seed" or 1 <= value <= 100_000)):
            raise bad(f"{key} must be a positive integer, got {value!r:.40}")
    if arch is not None:
        ckpt["model_kwargs"] = checkpoint_options(where, arch, ckpt.get("model_kwargs") or {})
        if model:
            check_weights(where, arch, n, ckpt["model_kwargs"], state)
    return ckpt
