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

import torch
from thop import profile
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..layers import AFIModule
from ..models import create_meta_model, get_model_info

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


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class _AFICounts:
    scoring: float = 0.0
    aggregation: float = 0.0


def _batchnorm_rule(m: nn.Module, inputs, output: torch.Tensor) -> None:
    """2 operations per output element, as the thop release the paper used counted inference BN
    (thop 0.1.1 counts 4 when the layer is affine); this reproduces the paper's baseline FLOPs of
    ResNet-50/101/152 and ResNeXt-50 to about 0.03%."""
    m.total_ops += torch.tensor([2.0 * output.numel()], dtype=torch.float64)


def _afi_rule(counts: _AFICounts):
    def rule(m: AFIModule, inputs, output: torch.Tensor) -> None:
        b = output.shape[0]
        hidden = m.fc1.out_features
        scoring = b * m.num_inputs * 2 * m.channels * hidden  # Eq. 10, per module
        aggregation = output.numel() * m.num_inputs
        m.total_ops += torch.tensor([float(scoring)], dtype=torch.float64)
        counts.scoring += scoring
        counts.aggregation += aggregation

    return rule


@dataclass
class ThopCount:
    macs: float  # paper convention, for the batch that was profiled
    afi_scoring: float
    afi_aggregation: float
    layers: dict


def thop_count(
    model: nn.Module, input_size: int, batch_size: int = 1, *, copy_model: bool = True
) -> ThopCount:
    """thop MACs of ``model`` at ``batch_size``.

    thop leaves ``total_ops``/``total_params`` buffers in what it profiles, so it gets a copy
    unless the caller passes a throwaway model (``copy_model=False``, which on ``meta`` is given
    CPU storage in place). Works on ``meta`` models.
    """
    target = copy.deepcopy(model) if copy_model else model
    target.eval()
    device = next(target.parameters()).device
    if device.type == "meta":
        # thop's counts depend on shapes only. On meta, every element-wise op runs as a Python
        # reference (and imports torch._dynamo): a batch-1 CPU forward over zeros is 2-3x faster.
        target = _zeros_on_cpu(target)
        device = torch.device("cpu")
    counts = _AFICounts()
    x = torch.empty(batch_size, 3, input_size, input_size, device=device).normal_()
    # thop hooks every module, so every block runs the plain path and its AFIModule's forward
    macs, _params, layers = profile(
        target,
        inputs=(x,),
        custom_ops={AFIModule: _afi_rule(counts), nn.BatchNorm2d: _batchnorm_rule},
        verbose=False,
        ret_layer_info=True,
    )
    return ThopCount(float(macs), counts.scoring, counts.aggregation, layers)


def _zeros_on_cpu(model: nn.Module) -> nn.Module:
    """``model`` (on meta) given CPU storage, every parameter and buffer zero (no NaNs, no
    subnormals: the forward takes its usual time).

    ``to_empty`` would do it through ``empty_like``, a Python reference on meta (0.7 s for the
    bare ``afictl flops`` tables); ``_apply`` with ``zeros`` from the shapes skips it.
    """
    return model._apply(lambda t: torch.zeros(t.shape, dtype=t.dtype))


def flop_counter_count(model: nn.Module, input_size: int, batch_size: int) -> int:
    """FlopCounterMode's FLOPs (2 per MAC) of one forward pass of ``model``."""
    device = next(model.parameters()).device
    x = torch.empty(batch_size, 3, input_size, input_size, device=device)
    counter = FlopCounterMode(display=False)
    # Without gradients every AFI block runs the plain path: counts describe the math (Eq. 2's
    # multiply-adds), not the accelerated path's batched matmuls.
    with torch.no_grad(), counter:
        model.eval()(x)
    return int(counter.get_total_flops())


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


def _whole(value: float) -> int | float:
    """A count as an integer when it is one (thop sums in float64)."""
    return int(value) if float(value).is_integer() else float(value)


def _per_image_thop(model: nn.Module, key, cache) -> ThopCount:
    """thop's per-image counts: from the shipped file when it matches the model, else live."""
    hit = cache.lookup(key, model) if cache is not None else None
    if hit is not None:
        return ThopCount(hit["macs"], hit["afi_scoring"], hit["afi_aggregation"], {})
    return thop_count(model, key.input_size, batch_size=1, copy_model=False)


def _exact_flops(model: nn.Module, key, cache) -> int:
    hit = cache.lookup(key, model) if cache is not None else None
    if hit is not None:
        return hit["flops"]
    return flop_counter_count(model, key.input_size, key.batch_size)


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
    from .flops_cache import FLOP_COUNTER, THOP, CountKey, shipped_cache

    info = get_model_info(arch)
    size = input_size or info.input_size
    classes = num_classes or info.num_classes
    model = create_meta_model(arch, classes, **model_kwargs)
    cache = shipped_cache() if use_cache else None
    params = count_params(model)
    exact_flops = None
    if exact:
        key = CountKey.of(arch, classes, size, FLOP_COUNTER, **model_kwargs)
        if batch_size != key.batch_size:  # cached at the paper's batch only
            key = replace(key, batch_size=batch_size)
        exact_flops = _exact_flops(model, key, cache)
    c = _per_image_thop(model, CountKey.of(arch, classes, size, THOP, **model_kwargs), cache)
    return FlopReport(
        arch=arch,
        num_classes=classes,
        batch_size=batch_size,
        input_size=size,
        params=params,
        flops=_whole(c.macs * batch_size),
        flops_with_aggregation=_whole((c.macs + c.afi_aggregation) * batch_size),
        afi_scoring_flops=_whole(c.afi_scoring * batch_size),
        afi_aggregation_flops=_whole(c.afi_aggregation * batch_size),
        flops_exact=exact_flops,
    )


def _pct(value: float, ref: float) -> float:
    # + 0.0 turns a rounded -0.0 into 0.0: no "-0.0" in JSON/CSV for a change that is not there
    return round(100.0 * (value - ref) / ref, 2) + 0.0


def models_to_count(archs: list[str], **model_kwargs) -> list[tuple[str, dict]]:
    """(arch, options) of every model ``flops_report(archs)`` counts, each once: AFI models
    with ``model_kwargs``, their baselines (shared by several rows) with none."""
    todo: dict[str, tuple[str, dict]] = {}
    for arch in archs:
        info = get_model_info(arch)
        kwargs = model_kwargs if info.is_afi else {}
        todo.setdefault(_model_id(arch, kwargs), (arch, kwargs))
        if info.baseline:
            todo.setdefault(_model_id(info.baseline, {}), (info.baseline, {}))
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
        row = copy.copy(counted[_model_id(arch, model_kwargs if info.is_afi else {})])
        if info.baseline:
            base = counted[_model_id(info.baseline, {})]
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
        rows.append(StageReport(arch, name, params[attr], _whole(ops * batch_size), batch_size))
    return rows
