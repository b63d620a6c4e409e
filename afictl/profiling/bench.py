"""Throughput of AFI models against their baselines, measured in one process.

Timing two models on a shared machine is noisy; what makes the comparison fair:

- **interleaving**: every repeat times the AFI model and its baseline back to back (A B, then
  B A in the next repeat, so neither always runs second), so slow phases of the machine hit
  both; the reported ``speed_ratio`` is the median over repeats of the paired ratio
  baseline-time / AFI-time (> 1: the AFI model is faster);
- **warm-up** steps before timing (allocator, oneDNN primitive caches, compilation);
- **medians** of ``repeats`` repeats, each of ``iters`` steps; images/second = batch x iters /
  median time;
- the same settings for both models: device, dtype (AMP), memory format, compilation, threads,
  and the allocator configuration (see :func:`configure_allocator`);
- training's cuDNN settings (:func:`afictl.train.state.deterministic_mode` off: autotuning on),
  so that a convolution runs the kernels it runs in ``afictl train``; each row says which
  (``cudnn_benchmark``).

A training step is zero_grad + forward + cross-entropy + backward + SGD (momentum 0.9) step;
inference is one forward in eval mode under ``torch.inference_mode``.

Each row also counts the aten operations of one eager step of each model (``ops_per_step``,
:func:`afictl.profiling.op_count.count_ops`): on a GPU at CIFAR batch sizes a step is bound by
kernel launches, roughly one per operation, rather than by arithmetic.

``timer="cpu"`` times with the process's CPU time instead of the wall clock: on a machine
shared with other jobs, time spent preempted is then not counted (use it with one thread:
with several, CPU time adds up the threads, spin-waiting included).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..allocator import configure_allocator
from ..errors import UserError
from ..models import counterpart, create_model, get_model_info, options_of
from ..train.state import deterministic_mode  # training's cuDNN settings, declared once
from ..validate import BENCH_BATCH, check_option, check_value
from .memory import resolve_device  # the same --device rules in memory and bench
from .op_count import count_ops

__all__ = ["AMP_CHOICES", "BenchRow", "bench", "configure_allocator", "pair_of", "resolve_device"]

MODES = ("infer", "train")


@dataclass
class BenchRow:
    """One row of ``afictl bench``: an AFI model against its baseline in one mode."""

    arch: str
    baseline: str
    mode: str
    batch_size: int
    input_size: int
    device: str
    images_per_sec: float
    baseline_images_per_sec: float
    speed_ratio: float
    ms_per_step: float
    baseline_ms_per_step: float
    ratio_min: float
    ratio_max: float
    repeats: int
    iters: int
    warmup: int
    threads: int
    channels_last: bool
    amp: str  # none, bf16 or fp16
    compile: bool
    memory_efficient: bool
    allocator: str
    warmup_seconds: float  # the warm-up steps' time: with compile, compilation included
    baseline_warmup_seconds: float
    timer: str
    torch_version: str
    cudnn_benchmark: bool  # cuDNN autotuning, as in training (no effect on CPU)
    # aten operations one eager step calls (afictl.profiling.op_count): on a GPU each is at
    # least one kernel launch, so at small batches they, not the arithmetic, set the pace
    ops_per_step: int = 0
    baseline_ops_per_step: int = 0
    model_options: dict = field(default_factory=dict)  # the AFI model's, as given

    def to_dict(self) -> dict:
        return asdict(self)


def pair_of(arch: str) -> tuple[str, str]:
    """(AFI model, baseline) for an AFI name or for a baseline that has an AFI counterpart."""
    info = get_model_info(arch)
    if info.is_afi:
        return arch, info.baseline
    other = counterpart(arch)
    if other is None:
        raise UserError(f"{arch} has no AFI counterpart to compare with")
    return other, arch


AMP_CHOICES = ("none", "bf16", "fp16")


def _amp_dtype(amp: str) -> torch.dtype:
    return torch.bfloat16 if amp == "bf16" else torch.float16


class _Runner:
    """One model prepared for timed steps in one mode."""

    def __init__(
        self,
        model: nn.Module,
        mode: str,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        amp: str,
        compile: bool,
    ) -> None:
        self.mode, self.x, self.y, self.amp = mode, x, y, amp
        self.device = x.device.type
        self.model = model.train(mode == "train")
        # fullgraph: AFI models compile to one graph (their stages take the plain path there)
        self.forward: Callable = torch.compile(model, fullgraph=True) if compile else model
        self.optimizer = (
            torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9) if mode == "train" else None
        )
        # fp16 gradients underflow without loss scaling; bf16 has float32's range
        use_scaler = amp == "fp16" and mode == "train"
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    def _autocast(self):
        return (
            torch.autocast(self.device, dtype=_amp_dtype(self.amp))
            if self.amp != "none"
            else nullcontext()
        )

    def step(self) -> None:
        if self.mode == "infer":
            with torch.inference_mode(), self._autocast():
                self.forward(self.x)
            return
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = F.cross_entropy(self.forward(self.x), self.y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()

    def timed(self, iters: int, clock: Callable[[], float] = time.perf_counter) -> float:
        sync = torch.cuda.synchronize if self.device == "cuda" else (lambda: None)
        sync()
        start = clock()
        for _ in range(iters):
            self.step()
        sync()
        return clock() - start


def _check(
    *, modes: tuple[str, ...], device: str, amp: str, timer: str, counts: tuple[int, ...]
) -> str:
    """The options checked before any model is built; returns the resolved device."""
    for mode in modes:
        if mode not in MODES:
            raise UserError(f"--mode {mode}: choose from {', '.join(MODES)}")
    device = resolve_device(device)
    if amp not in AMP_CHOICES:
        raise UserError(f"--amp {amp}: choose none, bf16 or fp16")
    if amp == "fp16" and device != "cuda":
        raise UserError("--amp fp16 needs CUDA; use --amp bf16 on CPU, or none")
    if timer not in ("wall", "cpu"):
        raise UserError(f"--timer {timer}: choose wall or cpu")
    if timer == "cpu" and device == "cuda":
        raise UserError("--timer cpu measures the host only; use the wall clock on CUDA")
    repeats, iters, warmup, batch_size = counts
    if repeats < 1 or iters < 1 or warmup < 0:
        raise UserError("--repeats and --iters must be positive, --warmup >= 0")
    check_value("--batch-size", BENCH_BATCH, batch_size)
    return device


def _check_sizes(archs: list[str], input_size: int | None, threads: int | None) -> None:
    """--threads within torch's reach and --input-size at least each model's total stride."""
    from ..train.config import check_model_input_size

    if threads is not None:
        check_option("threads", threads)
    if input_size is not None:
        check_option("input_size", input_size)
        for name in dict.fromkeys(n for a in archs for n in pair_of(a)):
            check_model_input_size(name, input_size)


def _pair(
    afi_name: str,
    base_name: str,
    *,
    num_classes: int | None,
    device: str,
    channels_last: bool,
    model_options: dict[str, Any],
    batch_size: int,
    size: int,
) -> tuple[dict[str, nn.Module], torch.Tensor, torch.Tensor]:
    """Both models of a pair on ``device`` (each with the ``model_options`` it takes:
    :func:`~afictl.models.options_of`), and one input batch with its targets."""
    models = {}
    for name in (afi_name, base_name):
        kwargs = options_of(name, model_options)
        model = create_model(name, num_classes=num_classes, **kwargs).to(device)  # options checked
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        models[name] = model
    x = torch.randn(batch_size, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, models[afi_name].num_classes, (batch_size,), device=device)
    return models, x, y


def _interleaved(
    runners: list[_Runner],
    *,
    warmup: int,
    repeats: int,
    iters: int,
    clock: Callable[[], float],
    progress: Callable[[], None] | None,
) -> tuple[list[float], list[list[float]]]:
    """Warm-up times of both runners, then ``repeats`` timings of each, A B then B A."""
    warm = [r.timed(warmup) for r in runners]  # with --compile: includes compilation
    times: list[list[float]] = [[], []]
    for rep in range(repeats):
        for k in (0, 1) if rep % 2 == 0 else (1, 0):
            times[k].append(runners[k].timed(iters, clock))
        if progress is not None:
            progress()
    return warm, times


def _row(
    afi_name: str,
    base_name: str,
    mode: str,
    warm: list[float],
    times: list[list[float]],
    **settings,
) -> BenchRow:
    """One result row from the timings of a pair in one mode (medians, paired ratios)."""
    batch, iters = settings["batch_size"], settings["iters"]
    ratios = [b / a for a, b in zip(times[0], times[1], strict=True)]
    med_afi, med_base = statistics.median(times[0]), statistics.median(times[1])
    return BenchRow(
        arch=afi_name,
        baseline=base_name,
        mode=mode,
        images_per_sec=round(batch * iters / med_afi, 2),
        baseline_images_per_sec=round(batch * iters / med_base, 2),
        speed_ratio=round(statistics.median(ratios), 4),
        ms_per_step=round(1000 * med_afi / iters, 3),
        baseline_ms_per_step=round(1000 * med_base / iters, 3),
        warmup_seconds=round(warm[0], 3),
        baseline_warmup_seconds=round(warm[1], 3),
        ratio_min=round(min(ratios), 4),
        ratio_max=round(max(ratios), 4),
        threads=torch.get_num_threads(),
        torch_version=torch.__version__,
        **settings,
    )


def bench(
    archs: list[str],
    *,
    modes: tuple[str, ...] = MODES,
    batch_size: int = 64,
    input_size: int | None = None,
    num_classes: int | None = None,
    repeats: int = 7,
    iters: int = 1,
    warmup: int = 2,
    device: str = "cpu",
    channels_last: bool = False,
    amp: str = "none",
    compile: bool = False,
    threads: int | None = None,
    model_options: dict[str, Any] | None = None,
    allocator_cache: bool = True,
    timer: str = "wall",
    seed: int = 0,
    progress: Callable[[], None] | None = None,
) -> list[BenchRow]:
    """Time each AFI model of ``archs`` against its baseline (see the module docstring).

    ``device`` is ``auto`` (CUDA when available), ``cpu`` or ``cuda``; ``amp`` is ``none``,
    ``bf16`` or ``fp16`` (CUDA only, with gradient scaling in training). ``model_options``
    build each AFI model (afictl/model_options.py; e.g. ``memory_efficient=True``).
    """
    device = _check(
        modes=modes,
        device=device,
        amp=amp,
        timer=timer,
        counts=(repeats, iters, warmup, batch_size),
    )
    _check_sizes(archs, input_size, threads)
    clock = time.perf_counter if timer == "wall" else time.process_time
    pairs = [pair_of(a) for a in archs]
    if threads is not None:
        torch.set_num_threads(threads)
    allocator = configure_allocator(allocator_cache) if device == "cpu" else "cuda-caching"
    settings = dict(batch_size=batch_size, device=device, channels_last=channels_last)
    settings |= dict(repeats=repeats, iters=iters, warmup=warmup, amp=amp)
    options = model_options or {}
    settings |= dict(compile=compile, memory_efficient=bool(options.get("memory_efficient")))
    settings |= dict(model_options=options, allocator=allocator, timer=timer)
    rows = []
    with deterministic_mode(False):  # what afictl train runs under without --deterministic
        settings["cudnn_benchmark"] = torch.backends.cudnn.benchmark
        for names in pairs:
            rows += _bench_pair(
                names,
                input_size=input_size,
                num_classes=num_classes,
                seed=seed,
                modes=modes,
                clock=clock,
                progress=progress,
                settings=settings,
            )
    return rows


def _bench_pair(
    names: tuple[str, str],
    *,
    input_size: int | None,
    num_classes: int | None,
    seed: int,
    modes: tuple[str, ...],
    clock: Callable[[], float],
    progress: Callable[[], None] | None,
    settings: dict[str, Any],
) -> list[BenchRow]:
    """One row per mode for ``names`` (AFI model, baseline): both built from ``seed``, then
    timed interleaved on the same batch."""
    afi_name, base_name = names
    size = input_size or get_model_info(afi_name).input_size
    torch.manual_seed(seed)
    models, x, y = _pair(
        afi_name,
        base_name,
        num_classes=num_classes,
        model_options=settings["model_options"],
        size=size,
        batch_size=settings["batch_size"],
        device=settings["device"],
        channels_last=settings["channels_last"],
    )
    amp, compile = settings["amp"], settings["compile"]
    rows = []
    for mode in modes:
        runners = [_Runner(models[n], mode, x, y, amp=amp, compile=compile) for n in names]
        warm, times = _interleaved(
            runners,
            warmup=settings["warmup"],
            repeats=settings["repeats"],
            iters=settings["iters"],
            clock=clock,
            progress=progress,
        )
        row = _row(*names, mode, warm, times, input_size=size, **settings)
        ops = [count_ops(models[n], x[:2], mode) for n in names]  # per step, any batch
        rows.append(replace(row, ops_per_step=ops[0], baseline_ops_per_step=ops[1]))
    return rows
