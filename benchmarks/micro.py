"""Micro-benchmarks behind docs/PERFORMANCE.md, sections 1-2 (one thread by default).

- ``convs``: 3x3 convolutions of the CIFAR stages at their full and halved widths, plain and
  as a paired two-group form (image pairs side by side in the channels: a 16 -> 8
  convolution becomes a 2-group 32 -> 16 one), forward and forward+backward;
- ``sums``: the weighted sum of n features of stage 1 as an ``addcmul_`` chain, one ``bmm``
  over a stacked buffer, and a plain ``sum`` over the same bytes (the bandwidth floor);
- ``cache``: a 16 -> 16 convolution with warm buffers, after a ``bmm`` over a stage buffer, and
  after streaming 40 MiB.

    python benchmarks/micro.py convs sums cache
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from afictl.profiling.bench import configure_allocator


def timed(fn: Callable[[], object], n: int = 30) -> float:
    """Median CPU milliseconds of ``fn`` (process time: preemption by other jobs not counted)."""
    for _ in range(3):
        fn()
    samples = []
    for _ in range(n):
        start = time.process_time()
        fn()
        samples.append(time.process_time() - start)
    samples.sort()
    return 1000 * samples[len(samples) // 2]


def paired(x, w):
    """The paired form: (B, C, H, W) viewed as (B/2, 2C, H, W), one two-group convolution."""
    b, c, h, wd = x.shape
    out = F.conv2d(x.view(b // 2, 2 * c, h, wd), torch.cat((w, w)), None, 1, 1, 1, 2)
    return out.view(b, w.shape[0], out.shape[2], out.shape[3])


def convs(batch: int) -> None:
    print("| convolution | forward ms | fwd+bwd ms |\n|---|---|---|")
    for cin, cout, hw in [
        (16, 16, 32),
        (16, 8, 32),
        (32, 32, 16),
        (32, 16, 16),
        (64, 64, 8),
        (64, 32, 8),
    ]:
        x = torch.randn(batch, cin, hw, hw, requires_grad=True)
        w = torch.randn(cout, cin, 3, 3, requires_grad=True)
        g = torch.randn(batch, cout, hw, hw)
        forms = [("plain", lambda x, w: F.conv2d(x, w, padding=1))]
        if cout < 16:
            forms.append(("paired", paired))
        for name, conv in forms:
            with torch.no_grad():
                fwd = timed(lambda conv=conv, x=x, w=w: conv(x, w))
            both = timed(lambda conv=conv, x=x, w=w, g=g: conv(x, w).backward(g), 15)
            print(f"| {cin} -> {cout} at {hw}x{hw}, {name} | {fwd:.2f} | {both:.2f} |")


def sums(batch: int) -> None:
    c, hw, n = 8, 1024, 17
    feats = [torch.randn(batch, c, hw) for _ in range(n)]
    buf = torch.stack(feats, dim=2)  # (B, C, n, HW), the stage buffer's layout
    w = torch.rand(batch, n, c)
    rows = w.transpose(1, 2).reshape(batch * c, 1, n)

    def chain():
        out = feats[0] * w[:, 0, :, None]
        for j in range(1, n):
            out.addcmul_(feats[j], w[:, j, :, None])
        return out

    print("| stage-1 weighted sum, 17 inputs | ms |\n|---|---|")
    print(f"| addcmul_ chain | {timed(chain):.2f} |")
    print(
        "| one bmm over the buffer | "
        f"{timed(lambda: torch.bmm(rows, buf.view(batch * c, n, hw))):.2f} |"
    )
    print(f"| sum over the same bytes | {timed(lambda: buf.sum(2)):.2f} |")


def cache(batch: int) -> None:
    x = torch.randn(batch, 16, 32, 32)
    w = torch.randn(16, 16, 3, 3)
    buf = torch.randn(batch, 8, 18, 1024)
    mixing = torch.rand(batch * 8, 1, 12)
    big = torch.randn(40 * 2**20 // 4)
    with torch.no_grad():
        warm = timed(lambda: F.conv2d(x, w, padding=1))
        bmm = timed(lambda: torch.bmm(mixing, buf[:, :, :12].reshape(batch * 8, 12, 1024)))
        after_bmm = (
            timed(
                lambda: (
                    torch.bmm(mixing, buf[:, :, :12].reshape(batch * 8, 12, 1024)),
                    F.conv2d(x, w, padding=1),
                )
            )
            - bmm
        )
        stream = timed(lambda: big.add_(1.0))
        after_stream = timed(lambda: (big.add_(1.0), F.conv2d(x, w, padding=1))) - stream
    print("| 16 -> 16 convolution | ms |\n|---|---|")
    print(f"| warm | {warm:.2f} |\n| after a bmm over the stage buffer | {after_bmm:.2f} |")
    print(f"| after streaming 40 MiB | {after_stream:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="+", choices=["convs", "sums", "cache"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    configure_allocator(True)
    for what in args.what:
        {"convs": convs, "sums": sums, "cache": cache}[what](args.batch_size)


if __name__ == "__main__":
    main()
