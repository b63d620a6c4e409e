"""The command-line conventions of the README, checked on every command through the real entry
point: light `--help`, one meaning per option name, results on stdout and progress on stderr,
and the shared renderer (plurals, signed percentages, integers, markdown, terminal width).

Commands still being converted fail here until they follow the conventions: intended.
"""

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli import run

import afictl
from afictl.cli.app import COMMANDS
from afictl.render import Format, plural, render, render_text, signed_pct

HEAVY = ("torch", "torchvision", "pandas", "matplotlib")


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_imports_nothing_heavy(cmd):
    """`afictl CMD --help` exits 0 without importing torch, torchvision, pandas or matplotlib."""
    code = (
        "import sys\n"
        "from afictl.cli.app import main\n"
        "try:\n"
        f"    main([{cmd!r}, '--help'])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "HEAVY []", f"{cmd} --help imports heavy modules"


def _options(help_text: str) -> dict[str, str]:
    """Each option of rich's help panels -> its row(s): names, metavar, help and default."""
    blocks: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        if not line.startswith("│"):
            current = None
            continue
        body = line.strip("│ ").rstrip()
        match = re.match(r"\*?\s*(--[\w-]+)", body)
        if match:
            current = match.group(1)
            blocks[current] = body
        elif current is not None:
            blocks[current] += " " + body.strip()
    return blocks


def _short_flags(block: str) -> list[str]:
    return [t for t in block.split()[:4] if re.fullmatch(r"-[A-Za-z]", t)]


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich would shorten long option names at 80


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_follows_the_option_conventions(capsys, wide, cmd):
    code, out, err = run(capsys, cmd, "--help")
    assert code == 0, err
    options = _options(out)
    assert "--help" in options, out  # the parser found the panel
    for name, block in options.items():
        if "-r" in _short_flags(block):
            assert name == "--reduction", f"{cmd}: -r is {name}; -r means --reduction only"
    if "--output" in options:
        assert re.search(r"\bresults\b", options["--output"]), f"{cmd}: --output is not results"
    if "--format" in options:
        assert "--output" in options, f"{cmd}: --format without --output"
        assert "table|json|csv|markdown" in options["--format"], options["--format"]
    if "--amp" in options:
        assert "none|bf16|fp16" in options["--amp"], f"{cmd}: --amp takes no value"
        assert "[default: none]" in options["--amp"], options["--amp"]
    if "--device" in options:
        assert "auto|cpu|cuda" in options["--device"], options["--device"]
        assert "[default: auto]" in options["--device"], f"{cmd}: --device default is not auto"


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_placeholders_are_not_swallowed(cmd):
    """Markdown help drops `<arch>` as an HTML tag: placeholders go in backticks or braces."""
    from afictl.cli.app import _load

    command = _load(cmd)
    texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
    for text in texts:
        outside = re.sub(r"`[^`]*`", "", text)
        assert not re.search(r"<[A-Za-z][\w.-]*>", outside), f"{cmd}: {text!r}"


def test_placeholders_survive_in_the_rendered_help(capsys, wide):
    code, out, _ = run(capsys, "eval", "--help")
    assert code == 0 and "$AFICTL_DATA/{dataset}" in out and "./data/{dataset}" in out
    code, out, _ = run(capsys, "export", "--help")
    assert code == 0 and "./{arch}.{format}" in out


def test_version(capsys):
    code, out, err = run(capsys, "--version")
    assert code == 0 and out == f"afictl {afictl.__version__}\n" and err == ""
    assert re.fullmatch(r"afictl \d+\.\d+\.\d+\n", out)


def test_render_is_light_at_import():
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from afictl.render import Format, plural; "
            "print(sorted(m for m in ('pandas', 'rich', 'torch') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip() == "[]"


def test_plural():
    assert plural(1, "epoch") == "1 epoch" and plural(2, "epoch") == "2 epochs"
    assert plural(1, "process") == "1 process" and plural(2, "process") == "2 processes"
    assert plural(0, "run") == "0 runs" and plural(3, "batch") == "3 batches"
    assert plural(2, "entry") == "2 entries" and plural(2, "day") == "2 days"
    assert plural(2, "datum", "data") == "2 data"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (-0.001, "0.00%"),
        (0.004, "0.00%"),
        (-0.0, "0.00%"),
        (0.0, "0.00%"),
        (0.005001, "+0.01%"),
        (-0.006, "-0.01%"),
        (12.345, "+12.35%"),
        (-2, "-2.00%"),
    ],
)
def test_signed_pct_never_prints_minus_zero(value, text):
    assert signed_pct(value) == text


ROWS = [
    {"arch": "a|b", "params": 765460480, "flops": None, "top1": 1.0, "note": "x"},
    {"arch": "c", "params": None, "flops": 12, "top1": 2.5, "note": "y"},
]


def test_counts_stay_integers_in_csv_and_json():
    """A count column with a missing value is float in pandas: not in what we print."""
    records = json.loads(render_text(ROWS, Format.json))
    assert records[0]["params"] == 765460480 and isinstance(records[0]["params"], int)
    assert records[1]["flops"] == 12 and isinstance(records[1]["flops"], int)
    assert records[1]["params"] is None and records[0]["flops"] is None
    assert records[0]["top1"] == 1.0  # an accuracy stays a float
    text = render_text(ROWS, Format.csv)
    assert "765460480.0" not in text and "12.0" not in text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["params"] == "765460480" and rows[1]["flops"] == "12"
    assert rows[0]["top1"] == "1.0"


def test_dataclass_int_fields_stay_integers():
    from dataclasses import dataclass

    @dataclass
    class Row:
        name: str
        total: int | None  # no count word in the name: the annotation says it
        share: float | None

    rows = [Row("a", 3, 0.5), Row("b", None, 1.0)]
    records = json.loads(render_text(rows, Format.json))
    assert records[0]["total"] == 3 and isinstance(records[0]["total"], int)
    assert records[1]["share"] == 1.0 and isinstance(records[1]["share"], float)


def test_markdown_escapes_pipes():
    lines = render_text(ROWS, Format.markdown).splitlines()
    assert lines[0] == "| arch | params | flops | top1 | note |"
    assert lines[2].startswith("| a\\|b | 765460480 |  |")
    # every row has as many unescaped cell separators as the header
    count = [len(re.findall(r"(?<!\\)\|", line)) for line in lines]
    assert len(set(count)) == 1


def test_table_fits_a_narrow_terminal(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    wide_rows = [{"arch": "afi_resnet110_" * 3, "params": 1234567, "baseline": "resnet110"}]
    render(wide_rows, Format.table, title="a title")
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 40
    assert "afi_resnet110_" in out and "1234567" in out  # wrapped (folded), not cut off
    folded = "".join(line.strip("│┃ ") for line in out.splitlines())
    assert "afi_resnet110_afi" in folded.replace("│", "").replace(" ", "")


def test_table_in_a_file_is_not_wrapped(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    long_name = "afi_resnet110_" * 3
    path = tmp_path / "t.txt"
    render([{"arch": long_name, "params": 1}], Format.table, path)
    assert long_name in path.read_text()  # a file is grepped and diffed: one line per row


def test_models_pattern_and_no_match(capsys):
    code, out, _ = run(capsys, "models", "AFI_ResNet2", "-f", "json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["afi_resnet20"]
    code, out, err = run(capsys, "models", "xyzzy_net")
    assert code == 2 and out == "" and err.count("\n") == 1


@pytest.fixture(scope="module")
def shapes_checkpoint(tmp_path_factory):
    import torch

    from afictl.checkpoint import save_checkpoint
    from afictl.models import create_model

    torch.manual_seed(0)
    config = {"arch": "resnet20", "dataset": "shapes", "data_root": None, "input_size": 32}
    config |= {"eval_split": "eval", "data_size": 8, "seed": 0, "num_classes": 8}
    return save_checkpoint(
        tmp_path_factory.mktemp("eval") / "best.pt",
        {
            "arch": "resnet20",
            "num_classes": 8,
            "model_kwargs": {},
            "model": create_model("resnet20", num_classes=8).state_dict(),
            "epoch": 1,
            "config": config,
        },
    )


def test_eval_json_stdout_is_one_json_document(capsys, shapes_checkpoint):
    code, out, err = run(
        capsys, "eval", "-c", shapes_checkpoint, "-b", "4", "-j", "0", "--format", "json"
    )
    assert code == 0, err
    result = json.loads(out)  # one JSON document and nothing else
    assert result["images"] == 8 and result["arch"] == "resnet20"
    assert 0 <= result["top1"] <= result["top5"] <= 100


def test_evaluate_checkpoint_reports_each_batch(shapes_checkpoint):
    from afictl.train import evaluate_checkpoint

    seen = []
    result = evaluate_checkpoint(
        shapes_checkpoint, batch_size=4, workers=0, progress=lambda d, t: seen.append((d, t))
    )
    assert seen == [(1, 2), (2, 2)] and result["images"] == 8


def _readme_rows():
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    for line in readme.splitlines():
        match = re.match(r"\| `(?:torchrun [^`]*-m )?afictl (\w[\w-]*)([^`]*)`", line)
        if match and match.group(1) in COMMANDS:
            yield match.group(1), match.group(2)


def test_readme_command_table_matches_the_code():
    """Every option the README's tables show for a command is an option of that command."""
    from afictl.cli.app import _load

    rows = list(_readme_rows())
    assert {cmd for cmd, _ in rows} == set(COMMANDS)  # every command is in the README
    for cmd, usage in rows:
        names = {o for p in _load(cmd).params for o in (*p.opts, *p.secondary_opts)}
        for option in re.findall(r"(?<![\w-])--?[a-z][\w-]*", usage):
            assert option in names, f"README shows `afictl {cmd} ... {option}`; not an option"
