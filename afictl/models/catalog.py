"""Registry listing with parameter counts (``afictl models``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .registry import get_model_info, list_models

__all__ = ["ModelRow", "catalog", "closest_names"]


@dataclass
class ModelRow:
    name: str
    family: str
    input_size: int
    home_dataset: str
    num_classes: int
    params: int
    baseline: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def catalog(include: str | list[str] = "*") -> list[ModelRow]:
    """One row per registered model, from the registry's metadata (nothing is built)."""
    rows = []
    for name in list_models(include):
        info = get_model_info(name)
        rows.append(
            ModelRow(
                name,
                info.family,
                info.input_size,
                info.home_dataset,
                info.num_classes,
                info.num_params,
                info.baseline,
            )
        )
    return rows


def closest_names(pattern: str, n: int = 4) -> list[str]:
    """The registered names closest to ``pattern`` (wildcards dropped), for a no-match hint."""
    import difflib

    stem = pattern.lower().replace("*", "").replace("?", "")
    if not stem:
        return []
    names = list_models()
    by_lower = {name.lower(): name for name in names}
    close = difflib.get_close_matches(stem, list(by_lower), n=n, cutoff=0.3)
    return [by_lower[c] for c in close]
