"""Every example runs (tiny sizes), so none can rot."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from scripts import ROOT, load_script

EXAMPLES = ROOT / "examples"


def load(name):
    return load_script(EXAMPLES / f"{name}.py")


def test_plug_afi_into_your_resnet():
    attention = load("plug_afi_into_your_resnet").main()
    assert len(attention) == 2  # blocks 3 and 4 of the 4-block stage carry an AFI module
    for s in attention.values():
        assert abs(float(s.sum(dim=1).mean()) - 1) < 1e-6


def test_train_on_imagefolder(tmp_path):
    result = load("train_on_imagefolder").main(
        ["--demo", str(tmp_path / "data"), "--epochs", "1", "--run-dir", str(tmp_path / "run")]
    )
    assert result["epochs"] == 1 and (tmp_path / "run" / "best.pt").is_file()


def test_train_on_imagefolder_demo_keeps_its_run_under_the_demo_folder(tmp_path, monkeypatch):
    """Issue 22: a demo run in ./runs would become the newest run of bare gradcam/report."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    demo = tmp_path / "demo"
    result = load("train_on_imagefolder").main(["--demo", str(demo), "--epochs", "1"])
    assert Path(result["run_dir"]).parent == demo / "runs"
    assert (Path(result["run_dir"]) / "best.pt").is_file()
    assert not Path("runs").exists() and list(Path.cwd().iterdir()) == []


def test_analyse_a_checkpoint(tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    out = load("analyse_a_checkpoint").main(["--demo", str(tmp_path / "demo")])
    assert not Path("runs").exists() and list(Path.cwd().iterdir()) == []  # all under --demo
    assert (out / "gradcam.png").stat().st_size > 1000
    assert (out / "features.png").stat().st_size > 1000
    assert list(out.glob("selectivity-*.csv"))


@pytest.mark.slow  # a subprocess or a resumed run: seconds
def test_multi_gpu_torchrun_demo(tmp_path):
    env = dict(os.environ, DEMO="1", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(
        ["bash", str(EXAMPLES / "multi_gpu_torchrun.sh"), str(tmp_path / "run")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "run" / "last.pt").is_file()
