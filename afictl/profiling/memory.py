"""Training and inference memory of a model beside its baseline (paper Table 6).

Three measurements, each answering a different question:

- **exact account** (any device, computed on ``meta`` by default: no tensor is allocated and a
  ResNet-50 at batch 64 takes a fraction of a second): parameters, their gradients and the SGD
  momentum buffers, plus every tensor autograd saves for backward during one training forward
  (``torch.autograd.graph.saved_tensors_hooks``, each storage counted once, parameters
  excluded) = ``train_bytes``; parameters plus the peak of live tensors during one no-grad
  forward (the input included) = ``infer_bytes``. Independent of allocators and devices.
- **CUDA peaks** (``device="cuda"``): ``torch.cuda.max_memory_allocated`` around one training
  step (SGD with momentum, after one warm-up step) and around one no-grad forward (after a
  warm-up one, which autotunes), under training's cuDNN settings (autotuning on: the peaks
  include the workspaces of the kernels ``afictl train`` runs); each row says which
  (``cudnn_benchmark``).
- **resident memory** (``rss=True``): in a fresh Python process that builds the model and the
  input, how far the resident set grows above that during one training step (or one forward):
  the peak (``VmHWM``, reset through ``/proc/self/clear_refs`` first) minus the RSS before the
  step. Importing torch alone peaks higher than a small model's step, hence the reset; where
  it is not available the process's lifetime peak (``getrusage``) is reported instead.

The paper reports CUDA totals (nvidia-smi, MiB), which also include the framework's caches;
ratios are what to compare.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..errors import UserError
from ..models import create_meta_model, create_model, get_model_info
from ..train.state import deterministic_mode  # training's cuDNN settings, declared once

__all__ = [
    "MemoryAccount",
    "MemoryRow",
    "account",
    "resolve_device",
    "count_steps",
    "cuda_peaks",
    "inference_peak",
    "memory_report",
    "rss_peak",
    "saved_tensor_bytes",
]


def _storage_key(t: Tensor) -> int:
    # One key per storage (views share it); data_ptr() would be 0 for every meta tensor.
    return t.untyped_storage()._cdata


def saved_tensor_bytes(model: nn.Module, x: Tensor, target: Tensor) -> int:
    """Bytes of the tensors autograd saves in one training forward (loss included).

    Each storage counts once, whatever the number of views saved from it; parameters are
    excluded (they are counted as parameters).
    """
    params = {_storage_key(p) for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        key = _storage_key(t)
        if key not in params:
            seen[key] = t.untyped_storage().nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.cross_entropy(model(x), target)
    return sum(seen.values())


class _LiveBytes(TorchDispatchMode):
    """Bytes of live storages created under the mode, and their peak.

    Every operator output is seen at dispatch; a storage is counted once when it first
    appears and released by a weakref finalizer when it is freed. ``peak_at`` names the
    innermost module running when the peak was reached (module hooks keep the stack of running
    modules; without gradients every AFI block runs its plain path anyway).
    """

    def __init__(self, model: nn.Module, known: list[Tensor]) -> None:
        super().__init__()
        # storages that exist before the forward (parameters, buffers, the input): views of
        # them (a weight's transpose) are not new memory
        self.known = {_storage_key(t) for t in known}
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0
        self.peak_at = ""
        self.names = {id(m): name for name, m in model.named_modules()}
        self.running: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor):
                storage = t.untyped_storage()
                key = storage._cdata
                if key not in self.live and key not in self.known:
                    self.live[key] = storage.nbytes()
                    self.current += storage.nbytes()
                    weakref.finalize(storage, self._free, key)
                    if self.current > self.peak:
                        self.peak = self.current
                        self.peak_at = self.running[-1] if self.running else ""
        return out

    @contextmanager
    def tracking_modules(self) -> Iterator[None]:
        """Keep ``running`` (the stack of the model's modules being run) while the block runs."""

        def enter(module, _args):
            if id(module) in self.names:
                self.running.append(self.names[id(module)] or "(model)")

        def leave(module, _args, _out):
            if id(module) in self.names and self.running:
                self.running.pop()

        handles = [register_module_forward_pre_hook(enter), register_module_forward_hook(leave)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)


def inference_peak(model: nn.Module, x: Tensor) -> tuple[int, str]:
    """Peak bytes of live tensors during one no-grad forward in eval mode (``x`` included),
    and the module running at the peak."""
    model.eval()
    tracker = _LiveBytes(model, [*model.parameters(), *model.buffers(), x])
    with torch.no_grad(), tracker.tracking_modules(), tracker:
        model(x)
    return tracker.peak + x.untyped_storage().nbytes(), tracker.peak_at


@dataclass
class MemoryAccount:
    """The exact account of one model (bytes)."""

    arch: str
    batch_size: int
    input_size: int
    memory_efficient: bool
    param_bytes: int
    grad_bytes: int
    optimizer_bytes: int
    saved_bytes: int
    train_bytes: int
    infer_activation_bytes: int
    infer_bytes: int
    infer_peak_module: str


def _build(
    arch: str, num_classes: int | None, device: str, memory_efficient: bool, **kwargs
) -> nn.Module:
    if memory_efficient:
        kwargs["memory_efficient"] = True
    if device == "meta":  # the registry refuses options a model does not take (one line)
        return create_meta_model(arch, num_classes=num_classes, **kwargs)
    with torch.device(device):
        return create_model(arch, num_classes=num_classes, **kwargs)


def account(
    arch: str,
    batch_size: int,
    *,
    input_size: int | None = None,
    num_classes: int | None = None,
    memory_efficient: bool = False,
    device: str = "meta",
    **model_kwargs,
) -> MemoryAccount:
    """The exact account of ``arch`` (see the module docstring), by default on ``meta``."""
    info = get_model_info(arch)
    size = input_size or info.input_size
    model = _build(arch, num_classes, device, memory_efficient, **model_kwargs)
    classes = model.num_classes if hasattr(model, "num_classes") else info.num_classes
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    x = torch.randn(batch_size, 3, size, size, device=device)
    target = torch.randint(0, classes, (batch_size,), device=device)
    saved = saved_tensor_bytes(model, x, target)
    peak, where = inference_peak(model, x)
    return MemoryAccount(
        arch=arch,
        batch_size=batch_size,
        input_size=size,
        memory_efficient=memory_efficient,
        param_bytes=params,
        grad_bytes=trainable,
        optimizer_bytes=trainable,  # SGD momentum: one buffer per trainable parameter
        saved_bytes=saved,
        train_bytes=params + 2 * trainable + saved,
        infer_activation_bytes=peak,
        infer_bytes=params + peak,
        infer_peak_module=where,
    )


def cuda_peaks(
    arch: str,
    batch_size: int,
    *,
    input_size: int | None = None,
    num_classes: int | None = None,
    memory_efficient: bool = False,
    **model_kwargs,
) -> tuple[int, int]:
    """``torch.cuda.max_memory_allocated`` of one training step and of one no-grad forward,
    under the caller's cuDNN settings (:func:`memory_report`: training's)."""
    if not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    info = get_model_info(arch)
    size = input_size or info.input_size
    torch.cuda.empty_cache()
    model = _build(arch, num_classes, "cuda", memory_efficient, **model_kwargs)
    x = torch.randn(batch_size, 3, size, size, device="cuda")
    target = torch.randint(0, model.num_classes, (batch_size,), device="cuda")
    model.eval()
    with torch.no_grad():
        model(x)  # warm-up: cuDNN autotuning tries (and frees) workspaces on a first call
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        model(x)
    torch.cuda.synchronize()
    infer = torch.cuda.max_memory_allocated()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for step in range(2):  # the first step creates the gradients and momentum buffers
        if step == 1:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        optimizer.zero_grad(set_to_none=False)
        F.cross_entropy(model(x), target).backward()
        optimizer.step()
    torch.cuda.synchronize()
    train = torch.cuda.max_memory_allocated()
    del model, optimizer, x, target
    torch.cuda.empty_cache()
    return train, infer


def rss_peak(
    arch: str,
    batch_size: int,
    mode: str,
    *,
    input_size: int | None = None,
    num_classes: int | None = None,
    memory_efficient: bool = False,
) -> int:
    """Resident bytes one ``train`` step or ``infer`` forward adds in a fresh process (above)."""
    spec = dict(
        arch=arch,
        batch_size=batch_size,
        mode=mode,
        input_size=input_size,
        num_classes=num_classes,
        memory_efficient=memory_efficient,
    )
    code = "from afictl.profiling.memory import _rss_main; _rss_main()"
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"resident-memory probe failed: {proc.stderr.strip().splitlines()[-1:]}")
    return int(json.loads(proc.stdout.strip().splitlines()[-1])["rss_bytes"])


def _rss_main() -> None:
    """Entry point of :func:`rss_peak`'s subprocess: one step, then print the peak RSS."""
    spec = json.loads(sys.argv[1])
    info = get_model_info(spec["arch"])
    size = spec["input_size"] or info.input_size
    model = _build(spec["arch"], spec["num_classes"], "cpu", spec["memory_efficient"])
    x = torch.randn(spec["batch_size"], 3, size, size)
    before = _status_bytes("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, the peak resident set, to the current one
        reset = before is not None
    except OSError:
        reset = False
    if spec["mode"] == "train":
        target = torch.randint(0, model.num_classes, (spec["batch_size"],))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        model.train()
        F.cross_entropy(model(x), target).backward()
        optimizer.step()
    else:
        model.eval()
        with torch.no_grad():
            model(x)
    if reset:
        rss = _status_bytes("VmHWM") - before
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"rss_bytes": rss}))


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


@dataclass
class MemoryRow:
    """One row of ``afictl memory``: a model, its baseline and the ratios (bytes)."""

    arch: str
    baseline: str | None
    batch_size: int
    input_size: int
    device: str
    memory_efficient: bool
    train_bytes: int
    baseline_train_bytes: int | None
    train_ratio: float | None
    infer_bytes: int
    baseline_infer_bytes: int | None
    infer_ratio: float | None
    saved_bytes: int
    baseline_saved_bytes: int | None
    saved_ratio: float | None
    infer_activation_bytes: int
    baseline_infer_activation_bytes: int | None
    infer_activation_ratio: float | None
    param_bytes: int
    baseline_param_bytes: int | None
    infer_peak_module: str
    baseline_infer_peak_module: str | None
    cuda_train_bytes: int | None = None
    baseline_cuda_train_bytes: int | None = None
    cuda_infer_bytes: int | None = None
    baseline_cuda_infer_bytes: int | None = None
    rss_train_bytes: int | None = None
    baseline_rss_train_bytes: int | None = None
    rss_infer_bytes: int | None = None
    baseline_rss_infer_bytes: int | None = None
    cudnn_benchmark: bool | None = None  # cuDNN autotuning while measuring, as in training

    def to_dict(self) -> dict:
        return asdict(self)


def _ratio(a: int | None, b: int | None) -> float | None:
    return None if a is None or not b else round(a / b, 4)


def _measure(
    name: str, batch_size: int, *, efficient: bool, device: str, rss: bool, common: dict
) -> tuple[Any, dict[str, int | None]]:
    """The exact account of one model, and its CUDA and resident peaks where asked for."""
    acc = account(name, batch_size, memory_efficient=efficient, **common)
    extra: dict[str, int | None] = {}
    if device == "cuda":
        extra["cuda_train"], extra["cuda_infer"] = cuda_peaks(
            name, batch_size, memory_efficient=efficient, **common
        )
    if rss:
        for mode in ("train", "infer"):
            extra[f"rss_{mode}"] = rss_peak(
                name, batch_size, mode, memory_efficient=efficient, **common
            )
    return acc, extra


#: Fields of the exact account, each given for the model, its baseline and (some) their ratio.
_ACCOUNTED = ("train", "infer", "saved", "infer_activation")
_MEASURED = ("cuda_train", "cuda_infer", "rss_train", "rss_infer")


def _row(
    arch: str, base_name: str | None, measured: dict, *, batch_size: int, device: str, eff: bool
) -> MemoryRow:
    """One :class:`MemoryRow` from the measurements of a model and of its baseline."""
    acc, extra = measured[arch]
    base, bextra = measured[base_name] if base_name else (None, {})

    def b(field: str) -> Any:
        return getattr(base, field) if base is not None else None

    values: dict[str, Any] = {}
    for kind in _ACCOUNTED:
        mine, theirs = getattr(acc, f"{kind}_bytes"), b(f"{kind}_bytes")
        values |= {f"{kind}_bytes": mine, f"baseline_{kind}_bytes": theirs}
        values[f"{kind}_ratio"] = _ratio(mine, theirs)
    for kind in _MEASURED:
        values |= {f"{kind}_bytes": extra.get(kind), f"baseline_{kind}_bytes": bextra.get(kind)}
    return MemoryRow(
        arch=arch,
        baseline=base_name,
        batch_size=batch_size,
        input_size=acc.input_size,
        device=device,
        memory_efficient=eff,
        param_bytes=acc.param_bytes,
        baseline_param_bytes=b("param_bytes"),
        infer_peak_module=acc.infer_peak_module,
        baseline_infer_peak_module=b("infer_peak_module"),
        **values,
    )


def resolve_device(device: str) -> str:
    """``auto`` (CUDA when torch sees it, else CPU), ``cpu`` or ``cuda``; one line otherwise."""
    device = device.lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device {device}: choose auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    return device


def memory_report(
    archs: list[str],
    batch_size: int,
    *,
    input_size: int | None = None,
    num_classes: int | None = None,
    memory_efficient: bool = False,
    device: str = "cpu",
    rss: bool = False,
    progress=None,
) -> list[MemoryRow]:
    """Rows for ``archs``: each model beside its baseline (an AFI model's, or for a baseline
    name nothing). ``memory_efficient`` applies to the AFI models only; ``device="cuda"``
    adds the CUDA peaks (``auto``: when CUDA is available), ``rss`` the resident-memory peaks
    (each one fresh process)."""
    device = resolve_device(device)
    for arch in archs:
        get_model_info(arch)
    common = dict(input_size=input_size, num_classes=num_classes)
    rows = []
    # training's cuDNN settings (autotuning on unless --deterministic): the CUDA peaks then
    # include the workspaces of the kernels training picks
    with deterministic_mode(False):
        cudnn_benchmark = torch.backends.cudnn.benchmark
        for arch in archs:
            info = get_model_info(arch)
            efficient = memory_efficient and info.is_afi
            base_name = info.baseline if info.is_afi else None
            measured = {}
            for name, eff in [(arch, efficient)] + ([(base_name, False)] if base_name else []):
                measured[name] = _measure(
                    name, batch_size, efficient=eff, device=device, rss=rss, common=common
                )
                if progress is not None:
                    progress()
            row = _row(
                arch, base_name, measured, batch_size=batch_size, device=device, eff=efficient
            )
            rows.append(replace(row, cudnn_benchmark=cudnn_benchmark))
    return rows


def count_steps(archs: list[str]) -> int:
    """Models :func:`memory_report` measures (for a progress bar)."""
    return sum(2 if get_model_info(a).is_afi else 1 for a in archs)
