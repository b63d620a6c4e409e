"""The benchmark scripts behind docs/PERFORMANCE.md run (tiny sizes), and the upper-bound
variant is what it claims: AFI shapes without any aggregation, undone on exit."""

import re
import subprocess
import sys

import pytest
import torch
from scripts import ROOT, load_script

from afictl.layers import StageFeatures
from afictl.layers.afi_join import AFIJoin
from afictl.models import create_model

BENCHMARKS = ROOT / "benchmarks"


def test_no_aggregation_bound_skips_eq2_and_restores():
    variants = load_script(BENCHMARKS / "afi_variants.py")
    torch.manual_seed(0)
    model = create_model("afi_resnet20", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    original = AFIJoin._join, StageFeatures.append, StageFeatures.integrate
    calls = []
    # S~ passes through each AFI module's identity ``attention``: count the modules that weigh
    hooks = [
        m.attention.register_forward_hook(lambda *a: calls.append(1))
        for m in model.afi_modules().values()
    ]
    with torch.no_grad():
        real = model(x)
        weighed = len(calls)
        with variants.no_aggregation():
            assert AFIJoin._join is not original[0]
            bound = model(x)
        again = model(x)
    for h in hooks:
        h.remove()
    assert weighed == len(model.afi_modules()) > 0
    assert len(calls) == 2 * weighed  # none during the bound
    assert (AFIJoin._join, StageFeatures.append, StageFeatures.integrate) == original
    assert bound.shape == real.shape
    assert not torch.allclose(bound, real)  # R(i) = X(i) is not Eq. 2
    assert torch.equal(again, real)


def test_afi_variants_script_prints_every_requested_variant():
    out = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "afi_variants.py"),
            "--arch",
            "afi_resnet20",
            "--batch-size",
            "2",
            "--repeats",
            "1",
            "--threads",
            "1",
            "--only",
            "the model",
            "bound",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ") and "variant" not in line]
    assert len(rows) == 2 and "the model" in rows[0] and "bound" in rows[1]
    for row in rows:
        ratio = float(row.split("|")[3])
        assert ratio > 0
    assert re.search(r"baseline median [0-9.]+ ms", out)


def test_profile_ops_reports_the_aggregation_only_for_the_afi_model(capsys):
    profile_ops = load_script(BENCHMARKS / "profile_ops.py")
    self_ms = profile_ops.main(["--arch", "afi_resnet20", "--batch-size", "2", "--repeats", "1"])
    afi, base = self_ms["afi_resnet20"], self_ms["resnet20"]
    # inference runs the plain path: R(i) is a running sum of multiply-adds
    assert afi["aten::addcmul_"] > 0 and base["aten::addcmul_"] == 0
    assert afi["aten::mkldnn_convolution"] > 0 and base["aten::mkldnn_convolution"] > 0
    out = capsys.readouterr().out
    assert "| `aten::mkldnn_convolution` |" in out and out.splitlines()[-1].startswith(
        "| total profiled |"
    )


def test_public_aggregations_equal_the_plain_path_and_restore_it():
    """The two rejected public-API aggregations of docs/PERFORMANCE.md compute the plain
    path's numbers (float64), and leave the model's own path in place after timing."""
    script = load_script(BENCHMARKS / "public_aggregations.py")
    from afictl.layers import afi as afi_core
    from afictl.models import Stage

    before = afi_core.integrate, Stage.forward
    model, x = create_model("afi_resnet20", num_classes=3), torch.randn(2, 3, 16, 16)
    for name, node in (("function", "_WeightedSumBackward"), ("buffer", "_BufferSumBackward")):
        assert script.check("afi_resnet20", name) < 1e-12
        with script.variant(name):
            assert node in _graph_nodes(model(x).grad_fn)  # the variant is what ran
    assert not {"_WeightedSumBackward", "_BufferSumBackward"} & _graph_nodes(model(x).grad_fn)
    medians = script.main(["--arch", "afi_resnet20", "--batch-size", "2", "--repeats", "1"])
    assert set(medians) == {"baseline", "plain", "function", "buffer"}
    assert all(v > 0 for v in medians.values())
    assert (afi_core.integrate, Stage.forward) == before


def _graph_nodes(fn) -> set[str]:
    """Class names of every node of an autograd graph."""
    seen, todo = set(), [fn]
    while todo:
        f = todo.pop()
        if f is not None and f not in seen:
            seen.add(f)
            todo.extend(g for g, _ in f.next_functions)
    return {type(f).__name__ for f in seen}


def test_header_check_benchmark_times_every_file_kind():
    rows = load_script(BENCHMARKS / "header_check.py").main(["--files", "3"])
    assert [(r["format"], r["size"]) for r in rows] == [
        ("PNG", "32x32"),
        ("JPEG", "32x32"),
        ("JPEG", "500x375"),
    ]
    for r in rows:
        assert r["check_us"] > 0 and r["pil_decode_us"] > 0 and r["torchvision_decode_us"] > 0


@pytest.mark.slow  # two one-epoch `afictl train` processes and a bench
def test_tensor_pipeline_benchmark_measures_both_pipelines(tmp_path, capsys, monkeypatch):
    from PIL import Image

    for split in ("train", "test"):
        for i in range(16):
            path = tmp_path / "data" / split / f"c{i % 2}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 32), (i * 15, 0, 255 - i * 15)).save(path)
    monkeypatch.setenv("AFICTL_CACHE", str(tmp_path / "cache"))
    script = load_script(BENCHMARKS / "tensor_pipeline.py")
    argv = ["--data", str(tmp_path / "data"), "--images", "16", "--archs", "resnet20"]
    rows = script.main([*argv, "--batch-size", "8", "--repeats", "1", "-f", "json"])
    (row,) = rows
    assert row["bare_step_images_per_sec"] > 0
    for pipeline in ("loader", "tensor"):
        rate = row[f"{pipeline}_images_per_sec"]
        ratio = rate / row["bare_step_images_per_sec"]  # of the rounded rates: within rounding
        assert rate > 0 and abs(row[f"{pipeline}_ratio"] - ratio) <= 1e-3 * max(1.0, ratio)
    out = capsys.readouterr().out
    assert "second run (cache hit)" in out and "decoded MiB" in out
