"""`afictl models` and `afictl flops` through the real entry point."""

import json
import subprocess
import sys

import pytest
from cli import run

from afictl.paper import TABLES


def test_models_json(capsys):
    code, out, _ = run(capsys, "models", "--format", "json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["afi_resnet32"]["baseline"] == "resnet32"
    assert rows["resnet32"]["baseline"] is None
    assert rows["resnet32"]["params"] == 472_756
    assert rows["resnet50"]["input_size"] == 224 and rows["resnet50"]["family"] == "resnet"


def test_flops_json_is_json_only(capsys):
    code, out, err = run(capsys, "flops", "--arch", "afi_resnet50", "--format", "json")
    assert code == 0
    (row,) = json.loads(out)
    for key in (
        "arch",
        "num_classes",
        "batch_size",
        "input_size",
        "params",
        "flops",
        "flops_exact",
        "baseline",
        "baseline_params",
        "baseline_flops",
        "params_delta_pct",
        "flops_delta_pct",
    ):
        assert key in row
    assert row["baseline"] == "resnet50" and row["batch_size"] == 32 and row["num_classes"] == 1000
    assert row["params_delta_pct"] < 0 and row["flops_delta_pct"] < 0


@pytest.mark.parametrize("fmt", ["csv", "markdown", "table"])
def test_flops_other_formats_and_output(capsys, tmp_path, fmt):
    out_file = tmp_path / f"flops.{fmt}"
    code, out, err = run(
        capsys, "flops", "--arch", "afi_resnet20", "--format", fmt, "--output", str(out_file)
    )
    assert code == 0 and out == ""
    text = out_file.read_text()
    assert "afi_resnet20" in text and "resnet20" in text


def test_unknown_arch_is_one_line_exit_2(capsys):
    code, out, err = run(capsys, "flops", "--arch", "afi_resnt50")
    assert code == 2
    assert err.count("\n") == 1 and "afi_resnet50" in err and "Traceback" not in err


def test_bad_option_is_one_line_exit_2(capsys):
    code, _, err = run(capsys, "flops", "--batch-size", "zero")
    assert code == 2 and err.count("\n") == 1


def test_afi_stages_option(capsys):
    code, out, _ = run(
        capsys, "flops", "--arch", "afi_resnet32", "--afi-stages", "1", "--format", "json"
    )
    assert code == 0
    (row,) = json.loads(out)
    assert row["params"] > 377_556  # fewer halved blocks than the full AFI-ResNet-32
    code, _, err = run(capsys, "flops", "--arch", "afi_resnet32", "--afi-stages", "7")
    assert code == 2 and "out of range" in err


def test_per_stage_table2(capsys):
    code, out, _ = run(capsys, "flops", "--table", "2", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 6 and {r["stage"] for r in rows} == {"conv1", "conv2", "conv3"}
    assert all(abs(r["params_diff_pct"]) < 0.5 and abs(r["flops_diff_pct"]) < 2 for r in rows)


def test_bare_flops_prints_tables_4_and_5(capsys):
    code, out, _ = run(capsys, "flops", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert [r["arch"] for r in rows] == [p.arch for t in (4, 5) for p in TABLES[t]]
    resnets = [r for r in rows if "resnet" in r["arch"] and "resnext" not in r["arch"]]
    assert all(r["params"] is not None and abs(r["flops_diff_pct"]) < 2 for r in resnets)


def test_console_script_and_module_entry_points():
    proc = subprocess.run(
        [sys.executable, "-m", "afictl", "models", "afi_resnet20", "-f", "csv"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.splitlines()[1].startswith("afi_resnet20,resnet,32")
    proc = subprocess.run(
        [sys.executable, "-m", "afictl", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "flops" in proc.stdout


def test_bare_afictl_prints_its_help_once(capsys):
    """Typer's rich help prints itself while click builds NoArgsIsHelpError: not once more."""
    code, out, err = run(capsys)
    assert code == 0 and err == ""
    assert out.count("Usage: afictl [OPTIONS] COMMAND [ARGS]...") == 1, out
    assert out.count("Commands") == 1 and " runs " in out and " curves " in out
    proc = subprocess.run([sys.executable, "-m", "afictl"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.count("Usage:") == 1, proc.stdout


def test_help_lists_every_command_without_importing_them():
    """`afictl --help` reads the summaries from the sources; no command module, no torch."""
    code = (
        "import sys\n"
        "from afictl.cli.app import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('afictl.cli.')\n"
        "                and m[11:] not in ('app', '_util'))\n"
        "print('LOADED', loaded)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**__import__("os").environ, "COLUMNS": "200"},
    )
    assert proc.stdout.splitlines()[-1] == "LOADED []"
    import importlib

    from afictl.cli.app import COMMANDS

    for name in COMMANDS:
        doc = getattr(importlib.import_module(f"afictl.cli.{name}"), f"{name}_cli").__doc__
        summary = doc.strip().splitlines()[0]
        assert any(f" {name} " in line and summary in line for line in proc.stdout.splitlines()), (
            name
        )


def test_unknown_command_is_one_line_exit_2(capsys):
    code, _, err = run(capsys, "flop")
    assert code == 2 and err.count("\n") == 1 and "flop" in err


def test_subcommand_help_is_complete(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich would shorten long option names to 80 columns
    code, out, _ = run(capsys, "bench", "--help")
    assert code == 0 and "--memory-efficient" in out and "speed_ratio" in out


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("afi_resnet2", ["afi_resnet20"]),  # a bare word matches anywhere in the name
        ("ResNet11", ["afi_resnet110", "resnet110"]),  # case-insensitive
        ("resnet?0", ["resnet20", "resnet50"]),  # `?` is one character, the whole name
        ("afi_resnet1*", ["afi_resnet101", "afi_resnet110", "afi_resnet152"]),
    ],
)
def test_models_pattern(capsys, pattern, expected):
    code, out, err = run(capsys, "models", pattern, "-f", "json")
    assert code == 0, err
    assert [r["name"] for r in json.loads(out)] == expected


def test_models_bare_afi_lists_exactly_the_afi_models(capsys):
    from afictl.models import get_model_info, list_models

    code, out, _ = run(capsys, "models", "afi", "-f", "json")
    names = [r["name"] for r in json.loads(out)]
    assert code == 0 and names == [n for n in list_models() if "afi" in n]
    assert names and all(get_model_info(n).is_afi for n in names)


def test_models_no_match_is_one_line_with_the_closest_names(capsys):
    code, out, err = run(capsys, "models", "afi_resnt50")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "no registered model matches 'afi_resnt50'" in err and "afi_resnet50" in err
    code, _, err = run(capsys, "models", "zzzz*")
    assert code == 2 and err.count("\n") == 1 and "afictl models" in err


def test_version_flag(capsys):
    import afictl

    for flag in ("--version", "-V"):
        code, out, _ = run(capsys, flag)
        assert code == 0 and out.strip() == f"afictl {afictl.__version__}"
