"""`afictl eval --per-class`, `--confusion`, `--figure` and images/s (issue 22), through the
entry point on a tiny checkpoint trained for a few steps on generated shapes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from cli import one_line_exit_2, run
from PIL import Image
from test_analyses import _train_checkpoint

from afictl.data.shapes import SHAPE_CLASSES
from afictl.train.confusion import Confusion, ConfusionMeter, confusion_plot

EVAL_IMAGES = 48  # the data_size _train_checkpoint records


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _train_checkpoint(tmp_path_factory.mktemp("per-class") / "best.pt", "resnet20")


def _eval(capsys, ckpt, *args):
    code, out, err = run(capsys, "eval", "-c", ckpt, "-b", "16", "-j", "0", *args)
    assert code == 0, err
    return out, err


def test_per_class_rows_agree_with_the_overall_top1(capsys, ckpt):
    out, _ = _eval(capsys, ckpt, "--per-class", "-f", "json")
    result = json.loads(out)
    rows = result["per_class"]
    assert [r["class"] for r in rows] == SHAPE_CLASSES  # one row per class, by name
    assert sum(r["images"] for r in rows) == result["images"] == EVAL_IMAGES
    weighted = sum(r["top1"] * r["images"] for r in rows if r["images"]) / result["images"]
    assert weighted == pytest.approx(result["top1"], abs=1e-3)
    weighted5 = sum(r["top5"] * r["images"] for r in rows if r["images"]) / result["images"]
    assert weighted5 == pytest.approx(result["top5"], abs=1e-3)
    assert sum(r["error_share"] or 0 for r in rows) == pytest.approx(100, abs=1e-2)
    for r in rows:
        assert (r["confused_with"] is None) == (r["confused"] == 0)
        assert r["confused_with"] != r["class"]
    assert result["images_per_sec"] > 0


def test_confusion_csv_and_figure_from_the_same_pass(capsys, ckpt, tmp_path):
    counts, figure = tmp_path / "cm.csv", tmp_path / "cm.png"
    out, err = _eval(capsys, ckpt, "--confusion", counts, "--figure", figure, "-f", "json")
    result = json.loads(out)
    assert "per_class" not in result  # the files only: no --per-class rows
    assert f"wrote {counts}" in err and f"wrote {figure}" in err
    with open(counts, newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["true\\predicted", *SHAPE_CLASSES]
    assert [r[0] for r in table[1:]] == SHAPE_CLASSES
    m = np.array([[int(v) for v in r[1:]] for r in table[1:]])
    assert m.sum() == result["images"] == EVAL_IMAGES
    assert 100 * np.trace(m) / m.sum() == pytest.approx(result["top1"], abs=1e-3)
    with Image.open(figure) as img:
        assert img.format == "PNG" and min(img.size) > 300
        pixels = np.asarray(img.convert("L"))
    assert pixels.std() > 10  # drawn, not blank


def test_table_shows_images_per_sec_and_per_class(capsys, ckpt, tmp_path):
    out, _ = _eval(capsys, ckpt, "--per-class")
    assert "images_per_sec" in out and "confused_with" in out
    for name in SHAPE_CLASSES:
        assert f" {name} " in out
    # CSV with --per-class: one table, the class rows
    out, _ = _eval(capsys, ckpt, "--per-class", "-f", "csv")
    lines = out.strip().splitlines()
    assert lines[0].startswith("class,index,images,top1,top5") and len(lines) == 1 + 8
    # --output: both tables in the file, nothing on stdout
    path = tmp_path / "eval.md"
    out, err = _eval(capsys, ckpt, "--per-class", "-f", "markdown", "-o", path)
    text = path.read_text()
    assert out == "" and "images_per_sec" in text and "| triangle |" in text


def test_bad_confusion_or_figure_names_are_one_line(capsys, ckpt, tmp_path):
    code, _, err = run(capsys, "eval", "-c", ckpt, "--confusion", tmp_path / "cm.txt")
    assert "--confusion" in one_line_exit_2(code, err)
    code, _, err = run(capsys, "eval", "-c", ckpt, "--figure", tmp_path / "cm.csv")
    assert "--figure" in one_line_exit_2(code, err)


def test_meter_counts_match_a_plain_loop():
    torch.manual_seed(1)
    meter = ConfusionMeter(7)
    truth = np.zeros((7, 7), int)
    hits5 = np.zeros(7, int)
    for _ in range(3):
        logits, y = torch.randn(20, 7), torch.randint(0, 7, (20,))
        meter.update(logits, y)
        top = logits.topk(5, dim=1).indices
        for t, row in zip(y.tolist(), top.tolist(), strict=True):
            truth[t, row[0]] += 1
            hits5[t] += t in row
    result = meter.result([f"c{i}" for i in range(7)])
    assert (result.counts == truth).all() and (result.top5_hits == hits5).all()


def test_figure_drops_cell_numbers_for_many_classes():
    few = Confusion(list("abcdefgh"), np.eye(8, dtype=int) * 3 + 1, np.full(8, 11))
    many = Confusion([f"class{i}" for i in range(30)], np.eye(30, dtype=int) + 1, np.ones(30))
    fig_few, fig_many = confusion_plot(few), confusion_plot(many)
    assert len(fig_few.axes[0].texts) == 64  # every cell has a count: its share
    assert len(fig_many.axes[0].texts) == 0  # too many cells to read: colours only
    assert len(fig_many.axes) == 2  # the matrix and its colourbar
    # rows normalised: each true class's shares sum to 1
    assert many.shares().sum(axis=1) == pytest.approx(np.ones(30))


def _rank(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist

    from afictl.train.distributed import DistContext

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        meter = ConfusionMeter(3)
        # rank 0 sees two images of class 0 predicted 1; rank 1 one image of class 2, right
        logits = torch.tensor([[0.0, 1.0, 0.0]] * 2) if rank == 0 else torch.eye(3)[2:]
        meter.update(logits, torch.tensor([0, 0]) if rank == 0 else torch.tensor([2]))
        meter.all_reduce(DistContext(rank, 2, rank, torch.device("cpu")))
        torch.save(meter.result(["a", "b", "c"]).counts, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes: seconds
def test_counts_are_summed_over_ranks(tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "counts")
    mp.spawn(_rank, args=(str(tmp_path / "store"), out), nprocs=2)
    expected = np.array([[0, 2, 0], [0, 0, 0], [0, 0, 1]])
    for rank in (0, 1):  # every rank holds the sum
        assert (torch.load(f"{out}.{rank}", weights_only=False) == expected).all()
