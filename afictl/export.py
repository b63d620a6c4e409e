"""Export a model to ONNX or a torch.export program (``.pt2``), verified against eager PyTorch.

- ONNX through the torch.export-based exporter (``torch.onnx.export(..., dynamo=True)``),
  weights inside the file (no external data), run back with ONNX Runtime.
- ``pt2`` through ``torch.export.export`` + ``torch.export.save``, run back with
  ``torch.export.load(path).module()``.
- The batch dimension is dynamic (``Dim("batch", min=1)``); height, width and channels are
  fixed at the traced input. The example batch must be 2 or more: torch.export specialises a
  batch of 1 to a constant ("0/1 specialisation"). The file then accepts any batch from 1 up.
- Verification: the written file runs on seeded ``N(0, 1)`` inputs at batches 1 and B + 1 (both
  differ from the traced batch B, so a batch fixed by mistake fails here) and is compared with
  the eager model in fp32 under ``no_grad``. It passes when
  ``max|file - eager| <= rtol * max|eager|`` (default ``rtol = 1e-4``), both maxima over every
  output element of both batches. The bound is relative to the largest output because fp32
  rounding grows with the activations, and the outputs of these networks span 1e-9 (random
  MobileNetV2) to 1e11 (random DenseNet-100, whose BatchNorm statistics are still the identity):
  an absolute floor such as ``rtol * max(1, max|eager|)`` would pass any file whose outputs are
  near zero, an all-zero one included. Kernels that sum in another order (ONNX Runtime's MLAS
  against ATen, BatchNorm folded into the convolutions) differ by at most 1.3e-6 of the largest
  output on every baseline of the registry (measured, random weights); ``.pt2`` files match
  exactly. 1e-4 leaves a margin of about 100 over that and still catches a file with
  train-mode BatchNorm (0.8 of the largest output and more) or with the weights of a single
  convolution scaled by 1.001 (6e-4 to 1e-3; resnet20, densenet40, mobilenet_v2).
- Atomic: the exporter writes a temporary file in the target folder, which is verified there
  and only then renamed over the target (``os.replace``); an export or a verification that
  fails leaves the target as it was and no temporary file behind. Every file is serialised in
  memory and written with plain Python I/O; a full disk or quota (ENOSPC, EDQUOT anywhere in
  the error's chain) is :class:`DiskFullError`, one line naming the folder.
- Metadata: what the file's model is and how to feed it (:func:`afictl.weights.model_config`:
  arch, classes, model options, preprocessing, class names, afictl version). ONNX holds it in
  ``metadata_props`` (``afictl.arch``, ``afictl.preprocessing`` as JSON, ...), written into the
  temporary file before verification; a ``.pt2`` gets ``NAME.pt2.json`` beside it, published
  after the file. ``safetensors`` (the weights alone) is :func:`afictl.weights.export_safetensors`.

``onnx``, ``onnxruntime`` and ``onnxscript`` are the optional extra ``afictl[export]``;
``pt2`` needs nothing beyond torch.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UserError
from .fileio import fsync_dir, temp_file, write_bytes
from .validate import EXPORT_MAX_BATCH

__all__ = [
    "DEFAULT_OPSET",
    "DEFAULT_RTOL",
    "DiskFullError",
    "EXPORT_FORMATS",
    "ExportError",
    "ExportResult",
    "MissingExtraError",
    "flat_metadata",
    "export_model",
    "infer_format",
    "require_onnx",
    "pt2_metadata_path",
    "tolerance",
    "verify_file",
    "write_bytes",
    "write_json_temp",
]

EXPORT_FORMATS = ("onnx", "pt2", "safetensors")
#: The formats traced into a program and run back; safetensors holds the weights alone.
TRACED_FORMATS = ("onnx", "pt2")
#: The lowest opset the torch.export-based ONNX exporter implements; lower opsets would go
#: through onnx's version converter, which fails on these networks and then silently keeps 18.
DEFAULT_OPSET = 18
#: Relative tolerance of the verification (see the module docstring).
DEFAULT_RTOL = 1e-4
INSTALL_HINT = 'pip install -e ".[export]" (from a checkout) or pip install "afictl[export]"'
_ONNX_MODULES = ("onnx", "onnxruntime", "onnxscript")
_INPUT_NAME, _OUTPUT_NAME = "images", "logits"


#: config fields written as they are (the rest as JSON) in ONNX metadata_props and the
#: safetensors header
TEXT_FIELDS = ("afictl_version", "arch", "dataset")


def flat_metadata(config: dict[str, Any]) -> dict[str, str]:
    """``config`` as string pairs (ONNX ``metadata_props``, the safetensors header):
    ``afictl.arch``, ``afictl.num_classes``, ``afictl.preprocessing`` (JSON), ...; the
    values that are not strings as JSON."""
    return {
        f"afictl.{'version' if k == 'afictl_version' else k}": v
        if k in TEXT_FIELDS
        else json.dumps(v)
        for k, v in config.items()
        if k not in ("format", "weights")
    }


class ExportError(UserError):
    """The exporter could not convert the model, or the file could not be written."""


class MissingExtraError(UserError):
    """An optional dependency of ``afictl[export]`` is not installed."""


class DiskFullError(ExportError):
    """The target folder's disk (or the user's quota) is full: one line naming the folder."""


#: The OS errors that mean "no room left": a full disk and an exhausted quota.
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def disk_full_error(exc: BaseException) -> OSError | None:
    """The ``OSError`` with errno ENOSPC or EDQUOT in ``exc``'s chain (causes and contexts),
    or None."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in FULL_ERRNOS:
            return e
        todo += [e.__cause__, e.__context__]
    return None


def full_disk(folder: Path, exc: OSError) -> DiskFullError:
    """The one-line error for a write into ``folder`` that found no room."""
    reason = exc.strerror or os.strerror(exc.errno or errno.ENOSPC)
    return DiskFullError(
        f"cannot write to {folder}: the disk is full ({reason}); the folder is as it was"
    )


@dataclass
class ExportResult:
    """What ``export_model`` did: the file, the exporter's settings and the verification."""

    arch: str | None
    format: str
    path: str
    written: bool  # False when verification failed: the target was left as it was
    bytes: int
    opset: int | None  # ONNX only
    input_shape: str  # e.g. "batch x 3 x 32 x 32": the batch is dynamic
    input_size: int
    export_batch: int | None  # None: safetensors, nothing traced
    verify_batches: list[int] = field(default_factory=list)
    max_abs_diff: float | None = None  # over every output element of every verify batch
    max_abs_eager: float | None = None
    rtol: float = DEFAULT_RTOL
    tolerance: float | None = None  # the absolute bound: rtol * max_abs_eager
    passed: bool | None = None  # None: not verified (verify=False)
    export_seconds: float = 0.0
    verify_seconds: float | None = None
    companions: list[str] = field(default_factory=list)  # metadata/card files written beside it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def require_onnx() -> None:
    """Raise :class:`MissingExtraError` (one line, what to install) unless the ONNX extra is
    there."""
    missing = []
    for name in _ONNX_MODULES:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtraError(f"export to onnx needs {', '.join(missing)}: {INSTALL_HINT}")


def infer_format(path: str | Path, format: str | None = None) -> str:
    """The export format: ``format`` if given, else the suffix of ``path`` (.onnx, .pt2 or
    .safetensors).

    A known suffix that contradicts ``format`` (``model.onnx`` with ``pt2``) is an error.
    """
    suffix = Path(path).suffix.lower().lstrip(".")
    if format is not None:
        fmt = str(format).lower()
        if fmt not in EXPORT_FORMATS:
            raise UserError(f"unknown export format {format!r}: choose onnx, pt2 or safetensors")
        if suffix in EXPORT_FORMATS and suffix != fmt:
            raise UserError(f"{Path(path).name} has the suffix .{suffix} but the format is {fmt}")
        return fmt
    if suffix in EXPORT_FORMATS:
        return suffix
    raise UserError(
        f"cannot tell the export format of {Path(path).name}: name it .onnx or .pt2 "
        "(or .safetensors for the weights alone), or give --to onnx|pt2|safetensors"
    )


def tolerance(max_abs_eager: float, rtol: float = DEFAULT_RTOL) -> float:
    """The largest difference verification accepts: ``rtol * max|eager|`` (module docstring)."""
    return rtol * max_abs_eager


def _inputs(batch: int, input_size: int, channels: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, input_size, input_size, generator=g)


def _outputs(value: Any) -> list[torch.Tensor]:
    """Every tensor of a model output (a tensor, or nested tuples/lists/dicts of them)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return [t for v in value for t in _outputs(v)]
    return [torch.as_tensor(value)]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the exporters' progress lines, warnings and log records (torch.fx's guard warnings
    print whole graphs) off stdout and stderr: stdout is for results, stderr for one error line."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):  # torch.export prints partial graphs there
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _reason(exc: BaseException) -> str:
    """``Type: first line`` of the innermost cause (the ONNX exporter wraps torch.export's
    error in a "step 1/3" banner), without terminal colour codes."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    first = (re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


#: The largest batch an exported file accepts (declared with the option checks). A bound is
#: needed: torch 2.6's export refuses an unbounded batch dimension of the AFI models.
MAX_BATCH = EXPORT_MAX_BATCH


def _dynamic_batch() -> tuple[dict[int, Any]]:
    return ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)


def _dynamo_onnx() -> bool:
    """Whether ``torch.onnx.export`` takes the torch.export-based exporter (torch >= 2.9, where
    it is the default). Older releases take the TorchScript exporter: torch 2.6's dynamo
    exporter fails to translate BatchNorm with current onnxscript releases."""
    major, minor = (int(p) for p in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 9)


def _onnx_proto(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> Any:
    """The exported ``onnx.ModelProto``: kept in memory by the torch.export-based exporter; the
    TorchScript one (older torch) writes ``path`` and it is read back."""
    common: dict[str, Any] = {
        "opset_version": opset,
        "input_names": [_INPUT_NAME],
        "output_names": [_OUTPUT_NAME],
        "verbose": False,
    }
    with _quiet():
        if _dynamo_onnx():
            program = torch.onnx.export(
                model, (example,), None, dynamo=True, dynamic_shapes=_dynamic_batch(), **common
            )
            return program.model_proto
        axes = {_INPUT_NAME: {0: "batch"}, _OUTPUT_NAME: {0: "batch"}}
        torch.onnx.export(model, (example,), str(path), dynamo=False, dynamic_axes=axes, **common)
    import onnx

    return onnx.load(str(path), load_external_data=False)


def _export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    opset: int,
    metadata: dict[str, str] | None = None,
) -> None:
    """The ONNX file at ``path``, of the opset asked for, with ``metadata`` in its
    ``metadata_props`` (before verification: what is verified is what is published). The
    proto is serialised in memory and written with plain Python I/O."""
    proto = _onnx_proto(model, example, path, opset)
    written = {o.domain: o.version for o in proto.opset_import}
    if written.get("", written.get("ai.onnx")) != opset:
        raise ExportError(
            f"the exporter wrote opset {written.get('')} instead of {opset}: "
            f"use --opset {DEFAULT_OPSET} or later"
        )
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    write_bytes(path, proto.SerializeToString())


def _export_pt2(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """The ``.pt2`` program at ``path``: saved into memory, then written with plain Python I/O
    (a zip writer on the file itself could not finish on a full disk and abort the process)."""
    buffer = io.BytesIO()
    with _quiet():
        program = torch.export.export(model, (example,), dynamic_shapes=_dynamic_batch())
        torch.export.save(program, buffer)
    write_bytes(path, buffer.getvalue())


def _runner(path: Path, format: str) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """A function running the file at ``path`` on a batch: its outputs as CPU tensors."""
    if format == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: [torch.from_numpy(y) for y in session.run(None, {name: x.numpy()})]
    with _quiet():
        module = torch.export.load(str(path)).module()

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return _outputs(module(x))

    return run


def verify_file(
    path: str | Path,
    model: nn.Module,
    *,
    format: str | None = None,
    batches: Sequence[int] = (1, 3),
    input_size: int,
    channels: int = 3,
    seed: int = 0,
) -> tuple[float, float]:
    """Run an exported file and ``model`` (eager, no_grad) on the same seeded random batches.

    Returns ``(max|file - eager|, max|eager|)`` over every output element of every batch.
    """
    path = Path(path)
    run = _runner(path, format or infer_format(path))
    diff = peak = 0.0
    for i, batch in enumerate(batches):
        x = _inputs(batch, input_size, channels, seed + 1 + i)
        with torch.no_grad():
            expected = [t.detach().float().cpu() for t in _outputs(model(x))]
        got = run(x)
        if len(got) != len(expected) or any(
            g.shape != e.shape for g, e in zip(got, expected, strict=False)
        ):
            shapes = ", ".join(str(tuple(t.shape)) for t in got)
            raise ExportError(
                f"{path.name} at batch {batch} gives outputs of shape {shapes}, "
                f"the model {', '.join(str(tuple(t.shape)) for t in expected)}"
            )
        for g, e in zip(got, expected, strict=True):
            d = (g.float() - e).abs().max().item() if e.numel() else 0.0
            diff = max(diff, math.inf if math.isnan(d) else d)  # a NaN anywhere fails
            peak = max(peak, e.abs().max().item() if e.numel() else 0.0)
    return diff, peak


def _check_export_args(path: Path, format: str | None, batch_size: int, opset: int) -> str:
    """The file format of ``path``, after refusing what the exporters cannot do (before any
    file is created)."""
    fmt = infer_format(path, format)
    if fmt not in TRACED_FORMATS:
        raise UserError(
            f"export_model traces onnx or pt2; {fmt} (the weights alone) is "
            "afictl.weights.export_safetensors, or export(..., format='safetensors')"
        )
    if batch_size < 2:
        raise UserError(
            "the example batch must be 2 or more (torch.export fixes a batch of 1); "
            "the exported file accepts any batch"
        )
    if fmt == "onnx":
        require_onnx()
        if opset < DEFAULT_OPSET:
            raise UserError(
                f"--opset {opset}: the torch.export-based ONNX exporter writes opset "
                f"{DEFAULT_OPSET} or later"
            )
    if path.is_dir():
        raise UserError(f"{path} is a folder: give a file name ending in .{fmt}")
    return fmt


def _temp_file(path: Path, fmt: str) -> Path:
    """An empty file next to ``path`` (same file system, so ``os.replace`` is atomic) with the
    permissions of a new file."""
    return temp_file(path, f".tmp.{fmt}")


@contextlib.contextmanager
def staged(path: Path, fmt: str) -> Iterator[tuple[Path, dict[Path, Path]]]:
    """A temporary file for ``path`` and a dict of companions (target -> its temporary file),
    every temporary removed on exit: what was published has been renamed away by then.

    A full disk (ENOSPC or EDQUOT anywhere in the error's chain) becomes :class:`DiskFullError`,
    one line naming the folder.
    """
    tmp: Path | None = None
    companions: dict[Path, Path] = {}
    try:
        tmp = _temp_file(path, fmt)
        yield tmp, companions
    except Exception as exc:
        full = disk_full_error(exc)
        if full is None:
            raise
        raise full_disk(path.parent, full) from exc
    finally:
        for temp in (tmp, *companions.values()):
            if temp is not None:
                temp.unlink(missing_ok=True)


def write_json_temp(target: Path, data: dict[str, Any]) -> Path:
    """``data`` as JSON in a durable temporary file beside ``target``, to publish over it."""
    tmp = _temp_file(target, "json")
    try:
        write_bytes(tmp, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def pt2_metadata_path(path: str | Path) -> Path:
    """The JSON beside a ``.pt2`` file that says what it holds: ``NAME.pt2.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _write_export(
    model: nn.Module,
    tmp: Path,
    result: ExportResult,
    *,
    opset: int,
    channels: int,
    seed: int,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Trace ``model`` on a seeded batch and write it to ``tmp`` in ``result.format``, durably;
    records the time taken and the size in ``result``."""
    start = time.perf_counter()
    example = _inputs(result.export_batch, result.input_size, channels, seed)
    try:
        if result.format == "onnx":
            _export_onnx(model, example, tmp, opset, flat_metadata(metadata) if metadata else None)
        else:
            _export_pt2(model, example, tmp)
    except UserError:
        raise
    except Exception as exc:
        raise ExportError(
            f"could not export {result.arch or type(model).__name__} to {result.format}: "
            f"{_reason(exc)}"
        ) from exc
    result.export_seconds = time.perf_counter() - start  # written durably by write_bytes
    result.bytes = tmp.stat().st_size


def _verify_export(
    model: nn.Module, tmp: Path, result: ExportResult, *, channels: int, seed: int
) -> None:
    """Run the file at ``tmp`` against the eager model at batches 1 and B + 1; records the
    differences, the tolerance and the verdict in ``result``."""
    start = time.perf_counter()
    batches = [1, result.export_batch + 1]
    try:
        diff, peak = verify_file(
            tmp,
            model,
            format=result.format,
            batches=batches,
            input_size=result.input_size,
            channels=channels,
            seed=seed,
        )
    except UserError:
        raise
    except Exception as exc:
        raise ExportError(
            f"the exported {result.format} file of {result.arch or type(model).__name__} "
            f"does not run: {_reason(exc)}"
        ) from exc
    result.verify_seconds = time.perf_counter() - start
    result.verify_batches = batches
    result.max_abs_diff, result.max_abs_eager = diff, peak
    result.tolerance = tolerance(peak, result.rtol)
    result.passed = bool(diff <= result.tolerance)  # NaN fails


def _publish(tmp: Path, path: Path) -> None:
    """Rename the verified file over ``path`` and make the rename itself durable."""
    os.replace(tmp, path)
    fsync_dir(path.parent)


def export_model(
    model: nn.Module,
    path: str | Path,
    *,
    format: str | None = None,
    opset: int = DEFAULT_OPSET,
    batch_size: int = 2,
    input_size: int,
    channels: int = 3,
    verify: bool = True,
    rtol: float = DEFAULT_RTOL,
    seed: int = 0,
    arch: str | None = None,
    metadata: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export ``model`` (put in eval mode) to ``path`` with a dynamic batch, and verify the file.

    ``format`` is ``onnx`` or ``pt2`` (default: the suffix of ``path``). The model is traced
    on a seeded random batch of ``batch_size`` (2 or more) images of
    ``channels x input_size x input_size``. With ``verify`` the file is run at batches 1 and
    ``batch_size + 1`` and compared with the eager model before it replaces ``path``; when the
    difference exceeds ``rtol * max|eager|`` the result says ``passed=False,
    written=False`` and ``path`` is left as it was. ``metadata``
    (:func:`afictl.weights.model_config`) goes into the ONNX file's ``metadata_props``, or
    beside a ``.pt2`` file (:func:`pt2_metadata_path`). Exporter failures raise
    :class:`ExportError`; a missing ONNX extra :class:`MissingExtraError`. ``progress(stage)``
    is called as each stage begins: ``exporting``, ``verifying``, ``writing``.
    """
    stage = progress or _no_stage
    path = Path(path)
    fmt = _check_export_args(path, format, batch_size, opset)
    model.eval()
    result = ExportResult(
        arch=arch or getattr(model, "arch", None),
        format=fmt,
        path=str(path),
        written=False,
        bytes=0,
        opset=opset if fmt == "onnx" else None,
        input_shape=f"batch x {channels} x {input_size} x {input_size}",
        input_size=input_size,
        export_batch=batch_size,
        rtol=rtol,
    )
    with staged(path, fmt) as (tmp, companions):
        stage(f"exporting to {fmt} (tracing at batch {batch_size})")
        _write_export(
            model, tmp, result, opset=opset, channels=channels, seed=seed, metadata=metadata
        )
        if fmt == "pt2" and metadata:
            companions[pt2_metadata_path(path)] = write_json_temp(pt2_metadata_path(path), metadata)
        if verify:
            stage(f"verifying at batches 1 and {batch_size + 1}")
            _verify_export(model, tmp, result, channels=channels, seed=seed)
            if not result.passed:
                return result
        stage(f"writing {path}")
        publish_all(tmp, path, companions, result)
        return result


def publish_all(tmp: Path, path: Path, companions: dict[Path, Path], result: ExportResult) -> None:
    """The verified file first, then the files that describe it (a crash between leaves a
    file without its description, never a description of a file that is not there)."""
    _publish(tmp, path)
    for target, temp in companions.items():
        _publish(temp, target)
    result.written, result.companions = True, [str(t) for t in companions]


def _no_stage(name: str) -> None:
    """No progress reported."""
