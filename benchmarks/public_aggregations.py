"""Two implementations of Eq. 2 in training from public autograd APIs, timed against the plain
path (afictl/layers/afi.py) they would replace. Neither is in afictl: docs/PERFORMANCE.md ("One
AFI path") records that neither beat the plain path on the measured CPU.

- ``function``: R(i) as a custom autograd Function (in-place running sum forward; backward the
  features' gradients and the weights' gradient by ``bmm``), in place of autograd's addcmul
  chain;
- ``buffer``: the features of a stage also copied into one (B, C, N, H*W) buffer as they are
  made, R(i) as one ``bmm`` over its slots, every feature's gradient added into one gradient
  buffer; autograd orders each slot's writer after its readers through the squeezes z(j),
  which every later AFI module scores. The buffers are never autograd inputs or outputs.

Both are checked against the plain path in float64 (outputs and every gradient) before timing.

    python benchmarks/public_aggregations.py --arch afi_resnet110 --batch-size 64 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

import afictl.layers.afi as afi_core
from afictl.layers.afi import StageFeatures, squeeze
from afictl.models import Stage, create_model, get_model_info


class _WeightedSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weights: Tensor, *features: Tensor) -> Tensor:  # type: ignore[override]
        w = weights[..., None, None]
        out = features[0] * w[:, 0]
        for j in range(1, len(features)):
            out.addcmul_(features[j], w[:, j])
        ctx.save_for_backward(weights, *features)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        weights, *features = ctx.saved_tensors
        b, c = grad.shape[:2]
        g = grad.reshape(b * c, 1, -1)
        gw = torch.cat([torch.bmm(g, x.reshape(b * c, -1, 1)) for x in features], 2)
        w = weights[..., None, None]
        grads = (grad * w[:, j] for j in range(len(features)))
        return (gw.view(b, c, -1).transpose(1, 2), *grads)


def _rows(t: Tensor, n: int) -> Tensor:
    b, c, cap, hw = t.shape
    return t.view(b * c, cap, hw)[:, :n]


class _Buffered(StageFeatures):
    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity, self.buffer, self.grad = capacity, None, None

    def append(self, x: Tensor) -> None:
        if self.buffer is None:
            b, c, h, w = x.shape
            self.buffer = x.new_empty(b, c, self.capacity, h * w)
        self.features.append(x)
        self.squeezed.append(_Write.apply(x, self, len(self.features) - 1))

    def integrate(self, afi, n: int) -> Tensor:
        if afi is None:
            return self.features[0]
        weights = afi.weights(self.squeezed[:n])
        return _BufferSum.apply(weights, self).view(self.features[0].shape)


class _Write(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, feats: _Buffered, slot: int) -> Tensor:  # type: ignore[override]
        b, c, h, w = x.shape
        feats.buffer[:, :, slot].copy_(x.reshape(b, c, h * w))
        ctx.feats, ctx.slot, ctx.hw = feats, slot, h * w
        return squeeze(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_z: Tensor):  # type: ignore[override]
        feats = ctx.feats
        shape = feats.features[ctx.slot].shape
        if feats.grad is None:
            return (grad_z[..., None, None] / ctx.hw).expand(shape), None, None
        slot = feats.grad[:, :, ctx.slot]
        grad = (slot + grad_z[..., None] / ctx.hw).view(shape)
        slot.zero_()  # a second backward over a retained graph starts from zeros
        return grad, None, None


class _BufferSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weights: Tensor, feats: _Buffered) -> Tensor:  # type: ignore[override]
        b, n, c = weights.shape
        ctx.save_for_backward(weights)
        ctx.feats = feats
        return torch.bmm(weights.transpose(1, 2).reshape(b * c, 1, n), _rows(feats.buffer, n))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (weights,) = ctx.saved_tensors
        feats = ctx.feats
        b, n, c = weights.shape
        if feats.grad is None:
            feats.grad = torch.zeros_like(feats.buffer)
        rows = _rows(feats.buffer, n)
        grad_w = torch.bmm(grad, rows.transpose(1, 2)).view(b, c, n).transpose(1, 2)
        # into a temporary, then added: baddbmm_ into the strided slots loops over addmm_
        _rows(feats.grad, n).add_(torch.bmm(weights.transpose(1, 2).reshape(b * c, n, 1), grad))
        return grad_w, None


@contextmanager
def variant(name: str) -> Iterator[None]:
    """Run the models inside with the ``plain``, ``function`` or ``buffer`` aggregation."""
    old_integrate, old_forward = afi_core.integrate, Stage.forward
    if name == "function":

        def integrate(features, weights):
            if torch.is_grad_enabled():
                return _WeightedSum.apply(weights, *features)
            return old_integrate(features, weights)

        afi_core.integrate = integrate
    elif name == "buffer":

        def forward(self, x):
            join = getattr(self[0], "join", None)
            afi = join is not None and join.index is not None and torch.is_grad_enabled()
            feats = _Buffered(len(self)) if afi else StageFeatures()
            for block in self:
                x = block(x, feats)
            return x

        Stage.forward = forward
    try:
        yield
    finally:
        afi_core.integrate, Stage.forward = old_integrate, old_forward


def _step(model, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    model.zero_grad(set_to_none=True)
    out = model(x)
    F.cross_entropy(out, y).backward()
    return {"output": out.detach(), **{n: p.grad.clone() for n, p in model.named_parameters()}}


def check(arch: str, name: str) -> float:
    """Largest relative difference from the plain path in float64 (output, every gradient)."""
    torch.manual_seed(0)
    model = create_model(arch, num_classes=5).double()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(4, 3, 16, 16, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    want = _step(model, x, y)
    model.load_state_dict(state)
    with variant(name):
        got = _step(model, x, y)
    largest = max(g.abs().max().item() for g in want.values())
    return max((got[k] - want[k]).abs().max().item() / largest for k in want)


def timed(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="afi_resnet110")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    names = ("plain", "function", "buffer")
    for name in names[1:]:
        print(f"{name}: max relative difference from plain in float64 {check(args.arch, name):.1e}")
    info = get_model_info(args.arch)
    torch.manual_seed(0)
    base, afi = create_model(info.baseline), create_model(args.arch)
    x = torch.randn(args.batch_size, 3, info.input_size, info.input_size)
    y = torch.randint(0, info.num_classes, (args.batch_size,))
    ms: dict[str, list[float]] = {n: [] for n in ("baseline", *names)}
    for repeat in range(args.repeats + 2):  # two warm-up rounds
        for name in names:
            tb = timed(lambda: _step(base, x, y))
            with variant(name):
                ta = timed(lambda: _step(afi, x, y))
            if repeat >= 2:
                ms["baseline"].append(tb)
                ms[name].append(ta)
    medians = {n: 1000 * statistics.median(v) for n, v in ms.items()}
    print(f"{args.arch} training step, batch {args.batch_size}, {args.repeats} repeats, median:")
    for name, value in medians.items():
        print(f"  {name:9s} {value:8.1f} ms")
    return medians


if __name__ == "__main__":
    main()
