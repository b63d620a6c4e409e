"""`afictl runs` (every run folder, one run in full) and `afictl curves` (learning curves)."""

import json
import os

import pandas as pd
import pytest
from cli import one_line_exit_2, run
from test_report import make_run

from afictl.reporting.curves import curve_points, curves_plot
from afictl.train.lock import RunLock


def curve_run(root, name, arch, top1s, *, mtime, **config):
    """A run folder with every metrics.csv column a curve reads, last written at ``mtime``."""
    d = make_run(root, name, arch, "shapes", top1s, config={"data_size": 64, **config})
    n = len(top1s)
    pd.DataFrame(
        {
            "epoch": range(1, n + 1),
            "lr": 0.05,
            "train_loss": [2.0 - 0.1 * i for i in range(n)],
            "train_top1": [t - 1 for t in top1s],
            "eval_loss": [2.5 - 0.1 * i for i in range(n)],
            "eval_top1": top1s,
            "eval_top5": [min(100, t + 20) for t in top1s],
            "images_per_sec": 100.0,
        }
    ).to_csv(d / "metrics.csv", index=False)
    for f in ("config.json", "metrics.csv"):
        os.utime(d / f, (mtime, mtime))
    return d


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    curve_run(root, "base", "resnet20", [20.0, 30.0], mtime=1000)
    curve_run(root, "afi", "afi_resnet20", [25.0, 35.0, 32.0], mtime=3000, epochs=3)
    curve_run(root, "afi-short", "afi_resnet20", [22.0], mtime=2000, epochs=4)  # stopped
    curve_run(root, "base3", "resnet20", [21.0, 31.0, 30.0], mtime=1500, epochs=3)
    return root


def test_runs_lists_every_run_newest_first_with_its_state(capsys, runs):
    code, out, err = run(capsys, "runs", runs, "-f", "json")
    assert code == 0 and err == ""
    rows = json.loads(out)
    assert [r["run_dir"].rsplit("/", 1)[1] for r in rows] == ["afi", "afi-short", "base3", "base"]
    afi, short = rows[0], rows[1]
    assert (afi["best_top1"], afi["last_top1"], afi["best_epoch"]) == (35.0, 32.0, 2)
    assert (afi["epochs_done"], afi["epochs"], afi["state"]) == (3, 3, "finished")
    assert (short["epochs_done"], short["epochs"], short["state"]) == (1, 4, "stopped")
    assert afi["data_size"] == 64 and afi["recipe"] == "quick" and afi["dataset"] == "shapes"


def test_a_run_holding_its_lock_is_running(capsys, runs):
    with RunLock(runs / "afi-short"):
        code, out, _ = run(capsys, "runs", runs, "-f", "json")
    assert code == 0
    states = {r["run_dir"]: r["state"] for r in json.loads(out)}
    assert states[str(runs / "afi-short")] == "running"
    assert states[str(runs / "afi")] == "finished"
    code, out, _ = run(capsys, "runs", runs, "-f", "json")  # the lock is gone with its holder
    assert {r["state"] for r in json.loads(out)} == {"finished", "stopped"}


def test_a_damaged_run_is_one_warning_and_the_others_are_listed(capsys, runs):
    (runs / "base" / "config.json").write_text('{"arch": "resnet20", "epochs": "many"}')
    (runs / "not-a-run").mkdir()  # no config.json: not a run, no warning
    code, out, err = run(capsys, "runs", runs, "-f", "json")
    assert code == 0 and "Traceback" not in err
    (line,) = err.splitlines()
    assert line.startswith("afictl: warning: skipped a damaged run: ") and "'epochs'" in line
    assert len(json.loads(out)) == 3


def test_the_table_fits_80_columns_without_cutting_a_folder(capsys, runs, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, "runs", runs)
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 80, out
    for name, state, epochs in (("afi", "finished", "3/3"), ("afi-short", "stopped", "1/4")):
        assert any(
            line.split("│")[1:] and name == line.split("│")[-2].strip() for line in out.splitlines()
        ), out
        assert state in out and epochs in out


def test_one_run_in_full(capsys, runs):
    code, out, _ = run(capsys, "runs", runs / "afi", "-f", "json")
    assert code == 0
    shown = json.loads(out)
    assert shown["config"]["arch"] == "afi_resnet20" and shown["config"]["data_size"] == 64
    assert [m["epoch"] for m in shown["metrics"]] == [1, 2, 3]
    assert shown["metrics"][2]["eval_top1"] == 32.0 and shown["run"]["state"] == "finished"
    code, by_name, _ = run(capsys, "runs", runs, "--show", "afi", "-f", "json")
    assert code == 0 and json.loads(by_name) == shown
    code, out, _ = run(capsys, "runs", "--show", runs / "afi", "-f", "csv")
    assert code == 0 and out.splitlines()[0].startswith("epoch,lr,train_loss")
    code, out, _ = run(capsys, "runs", runs / "afi")
    assert code == 0 and "recipe" in out and "quick" in out and "metrics per epoch" in out


def test_show_of_no_run_is_one_line(capsys, runs):
    code, _, err = run(capsys, "runs", runs, "--show", "nothing-here")
    assert "nothing-here" in one_line_exit_2(code, err)


def test_curves_default_to_the_newest_run_and_its_like_budget_counterpart(
    capsys, runs, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # ./runs is the fixture's; curves.png lands here
    code, out, err = run(capsys, "curves", "-f", "json")
    assert code == 0, err
    assert "using runs: runs/base3, runs/afi" in err and "warning" not in err
    points = json.loads(out)
    assert [(p["run"], p["epoch"]) for p in points] == [
        ("runs/base3", 1), ("runs/base3", 2), ("runs/base3", 3),
        ("runs/afi", 1), ("runs/afi", 2), ("runs/afi", 3),
    ]  # fmt: skip
    assert points[3] == {
        "run": "runs/afi", "epoch": 1, "train_loss": 2.0, "train_top1": 24.0,
        "eval_loss": 2.5, "eval_top1": 25.0,
    }  # fmt: skip
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    code, _, err = run(capsys, "curves", "-f", "csv")
    assert code == 0 and "wrote curves-2.png" in err  # never overwritten


def test_unequal_budgets_warn_and_mark_the_figure(capsys, runs, tmp_path):
    figure = tmp_path / "c.png"
    code, out, err = run(capsys, "curves", runs / "afi", runs / "base", "--figure", figure)
    assert code == 0 and figure.is_file()
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert warnings == ["afictl: warning: unequal budgets: afi vs base differ in epochs 3 vs 2"]
    fig = curves_plot(curve_points([runs / "afi", runs / "base"]), [warnings[0][17:]])
    notes = [t for t in fig.findobj() if getattr(t, "get_gid", lambda: None)() == "note"]
    assert notes and "unequal budgets" in notes[0].get_text()
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["afi", "base", "train", "eval"]
    for ax in fig.axes:  # the legend sits outside every panel: it hides no curve
        assert not legend.get_window_extent().overlaps(ax.get_window_extent())


def test_curves_of_a_damaged_or_missing_run_is_one_line(capsys, runs):
    (runs / "base" / "metrics.csv").write_text("epoch,eval_top1,train_loss\n1,50,lots\n")
    code, _, err = run(capsys, "curves", runs / "afi", runs / "base")
    assert "train_loss" in one_line_exit_2(code, err)
    code, _, err = run(capsys, "curves", runs / "nope")
    assert "nope" in one_line_exit_2(code, err)
