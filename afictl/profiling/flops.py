"""Parameter and FLOP counts in the paper's convention (Tables 2, 4, 5; Eq. 10).

The paper counts with thop: multiply-accumulates (MACs) of one forward pass, times the batch
size (batch 32). thop cannot see functional operations, so the AFI module gets its own rule:

- ``flops``: thop with the AFI module's scoring counted as in Eq. 10 (2 * inputs * C * C/r MACs
  per image) - the paper's convention;
- ``flops_with_aggregation``: the same plus the weighted sum R = sum_j S~_j X(j)
  (inputs * C * H * W MACs per image), which Eq. 10 leaves out;
- ``flops_exact``: ``torch.utils.flop_counter.FlopCounterMode`` on the ``meta`` device at the
  real batch size, which counts a MAC as two FLOPs and skips normalisation and element-wise ops.

thop counts are linear in the batch, so one image is profiled and scaled; a test checks the
result against a real batch-32 count.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from ..models import create_meta_model, get_model_info, options_of
from . import flops_cache
from .counting import FLOP_COUNTER, THOP, count_params, flop_counter_count, thop_count, whole

__all__ = [
    "FlopReport",
    "StageReport",
    "count_flops",
    "count_params",
    "flop_counter_count",
    "flops_report",
    "models_to_count",
    "stage_report",
    "thop_count",
]


@dataclass
class FlopReport:
    """One row of ``afictl flops``. Counts are integers (thop's sums are whole numbers)."""

    arch: str
    num_classes: int
    batch_size: int
    input_size: int
    params: int
    flops: int
    flops_with_aggregation: int
    afi_scoring_flops: int
    afi_aggregation_flops: int
    flops_exact: int | None  # None when not counted (exact=False)
    baseline: str | None = None
    baseline_params: int | None = None
    baseline_flops: int | None = None
    params_delta_pct: float | None = None
    flops_delta_pct: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def count_flops(
    arch: str,
    *,
    batch_size: int = 32,
    input_size: int | None = None,
    num_classes: int | None = None,
    exact: bool = True,
    use_cache: bool = True,
    **model_kwargs,
) -> FlopReport:
    """Parameters and FLOPs of one registered model (no baseline comparison).

    ``use_cache``: take the counts shipped in afictl/profiling/counts.json when they exist
    for these options and still match the model (afictl/profiling/flops_cache.py); the
    model is built either way (cheap on ``meta``), only thop's traced forward is skipped.
    """
    info = get_model_info(arch)
    size = input_size or info.input_size
    classes = num_classes or info.num_classes
    model = create_meta_model(arch, classes, **model_kwargs)
    cache = flops_cache.shipped_cache() if use_cache else None
    params = count_params(model)
    exact_flops = None
    if exact:  # before thop, which gives the meta model CPU storage
        key = flops_cache.CountKey.of(arch, classes, size, FLOP_COUNTER, **model_kwargs)
        if batch_size != key.batch_size:  # cached at the paper's batch only
            key = replace(key, batch_size=batch_size)
        exact_flops = flops_cache.counts(key, model, cache)["flops"]
    # per image: thop counts are linear in the batch
    key = flops_cache.CountKey.of(arch, classes, size, THOP, **model_kwargs)
    c = flops_cache.counts(key, model, cache)
    return FlopReport(
        arch=arch,
        num_classes=classes,
        batch_size=batch_size,
        input_size=size,
        params=params,
        flops=whole(c["macs"] * batch_size),
        flops_with_aggregation=whole((c["macs"] + c["afi_aggregation"]) * batch_size),
        afi_scoring_flops=whole(c["afi_scoring"] * batch_size),
        afi_aggregation_flops=whole(c["afi_aggregation"] * batch_size),
        flops_exact=exact_flops,
    )


def _pct(value: float, ref: float) -> float:
    # + 0.0 turns a rounded -0.0 into 0.0: no "-0.0" in JSON/CSV for a change that is not there
    return round(100.0 * (value - ref) / ref, 2) + 0.0


def models_to_count(archs: list[str], **model_kwargs) -> list[tuple[str, dict]]:
    """(arch, options) of every model ``flops_report(archs)`` counts, each once: each model
    and its baseline with the options of ``model_kwargs`` it takes (:func:`options_of`)."""
    todo: dict[str, tuple[str, dict]] = {}
    for arch in archs:
        info = get_model_info(arch)
        for name in (arch, info.baseline) if info.baseline else (arch,):
            kwargs = options_of(name, model_kwargs)
            todo.setdefault(_model_id(name, kwargs), (name, kwargs))
    return list(todo.values())


def _model_id(arch: str, kwargs: dict) -> str:
    return arch + repr(sorted(kwargs.items()))


def flops_report(
    archs: list[str],
    *,
    batch_size: int = 32,
    input_size: int | None = None,
    num_classes: int | None = None,
    exact: bool = True,
    use_cache: bool = True,
    progress: Callable[[str], None] | None = None,
    **model_kwargs,
) -> list[FlopReport]:
    """Rows for ``archs``; each AFI model is compared with its baseline. Every model is
    counted once; ``progress(arch)`` is called after each count (for a progress bar)."""
    counted: dict[str, FlopReport] = {}
    for name, kwargs in models_to_count(archs, **model_kwargs):
        counted[_model_id(name, kwargs)] = count_flops(
            name,
            batch_size=batch_size,
            input_size=input_size,
            num_classes=num_classes,
            exact=exact,
            use_cache=use_cache,
            **kwargs,
        )
        if progress is not None:
            progress(name)
    rows = []
    for arch in archs:
        info = get_model_info(arch)
        row = copy.copy(counted[_model_id(arch, options_of(arch, model_kwargs))])
        if info.baseline:
            base = counted[_model_id(info.baseline, options_of(info.baseline, model_kwargs))]
            row.baseline = info.baseline
            row.baseline_params = base.params
            row.baseline_flops = base.flops
            row.params_delta_pct = _pct(row.params, base.params)
            row.flops_delta_pct = _pct(row.flops, base.flops)
        rows.append(row)
    return rows


@dataclass
class StageReport:
    """Per-stage parameters and FLOPs (paper Table 2)."""

    arch: str
    stage: str
    params: int
    flops: int
    batch_size: int

    def to_dict(self) -> dict:
        return asdict(self)


def stage_report(
    arch: str,
    *,
    batch_size: int = 32,
    input_size: int | None = None,
    num_classes: int | None = None,
    **model_kwargs,
) -> list[StageReport]:
    """Per-stage rows of one model, always counted live (thop's per-module counts)."""
    info = get_model_info(arch)
    model = create_meta_model(arch, num_classes or info.num_classes, **model_kwargs)
    params = {attr: count_params(getattr(model, attr)) for attr in model.stage_attrs}
    c = thop_count(model, input_size or info.input_size, copy_model=False)
    rows = []
    for name, attr in zip(model.stage_names, model.stage_attrs, strict=True):
        ops = c.layers[attr][0]
        rows.append(StageReport(arch, name, params[attr], whole(ops * batch_size), batch_size))
    return rows
