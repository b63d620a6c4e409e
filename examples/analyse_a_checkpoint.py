"""Run the paper's analyses on a checkpoint: Grad-CAM (Figure 3), class selectivity (Figure 6)
and the AFI attention weights (Figure 2, Eq. 8).

    python examples/analyse_a_checkpoint.py runs/afi_resnet20-shapes-*/best.pt image.jpg
    python examples/analyse_a_checkpoint.py --demo /tmp/analyses   # trains a tiny model first

Every step is one `afictl` command; this script only chains them and says where the outputs are.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from afictl.cli.app import main as afictl


def run(*args: str) -> None:
    try:
        afictl(list(args))
    except SystemExit as exc:
        if exc.code:
            raise


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?", type=Path)
    p.add_argument("image", nargs="?", type=Path)
    p.add_argument(
        "--demo", type=Path, help="train a tiny AFI-ResNet-20 on shapes in this folder first"
    )
    args = p.parse_args(argv)
    out = args.demo or Path("analyses")
    out.mkdir(parents=True, exist_ok=True)
    ckpt, image = args.checkpoint, args.image
    if args.demo:
        run(
            "train",
            "--arch",
            "afi_resnet20",
            "--data",
            "shapes",
            "--data-size",
            "64",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--device",
            "cpu",
            "--run-dir",
            str(out / "run"),
        )
        ckpt = out / "run" / "best.pt"
        image = out / "image.png"
        yy, xx = np.mgrid[0:64, 0:64]
        disc = ((xx - 32) ** 2 + (yy - 32) ** 2 < 300)[..., None] * np.array([230, 40, 40])
        Image.fromarray(np.uint8(20 + disc)).save(image)
    if ckpt is None or image is None:
        p.error("give CHECKPOINT and IMAGE, or --demo DIR")
    run("gradcam", str(image), "--checkpoint", str(ckpt), "--figure", str(out / "gradcam.png"))
    run(
        "selectivity",
        "--checkpoint",
        str(ckpt),
        "--stage",
        "conv3",
        "--max-batches",
        "2",
        "--out-dir",
        str(out),
    )
    run("features", str(image), "--checkpoint", str(ckpt), "--figure", str(out / "features.png"))
    print(f"figures and tables in {out}/")
    return out


if __name__ == "__main__":
    main()
