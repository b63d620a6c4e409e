"""``afictl memory``: training and inference memory beside the baseline (paper Table 6)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..render import Format
from ._util import ArchOpt, DeviceOpt, FormatOpt, OutputOpt


def _mib(value: int) -> str:
    return f"{value / 2**20:,.1f} MiB"


def memory_cli(
    arch: ArchOpt = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", min=1, help="Batch size (Table 6: 64).")
    ] = 64,
    input_size: Annotated[
        int | None, typer.Option(min=8, help="Input resolution (default: the model's).")
    ] = None,
    num_classes: Annotated[
        int | None, typer.Option(min=1, help="Classes (default: 100 CIFAR, 1000 ImageNet).")
    ] = None,
    memory_efficient: Annotated[
        bool,
        typer.Option(
            "--memory-efficient",
            help="AFI models recompute [X(i), R(i)] in backward instead of storing it.",
        ),
    ] = False,
    device: DeviceOpt = "auto",
    rss: Annotated[
        bool,
        typer.Option(
            "--rss",
            help="Also measure the peak resident memory of a fresh process "
            "running one training step / one forward (slow: real tensors).",
        ),
    ] = False,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """Training and inference memory of each model beside its baseline, and the ratios.

    train_bytes = parameters + gradients + SGD momentum + every tensor saved for backward
    (each storage once); infer_bytes = parameters + the peak of live tensors during one
    no-grad forward. This exact account runs on the meta device (no memory is allocated) and
    does not depend on the allocator. On CUDA (--device cuda, or auto when a GPU is there)
    the CUDA allocator peaks are added (cuda_train_bytes, cuda_infer_bytes); --rss adds what
    one step adds to the resident memory of a fresh process (rss_train_bytes,
    rss_infer_bytes). Default: afi_resnet50 at batch 64, the paper's Table 6.
    """
    from rich.console import Console
    from rich.progress import Progress

    from ..profiling.memory import count_steps, memory_report, resolve_device
    from ..render import render

    archs = arch or ["afi_resnet50"]
    device = resolve_device(device)
    with Progress(
        console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty()
    ) as progress:
        task = progress.add_task("measuring", total=count_steps(archs))
        rows = memory_report(
            archs,
            batch_size,
            input_size=input_size,
            num_classes=num_classes,
            memory_efficient=memory_efficient,
            device=device,
            rss=rss,
            progress=lambda: progress.advance(task),
        )
    columns = [
        "arch",
        "baseline",
        "batch_size",
        "train_bytes",
        "baseline_train_bytes",
        "train_ratio",
        "infer_bytes",
        "baseline_infer_bytes",
        "infer_ratio",
        "saved_ratio",
    ]
    if device == "cuda":
        columns += [
            "cuda_train_bytes",
            "baseline_cuda_train_bytes",
            "cuda_infer_bytes",
            "baseline_cuda_infer_bytes",
        ]
    if rss:
        columns += [
            "rss_train_bytes",
            "baseline_rss_train_bytes",
            "rss_infer_bytes",
            "baseline_rss_infer_bytes",
        ]
    byte_cols = [c for c in columns if c.endswith("_bytes")]
    title = f"Memory at batch {batch_size}" + (
        " (memory-efficient AFI)" if memory_efficient else ""
    )
    render(rows, fmt, output, columns=columns, formatters={c: _mib for c in byte_cols}, title=title)
