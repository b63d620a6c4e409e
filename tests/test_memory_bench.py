"""`afictl memory` and `afictl bench`: the exact memory account and the interleaved benchmark."""

import json

import pytest
import torch
from cli import one_line_exit_2, run
from torch import nn

from afictl.profiling.bench import configure_allocator, pair_of
from afictl.profiling.memory import account, inference_peak, saved_tensor_bytes

MEMORY_KEYS = {
    "arch",
    "baseline",
    "batch_size",
    "device",
    "train_bytes",
    "baseline_train_bytes",
    "train_ratio",
    "infer_bytes",
    "baseline_infer_bytes",
    "infer_ratio",
    "saved_bytes",
    "infer_activation_bytes",
    "param_bytes",
    "infer_peak_module",
    "memory_efficient",
}
BENCH_KEYS = {
    "arch",
    "baseline",
    "mode",
    "batch_size",
    "images_per_sec",
    "baseline_images_per_sec",
    "speed_ratio",
    "repeats",
    "threads",
    "channels_last",
    "amp",
    "compile",
    "allocator",
    "warmup_seconds",
    "baseline_warmup_seconds",
}


def test_memory_json_has_the_interface_keys(capsys):
    code, out, _ = run(
        capsys, "memory", "--arch", "afi_resnet20", "--batch-size", "8", "--format", "json"
    )
    assert code == 0
    (row,) = json.loads(out)
    assert MEMORY_KEYS <= set(row)
    assert (
        row["arch"] == "afi_resnet20" and row["baseline"] == "resnet20" and row["device"] == "cpu"
    )
    assert (
        row["batch_size"] == 8
        and row["cuda_train_bytes"] is None
        and row["rss_train_bytes"] is None
    )
    for side in ("", "baseline_"):
        assert row[f"{side}train_bytes"] > row[f"{side}infer_bytes"] > 0
    assert row["train_ratio"] == round(row["train_bytes"] / row["baseline_train_bytes"], 4)
    assert row["infer_ratio"] == round(row["infer_bytes"] / row["baseline_infer_bytes"], 4)
    assert row["param_bytes"] < row["baseline_param_bytes"]  # AFI-ResNet-20 is the smaller model


def test_memory_efficient_lowers_saved_bytes_only(capsys):
    rows = {}
    for flag in ([], ["--memory-efficient"]):
        code, out, _ = run(
            capsys, "memory", "--arch", "afi_resnet20", "-b", "4", "--format", "json", *flag
        )
        assert code == 0
        rows[bool(flag)] = json.loads(out)[0]
    plain, efficient = rows[False], rows[True]
    assert efficient["memory_efficient"] and not plain["memory_efficient"]
    assert efficient["saved_bytes"] < plain["saved_bytes"]
    assert efficient["baseline_saved_bytes"] == plain["baseline_saved_bytes"]
    assert (
        efficient["infer_bytes"] == plain["infer_bytes"]
        and efficient["param_bytes"] == plain["param_bytes"]
    )


def test_memory_of_a_baseline_has_no_ratio_and_bad_device_fails(capsys):
    code, out, _ = run(capsys, "memory", "--arch", "resnet20", "-b", "2", "--format", "json")
    (row,) = json.loads(out)
    assert code == 0 and row["baseline"] is None and row["train_ratio"] is None
    code, _, err = run(capsys, "memory", "--arch", "afi_resnet20", "--device", "tpu")
    assert code == 2 and "--device must be cpu, cuda, cuda:N or auto, got 'tpu'" in err
    if not torch.cuda.is_available():
        code, _, err = run(capsys, "memory", "--arch", "afi_resnet20", "--device", "cuda")
        assert code == 2 and "no CUDA device" in err


def test_account_is_exact_for_a_known_network():
    """Linear(4 -> 3) -> ReLU -> Linear(3 -> 2) at batch 5, counted by hand."""

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(3, 2)

        def forward(self, x):
            return self.b(torch.relu(self.a(x.flatten(1))))

    model = Tiny()
    x = torch.randn(5, 4)
    # saved: x (addmm), relu output (relu + addmm share it), log_softmax output, and the
    # loss's int64 targets and its float total weight
    expected = 4 * (5 * 4 + 5 * 3 + 5 * 2) + 8 * 5 + 4
    assert saved_tensor_bytes(model, x, torch.zeros(5, dtype=torch.long)) == expected
    peak, where = inference_peak(model, x)
    # x, then a(x) [5x3] and relu(a(x)) [5x3] alive together at most
    assert peak == 4 * (5 * 4 + 5 * 3 + 5 * 3) and where in {"a", "(model)"}


def test_meta_account_equals_real_tensors():
    """The meta device gives the same bytes as real CPU tensors (and the fast AFI path)."""
    meta = account("afi_resnet20", 4, device="meta")
    real = account("afi_resnet20", 4, device="cpu")
    assert meta == real


def test_bench_json_with_tiny_sizes(capsys):
    code, out, _ = run(
        capsys,
        "bench",
        "--arch",
        "resnet20",
        "--mode",
        "infer",
        "--mode",
        "train",
        "-b",
        "2",
        "--input-size",
        "16",
        "--repeats",
        "2",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--timer",
        "cpu",
        "--format",
        "json",
    )
    assert code == 0
    rows = json.loads(out)
    assert [r["mode"] for r in rows] == ["infer", "train"]
    for row in rows:
        assert BENCH_KEYS <= set(row)
        assert row["arch"] == "afi_resnet20" and row["baseline"] == "resnet20"  # paired by name
        assert row["images_per_sec"] > 0 and row["baseline_images_per_sec"] > 0
        assert row["ratio_min"] <= row["speed_ratio"] <= row["ratio_max"]
        assert row["threads"] == 1 and row["repeats"] == 2 and row["input_size"] == 16
        assert row["timer"] == "cpu"


def test_bench_rejects_bad_input(capsys):
    code, _, err = run(capsys, "bench", "--arch", "afi_resnet20", "--mode", "fly", "--repeats", 1)
    assert code == 2 and "--mode fly" in err
    code, _, err = run(
        capsys, "bench", "--arch", "afi_resnet20", "--timer", "sundial", "--repeats", 1
    )
    assert code == 2 and "--timer sundial" in err
    code, _, err = run(capsys, "bench", "--arch", "afi_resnet20", "-r", "0")
    assert "--reduction must be > 0" in one_line_exit_2(code, err)  # -r is --reduction only
    code, _, err = run(capsys, "bench", "--arch", "afi_resnet20", "--amp")
    assert code == 2 and "--amp" in err and err.count("\n") == 1  # --amp takes a value
    code, _, err = run(capsys, "bench", "--arch", "afi_resnet20", "--amp", "fp32")
    assert code == 2 and "--amp must be one of none, bf16, fp16" in err
    if not torch.cuda.is_available():
        code, _, err = run(capsys, "bench", "--arch", "afi_resnet20", "--amp", "fp16")
        assert code == 2 and "--amp fp16 needs CUDA" in err
    with pytest.raises(Exception, match="no AFI counterpart"):
        pair_of("densenet40")


def test_allocator_configuration_reports_what_it_did():
    assert configure_allocator(False) == "glibc-default"
    assert configure_allocator(True) in {"glibc-cached", "system"}


@pytest.mark.slow  # a subprocess or a resumed run: seconds
def test_resident_memory_probe_runs_in_a_fresh_process():
    from afictl.profiling.memory import rss_peak

    grown = rss_peak("afi_resnet20", 4, "train", input_size=16)
    assert 0 < grown < 2**31  # what one small step adds, not the process's import peak


def test_bench_amp_bf16_and_device_auto(capsys):
    """--amp takes a value (recorded in the row); --device defaults to auto, cpu without CUDA."""
    args = ["bench", "-a", "resnet20", "--mode", "infer", "-b", "2", "--input-size", "16"]
    args += ["--repeats", "1", "--warmup", "0", "--threads", "1", "--amp", "bf16", "-f", "json"]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["amp"] == "bf16" and row["images_per_sec"] > 0
    assert row["device"] == ("cuda" if torch.cuda.is_available() else "cpu")


def test_memory_device_auto_is_the_cpu_account_without_cuda(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without CUDA
    rows = {}
    for device in ([], ["--device", "cpu"], ["--device", "auto"]):
        code, out, err = run(
            capsys, "memory", "-a", "afi_resnet20", "-b", "2", "-f", "json", *device
        )
        assert code == 0, err
        rows[tuple(device)] = json.loads(out)[0]
    assert rows[()] == rows[("--device", "cpu")] == rows[("--device", "auto")]
    assert rows[()]["device"] == "cpu" and rows[()]["cuda_train_bytes"] is None
