"""Images that would crash or hang a run: refused from their header, or decoded by PIL, and a
DataLoader worker that dies anyway ends the run with one line, never a hang.

Every run is a subprocess with a timeout: a regression fails, it does not hang the suite."""

import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from afictl.data.decode import check_claim, claimed_size, gpu_decodable, torchvision_load

TIMEOUT = 120


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png(width: int, height: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


#: 60000x60000 claimed, 100 bytes of data: libpng errors out inside torchvision (SIGSEGV).
BOMB = _png(60000, 60000, zlib.compress(b"\0" * 100))
#: A plausible 40x40 PNG whose pixel stream stops early ("Not enough image data"): SIGSEGV too.
SHORT = _png(40, 40, zlib.compress(b"\0" * 100))


def _folder(root: Path, bad: bytes, name: str) -> Path:
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 4), ("val", 2)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / c / f"{i}.png")
    path = root / "train" / "a" / name
    path.write_bytes(bad)
    return path


def _afictl(*args, timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "afictl", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _train(root: Path, run_dir: Path, workers: int, *extra) -> subprocess.CompletedProcess:
    return _afictl(
        "train", "--arch", "resnet20", "--data", "imagefolder", "--data-root", root,
        "--batch-size", "4", "--epochs", "1", "--workers", workers, "--deterministic",
        "--run-dir", run_dir, *extra,
    )  # fmt: skip


def test_claimed_size_from_headers(tmp_path):
    assert claimed_size(BOMB) == (60000, 60000)
    with pytest.raises(OSError, match="60000x60000"):
        check_claim(claimed_size(BOMB))
    arr = np.zeros((30, 50, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.jpg")
    Image.fromarray(arr).save(tmp_path / "x.bmp")
    jpeg = (tmp_path / "x.jpg").read_bytes()
    assert claimed_size(jpeg) == (50, 30) and gpu_decodable(jpeg)
    assert claimed_size((tmp_path / "x.bmp").read_bytes()) == (50, 30)
    assert claimed_size(b"not an image") is None
    check_claim((50, 30))
    # a JPEG whose frame header claims 60000x60000 (libjpeg would allocate 10.8 GB)
    sof = jpeg.index(b"\xff\xc0")
    big = jpeg[: sof + 5] + struct.pack(">HH", 60000, 60000) + jpeg[sof + 9 :]
    (tmp_path / "big.jpg").write_bytes(big)
    with pytest.raises(OSError, match="MAX_IMAGE_PIXELS"):
        torchvision_load(str(tmp_path / "big.jpg"))


@pytest.mark.parametrize("name,data", [("bomb.png", BOMB), ("short.png", SHORT)])
def test_crashing_png_raises_in_process(tmp_path, name, data):
    """In a subprocess: before the fix, decode_image killed it with SIGSEGV."""
    (tmp_path / name).write_bytes(data)
    code = (
        "from afictl.data.decode import torchvision_load\n"
        f"try:\n    torchvision_load({str(tmp_path / name)!r})\n"
        "except OSError as e:\n    print('raised', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("raised"), (out.returncode, out.stderr)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_bomb_png_skipped_or_stops_train(tmp_path, workers):
    bad = _folder(tmp_path / "data", BOMB, "zz_bomb.png")
    out = _train(tmp_path / "data", tmp_path / "skip", workers)
    assert out.returncode == 0, out.stderr
    assert f"skipped unreadable image {bad}" in out.stderr and "60000x60000" in out.stderr
    out = _train(tmp_path / "data", tmp_path / "stop", workers, "--bad-images", "stop")
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 2, out.stderr
    assert last.startswith("afictl: error: cannot read image") and str(bad) in last
    assert "Traceback" not in out.stderr and "Segmentation" not in out.stderr


@pytest.mark.slow
def test_short_png_skipped_in_worker_and_eval_split_train(tmp_path):
    bad = _folder(tmp_path / "data", SHORT, "zz_short.png")
    out = _train(tmp_path / "data", tmp_path / "run", 1)
    assert out.returncode == 0, out.stderr
    assert f"skipped unreadable image {bad}" in out.stderr
    common = ["--data", "imagefolder", "--data-root", tmp_path / "data", "--split", "train"]
    for workers in (0, 1):
        out = _afictl("eval", "--checkpoint", tmp_path / "run" / "best.pt", *common, "-j", workers)
        assert out.returncode == 0, out.stderr
        assert str(bad) in out.stderr and "Segmentation" not in out.stderr
        stop = ["--bad-images", "stop"]
        out = _afictl("eval", "--checkpoint", tmp_path / "run", *common, "-j", workers, *stop)
        assert out.returncode == 2 and str(bad) in out.stderr.strip().splitlines()[-1]


_CRASHING = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from afictl.data.loaders import make_loader
    from afictl.errors import UserError

    class Crashes(torch.utils.data.Dataset):
        def __len__(self):
            return 8
        def __getitem__(self, i):
            if i == 5:
                os.kill(os.getpid(), signal.SIGSEGV)
            return torch.zeros(2), 0

    loader = make_loader(Crashes(), 2, train=TRAIN, workers=WORKERS)
    if CATCH:
        try:
            for _ in loader:
                pass
        except UserError as exc:
            print(f"afictl: error: {exc}", file=sys.stderr)
            sys.exit(2)
    else:
        for _ in loader:
            pass
    """
)


@pytest.mark.parametrize(
    "train,workers,catch",
    [(True, 1, True), (False, 2, True), (False, 2, False)],  # eval: persistent workers
)
def test_dead_worker_ends_run_with_one_line(train, workers, catch):
    script = (
        _CRASHING.replace("TRAIN", str(train))
        .replace("WORKERS", str(workers))
        .replace("CATCH", str(catch))
    )
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    took = time.monotonic() - start
    assert took < 30, took  # torch's liveness check runs every 5 s
    lines = [line for line in out.stderr.splitlines() if "afictl: error" in line]
    if catch:
        assert out.returncode == 2, out.stderr
        assert len(lines) == 1 and "data loader worker" in lines[0], out.stderr
        # no traceback of the program itself (its frames are in "<string>"); a killed worker can
        # leave one from multiprocessing's resource-sharer thread during shutdown, not afictl's
        assert 'File "<string>"' not in out.stderr, out.stderr
    else:  # an uncaught error: the interpreter's exit must not wait on the surviving worker
        assert out.returncode == 1 and "DataWorkerError" in out.stderr, out.stderr
