"""`afictl report` over run folders damaged by hand: the damaged run is skipped with one
warning naming its file and field, and the report is written from the others."""

import json

import pandas as pd
import pytest
from cli import run
from test_report import make_run as report_run


def make_run(root, name, arch, top1s, **kw):
    """A CIFAR-100 run folder as `afictl train` leaves it (tests/test_report.py's)."""
    return report_run(root, name, arch, "cifar100", top1s, **kw)


def _config(**changes):
    def damage(d):
        cfg = json.loads((d / "config.json").read_text())
        for key, value in changes.items():
            if key.startswith("kw_"):
                cfg["model_kwargs"][key[3:]] = value
            else:
                cfg[key] = value
        (d / "config.json").write_text(json.dumps(cfg))

    return damage


def _metrics(edit):
    def damage(d):
        lines = (d / "metrics.csv").read_text().splitlines()
        (d / "metrics.csv").write_text("\n".join(edit(lines)) + "\n")

    return damage


def _cell(line_no, column, value):
    def edit(lines):
        header = lines[0].split(",")
        cells = lines[line_no].split(",")
        cells[header.index(column)] = value
        lines[line_no] = ",".join(cells)
        return lines

    return edit


DAMAGES = {
    "model_kwargs a list": (_config(model_kwargs=[1, 2]), "config.json", "model_kwargs"),
    "afi_stages abc": (_config(kw_afi_stages="abc"), "config.json", "afi_stages"),
    "afi_stages 5": (_config(kw_afi_stages=5), "config.json", "afi_stages"),
    "top-level afi_stages abc": (
        _config(model_kwargs={}, afi_stages="abc"),
        "config.json",
        "afi_stages",
    ),
    "dataset a list": (_config(dataset=["cifar100"]), "config.json", "dataset"),
    "input_size 1e300": (_config(input_size=1e300), "config.json", "input_size"),
    "epochs a string": (_config(epochs="two"), "config.json", "epochs"),
    "a row of abc": (_metrics(lambda lines: [*lines, "abc"]), "metrics.csv", "epoch"),
    "epoch nan": (_metrics(_cell(1, "epoch", "nan")), "metrics.csv", "epoch"),
    "eval_top1 1e300": (_metrics(_cell(2, "eval_top1", "1e300")), "metrics.csv", "eval_top1"),
    "eval_top5 1e300": (_metrics(_cell(1, "eval_top5", "1e300")), "metrics.csv", "eval_top5"),
    "images_per_sec 1e300": (
        _metrics(_cell(1, "images_per_sec", "1e300")),
        "metrics.csv",
        "images_per_sec",
    ),
    "config not JSON": (lambda d: (d / "config.json").write_text("{"), "config.json", "(file)"),
}


@pytest.mark.parametrize("kind", list(DAMAGES))
def test_report_skips_a_damaged_run_with_one_warning(tmp_path, capsys, monkeypatch, kind):
    damage, file, field = DAMAGES[kind]
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    make_run(runs, "a", "resnet20", [40.0, 50.0])
    make_run(runs, "b", "afi_resnet20", [45.0, 55.0])
    bad = make_run(runs, "c", "afi_resnet20", [60.0, 99.0], afi_stages=[1, 2, 3])
    damage(bad)
    code, out, err = run(
        capsys, "report", "--include-unfinished", "-t", "4", "-f", "csv", "--no-figures"
    )
    assert code == 0, err
    assert "Traceback" not in err
    warnings = [line for line in err.splitlines() if "skipped a damaged run" in line]
    assert len(warnings) == 1, err
    assert f"runs/c/{file}: field" in warnings[0] and f"'{field}'" in warnings[0]
    assert "3 runs read" not in err and "2 runs read from runs (2 used)" in err
    t4 = pd.read_csv(tmp_path / "report" / "table4.csv").set_index("arch")
    assert t4.loc["resnet20", "top1_best"] == 50.0
    assert t4.loc["afi_resnet20", "top1_best"] == 55.0  # the damaged run's 99.0 is not used
    assert (tmp_path / "report" / "table4.md").is_file()
    assert (tmp_path / "report" / "figure4_table4.csv").is_file()


def test_an_undamaged_run_folder_gives_no_warning(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_run(tmp_path / "runs", "a", "afi_resnet20", [40.0, 50.0], afi_stages="1, 2, 3")
    code, _, err = run(capsys, "report", "-t", "4", "-f", "csv", "--no-figures")
    assert code == 0, err
    assert "skipped" not in err and "1 run read from runs (1 used)" in err
