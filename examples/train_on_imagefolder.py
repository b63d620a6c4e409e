"""Train an AFI-Net on your own ImageFolder (<root>/train/<class>/*.jpg and <root>/val/...).

    python examples/train_on_imagefolder.py --data-root /path/to/folder --arch afi_resnet20
    python examples/train_on_imagefolder.py --demo /tmp/demo   # makes a tiny folder first

With ``--demo DIR`` everything goes under DIR: the images in DIR/train, DIR/val and the run in
DIR/runs/<arch>-imagefolder-<time>/ (never ./runs, where a demo run would become the "newest
run" that bare `afictl gradcam`, `selectivity` and `report` use).

The same as `afictl train --data imagefolder ...`, through the library: resolve a
configuration (recipe < config file < options), then `train` it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from afictl.train import default_run_dir, resolve_config, train


def make_demo_folder(root: Path, per_class: int = 12, size: int = 32) -> Path:
    """Two classes (bright squares vs dark discs) in train/ and val/."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for split in ("train", "val"):
        for c, name in enumerate(("discs", "squares")):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = rng.uniform(0, 0.3, (size, size, 3))
                cx, cy = rng.uniform(0.3, 0.7, 2)
                mask = (
                    (abs(xx - cx) < 0.2) & (abs(yy - cy) < 0.2)
                    if c
                    else (xx - cx) ** 2 + (yy - cy) ** 2 < 0.04
                )
                img[mask] = rng.uniform(0.6, 1.0, 3)
                Image.fromarray((img * 255).astype(np.uint8)).save(root / split / name / f"{i}.png")
    return root


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path)
    p.add_argument("--demo", type=Path, help="write a tiny demo ImageFolder here and train on it")
    p.add_argument("--arch", default="afi_resnet20")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--run-dir", type=Path, help="default: DIR/runs/... (--demo), else ./runs/...")
    args = p.parse_args(argv)
    root = make_demo_folder(args.demo) if args.demo else args.data_root
    if root is None:
        p.error("give --data-root or --demo")
    if args.demo and args.run_dir is None:
        args.run_dir = default_run_dir(args.arch, "imagefolder", root=args.demo / "runs")
    cfg = resolve_config(
        {
            "arch": args.arch,
            "dataset": "imagefolder",
            "data_root": str(root),
            "epochs": args.epochs,
            "batch_size": 8,
            "lr": 0.05,
            "device": "cpu",
            "workers": 0,
            "run_dir": str(args.run_dir) if args.run_dir else None,
        }
    )
    result = train(cfg)
    print(
        f"{result.arch}: top-1 {result.eval_top1:.1f}% after {result.epochs} epochs "
        f"-> {result.run_dir}"
    )
    return result.to_dict()


if __name__ == "__main__":
    main()
