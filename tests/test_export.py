"""`afictl export`: ONNX and .pt2 files with a dynamic batch, verified against the eager model.

One model of each structure in the registry is exported to both formats (tests/zoo.py: deeper
copies of a structure, such as ResNet-152 next to ResNet-50, add no operator and took up to
330 s each); the fast run exports resnet20 and afi_resnet20 (the smallest of the zoo and its AFI
version, about 15 s together), the rest is `slow` (2-20 s per model and format on two cores).
"""

import csv
import io
import json
import sys

import pytest
import torch
from cli import run
from zoo import representatives

import afictl.export as export_mod
from afictl.checkpoint import save_checkpoint
from afictl.export import DEFAULT_RTOL, export_model, tolerance, verify_file
from afictl.models import create_model, get_model_info

FAST = ("resnet20", "afi_resnet20")


FORMATS = ("onnx", "pt2")


def _size(name):
    return 32 if get_model_info(name).input_size == 32 else 64


def _params():
    """ONNX for every structure (each family meets other operators in the ONNX translation);
    pt2 for the FAST models only: a .pt2 file is torch.export's program saved, and
    tests/test_afi_tracing.py already torch.exports every structure with a dynamic batch and
    checks it against eager, so what this adds per model is the save/load, the same for all."""
    for name in representatives():
        marks = () if name in FAST else (pytest.mark.slow,)
        for fmt in FORMATS if name in FAST else ("onnx",):
            yield pytest.param(name, fmt, id=f"{name}-{fmt}", marks=marks)


def _run_onnx(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


@pytest.mark.parametrize(("name", "fmt"), list(_params()))
def test_every_model_exports_and_verifies(tmp_path, name, fmt):
    model = create_model(name).eval()
    path = tmp_path / f"{name}.{fmt}"
    result = export_model(model, path, batch_size=2, input_size=_size(name))
    assert result.passed and result.written and path.is_file()
    assert result.format == fmt and result.arch == name and result.bytes == path.stat().st_size
    assert result.verify_batches == [1, 3]  # both differ from the traced batch
    assert (
        result.max_abs_diff
        <= result.tolerance
        == pytest.approx(DEFAULT_RTOL * result.max_abs_eager)
    )
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_cli_onnx_batch_is_dynamic(capsys, tmp_path):
    path = tmp_path / "r20.onnx"
    code, out, err = run(
        capsys,
        "export",
        "--arch",
        "resnet20",
        "--to",
        "onnx",
        "--export-file",
        path,
        "--opset",
        18,
        "--batch-size",
        2,
        "--format",
        "json",
    )
    assert code == 0, err
    (row,) = json.loads(out)  # stdout is the JSON and nothing else (no exporter chatter)
    assert row["passed"] is True and row["written"] is True and row["opset"] == 18
    assert row["path"] == str(path) and row["export_batch"] == 2 and row["input_size"] == 32
    assert 0 <= row["max_abs_diff"] <= row["tolerance"]
    import onnx

    proto = onnx.load(str(path))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    torch.manual_seed(0)  # the seed the command ran under (conftest): the same random weights
    model = create_model("resnet20").eval()
    for batch in (5, 1):  # neither is the export's batch
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            expected = model(x)
        got = _run_onnx(path, x)
        assert got.shape == (batch, 100)
        assert (got - expected).abs().max() <= tolerance(expected.abs().max().item())


def test_cli_pt2_from_suffix_dynamic_batch_small_input(capsys, tmp_path):
    path = tmp_path / "sub" / "r20.pt2"  # folders are created
    code, out, err = run(
        capsys,
        "export",
        "-a",
        "resnet20",
        "--export-file",
        path,
        "-b",
        4,
        "--input-size",
        16,
        "--num-classes",
        10,
        "-f",
        "csv",
        "-o",
        tmp_path / "results.csv",  # the results file, as in every command
    )
    assert code == 0, err
    assert out == ""  # the results went to --output
    (fields,) = csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text()))
    assert fields["format"] == "pt2" and fields["arch"] == "resnet20"
    assert fields["path"] == str(path) and fields["bytes"] == str(path.stat().st_size)
    program = torch.export.load(str(path)).module()
    for batch in (1, 7):
        with torch.no_grad():
            assert program(torch.randn(batch, 3, 16, 16)).shape == (batch, 10)
    model = create_model("resnet20", num_classes=10)
    diff, peak = verify_file(path, model.eval(), input_size=16)  # other weights: far apart
    assert diff > tolerance(peak)


def test_checkpoint_export(capsys, tmp_path):
    model = create_model("resnet20", num_classes=10).eval()
    ckpt = save_checkpoint(
        tmp_path / "best.pt",
        {
            "arch": "resnet20",
            "num_classes": 10,
            "model_kwargs": {},
            "model": model.state_dict(),
            "epoch": 1,
            "config": {"input_size": 24},
            "class_names": None,
        },
    )
    code, out, err = run(
        capsys, "export", "-c", tmp_path, "--export-file", tmp_path / "r.pt2", "-f", "json"
    )
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["arch"] == "resnet20" and row["input_size"] == 24 and row["passed"]
    diff, peak = verify_file(tmp_path / "r.pt2", model, input_size=24)
    assert diff <= tolerance(peak)  # the checkpoint's weights, not random ones
    code, _, err = run(
        capsys, "export", "-c", ckpt, "--num-classes", 5, "--export-file", tmp_path / "x.pt2"
    )
    assert code == 2 and "--num-classes" in err and err.count("\n") == 1
    code, _, err = run(
        capsys, "export", "-c", ckpt, "--arch", "resnet32", "--export-file", tmp_path / "x.pt2"
    )
    assert code == 2 and "resnet32" in err and err.count("\n") == 1


def test_missing_extra_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    code, out, err = run(
        capsys, "export", "--arch", "resnet20", "--export-file", tmp_path / "r.onnx"
    )
    assert code == 2 and out == "" and err.count("\n") == 1
    assert (
        "onnxruntime" in err
        and 'pip install -e ".[export]"' in err
        and 'pip install "afictl[export]"' in err
    )
    assert list(tmp_path.iterdir()) == []
    code, _, err = run(
        capsys,
        "export",
        "--arch",
        "resnet20",
        "--export-file",
        tmp_path / "r.pt2",
        "--input-size",
        16,
    )
    assert code == 0, err  # pt2 needs torch only


def test_verification_failure_exits_2_and_writes_nothing(capsys, tmp_path, monkeypatch):
    runner = export_mod._runner

    def corrupted(path, fmt):
        inner = runner(path, fmt)
        return lambda x: [t + 1e-2 * t.abs().max() for t in inner(x)]  # 1% of the output range

    monkeypatch.setattr(export_mod, "_runner", corrupted)
    path = tmp_path / "r20.pt2"
    path.write_bytes(b"previous")
    code, out, err = run(
        capsys, "export", "--arch", "resnet20", "--export-file", path, "--input-size", 16
    )
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "verification failed" in err and "nothing written" in err
    assert path.read_bytes() == b"previous" and list(tmp_path.iterdir()) == [path]
    code, _, err = run(
        capsys,
        "export",
        "--arch",
        "resnet20",
        "--export-file",
        path,
        "--input-size",
        16,
        "--no-verify",
    )
    assert code == 0, err
    assert path.read_bytes() != b"previous"


def test_exporter_failure_leaves_nothing(capsys, tmp_path, monkeypatch):
    def broken(model, example, path):
        path.write_bytes(b"half a file")
        raise RuntimeError("unsupported operator\nwith a long second line")

    monkeypatch.setattr(export_mod, "_export_pt2", broken)
    code, _, err = run(capsys, "export", "--arch", "resnet20", "--export-file", tmp_path / "r.pt2")
    assert code == 2 and err.count("\n") == 1
    assert "could not export resnet20 to pt2: RuntimeError: unsupported operator" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # the old spellings, whose names now mean the results: one line pointing to the new
        (["--arch", "resnet20", "--format", "onnx"], "use --to onnx"),
        (["--arch", "resnet20", "-f", "pt2"], "use --to pt2"),
        (["--arch", "resnet20", "-o", "model.onnx"], "--export-file model.onnx"),
        (["--arch", "resnet20", "--print-format", "json"], "use --format json"),
        (["--arch", "resnet20", "--format", "yaml"], "choose table, json, csv or markdown"),
        (["--arch", "resnet20", "--to", "tflite"], "'onnx', 'pt2'"),
        (["--arch", "resnet20", "--export-file", "model.bin"], "name it .onnx or .pt2"),
        (["--arch", "resnet20", "--export-file", "model.onnx", "--to", "pt2"], "suffix .onnx"),
        (
            ["--arch", "resnet20", "--export-file", "model.pt2", "--opset", "18"],
            "--opset applies to --to onnx",
        ),
        (["--arch", "resnet20", "--opset", "17"], "x>=18"),
        (["--arch", "resnet20", "--batch-size", "1"], "x>=2"),
        (["--arch", "resnt20"], "resnet20"),
        ([], "--arch NAME"),
    ],
)
def test_usage_errors_are_one_line(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "export", *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_tolerance_scales_with_the_outputs():
    assert tolerance(1e6) == pytest.approx(100.0)
    assert tolerance(1e-9) == pytest.approx(1e-13)  # no absolute floor: tiny outputs stay checked
    assert tolerance(0.0) == 0.0
    assert tolerance(2.0, rtol=1e-3) == pytest.approx(2e-3)


class _DataDependent(torch.nn.Module):
    def forward(self, x):
        return x.mean((2, 3)) if x.sum() > 0 else x.amax((2, 3))  # no graph without a branch


@pytest.mark.parametrize("fmt", FORMATS)
def test_real_exporter_failure_is_one_quiet_error(capsys, tmp_path, fmt):
    if fmt == "onnx" and not export_mod._dynamo_onnx():
        pytest.skip("torch < 2.9 exports ONNX by tracing, which bakes the branch in: no failure")
    with pytest.raises(export_mod.ExportError, match="could not export _DataDependent") as info:
        export_model(_DataDependent(), tmp_path / f"m.{fmt}", input_size=8)
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)
    assert info.value.__cause__ is not None  # the exporter's own error, for library users
    out, err = capsys.readouterr()
    assert out == "" and err == ""  # torch.export's partial graphs and warnings stay quiet
    assert list(tmp_path.iterdir()) == []
