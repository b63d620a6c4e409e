"""The accelerated AFI path: one buffer per stage, R as one batched matrix product.

Same numbers as the plain core (layers/afi.py, whose ``AFIModule.weights`` it uses; tests
compare both in float64), faster in training and lighter with ``memory_efficient``
(docs/PERFORMANCE.md). :class:`~afictl.layers.afi_join.AFIJoin` is its only caller; it runs
only in eager mode on ordinary tensors (:func:`accelerated`), never under a tracer, an
exporter or the compiler, and never where hooks sit on the modules it fuses over.

Layout: the features X(1..N) of a stage live in one tensor (B, C, N, H, W). R(i), or the
next convolution of [X(i), R(i)], is one ``bmm`` over that buffer's (B*C, n, H*W) rows inside
a custom autograd Function, which accumulates the features' gradients in one gradient buffer.

Invariants (asserted where cheap):

1. Each slot is written exactly once per forward, by the block that owns it, and never changed
   afterwards; a second write is an error. That is why the writes may bypass autograd's version
   counter (``writable`` shares the storage, not the counter): nothing saved is overwritten.
2. A writer returns z(k) = squeeze(X(k)); every consumer of X(k) takes those z as (unused)
   inputs, so autograd runs the writer's backward only after every consumer has added its share
   of dL/dX(k) to the gradient buffer. The writer then reads its slot's total.
3. One gradient buffer per backward pass (graph task): a second pass over a retained graph
   starts from zeros, as autograd itself would.
4. ``memory_efficient``: the buffer is dropped after the stage's last block if every slot can be
   rebuilt from tensors backward keeps anyway (a copy's source, BN's input and statistics); the
   first backward that needs it rebuilds it, once, with the forward's own kernels.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .afi import AFIModule, StageFeatures, squeeze

__all__ = [
    "AGGREGATIONS",
    "BufferedFeatures",
    "accelerated",
    "activation_bound",
    "aggregation",
    "aggregation_mode",
    "plain_batch_norm",
]

#: ``auto``: the stage buffer in eager training, the plain path everywhere else (default);
#: ``plain``: never the buffer nor other accelerated kernels; ``fused``: the buffer also without
#: gradients (to compare it with the plain path at inference).
AGGREGATIONS = ("auto", "plain", "fused")
_MODE: contextvars.ContextVar[str] = contextvars.ContextVar("afictl_aggregation", default="auto")


@contextmanager
def aggregation(mode: str) -> Iterator[None]:
    """Run AFI stages inside the block with the ``auto``, ``plain`` or ``fused`` aggregation
    (a context variable: threads and tasks keep their own)."""
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {mode!r}; choose from {', '.join(AGGREGATIONS)}")
    token = _MODE.set(mode)
    try:
        yield
    finally:
        _MODE.reset(token)


def aggregation_mode() -> str:
    """The aggregation mode in force (see :data:`AGGREGATIONS`)."""
    return _MODE.get()


def accelerated(x: Tensor) -> bool:
    """Whether a stage run on ``x`` may take accelerated kernels: eager mode, ordinary tensors.

    Not under ``torch.jit`` tracing or scripting, ONNX export, ``torch.compile`` or
    ``torch.export`` (whose fake and functional tensors are subclasses; fx proxies are no
    tensors at all), nor under :func:`aggregation` ``("plain")``. Where the stage buffer is
    used: :func:`~afictl.layers.afi_join.aggregation_path`.
    """
    return (
        type(x) is Tensor
        and _MODE.get() != "plain"
        and not torch.jit.is_tracing()
        and not torch.jit.is_scripting()
        and not torch.compiler.is_compiling()
        and not torch.onnx.is_in_onnx_export()
    )


def plain_batch_norm(bn: nn.Module) -> bool:
    """A BatchNorm2d that the memory-efficient writer may apply itself."""
    return (
        type(bn) is nn.BatchNorm2d
        and bn.affine
        and bn.track_running_stats
        and bn.running_mean is not None
    )


def activation_bound(act: nn.Module) -> float | None:
    """The writer's form of ``act``: 0 for ReLU, 6 for ReLU6; None if it cannot write it."""
    if type(act) is nn.ReLU:
        return 0.0
    if type(act) is nn.ReLU6:
        return 6.0
    return None


def _activate(x: Tensor, hi: float, out: Tensor) -> None:
    """ReLU (hi = 0: no upper bound) or ReLU6 of x, into ``out``."""
    if hi:
        torch.clamp(x, 0, hi, out=out)
    else:
        torch.clamp_min(x, 0, out=out)


def _activate_backward(grad: Tensor, y: Tensor, hi: float) -> Tensor:
    """Gradient through ReLU / ReLU6 from their output y (0 < y < hi iff 0 < input < hi)."""
    if hi:
        return torch.ops.aten.hardtanh_backward(grad, y, 0.0, hi)
    return torch.ops.aten.threshold_backward(grad, y, 0)


class _StageBuffer:
    """The features of one stage in one tensor (B, C, N, H, W), and their gradients."""

    __slots__ = (
        "capacity",
        "recompute",
        "data",
        "writable",
        "shape",
        "sources",
        "written",
        "_grad",
        "_grad_pass",
    )

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.recompute = False
        self.data: Tensor | None = None
        self.writable: Tensor | None = None
        self.shape: tuple[int, ...] | None = None  # (B, C, N, H, W), also while released
        self.sources: list[tuple | None] = [None] * capacity
        self.written = [False] * capacity
        self._grad: Tensor | None = None
        self._grad_pass = -1

    def slot_for_write(self, x: Tensor, k: int) -> Tensor:
        if not 0 <= k < self.capacity:
            raise RuntimeError(f"AFI stage buffer of capacity {self.capacity} got feature {k + 1}")
        if self.written[k]:  # invariant 1
            raise RuntimeError(f"AFI stage buffer: slot {k + 1} written twice in one forward")
        if self.data is None:
            b, c, h, w = x.shape
            self.data = x.new_empty(b, c, self.capacity, h, w)
            self.writable = self.data.data  # same storage, own version counter (invariant 1)
            self.shape = tuple(self.data.shape)
        elif tuple(x.shape) != self.feature_shape:
            raise ValueError(
                "AFI features of one stage must share a shape: "
                f"{tuple(x.shape)} vs {self.feature_shape}"
            )
        self.written[k] = True
        return self.writable[:, :, k]

    @property
    def feature_shape(self) -> tuple[int, ...]:
        b, c, _, h, w = self.shape
        return (b, c, h, w)

    def release(self) -> None:
        """Drop the buffer after the stage's last block if backward can rebuild it (invariant 4)."""
        if all(src is not None for src in self.sources):
            self.data = self.writable = None

    def ensure(self) -> Tensor:
        """The buffer, rebuilt from the recorded sources if it was released."""
        if self.data is None:
            if self.shape is None or not all(src is not None for src in self.sources):
                raise RuntimeError("the AFI stage's features were released after its last block")
            self.data = self.sources[0][1].new_empty(self.shape)
            self.writable = self.data.data
            with torch.no_grad():
                for k, src in enumerate(self.sources):
                    _rebuild(src, self.writable[:, :, k])
        return self.data

    def rows(self, n: int) -> Tensor:
        """The first n features as (B*C, n, H*W), a view (one row of n features per channel)."""
        b, c, _, h, w = self.shape
        return self.ensure()[:, :, :n].reshape(b * c, n, h * w)

    def _grad_buffer(self) -> Tensor:
        task = _backward_pass()
        if self._grad is None or self._grad_pass != task:  # invariant 3
            self._grad = self.ensure().new_zeros(self.shape)
            self._grad_pass = task
        return self._grad

    def accumulate(self, n: int, weights: Tensor, grad_r: Tensor) -> None:
        """dL/dX(j) += weights[j] * dL/dR for j = 1..n (weights (B*C, 1, n), grad (B*C, 1, H*W)).

        One broadcasting multiply-add over the strided slots (a baddbmm_ into them would run
        as one small matmul per channel)."""
        buffer = self._grad_buffer()
        b, c, _, h, w = buffer.shape
        target = buffer[:, :, :n].view(b, c, n, h * w)
        target.addcmul_(weights.view(b, c, n, 1), grad_r.view(b, c, 1, h * w))

    def add_to_slot(self, k: int, grad: Tensor) -> None:
        self._grad_buffer()[:, :, k] += grad

    def grad_slot(self, k: int) -> Tensor | None:
        """dL/dX(k) accumulated in the current backward pass (None: no consumer contributed)."""
        if self._grad is None or self._grad_pass != _backward_pass():
            return None
        return self._grad[:, :, k]


def _rebuild(source: tuple, slot: Tensor) -> None:
    """Recompute one feature into its slot: a copy, or act(BN(c)) with the saved statistics."""
    if source[0] == "copy":
        slot.copy_(source[1])
        return
    _, c, weight, bias, running_mean, running_var, training, eps, hi = source
    # the forward's kernel on the forward's input: the same numbers (running statistics untouched)
    out = torch.ops.aten.native_batch_norm(
        c,
        weight,
        bias,
        None if training else running_mean,
        None if training else running_var,
        training,
        0.0,
        eps,
    )[0]
    _activate(out, hi, slot)


def _backward_pass() -> int:
    """Identifies the running backward pass (what torch.utils.checkpoint also relies on)."""
    try:
        return torch._C._current_graph_task_id()
    except AttributeError:  # a torch without it: one pass per graph, as without retain_graph
        return 0


class _Write(torch.autograd.Function):
    """Write X(k), or act(h) as X(k), into the stage buffer.

    Returns the token z(k) (invariant 2).
    """

    @staticmethod
    def forward(
        ctx, x: Tensor, stage: _StageBuffer, k: int, hi: float | None, record: bool
    ) -> Tensor:  # type: ignore[override]
        slot = stage.slot_for_write(x, k)
        if hi is None:
            slot.copy_(x)
        else:
            _activate(x, hi, slot)
        feature = stage.data[:, :, k]
        ctx.stage, ctx.k, ctx.hi = stage, k, hi
        ctx.hw = x.shape[2] * x.shape[3]
        if hi is not None:
            ctx.save_for_backward(
                feature
            )  # the activation's mask (a view: the buffer, counted once)
        elif record:
            stage.sources[k] = ("copy", x)  # a view of an activation backward keeps anyway
            ctx.save_for_backward(x)
        else:
            ctx.save_for_backward(None)
        return squeeze(feature)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_z: Tensor):  # type: ignore[override]
        return _write_grad(ctx, grad_z), None, None, None, None


def _write_grad(ctx, grad_z: Tensor, act_of: Tensor | None = None) -> Tensor:
    """dL/dX(k) (or dL/dh for X(k) = act(h)): the consumers' share in the gradient buffer plus
    that of z(k) = mean of X(k) over H x W."""
    stage = ctx.stage
    grad = stage.grad_slot(ctx.k)
    from_z = (grad_z / ctx.hw)[..., None, None]
    out = from_z.expand(stage.feature_shape).contiguous() if grad is None else grad + from_z
    if ctx.hi is not None:
        out = _activate_backward(out, ctx.saved_tensors[0] if act_of is None else act_of, ctx.hi)
    return out


class _BatchNormActWrite(torch.autograd.Function):
    """X(k) = act(BN(c)) into the stage buffer, keeping only c and the batch statistics.

    The memory-efficient writer: BN's input is saved anyway (BN's backward needs it), so X(k)
    itself need not be kept (invariant 4). Same running-statistics update as ``nn.BatchNorm2d``.
    """

    @staticmethod
    def forward(ctx, c, weight, bias, stage, k, bn_state, hi):  # type: ignore[override]
        running_mean, running_var, training, momentum, eps = bn_state
        out, save_mean, save_invstd = torch.ops.aten.native_batch_norm(
            c, weight, bias, running_mean, running_var, training, momentum, eps
        )
        _activate(out, hi, stage.slot_for_write(out, k))
        del out
        feature = stage.data[:, :, k]
        stage.sources[k] = ("bn", c, weight, bias, running_mean, running_var, training, eps, hi)
        ctx.stage, ctx.k, ctx.hi, ctx.hw = stage, k, hi, c.shape[2] * c.shape[3]
        ctx.bn = (training, eps)
        ctx.save_for_backward(c, weight, running_mean, running_var, save_mean, save_invstd)
        return squeeze(feature)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_z):  # type: ignore[override]
        c, weight, running_mean, running_var, save_mean, save_invstd = ctx.saved_tensors
        grad = _write_grad(ctx, grad_z, act_of=ctx.stage.ensure()[:, :, ctx.k])
        training, eps = ctx.bn
        grad_c, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
            grad,
            c,
            weight,
            running_mean,
            running_var,
            save_mean,
            save_invstd,
            training,
            eps,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]],
        )
        return grad_c, grad_w, grad_b, None, None, None, None


@dataclass(frozen=True)
class _Spec:
    """What one consumer of a stage buffer computes (see :class:`_Integrate`)."""

    n: int  # features R(i) weighs: X(1..n)
    own: bool  # also X(n+1), the block's own feature: the output is [X(i), R(i)]
    conv: tuple | None  # (stride, padding, dilation, groups) of the next convolution
    recompute: bool  # memory-efficient: recompute the convolution's input in backward


class _Integrate(torch.autograd.Function):
    """R(i), or conv([X(i), R(i)]), from the stage buffer, as one bmm.

    The weights of R(i) form a (B*C, 1, n) mixing row; its product with the buffer's
    (B*C, n, H*W) rows gives R for every channel at once, reading each feature once.
    """

    @staticmethod
    def forward(ctx, weights, conv_weight, stage, spec, *tokens):  # type: ignore[override]
        del tokens  # graph edges only: they order this backward before the writers' (invariant 2)
        with _autocast_off(stage.ensure().device.type):
            return _integrate_apply(ctx, weights, conv_weight, stage, spec)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        return _integrate_grad(ctx, grad_out)


def _integrate_apply(ctx, weights, conv_weight, stage: _StageBuffer, spec: _Spec) -> Tensor:
    """Forward of :class:`_Integrate`. Under autocast the buffer holds the features' low
    precision dtype; everything here runs in it, so that backward sees the same dtypes."""
    mixing = _mixing(weights, stage, spec)
    inp = _integrate_forward(stage, spec, mixing)
    ctx.stage, ctx.spec = stage, spec
    ctx.weights_shape = None if weights is None else weights.shape
    # Memory-efficient: neither [X(i), R(i)] nor the buffer is kept (backward rebuilds both).
    kept = None if spec.recompute and stage.recompute else stage.data
    if spec.conv is None:
        ctx.save_for_backward(kept, mixing)
        return inp
    stride, padding, dilation, groups = spec.conv
    out = F.conv2d(inp, conv_weight.to(inp.dtype), None, stride, padding, dilation, groups)
    ctx.save_for_backward(kept, mixing, conv_weight, None if spec.recompute else inp)
    return out


def _integrate_grad(ctx, grad_out: Tensor) -> tuple:
    """Backward of :class:`_Integrate`."""
    stage, spec = ctx.stage, ctx.spec
    grad_conv_weight = None
    if spec.conv is None:
        _, mixing = ctx.saved_tensors
        grad_inp = grad_out
    else:
        _, mixing, conv_weight, inp = ctx.saved_tensors
        if inp is None:  # memory-efficient: one more bmm instead of storing the input
            inp = _integrate_forward(stage, spec, mixing)
        stride, padding, dilation, groups = spec.conv
        grad_inp, grad_conv_weight, _ = torch.ops.aten.convolution_backward(
            grad_out,
            inp,
            conv_weight.to(inp.dtype),
            None,
            stride,
            padding,
            dilation,
            False,
            [0, 0],
            groups,
            [True, ctx.needs_input_grad[1], False],
        )
        del inp
    grad_weights = _integrate_backward(stage, spec, mixing, grad_inp, ctx.needs_input_grad[0])
    if grad_weights is not None:
        grad_weights = grad_weights.reshape(
            ctx.weights_shape[0], ctx.weights_shape[2], -1
        ).transpose(1, 2)
    return (grad_weights, grad_conv_weight, None, None, *[None] * (spec.n + spec.own))


def _autocast_off(device_type: str):
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except (RuntimeError, ValueError):  # devices autocast does not know (meta)
        enabled = False
    return torch.autocast(device_type, enabled=False) if enabled else nullcontext()


def _mixing(weights: Tensor | None, stage: _StageBuffer, spec: _Spec) -> Tensor:
    """(B*C, 1, n) mixing row from ``weights`` (B, n, C); R(2) = X(1) needs no weighing."""
    b, c = stage.shape[:2]
    data = stage.ensure()
    if weights is None:
        return data.new_ones(b * c, 1, spec.n)
    return weights.to(data.dtype).transpose(1, 2).reshape(b * c, 1, spec.n)


def _integrate_forward(stage: _StageBuffer, spec: _Spec, mixing: Tensor) -> Tensor:
    b, c, _, h, w = stage.shape
    r = torch.bmm(mixing, stage.rows(spec.n)).view(b, c, h, w)
    if spec.own:
        return torch.cat([stage.ensure()[:, :, spec.n], r], dim=1)
    return r


def _integrate_backward(stage, spec, mixing, grad_inp, need_weights: bool) -> Tensor | None:
    b, c, _, h, w = stage.shape
    grad_inp = grad_inp.contiguous()  # channels-last gradients from a channels-last convolution
    if spec.own:
        stage.add_to_slot(spec.n, grad_inp[:, :c])
        grad_inp = grad_inp[:, c:]
    grad_r = grad_inp.reshape(b * c, 1, h * w)
    stage.accumulate(spec.n, mixing, grad_r)
    if not need_weights:
        return None
    return torch.bmm(grad_r, stage.rows(spec.n).transpose(1, 2))  # (B*C, 1, n)


class BufferedFeatures(StageFeatures):
    """:class:`StageFeatures` that move into a stage buffer at the first fused write.

    Until then (block 1's seed, or blocks that take the plain path because of hooks) they are
    the plain lists; afterwards :meth:`append` and :meth:`integrate` work on the buffer, and
    ``features`` is empty (the plain lists moved in).
    """

    def __init__(self, capacity: int, *, recompute: bool = False) -> None:
        super().__init__(eager=True)
        self.buffered = False
        self._stage = _StageBuffer(capacity)
        self._stage.recompute = recompute

    def append(self, x: Tensor) -> None:
        if not self.buffered:
            super().append(x)
            return
        record = self._stage.recompute
        self.squeezed.append(_Write.apply(x, self._stage, len(self), None, record))

    @property
    def released(self) -> bool:
        """The buffer was dropped after the stage's last block (memory-efficient, invariant 4)."""
        return self.buffered and self._stage.data is None

    def to_buffer(self) -> None:
        """Move into the buffer now (the first fused write does it): listed features move in,
        their z become the writers' tokens (invariant 2)."""
        if self.buffered:
            return
        listed, self.features, self.squeezed = self.features, [], []
        self.buffered = True
        for x in listed:
            self.append(x)

    def append_act(self, h: Tensor, hi: float) -> None:
        """Add X(k) = ReLU(h) (hi = 0) or ReLU6(h) (hi = 6), written straight into the buffer."""
        self.to_buffer()
        self.squeezed.append(_Write.apply(h, self._stage, len(self), hi, False))

    def append_bn_act(self, c: Tensor, bn: nn.BatchNorm2d, hi: float) -> None:
        """Add X(k) = act(bn(c)), keeping c rather than X(k) for backward (memory-efficient).

        ``bn`` must satisfy :func:`plain_batch_norm`; it is applied as its own forward would.
        """
        self.to_buffer()
        if bn.training:
            bn.num_batches_tracked.add_(1)
            momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        else:
            momentum = 0.0
        state = (bn.running_mean, bn.running_var, bn.training, momentum, bn.eps)
        self.squeezed.append(
            _BatchNormActWrite.apply(c, bn.weight, bn.bias, self._stage, len(self), state, hi)
        )

    def integrate(self, afi: AFIModule | None, n: int) -> Tensor:
        if not self.buffered:
            return super().integrate(afi, n)
        weights = None if afi is None else afi.weights(self.squeezed[:n])
        spec = _Spec(n, own=False, conv=None, recompute=False)
        return _Integrate.apply(weights, None, self._stage, spec, *self.squeezed[:n])

    def integrate_conv(
        self, afi: AFIModule | None, conv: nn.Conv2d, *, memory_efficient: bool
    ) -> Tensor:
        """conv([X(i), R(i)]) with X(i) the newest feature and R(i) over all earlier ones.

        The concatenation is kept only for the convolution's backward and, with
        ``memory_efficient``, not at all: backward recomputes it from the buffer.
        """
        n = len(self) - 1
        weights = None if afi is None else afi.weights(self.squeezed[:n])
        spec = _Spec(
            n,
            own=True,
            conv=(conv.stride, conv.padding, conv.dilation, conv.groups),
            recompute=memory_efficient,
        )
        out = _Integrate.apply(weights, conv.weight, self._stage, spec, *self.squeezed[: n + 1])
        if len(self) == self._stage.capacity:  # the stage's last block: nobody reads X again
            self._stage.release()
        if conv.bias is not None:
            out = out + conv.bias[:, None, None]
        return out
