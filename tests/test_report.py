"""`afictl report`: tables from run folders, empty cells for missing runs, Figure 4."""

import json

import pandas as pd

from afictl.cli.app import main
from afictl.reporting.runs import collect_runs
from afictl.reporting.tables import build_tables


def make_run(root, name, arch, dataset, top1s, *, epochs=None, **kw):
    d = root / name
    d.mkdir(parents=True)
    cfg = {"arch": arch, "dataset": dataset, "epochs": epochs or len(top1s), "model_kwargs": kw}
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


def test_tables_take_measured_runs_and_leave_missing_cells_empty(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "a", "resnet32", "cifar100", [40.0, 50.0])
    make_run(runs, "b", "afi_resnet32", "cifar100", [45.0, 52.5, 51.0])
    make_run(runs, "c", "afi_resnet32", "cifar100", [60.0], afi_stages=[1])
    make_run(runs, "d", "afi_resnet32", "cifar10", [90.0])  # another dataset: not in Table 4
    make_run(runs, "e", "afi_resnet50", "imagenet", [30.0], r=2)
    make_run(runs, "f", "afi_resnet50", "imagenet", [20.0], epochs=5)  # unfinished
    (runs / "empty").mkdir()  # no metrics: ignored
    df = collect_runs(runs)
    assert len(df) == 6
    tables = build_tables(df, tables=(4, 5, 7, 8))

    t4 = tables[4].set_index("arch")
    assert t4.loc["resnet32", "top1"] == 50.0  # best epoch
    assert t4.loc["afi_resnet32", "top1"] == 52.5  # the all-stages run, not the stage-1 ablation
    assert t4.loc["afi_resnet32", "top1_vs_baseline"] == 2.5
    assert pd.isna(t4.loc["resnet110", "top1"]) and t4.loc["resnet110", "params"] == 1_736_564

    t7 = tables[7].set_index(["model", "column"])
    assert t7.loc[("afi_resnet32", "stage 1"), "top1"] == 60.0
    assert t7.loc[("afi_resnet32", "stage 1"), "top1_vs_baseline"] == 10.0
    assert pd.isna(t7.loc[("afi_resnet32", "stage 2"), "top1"])

    t8 = tables[8].set_index("r")
    assert t8.loc[2, "top1"] == 30.0
    assert t8.loc[4, "top1"] == 20.0  # the only r=4 run, shown although unfinished
    assert pd.isna(t8.loc[1, "top1"])
    t5 = tables[5].set_index("arch")
    assert t5.loc["afi_resnet50", "epochs"] == "1/5"


def test_transfer_and_memory_tables_from_json(tmp_path):
    pairs = [
        {"arch": "afi_resnet50", "pair": p, "top1": 50.0 + i}
        for i, p in enumerate(
            [
                "Ar:Cl",
                "Ar:Pr",
                "Ar:Rw",
                "Cl:Ar",
                "Cl:Pr",
                "Cl:Rw",
                "Pr:Ar",
                "Pr:Cl",
                "Pr:Rw",
                "Rw:Ar",
                "Rw:Cl",
                "Rw:Pr",
            ]
        )
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
    tables = build_tables(pd.DataFrame(), memory_rows=mem, transfer_rows=pairs, tables=(3, 6))
    t3 = tables[3].set_index(["arch", "source"])
    assert t3.loc[("afi_resnet50", "ours"), "Ar:Cl"] == 50.0
    assert t3.loc[("afi_resnet50", "ours"), "avg"] == 55.5
    assert pd.isna(t3.loc[("resnet50", "ours"), "avg"])
    t6 = tables[6].set_index("arch")
    assert (
        t6.loc["afi_resnet50", "train_mib"] == 1024.0 and t6.loc["resnet50", "infer_mib"] == 1024.0
    )


def test_report_cli_writes_tables_and_figure(tmp_path, capsys):
    runs = tmp_path / "runs"
    make_run(runs, "a", "resnet20", "shapes", [50.0])
    make_run(runs, "b", "resnet32", "cifar100", [50.0])
    make_run(runs, "c", "afi_resnet32", "cifar100", [55.0])
    out = tmp_path / "rep"
    try:
        main(
            [
                "report",
                "--runs",
                str(runs),
                "--output",
                str(out),
                "-t",
                "4",
                "-f",
                "markdown",
                "-f",
                "csv",
            ]
        )
    except SystemExit as exc:
        assert not exc.code
    text = (out / "table4.md").read_text()
    assert "| ResNet-32 | resnet32 | 71.16 | 50.0 |" in text
    assert (out / "figure4_table4.png").stat().st_size > 10_000
    csv = pd.read_csv(out / "table4.csv")
    assert csv.loc[csv["arch"] == "afi_resnet32", "top1"].item() == 55.0
    assert "2 run" not in capsys.readouterr().err  # three runs were read
    code = None
    try:
        main(["report", "--runs", str(runs), "--output", str(out), "-t", "2"])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
