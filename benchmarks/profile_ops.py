"""Per-operator profile of an AFI model and its baseline, interleaved (docs/PERFORMANCE.md).

The two models run alternately after warm-up; each step is timed unprofiled (process CPU
time) and then profiled with ``torch.profiler``; the table gives the self CPU time per
operator, averaged over the repeats, for the operators that are among the top ``--top`` of
either model.

    python benchmarks/profile_ops.py --arch afi_resnet110 --mode infer --threads 1 --repeats 3
    python benchmarks/profile_ops.py --arch afi_resnet50 --batch-size 16 --input-size 224 \\
        --mode train
"""

from __future__ import annotations

import argparse
import collections
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from afictl.models import create_model, get_model_info
from afictl.profiling.bench import configure_allocator


def main(argv: list[str] | None = None) -> dict[str, collections.Counter]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="afi_resnet110")
    ap.add_argument("--mode", choices=["infer", "train"], default="infer")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--input-size", type=int)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    configure_allocator(True)
    info = get_model_info(args.arch)
    size = args.input_size or info.input_size
    torch.manual_seed(0)
    models = {name: create_model(name) for name in (args.arch, info.baseline)}
    x = torch.randn(args.batch_size, 3, size, size)
    y = torch.randint(0, info.num_classes, (args.batch_size,))

    def step(model) -> None:
        if args.mode == "infer":
            model.eval()
            with torch.no_grad():
                model(x)
        else:
            model.train()
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()

    for model in models.values():
        for _ in range(2):
            step(model)
    self_ms = {name: collections.Counter() for name in models}
    step_ms = collections.Counter()
    for _ in range(args.repeats):
        for name, model in models.items():
            start = time.process_time()
            step(model)
            step_ms[name] += 1000 * (time.process_time() - start) / args.repeats
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                step(model)
            for event in prof.key_averages():
                self_ms[name][event.key] += event.self_cpu_time_total / 1000 / args.repeats
    names = list(models)
    print(
        f"{args.arch} vs {info.baseline}, {args.mode}, batch {args.batch_size}, {size}x{size}, "
        f"{args.threads} thread(s), {args.repeats} repeats; ms per step unprofiled (CPU time): "
        + ", ".join(f"{n} {step_ms[n]:.1f}" for n in names)
    )
    keys = set()
    for name in names:
        keys |= {k for k, _ in self_ms[name].most_common(args.top)}
    print("| operator (self CPU ms per step) | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for key in sorted(keys, key=lambda k: -max(self_ms[n][k] for n in names)):
        print(f"| `{key}` | " + " | ".join(f"{self_ms[n][key]:.1f}" for n in names) + " |")
    print(
        "| total profiled | " + " | ".join(f"{sum(self_ms[n].values()):.1f}" for n in names) + " |"
    )
    return self_ms


if __name__ == "__main__":
    main()
