"""Counting the operations of one model: the paper's thop convention and torch's FlopCounterMode.

The lowest layer of the FLOP tables: :func:`count` is the one function that counts a model
live, by a counting method; :mod:`.flops_cache` looks counts up and calls it on a miss, and
:mod:`.flops` builds the tables' rows from the counts. The conventions are described in
:mod:`.flops`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from thop import profile
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..layers import AFIModule

__all__ = [
    "FLOP_COUNTER",
    "METHODS",
    "THOP",
    "ThopCount",
    "count",
    "count_params",
    "flop_counter_count",
    "thop_count",
    "whole",
]

#: Counting methods; bump the suffix when a rule of this module changes what it counts.
THOP = "thop-bn2-afi-eq10/v1"  # thop MACs, BN 2/element, AFI scoring by Eq. 10, per image
FLOP_COUNTER = "flop-counter/v1"  # torch's FlopCounterMode, 2 FLOPs per MAC
METHODS = (THOP, FLOP_COUNTER)


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


def whole(value: float) -> int | float:
    """A count as an integer when it is one (thop sums in float64)."""
    return int(value) if float(value).is_integer() else float(value)


def count(
    model: nn.Module, input_size: int, method: str, batch_size: int
) -> dict[str, int | float]:
    """The counts of one forward pass of ``model`` at ``batch_size`` by ``method``: thop's
    ``macs``, ``afi_scoring`` and ``afi_aggregation``, or FlopCounterMode's ``flops``.

    thop profiles ``model`` itself: on ``meta`` it is given CPU storage in place, so count
    :data:`FLOP_COUNTER` first when a model is counted both ways.
    """
    if method == THOP:
        c = thop_count(model, input_size, batch_size=batch_size, copy_model=False)
        counts = {
            "macs": c.macs,
            "afi_scoring": c.afi_scoring,
            "afi_aggregation": c.afi_aggregation,
        }
    elif method == FLOP_COUNTER:
        counts = {"flops": flop_counter_count(model, input_size, batch_size)}
    else:
        raise ValueError(f"unknown counting method {method!r}; known: {', '.join(METHODS)}")
    return {k: whole(v) for k, v in counts.items()}
