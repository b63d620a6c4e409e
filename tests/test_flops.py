"""FLOP conventions (paper Tables 2, 4, 5; Eq. 10)."""

import pytest
import torch

from afictl.models import create_meta_model, create_model
from afictl.profiling.flops import (
    count_flops,
    flop_counter_count,
    flops_report,
    thop_count,
)

PAPER_BASELINE_FLOPS = {
    "resnet32": 2.23e9,
    "resnet110": 8.17e9,
    "resnet50": 131.57e9,
    "resnet101": 250.69e9,
    "resnet152": 369.88e9,
}
PAPER_RATIOS = {
    "afi_resnet50": 121.72 / 131.57,
    "afi_resnet110": 6.23 / 8.17,
    "afi_resnet32": 1.78 / 2.23,
}


@pytest.mark.parametrize("name", PAPER_BASELINE_FLOPS)
def test_baseline_flops_within_2pct_of_paper(name):
    flops = count_flops(name, exact=False).flops
    assert abs(flops / PAPER_BASELINE_FLOPS[name] - 1) < 0.02


@pytest.mark.parametrize("name", PAPER_RATIOS)
def test_afi_to_baseline_flop_ratio_within_2pct(name):
    (row,) = flops_report([name], exact=False)
    ratio = row.flops / row.baseline_flops
    assert abs(ratio / PAPER_RATIOS[name] - 1) < 0.02, ratio


@pytest.mark.parametrize("name", ["resnet20", "afi_resnet20"])
def test_scaled_meta_count_equals_real_batch32_count(name):
    """`flops` counts one image on the meta device and scales; a real batch-32 count agrees."""
    real = thop_count(create_model(name), 32, batch_size=32)
    report = count_flops(name, batch_size=32)
    assert report.flops == real.macs + 0.0
    assert report.afi_aggregation_flops == real.afi_aggregation
    assert report.flops_exact == flop_counter_count(create_model(name), 32, 32)


def test_thop_leaves_the_model_clean():
    model = create_model("afi_resnet20")
    before = set(model.state_dict())
    thop_count(model, 32)
    assert set(model.state_dict()) == before
    assert not any(hasattr(m, "total_ops") for m in model.modules())


def test_afi_scoring_follows_eq10():
    """Eq. 10 per stage of N+1 blocks: C^2/r (N+2)(N-1) MACs, C the halved width."""
    r = count_flops("afi_resnet32", batch_size=32, exact=False)
    n = 4  # 5 blocks per stage
    per_image = sum(c * c / 4 * (n + 2) * (n - 1) for c in (8, 16, 32))
    assert r.afi_scoring_flops == per_image * 32
    # the weighted sum: AFI(i) reads i-1 inputs of C x H x W at blocks i = 3..5
    agg = sum((i - 1) * c * hw * hw for c, hw in ((8, 32), (16, 16), (32, 8)) for i in range(3, 6))
    assert r.afi_aggregation_flops == agg * 32
    assert r.flops_with_aggregation == r.flops + r.afi_aggregation_flops


def test_flop_counter_cross_check():
    """FlopCounterMode counts 2 FLOPs per MAC and skips BN: half of it is close to thop's."""
    for name in ("resnet50", "afi_resnet50"):
        r = count_flops(name)
        assert abs(r.flops_exact / 2 / r.flops - 1) < 0.03


def test_batch_scaling_is_linear():
    a = count_flops("afi_resnet20", batch_size=1, exact=False)
    b = count_flops("afi_resnet20", batch_size=7, exact=False)
    assert b.flops == 7 * a.flops


def test_create_meta_model_builds_no_real_tensors():

    m = create_meta_model("resnet152")
    assert all(p.device.type == "meta" for p in m.parameters())
    assert torch.empty(1).device.type == "cpu"  # the meta context does not leak


def test_meta_counts_equal_real_model_counts():
    """thop runs a meta model on zero-filled CPU storage: the counts of a real model."""
    real = thop_count(create_model("afi_resnet20"), 32)
    meta = thop_count(create_meta_model("afi_resnet20"), 32, copy_model=False)
    assert real.macs == meta.macs > 0
    assert (real.afi_scoring, real.afi_aggregation) == (meta.afi_scoring, meta.afi_aggregation)
