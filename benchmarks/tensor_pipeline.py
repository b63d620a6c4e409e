"""A training epoch on real small images against the bare training step, per input pipeline.

For each model (default resnet20 and afi_resnet20, batch 128): the bare step's images/s
(``afictl bench --mode train``: random tensors already in memory, no data at all), then one
training epoch of ``afictl train`` on an ImageFolder of small images (``--data``, e.g. the
CIFAR-10 JPEGs of ../shared/data extracted somewhere) through each ``--pipeline``, whose
images/s ``afictl train`` measures over the whole epoch (waiting for data included). The ratio
epoch/bare step is what the pipeline costs: 1.0 means it costs nothing.

Then the tensor pipeline's start-up: time from nothing to the first augmented batch when the
decoded split is not cached (decoding every image) and when it is (a second run), and the
memory the decoded split holds.

    python benchmarks/tensor_pipeline.py --data /tmp/cifar10-jpeg --images 10000
    python benchmarks/tensor_pipeline.py --data DIR --images 512 --archs resnet20 -f json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from afictl.profiling.bench import bench
from afictl.render import Format, render

PIPELINES = ("loader", "tensor")


def bare_step(arch: str, batch_size: int, repeats: int) -> float:
    """images/s of the training step alone (the AFI row's own or its baseline's)."""
    from afictl.models import counterpart, get_model_info

    info = get_model_info(arch)
    afi = arch if info.is_afi else counterpart(arch)
    (row,) = bench([afi], modes=("train",), batch_size=batch_size, num_classes=10, repeats=repeats)
    return row.images_per_sec if info.is_afi else row.baseline_images_per_sec


def epoch_rate(arch: str, data: Path, images: int, batch_size: int, pipeline: str) -> float:
    """images/s of one ``afictl train`` epoch (metrics.csv's ``images_per_sec``)."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "afictl", "train", "-a", arch, "-d", "imagefolder"]
        cmd += ["--data-root", str(data), "--data-size", str(images), "-e", "1"]
        cmd += ["-b", str(batch_size), "--pipeline", pipeline, "--run-dir", f"{out}/run"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        (metrics,) = Path(out).rglob("metrics.jsonl")
        return float(json.loads(metrics.read_text().splitlines()[-1])["images_per_sec"])


def startup(data: Path, images: int, batch_size: int) -> dict:
    """Seconds to the first augmented batch without and with the cache, the split's memory, and
    a whole second run's start-up to its first step."""
    from afictl.data import build_dataset
    from afictl.data.pipeline import choose_pipeline, tensor_loaders

    out, before = {}, os.environ.get("AFICTL_CACHE")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["AFICTL_CACHE"] = cache  # an empty cache: the first run decodes
        for label in ("first run (decodes)", "second run (cache hit)"):
            t0 = time.perf_counter()
            splits = tuple(
                build_dataset("imagefolder", data, s, input_size=32, size=images)
                for s in ("train", "eval")
            )
            pipe = choose_pipeline("tensor", "imagefolder", splits, 32)
            train, _ = tensor_loaders(
                pipe, "imagefolder", 32, batch_size, device="cpu", on_device=False, seed=0
            )
            next(iter(train))
            out[label] = time.perf_counter() - t0
        out["decoded MiB (train + eval)"] = (pipe.train.nbytes + pipe.eval.nbytes) / 2**20
        out["second run: `afictl train` start to its first step (s)"] = first_step(data, images)
    if before is None:
        os.environ.pop("AFICTL_CACHE", None)
    else:
        os.environ["AFICTL_CACHE"] = before
    return out


def first_step(data: Path, images: int) -> float:
    """Seconds from starting ``afictl train`` (Python, torch, the model, the cached data) to
    its first training step's progress line (``--log-interval 1``); the cache is warm."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "afictl", "train", "-a", "resnet20", "-d", "imagefolder"]
        cmd += ["--data-root", str(data), "--data-size", str(images), "-e", "1"]
        cmd += ["--pipeline", "tensor", "--log-interval", "1", "--run-dir", f"{out}/run"]
        cmd += ["--no-tensorboard"]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seen = []
        for line in proc.stderr:
            if line.startswith("epoch 1/1 [") and "]" in line:
                seconds = time.perf_counter() - t0
                break
            seen.append(line)
        else:
            raise RuntimeError("afictl train printed no step: " + "".join(seen)[-2000:])
        proc.kill()
        proc.wait()
        return seconds


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="ImageFolder: train/ and test/")
    ap.add_argument("--images", type=int, default=10000, help="training images (--data-size)")
    ap.add_argument("--archs", nargs="+", default=["resnet20", "afi_resnet20"])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7, help="bare-step timing repeats")
    ap.add_argument("-f", "--format", default="table", choices=[f.value for f in Format])
    args = ap.parse_args(argv)
    rows = []
    for arch in args.archs:
        bare = bare_step(arch, args.batch_size, args.repeats)
        row = {"arch": arch, "bare_step_images_per_sec": round(bare, 1)}
        for pipeline in PIPELINES:
            rate = epoch_rate(arch, args.data, args.images, args.batch_size, pipeline)
            row[f"{pipeline}_images_per_sec"] = round(rate, 1)
            row[f"{pipeline}_ratio"] = round(rate / bare, 3)
        rows.append(row)
        print(f"{arch}: done", file=sys.stderr)
    render(rows, args.format)
    start = startup(args.data, args.images, args.batch_size)
    render([{"measure": k, "value": round(v, 3)} for k, v in start.items()], args.format)
    return rows


if __name__ == "__main__":
    main()
