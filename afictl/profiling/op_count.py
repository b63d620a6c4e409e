"""How many aten operations one step calls: on a GPU at CIFAR batch sizes each is at least one
kernel launch, so a network of many small operations is bound by launches, not arithmetic.

Counted with ``torch.profiler`` (public API): every aten operation called from outside another
aten operation, i.e. what Python and the autograd engine ask the dispatcher for, forward and
backward. Operations that an aten operation calls internally (``conv2d`` -> ``convolution`` ->
``_convolution``) are one call, as they are one launch or fewer.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

__all__ = ["count_ops"]


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """The profiler's backend (kineto) logs its start and stop from C++ straight to file
    descriptor 2; those lines are not ours to print in the middle of a table."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _outermost_aten(events) -> int:
    count = 0
    for event in events:
        if not event.name.startswith("aten::"):
            continue
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        count += parent is None
    return count


def count_ops(model: nn.Module, images: torch.Tensor, mode: str = "train") -> int:
    """aten operations of one ``mode`` step ("train": forward, loss, backward; "infer":
    forward under inference_mode) of ``model`` on ``images``; the model is left as it was."""
    was_training = model.training
    targets = torch.zeros(len(images), dtype=torch.long, device=images.device)
    try:
        model.train(mode == "train")
        with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
            if mode == "train":
                F.cross_entropy(model(images), targets).backward()
            else:
                with torch.inference_mode():
                    model(images)
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return _outermost_aten(prof.events())
