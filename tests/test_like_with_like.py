"""Issue 22, like with like: commands that pair a model with its counterpart (report, Figure 4,
gradcam, selectivity) pair runs trained under the same budget, and say so when they cannot."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from cli import run
from test_report import make_run

from afictl.analysis.runs import default_checkpoints, pair_note
from afictl.analysis.selectivity import pair_loaders
from afictl.checkpoint import model_from_checkpoint, save_checkpoint
from afictl.data.shapes import SHAPE_CLASSES
from afictl.models import create_model

REPORT = ["report", "-t", "4", "-f", "json", "--no-figures"]


def _age(run_dir: Path, seconds_ago: float) -> None:
    """Date a run (the report orders runs by their metrics.csv)."""
    t = 1e9 - seconds_ago
    os.utime(run_dir / "metrics.csv", (t, t))


def _report(capsys, runs: Path, out: Path, *extra) -> tuple[dict, list[str]]:
    code, stdout, err = run(capsys, *REPORT, "--runs", runs, "--out-dir", out, *extra)
    assert code == 0, err
    rows = {r["arch"]: r for r in json.loads(stdout)["tables"]["table4"]}
    return rows, [line for line in err.splitlines() if "warning" in line]


def _warning_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("afictl: warning:")]


# --- report and Figure 4 ---------------------------------------------------------------------


def test_report_marks_an_unequal_pair_and_warns_once(tmp_path, capsys):
    runs = tmp_path / "runs"
    make_run(runs, "base", "resnet20", "shapes", [40.0], config={"data_size": 400})
    make_run(runs, "afi", "afi_resnet20", "shapes", [80.0])  # the whole dataset
    rows, warnings = _report(capsys, runs, tmp_path / "rep")
    assert warnings == [
        "afictl: warning: unequal budgets: afi_resnet20 vs resnet20 differ in data_size full vs 400"
    ]
    assert rows["afi_resnet20"]["budget"] == "unequal: data_size full vs 400"
    assert rows["afi_resnet20"]["top1_vs_baseline"] == 40.0  # still shown, but marked
    assert rows["resnet20"]["budget"] is None  # a baseline row has nothing to compare
    points = pd.read_csv(tmp_path / "rep" / "figure4_table4.csv").set_index("arch")
    assert points.loc["afi_resnet20", "budget"] == "unequal: data_size full vs 400"


def test_report_of_an_equal_pair_says_same_and_does_not_warn(tmp_path, capsys):
    runs = tmp_path / "runs"
    for name, arch, top1 in (("base", "resnet20", 40.0), ("afi", "afi_resnet20", 45.0)):
        make_run(runs, name, arch, "shapes", [top1], config={"data_size": 400})
    rows, warnings = _report(capsys, runs, tmp_path / "rep")
    assert warnings == []
    assert rows["afi_resnet20"]["budget"] == "same"
    assert rows["afi_resnet20"]["top1_vs_baseline"] == 5.0


def test_report_skips_a_newer_unequal_baseline_for_an_older_equal_one(tmp_path, capsys):
    runs = tmp_path / "runs"
    old = make_run(runs, "base-full", "resnet20", "shapes", [30.0, 40.0])
    new = make_run(runs, "base-400", "resnet20", "shapes", [70.0], config={"data_size": 400})
    afi = make_run(runs, "afi-full", "afi_resnet20", "shapes", [35.0, 45.0])
    _age(old, 300), _age(new, 100), _age(afi, 200)
    rows, warnings = _report(capsys, runs, tmp_path / "rep")
    assert warnings == []
    assert rows["afi_resnet20"]["top1_vs_baseline"] == 5.0  # 45 - 40, not 45 - 70
    assert rows["afi_resnet20"]["budget"] == "same"
    # the baseline's row shows the run its AFI model is compared with: the delta is the rows'
    assert rows["resnet20"]["top1_best"] == 40.0 and rows["resnet20"]["run"].endswith("base-full")


def test_report_over_two_unequal_pairs_still_warns_in_one_line(tmp_path, capsys):
    runs = tmp_path / "runs"
    make_run(runs, "b20", "resnet20", "shapes", [40.0], config={"data_size": 400})
    make_run(runs, "a20", "afi_resnet20", "shapes", [80.0])
    make_run(runs, "b32", "resnet32", "shapes", [40.0], config={"recipe": "paper-cifar"})
    make_run(runs, "a32", "afi_resnet32", "shapes", [50.0])
    rows, warnings = _report(capsys, runs, tmp_path / "rep")
    assert len(warnings) == 1 and "and 1 more unequal pair: see the budget column" in warnings[0]
    assert rows["afi_resnet32"]["budget"] == "unequal: recipe quick vs paper-cifar"


@pytest.mark.slow  # draws the figure: seconds
def test_figure4_names_the_unequal_pair_and_the_training(tmp_path, capsys):
    from afictl.reporting.figure4 import budget_caption, training_subtitle

    runs = tmp_path / "runs"
    make_run(runs, "base", "resnet20", "shapes", [40.0], config={"data_size": 400})
    make_run(runs, "afi", "afi_resnet20", "shapes", [80.0])
    code, _, err = run(capsys, "report", "-t", "4", "--runs", runs, "--out-dir", tmp_path / "r")
    assert code == 0, err
    assert (tmp_path / "r" / "figure4_table4.png").stat().st_size > 1000
    points = pd.read_csv(tmp_path / "r" / "figure4_table4.csv")
    assert budget_caption(points) == (
        "not joined, unequal budgets: afi_resnet20 vs its baseline: data_size full vs 400"
    )
    assert training_subtitle(points) == "recipe quick, epochs 1/1, data size 400 / all"
    assert budget_caption(points.assign(budget="same")) is None


# --- gradcam and selectivity: checkpoints ----------------------------------------------------


def _checkpoint(path: Path, arch: str, **config) -> Path:
    """An untrained model saved as `afictl train` would, with a run config (budget included)."""
    torch.manual_seed(0)
    model = create_model(arch, num_classes=len(SHAPE_CLASSES))
    cfg = {
        "arch": arch,
        "dataset": "shapes",
        "data_root": None,
        "input_size": 32,
        "eval_split": "eval",
        "data_size": 48,
        "seed": 0,
        "epochs": 1,
        "recipe": "quick",
        "num_classes": len(SHAPE_CLASSES),
    } | config
    payload = {
        "arch": arch,
        "num_classes": len(SHAPE_CLASSES),
        "model_kwargs": {},
        "model": model.state_dict(),
        "epoch": 1,
        "config": cfg,
        "class_names": list(SHAPE_CLASSES),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, payload)


def _put(root: Path, name: str, arch: str, age: float, **config) -> Path:
    path = _checkpoint(root / name / "best.pt", arch, **config)
    os.utime(path, (1e9 - age, 1e9 - age))
    return path


def test_default_pair_skips_a_newer_unequal_counterpart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = Path("runs")
    _put(runs, "base-old", "resnet20", age=300)
    _put(runs, "base-new", "resnet20", age=100, data_size=400)  # newer, another budget
    _put(runs, "afi", "afi_resnet20", age=10)
    chosen = default_checkpoints()
    assert chosen == [runs / "base-old" / "best.pt", runs / "afi" / "best.pt"]
    assert pair_note(chosen) is None
    # no equal counterpart left: the unequal one, and a note naming what differs
    (runs / "base-old" / "best.pt").unlink()
    chosen = default_checkpoints()
    assert chosen == [runs / "base-new" / "best.pt", runs / "afi" / "best.pt"]
    assert pair_note(chosen) == (
        "unequal budgets: resnet20 vs afi_resnet20 differ in data_size 400 vs 48"
    )


def test_pair_loaders_give_both_models_the_same_images(tmp_path):
    small = _checkpoint(tmp_path / "a.pt", "resnet20", data_size=48)
    large = _checkpoint(tmp_path / "b.pt", "afi_resnet20", data_size=96, seed=3)
    ckpts = [model_from_checkpoint(p)[1] for p in (large, small)]
    loaders = pair_loaders(ckpts, batch_size=16)
    assert [len(ld.dataset) for ld in loaders] == [48, 48]  # the smaller recorded set, seed 0
    for (xa, ya), (xb, yb) in zip(*loaders, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # alone, each checkpoint keeps its own recorded set
    assert len(pair_loaders(ckpts[:1])[0].dataset) == 96


@pytest.mark.slow  # two models over the data, and a figure: seconds
def test_selectivity_on_an_unequal_pair_warns_and_measures_the_same_images(tmp_path, capsys):
    base = _checkpoint(tmp_path / "runs" / "b" / "best.pt", "resnet20", data_size=48)
    afi = _checkpoint(tmp_path / "runs" / "a" / "best.pt", "afi_resnet20", data_size=96)
    args = ["selectivity", "-c", base, "-c", afi, "--stage", "conv3", "--out-dir", tmp_path]
    code, out, err = run(capsys, *args, "-f", "markdown")
    assert code == 0, err
    assert _warning_lines(err) == [
        "afictl: warning: unequal budgets: resnet20 vs afi_resnet20 differ in data_size 48 vs 96"
    ]
    assert "on the same 48 shapes eval images" in out  # the table's title
    assert "(unequal budgets: resnet20 vs afi_resnet20" in out
    frame = pd.read_csv(tmp_path / "selectivity-conv3.csv")
    assert set(frame["arch"]) == {"resnet20", "afi_resnet20"}


@pytest.mark.slow  # two models over the data, and a figure: seconds
def test_selectivity_on_an_equal_pair_does_not_warn(tmp_path, capsys):
    base = _checkpoint(tmp_path / "b.pt", "resnet20")
    afi = _checkpoint(tmp_path / "a.pt", "afi_resnet20")
    args = ["selectivity", "-c", base, "-c", afi, "--stage", "conv3", "--out-dir", tmp_path]
    code, out, err = run(capsys, *args, "-f", "markdown")
    assert code == 0, err
    assert "warning" not in err and "unequal" not in out


@pytest.mark.slow  # a CAM per model: seconds
def test_gradcam_on_an_unequal_pair_warns_once(tmp_path, capsys):
    from PIL import Image

    base = _checkpoint(tmp_path / "b.pt", "resnet20", epochs=2)
    afi = _checkpoint(tmp_path / "a.pt", "afi_resnet20")
    image = tmp_path / "x.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(image)
    fig = tmp_path / "g.png"
    code, _, err = run(capsys, "gradcam", image, "-c", base, "-c", afi, "--figure", fig)
    assert code == 0, err
    assert _warning_lines(err) == [
        "afictl: warning: unequal budgets: resnet20 vs afi_resnet20 differ in epochs 2 vs 1"
    ]


def test_analysis_progress_is_afictl_progress(capsys):
    """The analyses' hook prints afictl.progress lines in a log file (stderr not a terminal)."""
    from afictl.cli._analysis import progress_bar, progress_factory

    with progress_bar(seconds=0.0) as bar:
        tick = progress_factory(bar)("selectivity resnet20 conv3", 2)
        tick()
        tick()
    err = capsys.readouterr().err
    assert "selectivity resnet20 conv3 [2/2] 100%" in err
