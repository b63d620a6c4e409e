"""`afictl report`: tables from run folders, empty cells for missing runs, Figure 4."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from cli import run

from afictl.models import create_meta_model
from afictl.reporting.runs import RunFilter, collect_runs
from afictl.reporting.tables import TableContext, build_tables
from afictl.transfer.run import TransferResult, accuracy_matrix


def make_run(root, name, arch, dataset, top1s, *, epochs=None, config=None, **kw):
    """A run folder as `afictl train` leaves it (config.json, metrics.csv), without training."""
    d = root / name
    d.mkdir(parents=True)
    cfg = {
        "arch": arch,
        "dataset": dataset,
        "epochs": epochs or len(top1s),
        "model_kwargs": kw,
        "recipe": "quick",
        "data_size": None,
        "input_size": 224 if dataset == "imagenet" else 32,
        "num_classes": 100,
    } | (config or {})
    (d / "config.json").write_text(json.dumps(cfg))
    pd.DataFrame(
        {
            "epoch": range(1, len(top1s) + 1),
            "train_loss": 1.0,
            "eval_loss": 1.0,
            "eval_top1": top1s,
            "eval_top5": [min(100, t + 20) for t in top1s],
            "images_per_sec": 100.0,
        }
    ).to_csv(d / "metrics.csv", index=False)
    return d


def params_of(arch, num_classes, **kw):
    return sum(p.numel() for p in create_meta_model(arch, num_classes, **kw).parameters())


def test_tables_take_finished_runs_and_leave_missing_cells_empty(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "a", "resnet32", "cifar100", [40.0, 50.0])
    make_run(runs, "b", "afi_resnet32", "cifar100", [45.0, 52.5, 51.0])
    make_run(runs, "c", "afi_resnet32", "cifar100", [60.0], afi_stages=[1])
    make_run(runs, "d", "afi_resnet32", "cifar10", [90.0])  # another dataset: not in Table 4
    make_run(runs, "e", "afi_resnet50", "imagenet", [30.0], r=2)
    make_run(runs, "f", "afi_resnet50", "imagenet", [20.0], epochs=5)  # unfinished
    (runs / "empty").mkdir()  # no metrics: ignored
    df = collect_runs(runs)
    assert len(df) == 6 and df["complete"].sum() == 5
    finished = TableContext(RunFilter().apply(df))
    tables = build_tables(finished, tables=(4, 5, 7, 8))

    t4 = tables[4].set_index("arch")
    assert t4.loc["resnet32", "top1_best"] == 50.0  # best epoch
    assert t4.loc["afi_resnet32", "top1_best"] == 52.5  # all stages, not the stage-1 ablation
    assert t4.loc["afi_resnet32", "top1_vs_baseline"] == 2.5
    assert t4.loc["afi_resnet32", "epochs"] == "3/3" and t4.loc["afi_resnet32", "recipe"] == "quick"
    assert t4.loc["afi_resnet32", "data_size"] == "all"
    assert pd.isna(t4.loc["resnet110", "top1_best"]) and t4.loc["resnet110", "params"] == 1_736_564

    t7 = tables[7].set_index(["model", "column"])
    assert t7.loc[("afi_resnet32", "stage 1"), "top1_best"] == 60.0
    assert t7.loc[("afi_resnet32", "stage 1"), "top1_vs_baseline"] == 10.0
    assert pd.isna(t7.loc[("afi_resnet32", "stage 2"), "top1_best"])

    t8 = tables[8].set_index("r")
    assert t8.loc[2, "top1_best"] == 30.0
    assert pd.isna(t8.loc[4, "top1_best"])  # the only r=4 run is unfinished: left out
    partial = build_tables(TableContext(df, "final"), tables=(4, 8))
    assert partial[8].set_index("r").loc[4, "top1_final"] == 20.0
    assert partial[8].set_index("r").loc[4, "epochs"] == "1/5 (partial)"
    assert partial[4].set_index("arch").loc["afi_resnet32", "top1_final"] == 51.0  # last epoch


def test_transfer_table_rounds_and_averages_the_pairs_measured():
    pairs = [
        {"arch": "afi_resnet50", "pair": "Ar:Cl", "top1": 100 / 3},
        {"arch": "afi_resnet50", "pair": "Rw:Pr", "top1": 50.0},
        {"arch": "afi_resnet50", "pair": "Pr:Ar", "top1": 60.0},
    ]
    mem = [
        {
            "arch": "afi_resnet50",
            "baseline": "resnet50",
            "batch_size": 64,
            "device": "cpu",
            "train_bytes": 2**30,
            "baseline_train_bytes": 2**31,
            "infer_bytes": 2**29,
            "baseline_infer_bytes": 2**30,
        }
    ]
    tables = build_tables(
        TableContext(pd.DataFrame()), memory_rows=mem, transfer_rows=pairs, tables=(3, 6)
    )
    t3 = tables[3].set_index(["arch", "source"])
    ours = t3.loc[("afi_resnet50", "ours")]
    assert ours["Ar:Cl"] == 33.33 and ours["avg_of"] == "3/12"
    assert ours["avg"] == pytest.approx(round((100 / 3 + 110) / 3, 2), abs=1e-9)
    assert t3.loc[("afi_resnet50", "paper"), "avg_of"] == "12/12"
    assert pd.isna(t3.loc[("resnet50", "ours"), "avg"])
    t6 = tables[6].set_index("arch")
    assert t6.loc["afi_resnet50", "train_mib"] == 1024.0
    assert t6.loc["resnet50", "infer_mib"] == 1024.0
    # `afictl transfer`'s own matrix: the same rounding and label
    results = [
        TransferResult("resnet20", "Art", "Clipart", "Ar:Cl", 100 / 3, 90.0, 1, 9, 9, "x", False),
        TransferResult("resnet20", "Art", "Product", "Ar:Pr", 50.0, 90.0, 1, 9, 9, "y", False),
    ]
    m = accuracy_matrix(results).set_index("arch")
    assert list(m.columns) == ["Ar:Cl", "Ar:Pr", "avg", "avg_of"]
    assert m.loc["resnet20", "Ar:Cl"] == 33.33 and m.loc["resnet20", "avg"] == 41.67
    assert m.loc["resnet20", "avg_of"] == "2/12"


def _shapes_runs(root):
    make_run(root, "a", "resnet20", "shapes", [50.0], config={"num_classes": 8, "data_size": 64})
    make_run(root, "b", "afi_resnet20", "shapes", [55.0, 54.0], config={"num_classes": 8})
    make_run(root, "c", "resnet32", "cifar100", [70.0])
    make_run(
        root, "d", "resnet32", "shapes", [40.0, 41.0], epochs=4, config={"recipe": "paper-cifar"}
    )


def test_bare_report_picks_the_dataset_with_most_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _shapes_runs(tmp_path / "runs")
    code, out, err = run(capsys, "report", "-t", "4", "-f", "csv", "--no-figures")
    assert code == 0, err
    assert "Table 4: runs on shapes (2 runs, the most); also found cifar100 (1 run)" in err
    assert "--dataset" in err and "1 unfinished run left out" in err
    assert "4 runs read from runs (3 used)" in err and "run(s)" not in err
    t4 = pd.read_csv(pd.io.common.StringIO(out))
    t4 = t4[t4["table"] == 4].set_index("arch")
    assert t4.loc["resnet20", "top1_best"] == 50.0 and t4.loc["resnet20", "data_size"] == "64"
    assert t4.loc["afi_resnet20", "top1_vs_baseline"] == 5.0
    assert pd.isna(t4.loc["resnet32", "top1_best"])  # its shapes run is unfinished
    points = pd.read_csv(tmp_path / "report" / "figure4_table4.csv").set_index("arch")
    assert set(points.index) == {"resnet20", "afi_resnet20"}
    assert points.loc["afi_resnet20", "params"] == params_of("afi_resnet20", 8)  # 224,408
    assert list(points.columns[:5]) == ["dataset", "top1", "params", "flops", "run"]
    assert not (tmp_path / "report" / "figure4_table4.png").exists()  # --no-figures
    assert (tmp_path / "report" / "table4.md").is_file()

    code, out, err = run(
        capsys, "report", "-t", "4", "-f", "json", "--dataset", "cifar100", "--no-figures"
    )
    doc = json.loads(out)
    assert doc["datasets"] == {"table4": "cifar100"} and "chosen with --dataset" in err
    rows = {r["arch"]: r for r in doc["tables"]["table4"]}
    assert rows["resnet32"]["top1_best"] == 70.0 and rows["resnet32"]["params"] == 472_756


def test_report_filters_accuracy_and_formats(tmp_path, capsys):
    runs, out_dir = tmp_path / "runs", tmp_path / "rep"
    _shapes_runs(runs)
    common = [
        "report",
        "--runs",
        runs,
        "--out-dir",
        out_dir,
        "--no-figures",
        "-t",
        "4",
        "-f",
        "json",
    ]

    def table4(*extra):
        code, out, err = run(capsys, *common, *extra)
        assert code == 0, err
        return {r["arch"]: r for r in json.loads(out)["tables"]["table4"]}

    partial = table4("--include-unfinished")
    assert partial["resnet32"]["top1_best"] == 41.0
    assert partial["resnet32"]["epochs"] == "2/4 (partial)"
    points = pd.read_csv(out_dir / "figure4_table4.csv").set_index("arch")
    assert not points.loc["resnet32", "finished"] and points.loc["resnet20", "finished"]
    only = table4("--include-unfinished", "--recipe", "paper-cifar")
    assert only["resnet32"]["top1_best"] == 41.0 and "resnet20" not in only
    assert only["afi_resnet32"]["top1_best"] is None
    assert "resnet20" not in table4("--min-epochs", "2") and "afi_resnet20" in table4()
    final = table4("--accuracy", "final")
    assert final["afi_resnet20"]["top1_final"] == 54.0 and "top1_best" not in final["resnet20"]

    code, text, err = run(capsys, *common[:-2], "--format", "table")
    assert code == 0 and "top1_best" in text and "Table 4" in text and "resnet20" in text
    code, text, _ = run(capsys, *common[:-2], "-f", "markdown")
    assert "| resnet20 | resnet20 |" in text and "| quick | 1/1 | 64 |" in text
    results = tmp_path / "results.csv"
    code, text, err = run(capsys, *common[:-2], "-f", "csv", "-o", results)
    assert code == 0 and text == "" and str(results) in err
    assert "resnet20" in results.read_text()
    code, _, err = run(capsys, *common[:-2], "-t", "2")
    assert code == 2 and "no paper table 2" in err
    code, _, err = run(capsys, *common[:-2], "--accuracy", "mean")
    assert code == 2 and "best or final" in err


def test_report_and_transfer_help_stay_light():
    code = (
        "import sys\nfrom afictl.cli.app import main\n"
        "for cmd in ('report', 'transfer'):\n"
        "    try:\n        main([cmd, '--help'])\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('torch', 'pandas', 'matplotlib') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "250"},  # no wrapped help lines
    )
    assert done.stdout.strip().endswith("[]"), done.stdout[-300:]
    assert "afictl train --run-dir" in done.stdout  # a backticked placeholder survives
    assert "figure4_table4.csv" in done.stdout and "--include-unfinished" in done.stdout


@pytest.mark.slow
def test_report_after_two_real_shapes_runs(tmp_path, capsys, monkeypatch):
    """The README's walk-through: two tiny trainings, then a bare `afictl report`."""
    monkeypatch.chdir(tmp_path)
    trained = {}
    for arch in ("resnet20", "afi_resnet20"):
        code, out, err = run(
            capsys,
            *("train", "--arch", arch, "--data", "shapes", "--data-size", 64, "--epochs", 1),
            *("--device", "cpu", "--workers", 0, "--run-dir", f"runs/{arch}", "-f", "json"),
        )
        assert code == 0, err
        trained[arch] = json.loads(out)
    code, out, err = run(capsys, "report", "-f", "json", "--file-format", "csv")
    assert code == 0, err
    assert "Tables 4, 7, 9: runs on shapes (2 runs, the most)" in err
    assert "2 runs read from runs (2 used)" in err
    doc = json.loads(out)
    points = pd.read_csv(tmp_path / "report" / "figure4_table4.csv").set_index("arch")
    for arch, result in trained.items():
        assert points.loc[arch, "params"] == result["params"]
        assert points.loc[arch, "top1"] == pytest.approx(result["best_top1"], abs=0.006)
        assert points.loc[arch, "epochs"] == "1/1" and points.loc[arch, "data_size"] == 64
    rows = {r["arch"]: r for r in doc["tables"]["table4"]}
    assert rows["resnet20"]["run_params"] == trained["resnet20"]["params"]
    assert rows["resnet20"]["recipe"] == "quick"
    assert (tmp_path / "report" / "figure4_table4.png").stat().st_size > 10_000
    assert not (tmp_path / "report" / "figure4_table5.png").exists()  # no ImageNet runs
    assert "Figure 4 of Table 5 not drawn" in err


def test_figure4_joins_an_attention_variant_to_its_registered_baseline():
    """afi_mobilenetv2_se's baseline is mobilenetv2 (the registry's), not its name without
    ``afi_``: Figure 4 draws it as an AFI point joined to the mobilenetv2 point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from afictl.models import get_model_info
    from afictl.reporting.figure4 import _panel

    arch = "afi_mobilenetv2_se"
    assert get_model_info(arch).baseline == "mobilenetv2" != arch.removeprefix("afi_")
    common = {"finished": True, "budget": "same", "params": 2.4e6}
    points = pd.DataFrame(
        [
            {"arch": "mobilenetv2", "model": "MobileNetV2", "top1": 60.0, "flops": 2e8} | common,
            {"arch": arch, "model": arch, "top1": 63.0, "flops": 3e8} | common,
        ]
    )
    fig, ax = plt.subplots()
    try:
        _panel(ax, points, "flops", 1e9)
        (line,) = ax.lines
        assert list(line.get_xdata()) == [0.2, 0.3] and list(line.get_ydata()) == [60.0, 63.0]
        assert line.get_linestyle() == "--"
        markers = [c.get_paths()[0].vertices.shape[0] for c in ax.collections]
        assert markers[0] != markers[1]  # a square for the baseline, a circle for the AFI model
    finally:
        plt.close(fig)
