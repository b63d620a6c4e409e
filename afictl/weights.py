"""Weights in and out: plain state dicts and ``.safetensors`` files, beside afictl checkpoints.

In: every command that takes ``--checkpoint`` (and ``train --pretrained``) also takes a plain
state dict (``torch.save(model.state_dict())``, also wrapped under ``state_dict``/``model``/
``model_state_dict``, or with DDP's ``module.`` prefix) or a ``.safetensors`` file, read without
running anything (``torch.load(weights_only=True)``, ``safetensors``). ``--arch`` names its
model; ``num_classes`` is read from the classifier's rows. :func:`load_weights` gives such a
file the shape of an afictl checkpoint (the arch's home dataset and input size), so that eval,
export and the analyses read it as they read a run.

An AFI model starts from its baseline's weights (:func:`init_from_state_dict`): every tensor
whose name and shape fit is copied; the first convolution of AFI blocks 2..n, which has half
the baseline's output channels, takes the baseline's first half (Eq. 4: the next convolution's
first half of input channels reads X(i), as in the baseline); the AFI modules and a classifier
of another size keep their initialisation.

Out: :func:`export_safetensors` writes ``NAME.safetensors`` (the config also in its header) and
``NAME.config.json`` beside it (and ``NAME.README.md``, a model card, from a run's checkpoint);
:func:`load_exported` builds the model from the two. The same config (:func:`model_config`:
arch, classes, model options, preprocessing, class names) goes into ONNX and ``.pt2`` exports.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .checkpoint_format import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    read_torch_file,
    validate_checkpoint,
)
from .data.transforms import preprocessing
from .errors import UserError
from .export import TEXT_FIELDS, flat_metadata
from .models import create_meta_model, create_model, get_model_info

__all__ = [
    "CONFIG_FORMAT",
    "PretrainedReport",
    "WeightsFile",
    "config_path",
    "export_safetensors",
    "first_misfit",
    "flat_metadata",
    "init_from_state_dict",
    "load_exported",
    "load_weights",
    "model_card",
    "model_config",
    "read_weights",
]

#: ``format`` of a ``config.json`` written by :func:`export_safetensors`.
CONFIG_FORMAT = "afictl-model"
#: Where repositories nest the state dict in the dict they save.
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict")
#: A ``config.json`` larger than this is not one afictl wrote (21k class names take ~0.5 MB).
MAX_CONFIG_BYTES = 16 << 20


@dataclass
class WeightsFile:
    """What a weights file holds: its tensors and, for an afictl checkpoint, the checkpoint
    (fields checked); for an exported ``.safetensors``, its config."""

    path: Path
    state: dict[str, torch.Tensor]
    checkpoint: dict[str, Any] | None = None
    config: dict[str, Any] | None = None


def _is_state_dict(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and bool(data)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items())
    )


def _unwrap(data: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict in what ``torch.load`` returned: the dict itself, or one nested under a
    key repositories use; DDP's ``module.`` prefix removed."""
    if isinstance(data, dict) and not _is_state_dict(data):
        data = next((data[k] for k in STATE_DICT_KEYS if _is_state_dict(data.get(k))), data)
    if not _is_state_dict(data):
        raise CheckpointError(
            f"{path} is neither an afictl checkpoint nor a state dict (weight names to tensors)"
        )
    if all(k.startswith("module.") for k in data):
        data = {k[len("module.") :]: v for k, v in data.items()}
    return dict(data)


def config_path(path: str | Path) -> Path:
    """The config beside an exported ``NAME.safetensors``: ``NAME.config.json``."""
    return Path(path).with_suffix(".config.json")


#: The config's fields that are strings, stored as they are (the others as JSON).
def _config_from_header(meta: dict[str, str]) -> dict[str, Any] | None:
    """The config of :func:`flat_metadata` read back (None: a header afictl did not write)."""
    if "afictl.arch" not in meta:
        return None
    config: dict[str, Any] = {"format": CONFIG_FORMAT}
    for key, value in meta.items():
        name = key[len("afictl.") :] if key.startswith("afictl.") else None
        name = "afictl_version" if name == "version" else name
        if name in TEXT_FIELDS:
            config[name] = value
        elif name is not None:
            try:
                config[name] = json.loads(value)
            except ValueError:
                raise CheckpointError(f"the header's {key} is not JSON") from None
    return config


def _read_config(path: Path, header: dict[str, str]) -> dict[str, Any] | None:
    """The exported model's config: ``NAME.config.json`` beside it, else the file's header."""
    side = config_path(path)
    if not side.is_file():
        return _config_from_header(header)
    try:
        if side.stat().st_size > MAX_CONFIG_BYTES:
            raise ValueError("too large")
        config = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{side} is not a readable config ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != CONFIG_FORMAT:
        return _config_from_header(header)  # another tool's config: not ours to read
    return config


def _read_safetensors(path: Path, map_location: Any) -> WeightsFile:
    """Tensors and config of a ``.safetensors`` file; one line when it is damaged."""
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # truncated, random bytes, a header that lies about its size
        raise CheckpointError(
            f"{path} is not a readable .safetensors file: it is corrupt or truncated "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''})"
        ) from None
    if not state:
        raise CheckpointError(f"{path} holds no tensors")
    state = {k: v.to(map_location) for k, v in state.items()}
    return WeightsFile(path, state, config=_read_config(path, header))


def read_weights(path: str | Path, map_location: str | torch.device = "cpu") -> WeightsFile:
    """The tensors of an afictl checkpoint (or run folder), a plain state dict or a
    ``.safetensors`` file, read without running anything; :class:`CheckpointError` (one line)
    when the file is missing, unsafe, damaged or holds no state dict."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path, map_location)
    data, path = read_torch_file(path, map_location)
    if isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT:
        data["path"] = str(path)
        validate_checkpoint(data)
        if not isinstance(data.get("model"), dict):
            raise CheckpointError(f"{path} is not a complete afictl checkpoint (no model)")
        return WeightsFile(path, data["model"], checkpoint=data)
    return WeightsFile(path, _unwrap(data, path))


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def first_misfit(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> str | None:
    """The first key of ``state`` that does not fit ``expected`` (a model's state dict): missing,
    of another shape (in the model's order), or unexpected; None when all fit."""
    for key, ref in expected.items():
        if key not in state:
            return f"{key} is missing from the file"
        if state[key].shape != ref.shape:
            return f"{key} has shape {_shape(state[key])} in the file, {_shape(ref)} in the model"
    extra = next((k for k in state if k not in expected), None)
    return None if extra is None else f"the file has {extra}, which the model does not"


def _fill_counters(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """BatchNorm's ``num_batches_tracked``, absent from older state dicts, as 0 (what
    ``BatchNorm`` itself assumes of them; it counts batches and changes no output)."""
    for key in expected:
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)


def _classifier_keys(model: nn.Module) -> list[str]:
    """The state-dict names of the classifier's parameters (``fc.weight``, ``fc.bias``, ...)."""
    ids = {id(p) for p in model.get_classifier().parameters()}
    return [name for name, p in model.named_parameters() if id(p) in ids]


def _num_classes(state: dict[str, torch.Tensor], arch: str, where: str) -> int:
    """The rows of the classifier's weight in ``state`` (the arch's own count without one)."""
    meta = create_meta_model(arch)
    weight = next((k for k in _classifier_keys(meta) if k.endswith("weight")), None)
    if weight is None:
        return get_model_info(arch).num_classes
    if weight not in state:
        raise CheckpointError(f"{where} does not fit {arch}: {weight} is missing from the file")
    return int(state[weight].shape[0])


def _file_arch(f: WeightsFile, arch: str | None) -> str:
    """The model of a file that is not an afictl checkpoint: its config's, else ``arch``."""
    saved = (f.config or {}).get("arch")
    if saved is not None and not isinstance(saved, str):
        raise CheckpointError(f"{f.path}: its config's arch must be a model name")
    if saved is None and arch is None:
        raise CheckpointError(f"{f.path} is a plain state dict: name its model with --arch")
    arch = saved or arch  # a different --arch than the config's is refused by the caller
    get_model_info(arch)  # an unknown name: one line with suggestions
    return arch


def _as_checkpoint(f: WeightsFile, arch: str | None) -> dict[str, Any]:
    """A plain state dict or an exported file as an afictl checkpoint (fields checked, and its
    weights fit the model: the first misfit named)."""
    arch = _file_arch(f, arch)
    config = f.config or {}
    where = str(f.path)
    kw = config.get("model_kwargs") or {}
    num_classes = config.get("num_classes") or _num_classes(f.state, arch, where)
    size = (config.get("preprocessing") or {}).get("input_size")
    info = get_model_info(arch)
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "num_classes": num_classes,
        "model_kwargs": kw,
        "model": f.state,
        "config": {
            "dataset": config.get("dataset") or info.home_dataset,
            "input_size": size[-1] if isinstance(size, list) and size else info.input_size,
        },
        "class_names": config.get("class_names"),
        "path": where,
        "source": "safetensors" if f.path.suffix.lower() == ".safetensors" else "state_dict",
    }
    validate_checkpoint(ckpt)  # the types of every field before anything is built from them
    try:
        expected = create_meta_model(arch, num_classes=num_classes, **kw).state_dict()
    except (UserError, ValueError, TypeError, ZeroDivisionError) as exc:
        raise CheckpointError(
            f"{where}: its model options do not build {arch} ({str(exc).splitlines()[0][:120]})"
        ) from None
    _fill_counters(f.state, expected)
    misfit = first_misfit(f.state, expected)
    if misfit is not None:
        raise CheckpointError(f"{where} does not fit {arch}: {misfit}")
    return ckpt


def load_weights(
    path: str | Path, *, arch: str | None = None, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """An afictl checkpoint, a plain state dict of ``arch`` or an exported ``.safetensors``, as
    an afictl checkpoint dict (what :func:`afictl.checkpoint.load_checkpoint` returns).

    A plain file without ``arch`` is one line ("name its model with --arch"); its dataset is
    the arch's home dataset, its input size the arch's, ``num_classes`` the classifier's rows.
    """
    f = read_weights(path, map_location)
    return f.checkpoint if f.checkpoint is not None else _as_checkpoint(f, arch)


# --- an AFI model from its baseline ---------------------------------------------------------


@dataclass
class PretrainedReport:
    """What :func:`init_from_state_dict` did, by tensor name."""

    path: str
    arch: str
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)  # the first half of the file's tensor
    initialised: list[str] = field(default_factory=list)  # left as the model initialised them
    left: list[str] = field(default_factory=list)  # what the initialised ones are

    def line(self) -> str:
        """One line: ``pretrained FILE: N tensors loaded, M adapted (...), K left at ...``."""
        text = f"pretrained {self.path}: {len(self.loaded)} tensors loaded"
        if self.adapted:
            text += f", {len(self.adapted)} adapted (halved first conv + BN of AFI blocks)"
        if self.initialised:
            text += f", {len(self.initialised)} left at initialisation ({', '.join(self.left)})"
        return text

    def to_dict(self) -> dict[str, Any]:
        counts = {k: len(getattr(self, k)) for k in ("loaded", "adapted", "initialised")}
        return asdict(self) | {"counts": counts, "line": self.line()}


def _afi_layout(arch: str) -> tuple[set[str], set[str]]:
    """(names an AFI model has and its baseline lacks, names it halves) of ``arch``; both
    empty for a baseline. Names do not depend on widths or stages, so defaults serve."""
    baseline = get_model_info(arch).baseline
    if baseline is None:
        return set(), set()
    own = create_meta_model(arch).state_dict()
    base = create_meta_model(baseline).state_dict()
    new = set(own) - set(base)
    halved = {k for k in own if k in base and _halves(base[k], own[k])}
    return new, halved


def _halves(theirs: torch.Tensor, mine: torch.Tensor) -> bool:
    return (
        theirs.dim() > 0
        and theirs.shape[0] == 2 * mine.shape[0]
        and (theirs.shape[1:] == mine.shape[1:])
    )


def _place(key: str, theirs, mine, head, new, halved, report: PretrainedReport) -> Any:
    """Where tensor ``key`` of the model comes from: the file's (as is, or its first half), or
    None (left at initialisation); :class:`CheckpointError` when it cannot."""
    if theirs is not None and theirs.shape == mine.shape:
        report.loaded.append(key)
        return theirs
    if theirs is not None and key in halved and _halves(theirs, mine):
        report.adapted.append(key)
        return theirs[: mine.shape[0]]
    if key in head or (theirs is None and key in new):
        report.initialised.append(key)
        return None
    if theirs is None and key.endswith(".num_batches_tracked"):
        report.initialised.append(key)  # absent from older state dicts; counts, changes nothing
        return None
    misfit = first_misfit({key: theirs} if theirs is not None else {}, {key: mine})
    raise CheckpointError(f"{report.path} does not fit {report.arch}: {misfit}")


def init_from_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], arch: str, *, where: str = "file"
) -> PretrainedReport:
    """Copy ``state`` into ``model`` (of registered ``arch``) by name and shape, adapting a
    baseline's weights to its AFI model; returns what was loaded, adapted and left.

    Every tensor of the model comes from the file unless it is the classifier (kept when its
    shape differs: other classes), or a layer the baseline lacks (AFI modules, attention) that
    the file lacks too. The first half of output channels of the file's tensor fills a tensor
    that an AFI block halves. Anything else, or a tensor of the file the model lacks, is a
    :class:`CheckpointError` naming the first such key.
    """
    own = model.state_dict()
    head = set(_classifier_keys(model))
    new, halved = _afi_layout(arch)
    report = PretrainedReport(where, arch)
    take = {}
    for key, mine in own.items():
        value = _place(key, state.get(key), mine, head, new, halved, report)
        if value is not None:
            take[key] = value
    extra = next((k for k in state if k not in own), None)
    if extra is not None:
        raise CheckpointError(
            f"{where} does not fit {arch}: the file has {extra}, which the model does not"
        )
    model.load_state_dict(take, strict=False)
    kinds = {
        "AFI modules": any(".afi." in k for k in report.initialised),
        "layers the baseline lacks": any(k in new and ".afi." not in k for k in report.initialised),
        "classifier": any(k in head for k in report.initialised),
        "BatchNorm counters": any(k not in new and k not in head for k in report.initialised),
    }
    report.left = [name for name, present in kinds.items() if present]
    return report


# --- out: config, safetensors, model card ---------------------------------------------------


def _plain(value: Any) -> Any:
    """Tuples as lists (what JSON reads back), recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def model_config(
    arch: str,
    num_classes: int,
    *,
    model_kwargs: dict[str, Any] | None = None,
    dataset: str | None = None,
    input_size: int | None = None,
    class_names: list[str] | None = None,
) -> dict[str, Any]:
    """What an exported file says about its model (JSON-ready): arch, num_classes, model
    options, dataset, preprocessing (:func:`afictl.data.transforms.preprocessing`), class
    names when known, the afictl version."""
    info = get_model_info(arch)
    dataset = dataset or info.home_dataset
    config = {
        "format": CONFIG_FORMAT,
        "afictl_version": __version__,
        "arch": arch,
        "num_classes": int(num_classes),
        "model_kwargs": _plain(dict(model_kwargs or {})),
        "dataset": dataset,
        "preprocessing": _plain(preprocessing(dataset, input_size or info.input_size)),
    }
    if class_names:
        config["class_names"] = [str(c) for c in class_names]
    return config


def load_exported(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """The model of an exported ``NAME.safetensors`` (its ``NAME.config.json``, else the
    config in its header), weights loaded strictly, in eval mode; ``model.afictl_config`` holds
    the config (preprocessing, class names)."""
    f = read_weights(path, map_location)
    if f.config is None or f.checkpoint is not None:
        raise CheckpointError(
            f"{f.path} is not an exported afictl model (no {config_path(f.path).name}); "
            "plain weights load with model_from_checkpoint(path, arch=...)"
        )
    ckpt = _as_checkpoint(f, None)
    model = create_model(ckpt["arch"], num_classes=ckpt["num_classes"], **ckpt["model_kwargs"])
    model.load_state_dict(ckpt["model"])
    model.afictl_config = f.config  # type: ignore[assignment]
    return model.to(map_location).eval()


def _metrics_line(ckpt: dict[str, Any]) -> str | None:
    """``top-1 X% / top-5 Y% (eval, epoch E of N)`` of the epoch a checkpoint holds."""
    rows = [r for r in ckpt.get("metrics") or [] if isinstance(r, dict) and "eval_top1" in r]
    if not rows:
        return None
    best = ckpt.get("best_epoch")
    row = next((r for r in rows if r.get("epoch") == best), rows[-1])
    planned = (ckpt.get("config") or {}).get("epochs")
    of = f" of {planned}" if planned else ""
    return (
        f"top-1 {float(row['eval_top1']):.2f}% / top-5 {float(row.get('eval_top5', 'nan')):.2f}%"
        f" (eval split, epoch {row.get('epoch', '?')}{of})"
    )


def model_card(config: dict[str, Any], ckpt: dict[str, Any], weights: Path) -> str:
    """A short README for an exported run: model, data, metrics, preprocessing, loading."""
    pre = config["preprocessing"]
    names = config.get("class_names")
    classes = f"{config['num_classes']}" + (f" ({', '.join(names[:12])}" if names else "")
    classes += (", ...)" if names and len(names) > 12 else ")") if names else ""
    options = ", ".join(f"{k}={v}" for k, v in config["model_kwargs"].items()) or "defaults"
    lines = [
        f"# {config['arch']} on {config['dataset']}",
        "",
        f"Weights exported by afictl {config['afictl_version']} from `{ckpt.get('path')}`.",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | `{config['arch']}` (options: {options}) |",
        f"| classes | {classes} |",
        f"| dataset | {config['dataset']} |",
        f"| metrics | {_metrics_line(ckpt) or 'not recorded'} |",
        f"| input | {' x '.join(map(str, pre['input_size']))}, {pre['crop_mode']} "
        f"(crop_pct {pre['crop_pct']:.3f}), {pre['interpolation']}; "
        f"mean {pre['mean']}, std {pre['std']} after scaling to [0, 1] |",
        "",
        "## Load",
        "",
        "```python",
        "from afictl.weights import load_exported",
        "",
        f'model = load_exported("{weights.name}")  # eval mode; reads {config_path(weights).name}',
        "```",
        "",
        f"or `afictl eval -c {weights.name}` (the config names the model and the dataset).",
        "",
    ]
    return "\n".join(lines)


def _save_tensors(model: nn.Module, tmp: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The model's state dict written to ``tmp`` (own storage per tensor: safetensors refuses
    shared memory), the config in the header; returns what was written. Serialised in memory
    and written with plain Python I/O, so a full disk is an ``OSError`` with its errno."""
    from safetensors.torch import save

    from .export import write_bytes

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    write_bytes(tmp, save(state, metadata={"format": "pt", **flat_metadata(config)}))
    return state


def _same_tensors(tmp: Path, state: dict[str, torch.Tensor]) -> float:
    """The largest difference between the written file and ``state`` (inf: names, shapes or
    dtypes differ)."""
    from safetensors.torch import load_file

    back = load_file(str(tmp))
    if set(back) != set(state):
        return float("inf")
    diff = 0.0
    for key, value in state.items():
        if back[key].shape != value.shape or back[key].dtype != value.dtype:
            return float("inf")
        if value.numel():
            diff = max(diff, (back[key].double() - value.double()).abs().max().item())
    return diff


def _companions(
    path: Path, config: dict[str, Any], run: dict[str, Any] | None, files: dict[Path, Path]
) -> None:
    """Temporary files of ``NAME.config.json`` and, from a run, ``NAME.README.md``, added to
    ``files`` (target -> temporary) as each is made, so a failed write leaves none behind."""
    from .export import _temp_file, write_bytes, write_json_temp

    files[config_path(path)] = write_json_temp(config_path(path), config)
    if run is not None:
        card = path.with_suffix(".README.md")
        files[card] = _temp_file(card, "md")
        write_bytes(files[card], model_card(config, run, path).encode("utf-8"))


def export_safetensors(
    model: nn.Module,
    path: str | Path,
    config: dict[str, Any],
    *,
    checkpoint: dict[str, Any] | None = None,
    verify: bool = True,
) -> Any:
    """Write ``model``'s weights to ``path`` (``.safetensors``, the config in its header) and
    ``config`` beside it (:func:`config_path`), with a model card (``NAME.README.md``) when
    ``checkpoint`` is a run's; returns an :class:`afictl.export.ExportResult`.

    Atomic like every export: temporary files in the target folder, the weights read back and
    compared with the model's tensor by tensor (``verify``: they must be equal), then renamed
    over the targets (the weights first).
    """
    from .export import ExportResult, publish_all, staged

    path = Path(path)
    config = config | {"weights": path.name}
    size = config["preprocessing"]["input_size"][-1]
    result = ExportResult(
        arch=config["arch"],
        format="safetensors",
        path=str(path),
        written=False,
        bytes=0,
        opset=None,
        input_shape=f"batch x 3 x {size} x {size}",
        input_size=size,
        export_batch=None,
        rtol=0.0,
    )
    start = time.perf_counter()
    with staged(path, "safetensors") as (tmp, companions):
        state = _save_tensors(model, tmp, config)
        _companions(path, config, checkpoint, companions)
        result.export_seconds, result.bytes = time.perf_counter() - start, tmp.stat().st_size
        if verify:
            start = time.perf_counter()
            result.max_abs_diff = _same_tensors(tmp, state)
            result.verify_seconds = time.perf_counter() - start
            result.tolerance, result.passed = 0.0, result.max_abs_diff == 0.0
            if not result.passed:
                return result
        publish_all(tmp, path, companions, result)
        return result
