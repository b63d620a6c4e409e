"""``afictl memory``: training and inference memory beside the baseline (paper Table 6)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..render import Format
from ._util import (
    ArchOpt,
    DeviceOpt,
    FormatOpt,
    InputSizeOpt,
    NumClassesOpt,
    OutputOpt,
    model_option_flags,
)

if TYPE_CHECKING:
    from ..profiling.memory import MemoryRow

_COLUMNS = [
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
_CUDA_COLUMNS = [
    "cuda_train_bytes",
    "baseline_cuda_train_bytes",
    "cuda_infer_bytes",
    "baseline_cuda_infer_bytes",
]
_RSS_COLUMNS = [
    "rss_train_bytes",
    "baseline_rss_train_bytes",
    "rss_infer_bytes",
    "baseline_rss_infer_bytes",
]

BatchSizeOpt = Annotated[
    int, typer.Option("--batch-size", "-b", min=1, help="Batch size (Table 6: 64).")
]
RssOpt = Annotated[
    bool,
    typer.Option(
        "--rss",
        help="Also measure the peak resident memory of a fresh process "
        "running one training step / one forward (slow: real tensors).",
    ),
]


def _mib(value: int) -> str:
    """A byte count in MiB, for the table."""
    return f"{value / 2**20:,.1f} MiB"


def _columns(device: str, rss: bool) -> list[str]:
    """The columns shown: the CUDA and RSS measurements only where they were taken."""
    columns = list(_COLUMNS)
    if device == "cuda":
        columns += _CUDA_COLUMNS
    if rss:
        columns += _RSS_COLUMNS
    return columns


def _measured_rows(archs: list[str], batch_size: int, **options: Any) -> list[MemoryRow]:
    """:func:`afictl.profiling.memory.memory_report` with progress on stderr (a bar, or lines
    in a log file), one step per measured step."""
    from ..profiling.memory import count_steps, memory_report
    from ..progress import progress

    with progress("measuring", count_steps(archs)) as job:
        return memory_report(archs, batch_size, progress=job.tick, **options)


# the resident-memory account rebuilds each model by name in a fresh process: the default
# options, and memory_efficient (Table 6), which memory_report applies to the AFI models
@model_option_flags(only=("memory_efficient",))
def memory_cli(
    arch: ArchOpt = None,
    batch_size: BatchSizeOpt = 64,
    input_size: InputSizeOpt = None,
    num_classes: NumClassesOpt = None,
    device: DeviceOpt = "auto",
    rss: RssOpt = False,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    model_options: dict[str, Any] | None = None,
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
    from ..profiling.memory import resolve_device
    from ..render import render

    device = resolve_device(device)
    memory_efficient = bool((model_options or {}).get("memory_efficient"))
    rows = _measured_rows(
        arch or ["afi_resnet50"],
        batch_size,
        input_size=input_size,
        num_classes=num_classes,
        memory_efficient=memory_efficient,
        device=device,
        rss=rss,
    )
    columns = _columns(device, rss)
    byte_cols = [c for c in columns if c.endswith("_bytes")]
    title = f"Memory at batch {batch_size}" + (
        " (memory-efficient AFI)" if memory_efficient else ""
    )
    render(rows, fmt, output, columns=columns, formatters={c: _mib for c in byte_cols}, title=title)
