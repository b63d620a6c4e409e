"""Every CUDA path of afictl in one run, reported in one table: ready for the day a GPU is lent.

    python benchmarks/gpu_check.py --device cuda                 # one GPU, under 8 minutes
    python benchmarks/gpu_check.py --device cpu --tiny           # the same sequence, seconds
    python benchmarks/gpu_check.py --device cuda -f markdown -o gpu-check.md

Rows (docs/PERFORMANCE.md, "GPU check", says what each shows): a few training steps of the AFI
model and its baseline through the real ``afictl train`` (in this process) in fp32, ``--amp
bf16``, ``--amp fp16`` (GradScaler), ``--channels-last`` and ``--compile``, and with
``--model-ema --mixup 0.2``; the memory-efficient AFI join (recomputed in backward) against
the stored one (outputs and gradients, fp64); ``afictl memory`` (Table 6) and ``afictl bench
--mode train|infer``; a 1-process torchrun driving DDP and afictl's collectives over NCCL.
Every training row checks that the loss is finite. ``--tiny`` swaps in the CIFAR-size models
at 32 pixels, fewer steps and gloo; a row that cannot run on the CPU says "n/a on cpu" and
why. Exit status 1 when any
row FAILs, 2 for a bad command line.
"""

# no `from __future__ import annotations`: tests load this file without registering it in
# sys.modules, where dataclasses would look string annotations up
import argparse
import contextlib
import functools
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from afictl.checkpoint import load_checkpoint
from afictl.cli.app import main as afictl_main
from afictl.models import create_model
from afictl.render import Format, render

OK, FAIL, NA = "ok", "FAIL", "n/a on cpu"


class NotApplicable(Exception):
    """The step cannot run on this device; the message says why."""


class CheckFailed(Exception):
    """The step ran and is wrong; the message says how."""


@dataclass(frozen=True)
class Row:
    check: str
    status: str
    seconds: float
    key: str  # the one number that says the step worked (e.g. "loss 6.93")
    detail: str


@dataclass(frozen=True)
class Plan:
    """Sizes of one run: the ImageNet models on a GPU, the CIFAR ones for ``--tiny``."""

    device: str
    tiny: bool
    afi: str
    base: str
    deep_afi: str  # the second bench pair (AFI-ResNet-110 and ResNet-110)
    deep_base: str
    size: int
    batch: int
    steps: int
    work: Path

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"


def make_plan(*, device: str, tiny: bool, work: Path) -> Plan:
    """The sizes for ``device``: ResNet-50 pairs at 224 (batch 32, 4 steps), or for ``tiny``
    ResNet-20 pairs at 32 pixels (batch 4, 2 steps)."""
    if tiny:
        return Plan(
            device, True, "afi_resnet20", "resnet20", "afi_resnet20", "resnet20", 32, 4, 2, work
        )
    return Plan(
        device, False, "afi_resnet50", "resnet50", "afi_resnet110", "resnet110", 224, 32, 4, work
    )


def cli(argv: list[str]) -> tuple[int, str]:
    """``afictl ARGV`` in this process: (exit code, what it wrote to stderr)."""
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            afictl_main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, err.getvalue()


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(nothing on stderr)"


@contextlib.contextmanager
def light_compile(on: bool) -> Iterator[str]:
    """``torch.compile`` with the ``eager`` backend while ``on`` (CPU ``--tiny``): dynamo's graph
    capture of the model runs, without inductor's C++ codegen (minutes on two cores; AOT
    autograd alone costs 30 s there)."""
    if not on:
        yield "inductor"
        return
    original = torch.compile
    torch.compile = functools.partial(original, backend="eager")
    try:
        yield "eager (dynamo only; inductor on cuda)"
    finally:
        torch.compile = original


def train_run(plan: Plan, arch: str, tag: str, *extra: str) -> tuple[dict, dict]:
    """A few steps and one evaluation of ``afictl train --data synthetic``: (result, last.pt)."""
    run_dir = plan.work / f"{arch}-{tag}"
    out = run_dir.with_suffix(".json")
    code, err = cli(
        [
            *("train", "--arch", arch, "--data", "synthetic"),
            *("--data-size", plan.batch * plan.steps, "--input-size", plan.size),
            *("--batch-size", plan.batch, "--epochs", 1, "--workers", 0),
            *("--device", plan.device, "--run-dir", run_dir, "--overwrite"),
            *("--format", "json", "--output", out, *extra),
        ]
    )
    if code:
        raise CheckFailed(f"afictl train exited {code}: {_last_line(err)}")
    result = json.loads(out.read_text())
    loss = result.get("train_loss")
    if not (isinstance(loss, float) and math.isfinite(loss)):
        raise CheckFailed(f"train loss is {loss!r}, not a finite number")
    return result, load_checkpoint(run_dir / "last.pt")


def train_step(plan: Plan, arch: str, variant: str) -> tuple[str, str]:
    """One training row: ``variant`` is fp32, bf16, fp16, channels-last or compile."""
    extra = {
        "fp32": (),
        "bf16": ("--amp", "bf16"),
        "fp16": ("--amp", "fp16"),
        "channels-last": ("--channels-last",),
        "compile": ("--compile",),
    }[variant]
    if variant == "fp16" and not plan.cuda:
        run_dir = plan.work / f"{arch}-fp16"  # in case a refusal ever came after the folder
        code, err = cli(
            [*("train", "--arch", arch, "--data", "synthetic", "--device", "cpu"), *extra]
            + ["--run-dir", str(run_dir)]
        )
        if code == 2 and "needs CUDA" in err:
            said = _last_line(err).removeprefix("afictl: error: ")
            raise NotApplicable(
                f"afictl keeps fp16 for CUDA ({said}); torch itself has CPU fp16 autocast"
            )
        raise CheckFailed(f"--amp fp16 on cpu: expected the 'needs CUDA' error, got exit {code}")
    with light_compile(variant == "compile" and not plan.cuda) as backend:
        result, ckpt = train_run(plan, arch, variant, *extra)
    detail = f"{result['images_per_sec']:.0f} img/s, {plan.steps} steps of {plan.batch}"
    if variant == "fp16":
        scale = ckpt["scaler"].get("scale")
        if not scale:
            raise CheckFailed("--amp fp16 saved no GradScaler state")
        detail += f", GradScaler scale {scale:g}"
    if variant == "compile":
        detail += f", backend {backend}"
    return f"loss {result['train_loss']:.4f}", detail


def ema_mixup_step(plan: Plan) -> tuple[str, str]:
    """``--model-ema --mixup 0.2``: trains, and evaluates the EMA weights (eval_top1_ema)."""
    result, ckpt = train_run(plan, plan.afi, "ema-mixup", "--model-ema", "--mixup", "0.2")
    row = ckpt["metrics"][-1]
    if "eval_top1_ema" not in row:
        raise CheckFailed("metrics have no eval_top1_ema (the EMA weights were not evaluated)")
    return f"loss {result['train_loss']:.4f}", f"eval_top1_ema {row['eval_top1_ema']:.2f}%"


def _step_of(model, x, target) -> dict[str, torch.Tensor]:
    """Output and every parameter gradient of one training forward/backward."""
    model.zero_grad(set_to_none=True)
    out = model(x)
    F.cross_entropy(out.float(), target).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return {"output": out.detach().clone(), **grads}


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = max(a.abs().max().item(), b.abs().max().item(), torch.finfo(a.dtype).tiny)
    return (a - b).abs().max().item() / scale


def joins_equal(plan: Plan) -> float:
    """Largest relative difference between one fp64 training step of the AFI model with the
    memory-efficient join (recomputed in backward) and with the stored one."""
    torch.manual_seed(0)
    dev = torch.device(plan.device)
    size = 16 if plan.tiny else 64  # 16 px: stage 3 of a CIFAR model is 4 x 4
    x = torch.randn(4, 3, size, size, device=dev, dtype=torch.float64)
    target = torch.arange(4, device=dev) % 10
    steps = []
    for efficient in (False, True):
        torch.manual_seed(0)
        model = create_model(plan.afi, num_classes=10, memory_efficient=efficient)
        steps.append(_step_of(model.to(dev, torch.float64), x, target))
    stored, recomputed = steps
    return max(_rel_diff(recomputed[k], stored[k]) for k in stored)


def joins_step(plan: Plan) -> tuple[str, str]:
    """Memory-efficient = stored within 1e-9 in fp64, relative to the largest value compared.
    (fp32 is no test of the join here: train-mode BatchNorm over 2 x 2 maps magnifies rounding
    to 1e-1 between any two orders of the same sums.)"""
    tol = 1e-9
    worst = joins_equal(plan)
    if not worst <= tol:
        raise CheckFailed(f"memory-efficient and stored differ by {worst:.3g} (relative) > {tol:g}")
    return f"rel diff {worst:.2g}", f"{plan.afi} outputs and gradients, fp64, <= {tol:g}"


#: unit roundoff of each precision: the size of the perturbation whose effect sets the tolerance
_ROUNDOFF = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
#: how many times the model's own sensitivity a lower precision's outputs may differ from fp64
#: (measured on the CPU over 8 inputs: fp32 5.5-9.6x, bf16 1.6-2.5x; GPU convolution
#: algorithms round differently, hence the room)
_SLACK = 50.0


def _precision_step(plan: Plan, dtype: torch.dtype, x64: torch.Tensor, perturb: bool = False):
    """One training step of the AFI model (seeded weights) in ``dtype`` (fp32: the model and
    input in fp32; bf16/fp16: autocast, as ``--amp`` trains) or in fp64 with the input
    perturbed elementwise by +-(the unit roundoff of ``dtype``)."""
    torch.manual_seed(0)
    model = create_model(plan.afi, num_classes=10).to(plan.device)
    target = torch.arange(x64.shape[0], device=x64.device) % 10
    if dtype == torch.float64:
        model = model.double()
        sign = torch.randint(0, 2, x64.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
        x = x64 * (1 + _ROUNDOFF[perturb] * sign.to(x64)) if perturb else x64
        return _step_of(model, x, target)
    if dtype == torch.float32:
        return _step_of(model, x64.float(), target)
    with torch.autocast(plan.device, dtype=dtype):
        return _step_of(model, x64.float(), target)


def _distance(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> float:
    """Relative distance (norm) of the outputs. Not the gradients: a ReLU whose input rounds
    to the other side of 0 changes a step's gradients discontinuously (fp32 on the CPU, 3 of
    8 inputs: 8,000-47,000 x the sensitivity, while the outputs stayed within 10 x)."""
    a, b = got["output"].double(), want["output"].double()
    return ((a - b).norm() / b.norm().clamp_min(torch.finfo(torch.float64).tiny)).item()


def precision_step(plan: Plan, dtype: torch.dtype) -> tuple[str, str]:
    """fp32 / bf16 / fp16 against fp64: the outputs of one training step differ from the
    fp64 step's by at most _SLACK times what the fp64 model itself does when its input moves
    by the precision's rounding (measured here, in the same run), so that a row fails when the
    code is wrong, not when the model's conditioning magnifies rounding."""
    if dtype == torch.float16 and not plan.cuda:
        raise NotApplicable("the fp16 comparison needs CUDA (afictl trains fp16 on CUDA only)")
    # 32 px, batch 8: train-mode BatchNorm over maps of 8 x 8 or more (over 2 x 2 maps it
    # magnifies any rounding a hundredfold, and every precision would pass)
    size = 32 if plan.tiny else 128
    noise = torch.Generator().manual_seed(0)
    x64 = torch.randn(8, 3, size, size, dtype=torch.float64, generator=noise).to(plan.device)
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        ref = _precision_step(plan, torch.float64, x64)
        sensitivity = _distance(_precision_step(plan, torch.float64, x64, perturb=dtype), ref)
        got = _distance(_precision_step(plan, dtype, x64), ref)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    ratio = got / max(sensitivity, torch.finfo(torch.float64).tiny)
    name = str(dtype).removeprefix("torch.")
    detail = (
        f"outputs {got:.2g} from fp64; the fp64 model's move {sensitivity:.2g} under a "
        f"{name}-rounding perturbation of the input"
    )
    if not ratio <= _SLACK:
        raise CheckFailed(f"{ratio:.3g} x the model's own sensitivity > {_SLACK:g}: {detail}")
    return f"{ratio:.2g} x sensitivity", f"{plan.afi}: {detail} (<= {_SLACK:g} x)"


def memory_step(plan: Plan) -> tuple[str, str]:
    """``afictl memory`` (Table 6: the AFI model beside its baseline at batch 64): the exact
    account everywhere, and on CUDA the allocator's peaks, which must be there."""
    out = plan.work / "memory.json"
    batch = 8 if plan.tiny else 64
    code, err = cli(
        [
            *("memory", "--arch", plan.afi, "--batch-size", batch, "--device", plan.device),
            *("--format", "json", "--output", out),
        ]
    )
    if code:
        raise CheckFailed(f"afictl memory exited {code}: {_last_line(err)}")
    (row,) = json.loads(out.read_text())
    detail = f"batch {batch}, exact account {row['train_bytes'] / 2**20:,.0f} MiB train"
    if not plan.cuda:
        return f"train ratio {row['train_ratio']:.3f}", detail + " (CUDA peaks: cuda only)"
    cuda, base = row.get("cuda_train_bytes"), row.get("baseline_cuda_train_bytes")
    if not (cuda and base):
        raise CheckFailed("no CUDA allocator peaks (cuda_train_bytes) on --device cuda")
    detail += f"; CUDA peak {cuda / 2**20:,.0f} vs {base / 2**20:,.0f} MiB"
    return f"cuda train ratio {cuda / base:.3f}", detail


def bench_step(plan: Plan, arch: str, mode: str) -> tuple[str, str]:
    """``afictl bench --mode MODE``: images/s of ``arch`` against its baseline, interleaved."""
    out = plan.work / f"bench-{arch}-{mode}.json"
    if plan.tiny:
        batch, repeats, warmup, threads = 4, 1, 1, ("--threads", 1)
    else:
        batch, repeats, warmup, threads = (64 if "50" in arch else 128), 3, 3, ()
    code, err = cli(
        [
            *("bench", "--arch", arch, "--mode", mode, "--device", plan.device),
            *("--batch-size", batch, "--repeats", repeats, "--warmup", warmup),
            *("--format", "json", "--output", out, *threads),
        ]
    )
    if code:
        raise CheckFailed(f"afictl bench exited {code}: {_last_line(err)}")
    (row,) = json.loads(out.read_text())
    return (
        f"speed ratio {row['speed_ratio']:.3f}",
        f"{row['images_per_sec']:,.0f} vs {row['baseline_images_per_sec']:,.0f} img/s "
        f"({row['baseline']}), batch {batch}, {row['input_size']} px",
    )


def torchrun_step(plan: Plan) -> tuple[str, str]:
    """A 1-process torchrun: DDP and afictl's collectives over NCCL (gloo on the CPU).

    ``afictl train`` joins no process group for one process, so the worker (this file with
    ``--ddp-worker``) drives :mod:`afictl.train.distributed` itself."""
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"),
        *(__file__, "--ddp-worker", "--device", plan.device, "--arch", plan.afi),
        *("--ddp-size", str(plan.size)),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    if done.returncode:
        raise CheckFailed(f"torchrun exited {done.returncode}: {_last_line(done.stderr)}")
    report = json.loads([ln for ln in done.stdout.splitlines() if ln.startswith("{")][-1])
    if report["backend"] != ("nccl" if plan.cuda else "gloo") or not math.isfinite(report["loss"]):
        raise CheckFailed(f"unexpected worker report {report}")
    return f"loss {report['loss']:.4f}", (
        f"backend {report['backend']}, DDP on {report['device']}, all_reduce/broadcast ok"
        + ("" if plan.cuda else " (nccl needs cuda)")
    )


def ddp_worker(device: str, arch: str, size: int) -> None:
    """Under torchrun: two DDP steps of ``arch`` and each collective of afictl's DDP layer."""
    import torch.distributed as dist

    from afictl.train import distributed as D

    dev = D.pick_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10).to(dev)
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[dev.index] if dev.type == "cuda" else None
    )
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(8, 3, size, size, device=dev)
    y = torch.arange(8, device=dev) % 10
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(ddp(x), y)
        loss.backward()
        opt.step()
    total = D.all_reduce_sum([1.0, float(loss)], dev)
    assert total[0] == float(dist.get_world_size()) and not D.any_rank(False, dev)
    assert D.broadcast_object("rank0") == "rank0"
    D.sync_buffers(model)
    D.barrier()
    report = {"backend": dist.get_backend(), "loss": float(loss), "device": str(dev)}
    D.cleanup()
    print(json.dumps(report), flush=True)


def steps(plan: Plan) -> list[tuple[str, Callable[[], tuple[str, str]]]]:
    """Every row of the check, in order: (name, the step)."""
    rows = []
    for variant in ("fp32", "bf16", "fp16", "channels-last", "compile"):
        for arch in (plan.afi, plan.base):
            label = "fp16 + GradScaler" if variant == "fp16" else variant
            rows.append(
                (f"train {label} {arch}", functools.partial(train_step, plan, arch, variant))
            )
    rows += [
        (f"train ema + mixup {plan.afi}", functools.partial(ema_mixup_step, plan)),
        ("afi memory-efficient = stored fp64", functools.partial(joins_step, plan)),
        *(
            (f"afi {n} = fp64", functools.partial(precision_step, plan, d))
            for n, d in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16))
        ),
        (f"memory {plan.afi} (Table 6)", functools.partial(memory_step, plan)),
    ]
    for arch in (plan.afi, plan.deep_afi) if not plan.tiny else (plan.afi,):
        for mode in ("train", "infer"):
            rows.append((f"bench {mode} {arch}", functools.partial(bench_step, plan, arch, mode)))
    rows.append(("torchrun 1 process", functools.partial(torchrun_step, plan)))
    return rows


def run_step(name: str, step: Callable[[], tuple[str, str]], *, cuda: bool) -> Row:
    """One row: ok, n/a (CPU only: on a GPU every step must run) or FAIL with the reason."""
    start = time.perf_counter()
    try:
        key, detail = step()
        if cuda:  # an asynchronous CUDA error belongs to the step that launched the kernel
            torch.cuda.synchronize()
        status = OK
    except NotApplicable as exc:
        status, key, detail = (FAIL if cuda else NA), "", str(exc)
    except Exception as exc:  # a broken step is a row of the table, not the end of the check
        text = str(exc).splitlines()[0] if str(exc) else ""
        status, key = FAIL, ""
        detail = text if isinstance(exc, CheckFailed) else f"{type(exc).__name__}: {text}"
    if cuda:
        with contextlib.suppress(RuntimeError):  # after a sticky CUDA error: the row says it
            torch.cuda.empty_cache()
    return Row(name, status, round(time.perf_counter() - start, 2), key, detail)


def run_check(plan: Plan, select: list[str] | None = None) -> list[Row]:
    """Every step of ``plan`` (those whose name contains one of ``select``; the others are
    listed as skipped), each reported on stderr as it ends."""
    todo = steps(plan)
    rows = []
    for i, (name, step) in enumerate(todo, 1):
        if select and not any(s in name for s in select):
            rows.append(Row(name, "skipped", 0.0, "", "not selected (--select)"))
            continue
        row = run_step(name, step, cuda=plan.cuda)
        print(f"[{i}/{len(todo)}] {name}: {row.status} ({row.seconds:.1f} s)", file=sys.stderr)
        rows.append(row)
    return rows


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        print("gpu_check: error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        raise SystemExit(2)
    return name


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--tiny", action="store_true", help="CIFAR-size models, 32 px, few steps")
    p.add_argument("--format", "-f", choices=[f.value for f in Format], default="table")
    p.add_argument("--output", "-o", type=Path, help="file of the table (default: stdout)")
    p.add_argument("--select", action="append", help="run only rows whose name contains this")
    p.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--arch", default="afi_resnet20", help=argparse.SUPPRESS)
    p.add_argument("--ddp-size", type=int, default=32, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the check; 0 when no row FAILs, else 1."""
    args = _args(argv)
    device = _device(args.device)
    if args.ddp_worker:
        ddp_worker(device, args.arch, args.ddp_size)
        return 0
    where = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    threads = torch.get_num_threads()
    if args.tiny and device == "cpu":  # two busy cores: threads that wait on each other crawl
        torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="afictl-gpu-check-") as work:
            plan = make_plan(device=device, tiny=args.tiny, work=Path(work))
            rows = run_check(plan, args.select)
    finally:
        torch.set_num_threads(threads)
    failed = [r.check for r in rows if r.status == FAIL]
    render(
        [asdict(r) for r in rows],
        args.format,
        args.output,
        formatters={"seconds": "{:.1f}".format},
        title=f"GPU check on {where}, torch {torch.__version__}"
        + (" (--tiny)" if args.tiny else "")
        + (f": {len(failed)} FAILED" if failed else ""),
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
