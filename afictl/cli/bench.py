"""``afictl bench``: images/second of AFI models against their baselines, interleaved."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..render import Format
from ._util import (
    AmpOpt,
    ArchOpt,
    DeviceOpt,
    FormatOpt,
    InputSizeOpt,
    NumClassesOpt,
    OutputOpt,
    model_option_flags,
)

if TYPE_CHECKING:
    from ..profiling.bench import BenchRow

_COLUMNS = [
    "arch",
    "baseline",
    "mode",
    "batch_size",
    "images_per_sec",
    "baseline_images_per_sec",
    "speed_ratio",
    "ratio_min",
    "ratio_max",
    "ops_per_step",
    "baseline_ops_per_step",
    "threads",
]
_FORMATTERS = {
    "images_per_sec": "{:.1f}".format,
    "baseline_images_per_sec": "{:.1f}".format,
    "speed_ratio": "{:.3f}".format,
    "ratio_min": "{:.3f}".format,
    "ratio_max": "{:.3f}".format,
}

ModeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--mode",
        # no -m: across afictl it is gradcam's --method (one meaning per short flag)
        help="train (a full SGD step) or infer (one no-grad forward); repeatable. Default: both.",
    ),
]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Batch size.")]
RepeatsOpt = Annotated[
    int, typer.Option("--repeats", min=1, help="Timed repeats per model (medians).")
]
ItersOpt = Annotated[int, typer.Option("--iters", min=1, help="Steps per timed repeat.")]
WarmupOpt = Annotated[int, typer.Option("--warmup", min=0, help="Untimed steps per model first.")]
ChannelsLastOpt = Annotated[
    bool,
    typer.Option(
        "--channels-last", help="Both models and the input in channels-last memory format."
    ),
]
CompileOpt = Annotated[
    bool, typer.Option("--compile", help="torch.compile both models (inductor).")
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option("--threads", min=1, help="torch.set_num_threads (default: PyTorch's)."),
]
AllocatorCacheOpt = Annotated[
    bool,
    typer.Option(
        "--allocator-cache/--no-allocator-cache",
        help="Keep freed memory in the process (glibc mallopt) so steps do not "
        "page-fault; both models alike.",
    ),
]
TimerOpt = Annotated[
    str,
    typer.Option(
        "--timer",
        help="wall, or cpu (process CPU time: ignores time preempted by other jobs; "
        "use with --threads 1).",
    ),
]


def _timed_rows(
    archs: list[str], modes: tuple[str, ...], repeats: int, **options: Any
) -> list[BenchRow]:
    """:func:`afictl.profiling.bench.bench` of ``archs`` with progress on stderr (a bar, or
    lines in a log file), one step per timed repeat."""
    from ..profiling.bench import bench
    from ..progress import progress

    with progress("timing", len(archs) * len(modes) * repeats) as job:
        return bench(archs, modes=modes, repeats=repeats, progress=job.tick, **options)


@model_option_flags
def bench_cli(
    arch: ArchOpt = None,
    mode: ModeOpt = None,
    batch_size: BatchSizeOpt = 64,
    input_size: InputSizeOpt = None,
    num_classes: NumClassesOpt = None,
    repeats: RepeatsOpt = 7,
    iters: ItersOpt = 1,
    warmup: WarmupOpt = 2,
    device: DeviceOpt = "auto",
    channels_last: ChannelsLastOpt = False,
    amp: AmpOpt = "none",
    compile: CompileOpt = False,
    threads: ThreadsOpt = None,
    allocator_cache: AllocatorCacheOpt = True,
    timer: TimerOpt = "wall",
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    model_options: dict[str, Any] | None = None,
) -> None:
    """Throughput of each AFI model and its baseline, timed in one process.

    The two models alternate (A B, B A, ...) after warm-up steps; speed_ratio is the median
    over repeats of baseline-time / AFI-time, so > 1 means the AFI model is faster. A
    baseline name is paired with its AFI counterpart. Default: afi_resnet110, both modes.
    --amp bf16 autocasts to bfloat16 (CPU or CUDA); fp16 to float16 with gradient scaling
    (CUDA only). The model options build the AFI model of each pair (e.g. --memory-efficient);
    the baseline keeps its defaults.
    """
    from ..profiling.bench import MODES, resolve_device
    from ..render import render

    device = resolve_device(device)
    rows = _timed_rows(
        arch or ["afi_resnet110"],
        tuple(mode or MODES),
        repeats,
        batch_size=batch_size,
        input_size=input_size,
        num_classes=num_classes,
        iters=iters,
        warmup=warmup,
        device=device,
        channels_last=channels_last,
        amp=amp,
        compile=compile,
        threads=threads,
        model_options=model_options,
        allocator_cache=allocator_cache,
        timer=timer,
    )
    title = f"Throughput on {device}, batch {batch_size} (ratio > 1: AFI faster)"
    render(rows, fmt, output, columns=_COLUMNS, formatters=_FORMATTERS, title=title)
