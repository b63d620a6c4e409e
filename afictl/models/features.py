"""Feature maps of a backbone's stages: ``feature_info``, ``out_indices`` and ``features_only``.

The same terms as timm's (``timm/models/_features.py``), written here so that afictl needs no
timm: one entry of ``feature_info`` per stage (``num_chs``, ``reduction``: the input's size
over the map's, ``module``: the stage's attribute), stage indices from 0 (conv1) and ``-1`` for
the last; an int ``n`` means the last ``n`` stages. :class:`FeatureNet` is what
``create_model(name, features_only=True, out_indices=...)`` returns: the backbone cut after
the last stage asked for, returning the list of those stages' feature maps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from torch import Tensor, nn

from ..errors import ModelOptionError

__all__ = ["FeatureInfo", "FeatureNet", "feature_take_indices"]


def feature_take_indices(
    num_stages: int, indices: int | Sequence[int] | None = None
) -> tuple[list[int], int]:
    """Absolute, sorted stage indices for ``indices``, and the largest of them.

    ``None``: every stage; an int ``n``: the last ``n``; a sequence: those indices, negative
    ones counting from the end (timm's convention).
    """
    if indices is None:
        indices = num_stages
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ModelOptionError(
                f"out_indices={indices}: an int n takes the last n stages, 1..{num_stages}"
            )
        take = list(range(num_stages - indices, num_stages))
    else:
        take = sorted({i + num_stages if i < 0 else i for i in indices})
        bad = [i for i in take if not 0 <= i < num_stages]
        if bad or not take:
            raise ModelOptionError(
                f"out_indices {list(indices)} out of range: {num_stages} stages, indices "
                f"0..{num_stages - 1} (negative from the end)"
            )
    return take, take[-1]


class FeatureInfo:
    """``feature_info`` of a features-only model: the per-stage dicts and the stages taken.

    As timm's ``FeatureInfo``: ``channels()``, ``reduction()``, ``module_name()`` give the values
    at ``out_indices`` (or at ``idx``); indexing and iteration give every stage's dict.
    """

    def __init__(self, info: Sequence[dict[str, Any]], out_indices: Sequence[int]) -> None:
        self.info = [dict(d, index=i) for i, d in enumerate(info)]
        self.out_indices = tuple(out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        """``key`` at the taken stages (``idx=None``), at stage ``idx``, or at each of ``idx``."""
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, int):
            return self.info[idx][key]
        return [self.info[i][key] for i in idx]

    def get_dicts(self, keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The dicts of the taken stages, restricted to ``keys`` if given."""
        dicts = [self.info[i] for i in self.out_indices]
        return dicts if keys is None else [{k: d[k] for k in keys} for d in dicts]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)

    def __getitem__(self, item: int) -> dict[str, Any]:
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo(out_indices={self.out_indices}, info={self.info})"


class FeatureNet(nn.Module):
    """A backbone returning the feature maps (NCHW) of the stages ``out_indices``, in order.

    Layers after the last stage taken (later stages, the head, the classifier) are removed,
    so every parameter left takes part in the output (DistributedDataParallel needs no
    ``find_unused_parameters``). Weights go into the backbone before it is wrapped:
    ``FeatureNet(model_with_weights, out_indices)``; the state dict's keys gain ``model.``.
    """

    def __init__(self, model: nn.Module, out_indices: int | Sequence[int] | None = None) -> None:
        super().__init__()
        take = model.prune_intermediate_layers(out_indices, prune_norm=True, prune_head=True)
        self.model = model
        self.out_indices = tuple(take)
        self.feature_info = FeatureInfo(model.feature_info, self.out_indices)
        self.arch = getattr(model, "arch", type(model).__name__)
        self.in_chans = getattr(model, "in_chans", 3)
        # as timm's features_only models: the input side of the cfg, no classifier
        cfg = getattr(model, "pretrained_cfg", {})
        self.pretrained_cfg = {
            k: v for k, v in cfg.items() if k not in ("num_classes", "classifier", "pool_size")
        }

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.model.forward_intermediates(
            x, indices=list(self.out_indices), stop_early=True, intermediates_only=True
        )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage in backward instead of keeping its activations (per stage)."""
        self.model.set_grad_checkpointing(enable)
