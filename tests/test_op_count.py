"""aten operations per step, counted with torch.profiler."""

import pytest
import torch

from afictl.models import create_model
from afictl.profiling.op_count import count_ops


@pytest.mark.slow  # profiling a training step: seconds each
def test_counts_grow_with_the_network_and_with_backward(capfd):
    x = torch.randn(2, 3, 32, 32)
    base, afi = create_model("resnet20"), create_model("afi_resnet20")
    base.eval()
    counts = {
        (n, mode): count_ops(m, x, mode)
        for n, m in (("b", base), ("a", afi))
        for mode in ("infer", "train")
    }
    # a ResNet-20 forward: 19 convolutions + 19 batch norms + the head, at least
    assert counts["b", "infer"] >= 40
    assert counts["b", "train"] > 2 * counts["b", "infer"]  # backward adds more than forward
    assert (
        counts["a", "infer"] > counts["b", "infer"] and counts["a", "train"] > counts["b", "train"]
    )
    assert not base.training  # the model is left as it was
    assert all(p.grad is None for p in afi.parameters())
    assert "profiler_start" not in capfd.readouterr().err  # kineto's native log lines dropped


def test_count_is_the_same_for_any_batch():
    model = create_model("resnet20")
    assert count_ops(model, torch.randn(2, 3, 32, 32)) == count_ops(
        model, torch.randn(5, 3, 32, 32)
    )


def test_bench_rows_carry_the_operations_per_step(capsys):
    import json

    from cli import run

    code, out, err = run(
        capsys, "bench", "-a", "afi_resnet20", "-b", "2", "--repeats", "1", "--mode", "infer",
        "-f", "json",
    )  # fmt: skip
    assert code == 0, err
    (row,) = json.loads(out)
    model = create_model("afi_resnet20")
    base = create_model("resnet20")
    x = torch.randn(2, 3, 32, 32)
    assert row["ops_per_step"] == count_ops(model, x, "infer")
    assert row["baseline_ops_per_step"] == count_ops(base, x, "infer")
    assert row["ops_per_step"] > row["baseline_ops_per_step"] > 0
