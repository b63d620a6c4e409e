"""Reusable layers: the AFI module (written once, used by every family) and its helpers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from .afi import AFIModule, StageFeatures, integrate, squeeze
from .afi_join import AFIJoin, first_conv_width

__all__ = [
    "AFIJoin",
    "AFIModule",
    "StageFeatures",
    "first_conv_width",
    "integrate",
    "record_attention",
    "squeeze",
]


@contextmanager
def record_attention(model: nn.Module) -> Iterator[dict[str, list[Tensor]]]:
    """Collect the softmax matrix S~ of every AFI module while the block runs.

    Yields a dict ``{module name: [S~ of each forward call, shape (B, n, C)]}``; the hooks are
    removed on exit, also when the body raises.
    """
    records: dict[str, list[Tensor]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, AFIModule):
            records[name] = []

            def hook(_m, _inp, out, _name=name):
                records[_name].append(out.detach())

            handles.append(module.attention.register_forward_hook(hook))
    try:
        yield records
    finally:
        for h in handles:
            h.remove()
