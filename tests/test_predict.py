"""`afictl predict` (issue 22): top-k classes of image files through the checkpoint's own eval
transforms, on a tiny checkpoint trained for a few steps on generated shapes."""

from __future__ import annotations

import json

import pytest
import torch
from cli import one_line_exit_2, run
from PIL import Image
from test_analyses import _train_checkpoint

from afictl.checkpoint import model_from_checkpoint
from afictl.data import build_dataset
from afictl.data.shapes import SHAPE_CLASSES


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _train_checkpoint(tmp_path_factory.mktemp("predict") / "best.pt", "resnet20")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Four images of the checkpoint's own eval split, as PNG files (lossless), and the classes
    its model gives them there (through the dataset's eval transform, as `afictl eval` does)."""
    root = tmp_path_factory.mktemp("shapes")
    data = build_dataset("shapes", None, "eval", input_size=32, size=48, seed=0)
    paths = []
    for i in range(4):
        path = root / f"eval{i}.png"
        Image.fromarray(data.images[i]).save(path)
        paths.append(path)
    return paths, data


def test_topk_rows_match_what_eval_predicts(capsys, ckpt, shapes):
    paths, data = shapes
    code, out, err = run(capsys, "predict", *paths[:2], "-c", ckpt, "--topk", "3", "-f", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 6
    model, _ = model_from_checkpoint(ckpt)
    with torch.no_grad():
        expected = model(torch.stack([data[i][0] for i in range(2)])).argmax(1).tolist()
    for i, path in enumerate(paths[:2]):
        mine = [r for r in rows if r["image"] == str(path)]
        assert [r["rank"] for r in mine] == [1, 2, 3]
        probs = [r["probability"] for r in mine]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(r["class"] == SHAPE_CLASSES[r["index"]] for r in mine)
        assert mine[0]["index"] == expected[i]  # the model `afictl eval` runs, same input


def test_corrupt_file_is_skipped_with_a_warning_and_folders_expand(capsys, ckpt, shapes, tmp_path):
    paths, _ = shapes
    bad = tmp_path / "broken.png"
    bad.write_bytes(Image.open(paths[0]).tobytes()[:100])  # not a PNG at all
    code, out, err = run(capsys, "predict", bad, paths[0], "-c", ckpt, "-k", "2", "-f", "csv")
    assert code == 0, err
    assert f"afictl: warning: {bad} is not a readable image" in err and "skipped" in err
    lines = out.strip().splitlines()
    assert lines[0] == "image,rank,class,index,probability" and len(lines) == 1 + 2
    # a folder: every image in it (the four PNGs), sorted
    code, out, err = run(capsys, "predict", paths[0].parent, "-c", ckpt, "-k", "1", "-f", "json")
    assert code == 0, err
    assert [r["image"] for r in json.loads(out)] == [str(p) for p in paths]


def test_no_readable_image_or_too_large_topk_is_one_line(capsys, ckpt, shapes, tmp_path):
    paths, _ = shapes
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    code, _, err = run(capsys, "predict", bad, tmp_path / "missing.png", "-c", ckpt)
    assert "none of the 2 images could be read" in one_line_exit_2(code, err)
    code, _, err = run(capsys, "predict", paths[0], "-c", ckpt, "--topk", "9")
    assert "--topk 9 is more than the 8 classes" in one_line_exit_2(code, err)
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "predict", empty, "-c", ckpt)
    assert "no image files in folder" in one_line_exit_2(code, err)


def test_a_decompression_bomb_between_one_and_two_limits_is_refused(capsys, ckpt, tmp_path):
    # 12000x12000 = 144M pixels: over PIL's 89M limit, under the 179M where PIL itself refuses
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 12000, 12000, 8, 2, 0, 0, 0)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 100))
        + chunk(b"IEND", b"")
    )
    code, out, err = run(capsys, "predict", bomb, "-c", ckpt)
    assert "decompression bomb" in one_line_exit_2(code, err) and out == ""
