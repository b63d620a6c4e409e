"""Compare variants of an AFI model against its baseline, interleaved.

Every variant of the AFI model and the baseline run in one process, one step each in turn
(baseline, variant 1, baseline, variant 2, ...), after warm-up; each variant's ratio is the
median over repeats of (baseline time / variant time) of the steps timed next to each other.
The variants are the model as built, the model with ``memory_efficient=True``, and an upper
bound that is not an AFI-Net: AFI shapes with no aggregation at all (see
:func:`no_aggregation`), the most any implementation of Eq. 2 could reach here.
docs/PERFORMANCE.md records results.

    python benchmarks/afi_variants.py --arch afi_resnet110 --mode infer --batch-size 64 \\
        --threads 1 --timer cpu
    python benchmarks/afi_variants.py --arch afi_resnet50 --batch-size 16 --input-size 224 \\
        --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
import torch.nn.functional as F

from afictl.layers import StageFeatures
from afictl.layers.afi_join import AFIJoin
from afictl.models import create_model, get_model_info
from afictl.profiling.bench import configure_allocator


@contextmanager
def no_aggregation() -> Iterator[None]:
    """Not an AFI-Net: an upper bound on any implementation of the aggregation.

    Each AFI block keeps its shapes (halved first convolution, [X(i), R(i)] into the next
    one) but takes R(i) = X(i): no earlier feature is squeezed, scored or weighed. What is left
    is the convolutions, the ReLU and the concatenation, so the ratio measured with it is the
    most that a free Eq. 2 could give on this machine.
    """
    old = AFIJoin._join, StageFeatures.append, StageFeatures.integrate

    def bound(self, xi, r, attn):
        return torch.cat([xi, xi], dim=1)

    AFIJoin._join = bound
    StageFeatures.append = lambda self, x: self.features.append(x)
    StageFeatures.integrate = lambda self, afi, n: self.features[0]
    try:
        yield
    finally:
        AFIJoin._join, StageFeatures.append, StageFeatures.integrate = old


# name -> (model kwargs, contexts to enter around each step)
VARIANTS = {
    "the model": ({}, lambda: []),
    "memory_efficient=True": ({"memory_efficient": True}, lambda: []),
    "bound: no aggregation (R(i) = X(i); not the model)": ({}, lambda: [no_aggregation()]),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="afi_resnet110")
    ap.add_argument("--mode", choices=["infer", "train"], default="infer")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--input-size", type=int)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--no-allocator-cache", action="store_true")
    ap.add_argument(
        "--timer",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: process CPU time (ignores preemption on a shared machine; one thread)",
    )
    ap.add_argument("--only", nargs="*", help="substrings of the variants to run")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator = configure_allocator(not args.no_allocator_cache)
    info = get_model_info(args.arch)
    size = args.input_size or info.input_size
    x = torch.randn(args.batch_size, 3, size, size)
    y = torch.randint(0, info.num_classes, (args.batch_size,))
    torch.manual_seed(0)
    base = create_model(info.baseline)
    variants = {
        k: v for k, v in VARIANTS.items() if not args.only or any(s in k for s in args.only)
    }
    models = {}
    for name, (kwargs, _) in variants.items():
        torch.manual_seed(0)
        models[name] = create_model(args.arch, **kwargs)

    clock = time.process_time if args.timer == "cpu" else time.perf_counter

    def step(model, contexts) -> float:
        with ExitStack() as stack:
            for c in contexts:
                stack.enter_context(c)
            start = clock()
            if args.mode == "infer":
                model.eval()
                with torch.inference_mode():
                    model(x)
            else:
                model.train()
                model.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
            return clock() - start

    for _ in range(2):
        step(base, [])
        for name, model in models.items():
            step(model, variants[name][1]())
    ratios = {name: [] for name in models}
    times = {name: [] for name in models}
    base_times = []
    for _ in range(args.repeats):
        for name, model in models.items():
            tb = step(base, [])
            tv = step(model, variants[name][1]())
            base_times.append(tb)
            times[name].append(tv)
            ratios[name].append(tb / tv)
    print(
        f"{args.arch} vs {info.baseline}, {args.mode}, batch {args.batch_size}, {size}x{size}, "
        f"{torch.get_num_threads()} threads, allocator {allocator}, {args.timer} timer, "
        f"{args.repeats} repeats; "
        f"baseline median {1000 * statistics.median(base_times):.1f} ms"
    )
    print("| variant | ms / step (median) | speed ratio (median) | min | max |")
    print("|---|---|---|---|---|")
    for name in models:
        r = ratios[name]
        print(
            f"| {name} | {1000 * statistics.median(times[name]):.1f} | {statistics.median(r):.3f} "
            f"| {min(r):.3f} | {max(r):.3f} |"
        )


if __name__ == "__main__":
    main()
