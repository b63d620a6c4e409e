"""Channel/spatial attention layers by name (Table 9): ``create_attn("se", channels)``.

Each layer lives in its own module and cites its paper; this factory is the one place that maps
the names used by the models and the registry to them.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .cbam import CBAM
from .eca import EfficientChannelAttention
from .gather_excite import GatherExcite
from .se import SqueezeExcite

__all__ = ["ATTENTION_LAYERS", "create_attn"]

ATTENTION_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "se": SqueezeExcite,
    "ge": GatherExcite,
    "cbam": CBAM,
    "eca": EfficientChannelAttention,
}


def create_attn(name: str | None, channels: int, **kwargs) -> nn.Module | None:
    """The attention layer ``name`` (se, ge, cbam, eca) for ``channels``; None for None/"none"."""
    if name is None or name.lower() == "none":
        return None
    try:
        layer = ATTENTION_LAYERS[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown attention {name!r}; choose from {', '.join(ATTENTION_LAYERS)}"
        ) from None
    return layer(channels, **kwargs)
