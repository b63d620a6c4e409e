"""Tables that fit a terminal: no name, number or path is ever cut mid-word (issue 22)."""

import re

import pytest
from cli import run

from afictl.render import Format, render, render_text

WIDE = [
    {
        "arch": f"afi_resnext50_32x4d_{i}",
        "run_dir": f"runs/afi_resnext50_32x4d-imagenet-20261206-13{i:04d}",
        "params_delta_pct": "-13.42%",
        "flops": "4.23G",
        "paper_flops": "4.27G",
        "note": "",
        "images_per_sec": 1234.5,
    }
    for i in range(3)
]


def _cells(text: str) -> set[str]:
    """Every cell of a rich table, as printed (a cell never spans lines when nothing wraps)."""
    cells = set()
    for line in text.splitlines():
        cells.update(c.strip() for c in re.split(r"[│┃]", line) if c.strip())
    return cells


def test_a_wide_table_at_80_keeps_whole_cells_and_says_what_it_left_out():
    text = render_text(WIDE, Format.table, width=80, title="three runs")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    cells = _cells(text)
    shown = [k for k in WIDE[0] if k in cells]
    assert shown[0] == "arch" and len(shown) >= 2  # the first column always stays
    for row in WIDE:
        for key in shown:
            if str(row[key]):
                assert str(row[key]) in cells, (key, text)  # whole, on one line
    note = " ".join(lines[-3:])
    left_out = [k for k in WIDE[0] if k not in shown]
    assert left_out and "columns left out to fit 80" in note
    assert all(k in note for k in left_out), note
    assert "note" in left_out  # a column with no value goes first


def test_headers_break_at_underscores_before_a_column_is_dropped():
    rows = [{"params_diff_pct": "+1.00%", "flops_diff_pct": "-2.00%", "arch": "resnet20"}] * 2
    text = render_text(rows, Format.table, width=32)
    assert max(len(line) for line in text.splitlines()) <= 32, text
    assert "left out" not in text
    for value in ("+1.00%", "-2.00%", "resnet20", "params_", "diff_pct"):
        assert value in _cells(text), text


def test_priority_columns_are_kept_first():
    text = render_text(WIDE, Format.table, width=80, priority=["run_dir", "flops"])
    cells = _cells(text)
    assert WIDE[0]["run_dir"] in cells and "4.23G" in cells
    assert "arch" not in cells  # the priority, not the first column, leads


def test_one_row_is_stacked_as_name_value_lines():
    row = {k: v for k, v in WIDE[0].items() if k != "note"}
    text = render_text([row], Format.table, width=60, title="training run")
    lines = text.splitlines()
    assert lines[0] == "training run" and max(len(line) for line in lines) <= 60
    for key, value in row.items():  # beside its name, or under it when both do not fit
        at = next(i for i, x in enumerate(lines) if x.startswith(f"{key}:"))
        beside = lines[at].split(maxsplit=1)[1:]
        assert [str(value)] == (beside or [lines[at + 1].strip()]), text
    assert lines[lines.index("run_dir:") + 1] == "  " + row["run_dir"]


def test_too_narrow_for_two_columns_stacks_every_row():
    text = render_text(WIDE, Format.table, width=30)  # arch + one more: 31
    blocks = text.split("\n\n")
    assert len(blocks) == 3
    for block, row in zip(blocks, WIDE, strict=True):
        assert "arch:" in block and row["arch"] in block.split()


def test_a_file_and_a_pipe_keep_every_column(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "40")
    path = tmp_path / "t.txt"
    render(WIDE, Format.table, path)
    text = path.read_text()
    for key in WIDE[0]:
        assert key in _cells(text)
    assert WIDE[0]["run_dir"] in _cells(text)
    monkeypatch.delenv("COLUMNS")  # stdout is captured: a pipe, no width
    render(WIDE, Format.table)
    assert "left out" not in capsys.readouterr().out


@pytest.mark.parametrize("args", [("models",), ("flops", "-a", "afi_resnet50", "-a", "resnet50")])
def test_commands_fit_80_columns(capsys, monkeypatch, args):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 80, out
    for name in ("afi_resnet50", "resnet50"):
        assert name in _cells(out) or any(
            line.split(":")[-1].strip() == name for line in out.splitlines()
        )


def test_a_title_wider_than_the_table_breaks_between_words_only():
    title = "learning curves (unequal budgets: afi_resnet20-shapes vs resnet20-shapes)"
    text = render_text([{"a": 1, "b": 2}] * 2, Format.table, width=40, title=title)
    head = text.split("┏")[0].split()
    assert " ".join(head) == title and max(len(line) for line in text.splitlines()) <= 40
