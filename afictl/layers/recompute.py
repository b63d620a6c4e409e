"""Recomputation in backward (``torch.utils.checkpoint``) that trains like the forward it
replaces: BatchNorm running statistics are updated once per step, not again when recomputed.

Used by ``memory_efficient`` AFI blocks (layers/afi_join.py) and by grad checkpointing of whole
stages (``Backbone.set_grad_checkpointing``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["KeepRunningStats", "recomputed"]


class KeepRunningStats(AbstractContextManager):
    """Around a recomputation: the running statistics (and batch counters) of the training
    BatchNorms in ``modules`` are put back on exit as they were on entry."""

    def __init__(self, modules: Iterable[nn.Module | None]) -> None:
        self.modules = [m for m in modules if m is not None]
        self.saved: list[tuple[Tensor, Tensor]] = []

    def __enter__(self) -> None:
        self.saved = [
            (buf, buf.clone())
            for module in self.modules
            for m in module.modules()
            if m.training and getattr(m, "track_running_stats", False)
            for buf in (m.running_mean, m.running_var, m.num_batches_tracked)
            if buf is not None
        ]

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for buf, value in self.saved:
                buf.copy_(value)
        self.saved = []


def recomputed(fn: Callable[..., Any], *args: Any, modules: Iterable[nn.Module | None]) -> Any:
    """``fn(*args)``, its intermediate tensors recomputed in backward instead of kept
    (non-reentrant checkpoint); ``modules``: those ``fn`` runs, whose BatchNorm statistics the
    recomputation must not update a second time. ``fn`` draws no random numbers."""
    modules = list(modules)
    return checkpoint(
        fn,
        *args,
        use_reentrant=False,
        preserve_rng_state=False,
        context_fn=lambda: (nullcontext(), KeepRunningStats(modules)),
    )
