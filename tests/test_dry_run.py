"""`afictl train --dry-run`: every resolved value with its source, the data it would read and
the run folder it would create; nothing created. Missing data: the rows, then the run's own
error line (exit 2). The missing-CIFAR line names --download only where the command has it."""

import json

import pytest
import torch
from cli import one_line_exit_2, run

from afictl.models import create_model, get_model_info
from afictl.train.options import TRAIN_OPTIONS, long_flags


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch):
    """A scratch working folder with no data under it (nor under $AFICTL_DATA)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AFICTL_DATA", raising=False)
    return tmp_path


def _rows(out: str) -> dict[str, dict]:
    return {r["option"]: r for r in json.loads(out)}


def test_dry_run_lists_every_option_with_a_source_and_creates_nothing(capsys, empty_cwd):
    code, out, err = run(
        capsys, "train", "-a", "afi_resnet20", "-d", "shapes", "--dry-run", "-f", "json"
    )
    assert code == 0, err
    rows = _rows(out)
    takes = get_model_info("afi_resnet20").options  # the model options it has
    for spec in TRAIN_OPTIONS:
        if not spec.model or spec.field in takes:
            assert rows[f"--{long_flags(spec)[0]}"]["source"], spec.field
    assert "--width" not in rows and rows["--reduction"]["source"] == "default"
    assert rows["--arch"]["source"] == "flag" and rows["--data"]["source"] == "flag"
    assert rows["--recipe"] == {
        "option": "--recipe",
        "value": "quick",
        "source": "derived: the default for shapes at 32 pixels",
    }
    assert rows["--epochs"]["source"] == "recipe quick"
    assert (rows["--data-size"]["value"], rows["--data-size"]["source"]) == (
        4000,
        "derived: the default size of shapes",
    )
    assert rows["--opt"]["source"] == "default"
    assert (rows["train images"]["value"], rows["classes"]["value"]) == (4000, 8)
    assert rows["run folder"]["value"].startswith("runs/afi_resnet20-shapes-")
    assert list(empty_cwd.iterdir()) == []  # no runs/, no data/, no lock
    # the table names the same rows
    code, out, _ = run(capsys, "train", "-a", "afi_resnet20", "-d", "shapes", "--dry-run")
    assert code == 0 and "--lr-milestones" in out and "recipe quick" in out
    assert list(empty_cwd.iterdir()) == []


def test_config_file_then_flag_sources(capsys, empty_cwd):
    path = empty_cwd / "c.toml"
    path.write_text('data = "shapes"\nepochs = 3\nlr = 0.2\n')
    args = ["train", "-a", "resnet20", "--config", path, "--lr", "0.05", "--dry-run", "-f", "json"]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    rows = _rows(out)
    assert rows["--epochs"]["value"] == 3 and rows["--epochs"]["source"] == f"config file {path}"
    assert rows["--lr"]["value"] == 0.05 and rows["--lr"]["source"] == "flag"
    assert rows["--momentum"]["source"] == "recipe quick"
    assert sorted(p.name for p in empty_cwd.iterdir()) == ["c.toml"]


def test_imagenet_recipe_shows_the_scaled_lr_and_derived_dataset(capsys, empty_cwd):
    (empty_cwd / "in" / "train" / "cat").mkdir(parents=True)
    (empty_cwd / "in" / "train" / "dog").mkdir()
    (empty_cwd / "in" / "val" / "cat").mkdir(parents=True)
    for name in ("in/train/cat/1.JPEG", "in/train/cat/2.png", "in/train/dog/3.jpg"):
        (empty_cwd / name).write_bytes(b"not decoded")
    (empty_cwd / "in" / "val" / "cat" / "4.jpg").write_bytes(b"")
    (empty_cwd / "in" / "train" / "notes.txt").write_text("not an image")
    args = ["train", "-a", "resnet50", "--data-root", "in", "-b", "128", "--dry-run", "-f", "json"]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    rows = _rows(out)
    assert rows["--data"]["value"] == "imagenet"
    assert rows["--data"]["source"] == "derived: the home dataset of resnet50"
    assert rows["--recipe"]["value"] == "paper-imagenet"
    assert rows["lr (effective)"]["value"] == pytest.approx(0.1 * 128 / 256)
    assert rows["--data-root"]["value"] == str(empty_cwd / "in")
    counts = [rows[k]["value"] for k in ("train images", "eval images", "classes")]
    assert counts == [3, 1, 2]


def test_missing_cifar_prints_the_rows_then_the_runs_own_error(capsys, empty_cwd):
    """Documented choice: a dry run that would fail lists what it resolved, then exits 2 with
    the line the run itself gives (stdout stays one JSON document)."""
    args = ["train", "-a", "resnet20", "-d", "cifar10", "--epochs", "1"]
    code, out, err = run(capsys, *args, "--dry-run", "-f", "json")
    line = one_line_exit_2(code, err)
    assert "no CIFAR-10 data in" in line and "pass --download to fetch it" in line
    assert _rows(out)["data status"]["value"] == "missing"
    code, out, err = run(capsys, *args)
    assert one_line_exit_2(code, err) == line and out == ""
    assert list(empty_cwd.iterdir()) == []
    # with --download it would fetch the files: the dry run says so and fetches nothing
    code, out, err = run(capsys, *args, "--download", "--dry-run", "-f", "json")
    assert code == 0, err
    assert "would be downloaded" in _rows(out)["data status"]["value"]
    assert list(empty_cwd.iterdir()) == []


def test_a_run_dir_that_holds_a_run(capsys, empty_cwd):
    (empty_cwd / "r").mkdir()
    (empty_cwd / "r" / "last.pt").write_bytes(b"")
    args = ["train", "-a", "resnet20", "-d", "shapes", "--run-dir", "r", "--dry-run"]
    line = one_line_exit_2(*run(capsys, *args)[::2])
    assert "already holds a run" in line and "--overwrite" in line
    code, out, err = run(capsys, *args, "--overwrite", "-f", "json")
    assert code == 0, err
    assert _rows(out)["run folder"]["value"] == "r"  # as the run records it
    assert sorted(p.name for p in (empty_cwd / "r").iterdir()) == ["last.pt"]


def test_dry_run_writes_output_only_where_asked(capsys, empty_cwd):
    code, _, err = run(
        capsys, "train", "-a", "resnet20", "-d", "shapes", "--dry-run", "-f", "csv", "-o", "p.csv"
    )
    assert code == 0, err
    lines = (empty_cwd / "p.csv").read_text().splitlines()
    assert lines[0] == "option,value,source" and any(x.startswith("--lr,") for x in lines)
    assert sorted(p.name for p in empty_cwd.iterdir()) == ["p.csv"]


def test_missing_cifar_names_download_only_in_train(capsys, empty_cwd):
    """train has --download and its line says so; eval has no such option and its line does
    not name it."""
    code, _, err = run(capsys, "train", "-a", "resnet20", "-d", "cifar10", "--data-root", "nope")
    assert "pass --download to fetch it" in one_line_exit_2(code, err)
    weights = empty_cwd / "w.pt"
    torch.save(create_model("resnet20", num_classes=10).state_dict(), weights)
    args = ["eval", "-c", weights, "--arch", "resnet20", "--data", "cifar10", "--data-root", "nope"]
    line = one_line_exit_2(*run(capsys, *args)[::2])
    assert "no CIFAR-10 data in" in line and str(empty_cwd / "nope") in line
    assert "--download" not in line and "--data-root" in line


@pytest.mark.slow
def test_dry_run_of_a_resume(capsys, empty_cwd):
    """--resume: the run's values (source `run`), the runtime flags over them, nothing written."""
    args = ["train", "-a", "resnet20", "-d", "shapes", "--data-size", "32", "--epochs", "1"]
    code, _, err = run(capsys, *args, "-b", "16", "--input-size", "32", "--run-dir", "r")
    assert code == 0, err
    before = {p.name: p.stat().st_mtime_ns for p in (empty_cwd / "r").iterdir()}
    code, out, err = run(
        capsys, "train", "--resume", "r", "--epochs", "2", "--dry-run", "-f", "json"
    )
    assert code == 0, err
    rows = _rows(out)
    assert (rows["--epochs"]["value"], rows["--epochs"]["source"]) == (2, "flag")
    assert (rows["--batch-size"]["value"], rows["--batch-size"]["source"]) == (16, "run r")
    assert rows["run folder"] == {
        "option": "run folder",
        "value": "r",
        "source": "continued (--resume)",
    }
    assert {p.name: p.stat().st_mtime_ns for p in (empty_cwd / "r").iterdir()} == before
    line = one_line_exit_2(*run(capsys, "train", "--resume", "r", "--lr", "1", "--dry-run")[::2])
    assert "lr" in line
