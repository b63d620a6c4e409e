"""The CPU allocator setting that training and benchmarks share.

glibc's malloc hands large freed blocks back to the kernel, so a training step on the CPU can
fault its activations in again, page by page, every step. :func:`configure_allocator` keeps
them in the process instead, as caching allocators (jemalloc, PyTorch's CUDA allocator) do.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["configure_allocator"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def configure_allocator(cache: bool) -> str:
    """Keep freed memory in the process (glibc ``mallopt``) so that steps do not page-fault.

    glibc returns large freed blocks to the kernel (``mmap`` above a threshold that it moves
    between 128 KiB and 32 MiB, heap trimming), so every step can re-fault its activations in,
    one page at a time; on the measured machine that was up to a third of a ResNet-110 step,
    and it depends on the order in which two interleaved models free memory. With ``cache``
    the thresholds are raised to 1 GiB / 2 GiB, the behaviour of caching allocators such as
    jemalloc or PyTorch's CUDA allocator. Applies to the whole process, so to both models.
    Returns a description for the report (``glibc-default``, ``glibc-cached`` or ``system``).
    """
    if not cache:
        return "glibc-default"
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return "system"
    ok = mallopt(_M_MMAP_THRESHOLD, 1 << 30) and mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1)
    return "glibc-cached" if ok else "system"
