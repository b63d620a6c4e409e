"""The ImageNet training input pipeline, images per second: decoders, workers, loader settings.

Generates ``--images`` JPEGs of ``--size`` (default 500x375, ImageNet's typical size, smooth
photo-like content, quality 90) in a temporary ImageFolder tree, then times whole epochs of
``afictl``'s own train pipeline (``build_dataset("imagenet", ..., decode=...)`` + ``make_loader``:
RandomResizedCrop 224, flip, to float, normalise) for

- every CPU decoder (``pil``, ``pil-draft``, ``torchvision``) with 0, 1 and 2 workers;
- for the fastest decoder at the most workers: persistent workers, ``prefetch_factor`` 4,
  ``pin_memory`` (a no-op without an accelerator: said so in the row).

An epoch's time includes starting its workers (``startup_s``: time to the first batch); the rate
is the median over ``--epochs`` epochs and ``--rounds`` passes over all configurations (a busy
moment of a shared machine then hits them alike). ``per_worker`` is the rate / max(1, workers).

    python benchmarks/input_pipeline.py --images 400 --epochs 2 --rounds 3
    python benchmarks/input_pipeline.py --quick -f json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from afictl.data import build_dataset, make_loader
from afictl.render import Format, render

DECODERS = ("pil", "pil-draft", "torchvision")


class Row(NamedTuple):  # (a NamedTuple: tests load this file without registering a module)
    decode: str
    workers: int
    persistent: bool
    prefetch: int
    pin_memory: str
    images: int
    images_per_s: float
    per_worker: float
    startup_s: float
    note: str = ""


def make_jpegs(root: Path, n: int, size: tuple[int, int], classes: int = 4, seed: int = 0):
    """``n`` photo-like JPEGs (smooth colour fields, edges, a little noise) under root/train."""
    rng = np.random.default_rng(seed)
    w, h = size
    for i in range(n):
        low = rng.random((h // 25 + 2, w // 25 + 2, 3)) * 255  # upsampled: smooth regions
        img = Image.fromarray(low.astype(np.uint8)).resize((w, h), Image.BICUBIC)
        arr = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, (h, w, 3))
        x0, y0 = rng.integers(0, w // 2), rng.integers(0, h // 2)
        arr[y0 : y0 + h // 3, x0 : x0 + w // 3] = rng.integers(0, 256, 3)  # a hard-edged object
        folder = root / "train" / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)


def time_config(root: Path, *, decode: str, workers: int, batch: int, epochs: int, **loader_kw):
    """(median images/s over ``epochs`` epochs, median seconds to the first batch)."""
    ds = build_dataset("imagenet", root, "train", decode=decode)
    loader = make_loader(ds, batch, train=True, workers=workers, **loader_kw)
    rates, startups = [], []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        loader.generator.manual_seed(epoch)
        t0 = time.perf_counter()
        n, first = 0, None
        for b in loader:
            first = first or time.perf_counter() - t0
            n += len(b.images)
        rates.append(n / (time.perf_counter() - t0))
        startups.append(first)
    del loader  # shuts persistent workers down before the next configuration
    return statistics.median(rates), statistics.median(startups)


def _row(root, decode, workers, args, persistent=None, prefetch=None, pin=False, note=""):
    rate, startup = time_config(
        root,
        decode=decode,
        workers=workers,
        batch=args.batch_size,
        epochs=args.epochs,
        persistent_workers=persistent,
        prefetch_factor=prefetch,
        pin_memory=pin,
    )
    print(f"  {decode:11s} workers={workers} {note}: {rate:.1f} images/s", file=sys.stderr)
    if pin and not torch.cuda.is_available():
        note = (note + "; " if note else "") + "no accelerator: pinning is a no-op"
    return Row(
        decode=decode,
        workers=workers,
        persistent=bool(workers and (persistent if persistent is not None else False)),
        prefetch=(prefetch or 2) if workers else 0,
        pin_memory="yes" if pin else "no",
        images=args.images,
        images_per_s=round(rate, 1),
        per_worker=round(rate / max(1, workers), 1),
        startup_s=round(startup, 3),
        note=note,
    )


def _round(root: Path, args, best: str | None) -> list[Row]:
    """Every configuration once; the loader settings with ``best`` (else the fastest here)."""
    rows = [_row(root, d, w, args) for d in args.decoders for w in args.workers]
    w = max(args.workers)  # the loader settings are timed with the fastest at most workers
    if w > 0:
        best = best or max((r for r in rows if r.workers == w), key=lambda r: r.images_per_s).decode
        rows.append(_row(root, best, w, args, persistent=True, note="persistent"))
        rows.append(_row(root, best, w, args, prefetch=4, note="prefetch 4"))
        rows.append(_row(root, best, w, args, pin=True, note="pin_memory"))
    return rows


def run(args) -> list[Row]:
    """Every row of the table, measured in one temporary ImageFolder tree: ``--rounds`` passes
    over all configurations (so that a busy moment hits them alike), medians per row."""
    torch.set_num_threads(args.threads)  # as in DataLoader workers (one thread each)
    warnings.filterwarnings("ignore", message=".*pin_memory.*")  # said in the row instead
    size = tuple(int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="afictl-input-") as tmp:
        root = Path(tmp)
        make_jpegs(root, args.images, size)
        rounds = [_round(root, args, None)]
        best = (
            rounds[0][-1].decode
            if len(rounds[0]) > len(args.decoders) * len(args.workers)
            else None
        )
        rounds += [_round(root, args, best) for _ in range(args.rounds - 1)]
    rows = []
    for same in zip(*rounds, strict=True):
        rate = statistics.median(r.images_per_s for r in same)
        rows.append(
            same[0]._replace(
                images_per_s=round(rate, 1),
                per_worker=round(rate / max(1, same[0].workers), 1),
                startup_s=round(statistics.median(r.startup_s for r in same), 3),
            )
        )
    return rows


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=400, help="JPEGs generated (default 400)")
    p.add_argument("--size", default="500x375", help="WxH of the JPEGs (default 500x375)")
    p.add_argument("--batch-size", "-b", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2, help="epochs per configuration (median)")
    p.add_argument("--rounds", type=int, default=3, help="passes over all configurations")
    p.add_argument("--workers", "-j", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--decoders", nargs="+", default=list(DECODERS), choices=DECODERS)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    p.add_argument("--quick", action="store_true", help="a seconds-long run (tests)")
    p.add_argument("--format", "-f", default="table", choices=[f.value for f in Format])
    p.add_argument("--output", "-o", type=Path, default=None, help="file of results")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.size, args.batch_size, args.epochs, args.rounds = 16, "250x188", 8, 1, 1
        args.workers = [0, 1]
    return args


def main(argv: list[str] | None = None) -> list[Row]:
    """Run the benchmark, print (or write) the table; returns the rows."""
    args = parse(argv)
    rows = run(args)
    render([r._asdict() for r in rows], args.format, args.output)
    return rows


if __name__ == "__main__":
    main()
