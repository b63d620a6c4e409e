"""``afictl bench``: images/second of AFI models against their baselines, interleaved."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..render import Format
from ._util import AmpOpt, ArchOpt, DeviceOpt, FormatOpt, OutputOpt


def bench_cli(
    arch: ArchOpt = None,
    mode: Annotated[
        list[str] | None,
        typer.Option(
            "--mode",
            "-m",
            help="train (a full SGD step) or infer (one no-grad forward); repeatable. "
            "Default: both.",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Batch size.")] = 64,
    input_size: Annotated[
        int | None, typer.Option(min=8, help="Input resolution (default: the model's).")
    ] = None,
    num_classes: Annotated[
        int | None, typer.Option(min=1, help="Classes (default: 100 CIFAR, 1000 ImageNet).")
    ] = None,
    repeats: Annotated[
        int, typer.Option("--repeats", min=1, help="Timed repeats per model (medians).")
    ] = 7,
    iters: Annotated[int, typer.Option(min=1, help="Steps per timed repeat.")] = 1,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed steps per model first.")] = 2,
    device: DeviceOpt = "auto",
    channels_last: Annotated[
        bool,
        typer.Option(
            "--channels-last", help="Both models and the input in channels-last memory format."
        ),
    ] = False,
    amp: AmpOpt = "none",
    compile: Annotated[
        bool, typer.Option("--compile", help="torch.compile both models (inductor).")
    ] = False,
    threads: Annotated[
        int | None, typer.Option(min=1, help="torch.set_num_threads (default: PyTorch's).")
    ] = None,
    memory_efficient: Annotated[
        bool,
        typer.Option(
            "--memory-efficient", help="The AFI model recomputes [X(i), R(i)] in backward."
        ),
    ] = False,
    allocator_cache: Annotated[
        bool,
        typer.Option(
            "--allocator-cache/--no-allocator-cache",
            help="Keep freed memory in the process (glibc mallopt) so steps do not "
            "page-fault; both models alike.",
        ),
    ] = True,
    timer: Annotated[
        str,
        typer.Option(
            help="wall, or cpu (process CPU time: ignores time preempted by other jobs; "
            "use with --threads 1)."
        ),
    ] = "wall",
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """Throughput of each AFI model and its baseline, timed in one process.

    The two models alternate (A B, B A, ...) after warm-up steps; speed_ratio is the median
    over repeats of baseline-time / AFI-time, so > 1 means the AFI model is faster. A
    baseline name is paired with its AFI counterpart. Default: afi_resnet110, both modes.
    --amp bf16 autocasts to bfloat16 (CPU or CUDA); fp16 to float16 with gradient scaling
    (CUDA only).
    """
    from rich.console import Console
    from rich.progress import Progress

    from ..profiling.bench import MODES, bench, resolve_device
    from ..render import render

    archs = arch or ["afi_resnet110"]
    modes = tuple(mode or MODES)
    device = resolve_device(device)
    with Progress(
        console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty()
    ) as progress:
        task = progress.add_task("timing", total=len(archs) * len(modes) * repeats)
        rows = bench(
            archs,
            modes=modes,
            batch_size=batch_size,
            input_size=input_size,
            num_classes=num_classes,
            repeats=repeats,
            iters=iters,
            warmup=warmup,
            device=device,
            channels_last=channels_last,
            amp=amp,
            compile=compile,
            threads=threads,
            memory_efficient=memory_efficient,
            allocator_cache=allocator_cache,
            timer=timer,
            progress=lambda: progress.advance(task),
        )
    render(
        rows,
        fmt,
        output,
        columns=[
            "arch",
            "baseline",
            "mode",
            "batch_size",
            "images_per_sec",
            "baseline_images_per_sec",
            "speed_ratio",
            "ratio_min",
            "ratio_max",
            "threads",
        ],
        formatters={
            "images_per_sec": "{:.1f}".format,
            "baseline_images_per_sec": "{:.1f}".format,
            "speed_ratio": "{:.3f}".format,
            "ratio_min": "{:.3f}".format,
            "ratio_max": "{:.3f}".format,
        },
        title=f"Throughput on {device}, batch {batch_size} (ratio > 1: AFI faster)",
    )
