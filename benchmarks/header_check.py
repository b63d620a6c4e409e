"""What the safety of image decoding costs per file (afictl/data/decode.py): reading the size a
file claims from its header (``claimed_size`` + ``check_claim``) against decoding it, and PNGs
decoded by PIL (what afictl does) against torchvision's ``decode_image`` (what it did).

    python benchmarks/header_check.py --files 500
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torchvision.io import decode_image

from afictl.data.decode import check_claim, claimed_size


def _encoded(fmt: str, size: tuple[int, int], n: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        out.append(buf.getvalue())
    return out


def _us_per_file(fn: Callable[[bytes], object], files: list[bytes], rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for data in files:
            fn(data)
        times.append((time.perf_counter() - start) / len(files))
    return 1e6 * statistics.median(times)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=500)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for fmt, size in (("PNG", (32, 32)), ("JPEG", (32, 32)), ("JPEG", (500, 375))):
        files = _encoded(fmt, size, args.files)
        check = _us_per_file(lambda d: check_claim(claimed_size(d)), files)
        pil = _us_per_file(lambda d: Image.open(io.BytesIO(d)).convert("RGB"), files)
        tv = _us_per_file(
            lambda d: decode_image(torch.frombuffer(bytearray(d), dtype=torch.uint8)), files
        )
        rows.append(
            {
                "format": fmt,
                "size": f"{size[0]}x{size[1]}",
                "check_us": check,
                "pil_decode_us": pil,
                "torchvision_decode_us": tv,
            }
        )
    print("| file | header check, us | PIL decode, us | torchvision decode_image, us |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['format']} {r['size']} | {r['check_us']:.1f} | {r['pil_decode_us']:.1f} "
            f"| {r['torchvision_decode_us']:.1f} |"
        )
    return rows


if __name__ == "__main__":
    main()
