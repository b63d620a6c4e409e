"""Training-loop overhead: ``afictl train`` against a bare PyTorch loop, same model and batches.

Both train a fresh model on the same in-memory synthetic images (``--data synthetic``), batch
by batch, with SGD. The bare loop is ``zero_grad / forward / cross_entropy / backward / step``
over pre-made batches; ``afictl train`` adds its data loader, metrics, LR schedule, signal and
non-finite checks and progress. Runs alternate (bare, afictl, bare, ...) after one warm-up each,
so machine noise hits both alike; the ratio is the median of the (afictl / bare) ratios of
adjacent runs. Target: >= 0.97.

    python benchmarks/train_overhead.py --arch resnet20 --batch-size 64 --steps 30 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from afictl.data.datasets import SyntheticDataset
from afictl.models import create_model
from afictl.train import resolve_config, train


def bare_loop(arch: str, images: torch.Tensor, targets: torch.Tensor, batch: int) -> float:
    """Images per second of the plainest loop over ``images`` in batches."""
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    n = len(images) // batch * batch
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        x, y = images[i : i + batch], targets[i : i + batch]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return n / (time.perf_counter() - t0)


def afictl_loop(arch: str, n: int, batch: int, run_dir: Path) -> float:
    """Images per second of the training epoch of ``afictl train --data synthetic``."""
    cfg = resolve_config(
        {
            "arch": arch,
            "dataset": "synthetic",
            "data_size": n,
            "batch_size": batch,
            "epochs": 1,
            "lr": 0.01,
            "recipe": "paper-cifar",
            "workers": 0,
            "device": "cpu",
            "run_dir": str(run_dir),
            "tensorboard": False,
        }
    )
    return train(cfg, overwrite=True).images_per_sec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.steps * args.batch_size
    data = SyntheticDataset(n, 32, seed=0)  # the very images `--data synthetic` trains on
    images, targets = data.images, torch.tensor(data.targets)
    bare, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats + 1):  # repeat 0 warms both up and is dropped
            b = bare_loop(args.arch, images, targets, args.batch_size)
            a = afictl_loop(args.arch, n, args.batch_size, Path(tmp) / "run")
            if rep:
                bare.append(b)
                ours.append(a)
    result = {
        "arch": args.arch,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "bare_images_per_sec": round(statistics.median(bare), 1),
        "afictl_images_per_sec": round(statistics.median(ours), 1),
        # runs next to each other share the machine's load: the median of the pair ratios is
        # the robust figure on a shared machine; the ratio of medians is given too
        "ratio": round(statistics.median(a / b for a, b in zip(ours, bare, strict=True)), 3),
        "ratio_of_medians": round(statistics.median(ours) / statistics.median(bare), 3),
        "bare_runs": [round(x, 1) for x in bare],
        "afictl_runs": [round(x, 1) for x in ours],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
