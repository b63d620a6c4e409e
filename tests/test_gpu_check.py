"""benchmarks/gpu_check.py: its CPU ``--tiny`` run goes through every row (so the GPU check
cannot rot while no GPU runs it), and a broken step is a FAIL row with exit status 1."""

import json

import pytest
import torch
from scripts import ROOT, load_script

from afictl.layers.afi_join import AFIJoin

CHECK = ROOT / "benchmarks" / "gpu_check.py"

TINY_ROWS = [
    *(f"train {v} {a}" for v in ("fp32", "bf16") for a in ("afi_resnet20", "resnet20")),
    "train fp16 + GradScaler afi_resnet20",
    "train fp16 + GradScaler resnet20",
    *(f"train {v} {a}" for v in ("channels-last", "compile") for a in ("afi_resnet20", "resnet20")),
    "train ema + mixup afi_resnet20",
    "afi memory-efficient = stored fp64",
    "afi fp32 = fp64",
    "afi bf16 = fp64",
    "afi fp16 = fp64",
    "memory afi_resnet20 (Table 6)",
    "bench train afi_resnet20",
    "bench infer afi_resnet20",
    "torchrun 1 process",
]


@pytest.fixture(scope="module")
def gpu_check():
    return load_script(CHECK)


def _run(module, tmp_path, *args):
    out = tmp_path / "check.json"
    code = module.main(
        ["--device", "cpu", "--tiny", "--format", "json", "--output", str(out), *args]
    )
    return code, {r["check"]: r for r in json.loads(out.read_text())}


def test_the_gpu_plan_has_every_row_with_the_imagenet_models(gpu_check, tmp_path):
    plan = gpu_check.make_plan(device="cuda", tiny=False, work=tmp_path)
    names = [name for name, _ in gpu_check.steps(plan)]
    assert len(names) == 21 and names[0] == "train fp32 afi_resnet50"
    assert {"train compile resnet50", "memory afi_resnet50 (Table 6)"} <= set(names)
    assert {
        f"bench {m} {a}" for m in ("train", "infer") for a in ("afi_resnet50", "afi_resnet110")
    } <= set(names)
    tiny = gpu_check.make_plan(device="cpu", tiny=True, work=tmp_path)
    assert [name for name, _ in gpu_check.steps(tiny)] == TINY_ROWS


@pytest.mark.slow
def test_tiny_cpu_run_is_all_ok_or_explained(gpu_check, tmp_path):
    code, rows = _run(gpu_check, tmp_path)
    assert list(rows) == TINY_ROWS
    bad = {n: r for n, r in rows.items() if r["status"] not in ("ok", "n/a on cpu")}
    assert code == 0 and not bad, bad
    for name, row in rows.items():
        if row["status"] == "ok":
            assert row["key"] and row["seconds"] > 0, row
        else:  # fp16 autocast with GradScaler: afictl keeps it for CUDA, and says so
            assert "fp16" in name and "needs CUDA" in row["detail"], row
    assert "backend gloo" in rows["torchrun 1 process"]["detail"]
    assert float(rows["afi memory-efficient = stored fp64"]["key"].split()[-1]) <= 1e-9


def test_a_broken_recomputation_is_a_failed_row_and_exit_1(gpu_check, tmp_path, monkeypatch):
    recomputed = AFIJoin._recomputed

    def broken(self, *args):
        out, xi = recomputed(self, *args)
        return out * 1.01, xi

    monkeypatch.setattr(AFIJoin, "_recomputed", broken)
    code, rows = _run(gpu_check, tmp_path, "--select", "afi memory-efficient = stored fp64")
    assert code == 1
    row = rows["afi memory-efficient = stored fp64"]
    assert row["status"] == "FAIL" and "memory-efficient and stored differ" in row["detail"], row
    assert {r["status"] for n, r in rows.items() if n != row["check"]} == {"skipped"}


def test_a_precision_specific_bug_fails_its_row_only(gpu_check, tmp_path, monkeypatch):
    """A bug that only the fp32 path has (softmax weights below 0.6 dropped in float32, where
    the subnormal rule drops 1e-31; the fp64 reference is untouched) is a FAIL of the fp32
    row and exit status 1."""
    import afictl.layers.afi as afi_core

    real = afi_core.negligible
    monkeypatch.setattr(
        afi_core, "negligible", lambda dtype: 0.6 if dtype == torch.float32 else real(dtype)
    )
    code, rows = _run(gpu_check, tmp_path, "--select", "= fp64")
    assert code == 1
    row = rows["afi fp32 = fp64"]
    assert row["status"] == "FAIL" and "x the model's own sensitivity" in row["detail"], row


def test_precision_rows_pass_with_margin_on_cpu(gpu_check, tmp_path):
    code, rows = _run(gpu_check, tmp_path, "--select", "= fp64")
    assert code == 0
    for name in ("afi fp32 = fp64", "afi bf16 = fp64"):
        ratio = float(rows[name]["key"].split()[0])
        assert 0 < ratio <= 25, rows[name]  # a margin of 2 under the slack of 50
    assert rows["afi fp16 = fp64"]["status"] == "n/a on cpu"
