"""The Attentive Feature Integration (AFI) module, paper section 3.1, Eq. 1-2.

An AFI module takes the features X(1..n) of earlier blocks of a stage and returns their
channel-wise convex combination R:

    z(j) = F_sq(X(j))                      squeeze: global average pooling
    s(j) = W2 ReLU(W1 z(j))                score: a bottleneck shared by all inputs (Eq. 1)
    S~   = softmax over j of S = [s(1..n)]  normalise, channel by channel
    R    = sum_j S~[j] * X(j)               integrate (Eq. 2)

Every family builds its AFI blocks from this one module and from :class:`FeaturePool`, which
holds the features of a stage and squeezes each of them exactly once.

Two implementations of the aggregation compute the same numbers (tests compare them in float64):

- ``reference``: the features are a list of tensors and R is :func:`weighted_sum`;
- ``fast`` (default, used by :class:`~afictl.models._base.Stage`): the features of a stage live
  in one buffer of shape (B, C, N, H, W), written once each; R (and the next convolution of
  [X(i), R(i)]) is one batched matrix product over that buffer, inside custom autograd
  Functions that accumulate the features' gradients in one gradient buffer. See
  docs/PERFORMANCE.md for the measurements behind each choice.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = [
    "AGGREGATIONS",
    "AFIModule",
    "FeaturePool",
    "aggregation",
    "aggregation_impl",
    "squeeze",
    "weighted_sum",
]

#: Implementations of the stage aggregation (see the module docstring).
AGGREGATIONS = ("fast", "reference")
_IMPL = ["fast"]

#: Switches of the fast path, for benchmarks/afi_variants.py (each measured in docs/PERFORMANCE.md).
#: ``interleave`` (off: measured neutral to 1 % slower on this CPU) feeds the next convolution
#: [x0, r0, x1, r1, ...] with a permuted weight instead of concatenating [X(i), R(i)].
FAST_OPTIONS = {"interleave": False, "flush_negligible_weights": True}


@contextmanager
def aggregation(impl: str) -> Iterator[None]:
    """Run AFI stages with the ``fast`` or the ``reference`` aggregation inside the block.

    Pools created inside the block use ``impl``; the previous choice is restored on exit.
    FLOP counting uses ``reference`` so that counts describe the math, not the kernels.
    """
    if impl not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {impl!r}; choose from {', '.join(AGGREGATIONS)}")
    previous = _IMPL[0]
    _IMPL[0] = impl
    try:
        yield
    finally:
        _IMPL[0] = previous


def aggregation_impl() -> str:
    """The aggregation new pools use: ``fast`` or ``reference``."""
    return _IMPL[0]


def squeeze(x: Tensor) -> Tensor:
    """F_sq of Eq. 2: global average pooling, (B, C, H, W) -> (B, C)."""
    return x.mean(dim=(2, 3))


# --- reference aggregation ---------------------------------------------------------------


class _WeightedSum(torch.autograd.Function):
    """R = sum_j w[:, j] * X(j) without stacking the inputs.

    Stacking would copy every earlier feature of the stage at every block (O(n^2) memory for a
    stage of n blocks); this function accumulates in place and saves only references to its
    inputs, which the ReLU that produced them keeps alive for its own backward anyway.
    """

    @staticmethod
    def forward(ctx, weights: Tensor, *features: Tensor) -> Tensor:  # type: ignore[override]
        w = weights[..., None, None]
        out = features[0] * w[:, 0]
        for j in range(1, len(features)):
            out.addcmul_(features[j], w[:, j])
        ctx.save_for_backward(weights, *features)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        weights, *features = ctx.saved_tensors
        w = weights[..., None, None]
        grad_w = None
        if ctx.needs_input_grad[0]:
            grad_w = torch.stack([(grad * f).sum(dim=(2, 3)) for f in features], dim=1)
        grad_f = [
            grad * w[:, j] if ctx.needs_input_grad[j + 1] else None for j in range(len(features))
        ]
        return (grad_w, *grad_f)


def weighted_sum(features: Sequence[Tensor], weights: Tensor) -> Tensor:
    """Channel-wise convex combination of Eq. 2: weights (B, n, C), features n x (B, C, H, W)."""
    if len(features) != weights.shape[1]:
        raise ValueError(f"{len(features)} features but {weights.shape[1]} weights")
    return _WeightedSum.apply(weights, *features)


# --- fast aggregation: one buffer per stage ----------------------------------------------


class _StageBuffer:
    """The features X(1..N) of one stage in one tensor (B, C, N, H, W), and their gradients.

    ``data`` is the tensor the autograd Functions save (so that the memory account sees it,
    once); ``writable`` shares its storage but not its version counter: each feature is written
    exactly once and never changed afterwards, so the writes of later blocks must not
    invalidate what earlier blocks saved. ``grad`` accumulates dL/dX(j) from every consumer
    during one backward pass (allocated by the first consumer's backward, and again in each
    later pass over a retained graph).

    With ``recompute`` (memory-efficient blocks) every slot also records how to rebuild it
    from tensors that backward keeps anyway (block 1's activation, each block's BN input and
    batch statistics); the buffer is then released after the stage's last block and rebuilt,
    once, by the first backward that reads it.
    """

    __slots__ = ("capacity", "recompute", "data", "writable", "shape", "sources", "_grad", "_grad_pass")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.recompute = False
        self.data: Tensor | None = None
        self.writable: Tensor | None = None
        self.shape: tuple[int, ...] | None = None  # (B, C, N, H, W), also while released
        self.sources: list[tuple | None] = [None] * capacity
        self._grad: Tensor | None = None
        self._grad_pass = -1

    def slot_for_write(self, x: Tensor, k: int) -> Tensor:
        if self.data is None:
            b, c, h, w = x.shape
            self.data = x.new_empty(b, c, self.capacity, h, w)
            self.writable = self.data.data  # same storage, own version counter
            self.shape = tuple(self.data.shape)
        elif x.shape != self.feature_shape:
            raise ValueError(f"AFI features of one stage must share a shape: {tuple(x.shape)} vs {self.feature_shape}")
        if not 0 <= k < self.capacity:
            raise ValueError(f"feature pool of capacity {self.capacity} got feature {k + 1}")
        return self.writable[:, :, k]

    @property
    def feature_shape(self) -> tuple[int, ...]:
        b, c, _, h, w = self.shape
        return (b, c, h, w)

    def release(self) -> None:
        """Drop the buffer after the stage's last block if backward can rebuild it (or needs none)."""
        if not torch.is_grad_enabled() or all(src is not None for src in self.sources):
            self.data = self.writable = None

    def ensure(self) -> Tensor:
        """The buffer, rebuilt from the recorded sources if it was released."""
        if self.data is None:
            if self.shape is None or not all(src is not None for src in self.sources):
                raise RuntimeError("the AFI stage's features were released after its last block")
            b, c, n, h, w = self.shape
            source = self.sources[0]
            self.data = source[1].new_empty(b, c, n, h, w)
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
        if self._grad is None or self._grad_pass != task:
            self._grad = self.ensure().new_zeros(self.shape)
            self._grad_pass = task
        return self._grad

    def accumulate(self, n: int, weights: Tensor, grad_r: Tensor) -> None:
        """dL/dX(j) += weights[j] * dL/dR for j = 1..n (weights (B*C, 1, n), grad (B*C, 1, H*W)).

        One broadcasting multiply-add over the strided slots: each slot is read and written
        once. (A baddbmm_ into the strided slots would run as one small matmul per channel.)
        """
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
    """Recompute one feature into its slot: a copy, or ReLU(BN(c)) with the saved statistics."""
    if source[0] == "copy":
        slot.copy_(source[1])
        return
    _, c, weight, bias, running_mean, running_var, training, eps = source
    # the same kernel as the forward pass, on the same input: the same numbers (batch
    # statistics are recomputed, running statistics left alone)
    out = torch.ops.aten.native_batch_norm(
        c, weight, bias, None if training else running_mean, None if training else running_var,
        training, 0.0, eps)[0]
    torch.clamp_min(out, 0, out=slot)


def _backward_pass() -> int:
    """Identifies the running backward pass (what torch.utils.checkpoint also relies on)."""
    try:
        return torch._C._current_graph_task_id()
    except AttributeError:  # a torch without it: one pass per graph, as without retain_graph
        return 0


class _Write(torch.autograd.Function):
    """Write X(k) (or ReLU(h) as X(k)) into the stage buffer; returns z(k) = F_sq(X(k)).

    z(k) is the token later consumers depend on, so autograd runs this backward only after all
    of them have added their share to the gradient buffer.
    """

    @staticmethod
    def forward(ctx, x: Tensor, stage: _StageBuffer, k: int, relu: bool, record: bool) -> Tensor:  # type: ignore[override]
        slot = stage.slot_for_write(x, k)
        if relu:
            torch.clamp_min(x, 0, out=slot)
        else:
            slot.copy_(x)
        feature = stage.data[:, :, k]
        ctx.stage, ctx.k, ctx.relu = stage, k, relu
        ctx.hw = x.shape[2] * x.shape[3]
        if relu:
            ctx.save_for_backward(feature)  # the ReLU mask (a view: the buffer, counted once)
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


def _write_grad(ctx, grad_z: Tensor, relu_of: Tensor | None = None) -> Tensor:
    """dL/dX(k) (or dL/dh for X(k) = ReLU(h)): the consumers' share in the gradient buffer plus
    that of z(k) = mean of X(k) over H x W."""
    stage = ctx.stage
    grad = stage.grad_slot(ctx.k)
    from_z = (grad_z / ctx.hw)[..., None, None]
    out = from_z.expand(stage.feature_shape).contiguous() if grad is None else grad + from_z
    if ctx.relu:
        feature = ctx.saved_tensors[0] if relu_of is None else relu_of
        out = torch.ops.aten.threshold_backward(out, feature, 0)
    return out


class _BatchNormReLUWrite(torch.autograd.Function):
    """X(k) = ReLU(BN(c)) into the stage buffer, keeping only c and the batch statistics.

    The memory-efficient blocks' way to write X(k): BN's input is saved anyway (BN's backward
    needs it), so X(k) itself need not be kept: backward rebuilds it (see
    :meth:`_StageBuffer.ensure`). Same running-statistics update as ``nn.BatchNorm2d``.
    """

    @staticmethod
    def forward(ctx, c, weight, bias, stage, k, bn_state):  # type: ignore[override]
        running_mean, running_var, training, momentum, eps = bn_state
        out, save_mean, save_invstd = torch.ops.aten.native_batch_norm(
            c, weight, bias, running_mean, running_var, training, momentum, eps)
        slot = stage.slot_for_write(out, k)
        torch.clamp_min(out, 0, out=slot)
        del out
        feature = stage.data[:, :, k]
        stage.sources[k] = ("bn", c, weight, bias, running_mean, running_var, training, eps)
        ctx.stage, ctx.k, ctx.relu, ctx.hw = stage, k, True, c.shape[2] * c.shape[3]
        ctx.bn = (training, eps)
        ctx.save_for_backward(c, weight, running_mean, running_var, save_mean, save_invstd)
        return squeeze(feature)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_z):  # type: ignore[override]
        c, weight, running_mean, running_var, save_mean, save_invstd = ctx.saved_tensors
        feature = ctx.stage.ensure()[:, :, ctx.k]
        grad = _write_grad(ctx, grad_z, relu_of=feature)
        training, eps = ctx.bn
        grad_c, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
            grad, c, weight, running_mean, running_var, save_mean, save_invstd, training, eps,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]])
        return grad_c, grad_w, grad_b, None, None, None


@dataclass(frozen=True)
class _Spec:
    """What one consumer of a stage buffer computes (see :class:`_Integrate`)."""

    n: int  # features R(i) weighs: X(1..n)
    own: bool  # also X(n+1), the block's own feature: the output is [X(i), R(i)]
    interleave: bool  # [X(i), R(i)] with channels interleaved (x0, r0, x1, r1, ...)
    conv: tuple | None  # (stride, padding, dilation, groups) of the next convolution
    recompute: bool  # memory-efficient: recompute the convolution's input in backward


class _Integrate(torch.autograd.Function):
    """R(i), or [X(i), R(i)], or conv([X(i), R(i)]) from the stage buffer, as one bmm.

    The weights of R(i) form a (B*C, 1, n) mixing matrix; its product with the buffer's
    (B*C, n, H*W) rows gives R for every channel at once, reading each feature once. With
    ``interleave`` a second, one-hot row copies X(i), so that the product is [X(i), R(i)] with
    its channels in (x, r) pairs and the next convolution's weight is permuted to match
    (``FAST_OPTIONS``); otherwise [X(i), R(i)] is one ``cat``.
    """

    @staticmethod
    def forward(ctx, weights, conv_weight, stage, spec, *tokens):  # type: ignore[override]
        del tokens  # graph edges only: they order this backward before the writers'
        with _autocast_off(stage.ensure().device.type):
            return _integrate_apply(ctx, weights, conv_weight, stage, spec)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        return _integrate_grad(ctx, grad_out)


def _integrate_apply(ctx, weights, conv_weight, stage: _StageBuffer, spec: _Spec) -> Tensor:
    """Forward of :class:`_Integrate`.

    Under autocast the buffer holds the features' low-precision dtype; everything here
    runs in it, so that backward (which autocast does not cover) sees the same dtypes.
    """
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
    out = F.conv2d(inp, _conv_weight(conv_weight, spec, inp.dtype), None, stride, padding, dilation, groups)
    # The parameter itself is saved (not its permuted copy): nothing new is kept for backward.
    ctx.save_for_backward(kept, mixing, conv_weight, None if spec.recompute else inp)
    return out


def _conv_weight(weight: Tensor, spec: _Spec, dtype: torch.dtype) -> Tensor:
    """The next convolution's weight as applied: input channels interleaved where needed."""
    if spec.own and spec.interleave:
        weight = weight[:, _interleave_order(weight.shape[1], weight.device)]
    return weight.to(dtype)


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
        grad_inp, grad_applied, _ = torch.ops.aten.convolution_backward(
            grad_out, inp, _conv_weight(conv_weight, spec, inp.dtype), None, stride, padding,
            dilation, False, [0, 0], groups, [True, ctx.needs_input_grad[1], False],
        )
        del inp
        if grad_applied is not None:
            grad_conv_weight = grad_applied
            if spec.own and spec.interleave:
                grad_conv_weight = torch.empty_like(grad_applied)
                grad_conv_weight[:, _interleave_order(conv_weight.shape[1], conv_weight.device)] = grad_applied
    grad_weights = _integrate_backward(stage, spec, mixing, grad_inp, ctx.needs_input_grad[0])
    if grad_weights is not None:
        grad_weights = grad_weights.reshape(ctx.weights_shape[0], ctx.weights_shape[2], -1).transpose(1, 2)
    return (grad_weights, grad_conv_weight, None, None, *[None] * (spec.n + spec.own))


def _autocast_off(device_type: str):
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except (RuntimeError, ValueError):  # devices autocast does not know (meta)
        enabled = False
    return torch.autocast(device_type, enabled=False) if enabled else nullcontext()


def _mixing(weights: Tensor | None, stage: _StageBuffer, spec: _Spec) -> Tensor:
    """(B*C, M, n [+1]) mixing matrix: the R row(s) from ``weights`` (B, n, C), one-hot X row."""
    b, c = stage.shape[:2]
    n = spec.n
    data = stage.ensure()
    dtype = data.dtype
    if weights is None:  # R(2) = X(1): one input needs no weighing
        r_row = data.new_ones(b * c, 1, n)
    else:
        r_row = weights.to(dtype).transpose(1, 2).reshape(b * c, 1, n)
        if FAST_OPTIONS["flush_negligible_weights"]:
            r_row = r_row.masked_fill(r_row < _negligible(dtype), 0)
    if not spec.own or not spec.interleave:
        return r_row
    mixing = data.new_zeros(b * c, 2, n + 1)
    mixing[:, 0, n] = 1
    mixing[:, 1:, :n] = r_row
    return mixing


def _negligible(dtype: torch.dtype) -> float:
    """Softmax weights below this are set to 0 on the fast path.

    A softmax over scores that differ by more than ~87 (float32) underflows to subnormal
    weights, and their products with the features are subnormal too; x86 CPUs compute with
    subnormal operands up to 100x slower, and the next convolution reads them (measured: the
    layer4 conv2 of AFI-ResNet-50 at twice the baseline's time). A weight below
    tiny / eps changes R(i) by less than eps x tiny x max|X|, far below the resolution of the
    convolution that reads it; tests compare the fast and reference paths in float64.
    """
    info = torch.finfo(dtype)
    return info.tiny / info.eps if info.tiny / info.eps < 1e-20 else info.tiny


def _integrate_forward(stage: _StageBuffer, spec: _Spec, mixing: Tensor) -> Tensor:
    b, c, _, h, w = stage.shape
    if spec.own and spec.interleave:
        return torch.bmm(mixing, stage.rows(spec.n + 1)).view(b, 2 * c, h, w)
    r = torch.bmm(mixing, stage.rows(spec.n)).view(b, c, h, w)
    if spec.own:
        return torch.cat([stage.ensure()[:, :, spec.n], r], dim=1)
    return r


def _integrate_backward(stage, spec, mixing, grad_inp, need_weights: bool) -> Tensor | None:
    b, c, _, h, w = stage.shape
    grad_inp = grad_inp.contiguous()  # channels-last gradients from a channels-last convolution
    n = spec.n
    if spec.own and spec.interleave:
        rows = grad_inp.view(b, c, 2, h, w)
        stage.add_to_slot(n, rows[:, :, 0])
        grad_r = rows[:, :, 1].reshape(b * c, 1, h * w)
        weights = mixing[:, 1:, :n]
    else:
        if spec.own:
            stage.add_to_slot(n, grad_inp[:, :c])
            grad_inp = grad_inp[:, c:]
        grad_r = grad_inp.reshape(b * c, 1, h * w)
        weights = mixing
    stage.accumulate(n, weights, grad_r)
    if not need_weights:
        return None
    return torch.bmm(grad_r, stage.rows(n).transpose(1, 2))  # (B*C, 1, n)


# --- the pool ------------------------------------------------------------------------------


def plain_batch_norm(bn: nn.Module) -> bool:
    """A BatchNorm2d that :meth:`FeaturePool.add_bn_relu` may apply itself."""
    return (
        type(bn) is nn.BatchNorm2d and bn.affine and bn.track_running_stats
        and bn.running_mean is not None
    )


def _eager(fn):
    """Keep a pool operation out of torch.compile graphs: the stage buffer and its autograd
    Functions run eagerly between compiled pieces (inductor's kernels for the n-way weighted
    sum were slower than eager by far, docs/PERFORMANCE.md).

    ``torch.compiler.disable`` is applied on first use under a loaded torch._dynamo, not at
    import: importing torch._dynamo costs seconds that every command would pay.
    """
    disabled = []

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if "torch._dynamo" not in sys.modules:  # nothing can be compiling
            return fn(*args, **kwargs)
        if not disabled:
            disabled.append(torch.compiler.disable(fn, recursive=True))
        return disabled[0](*args, **kwargs)

    return wrapper


class FeaturePool:
    """The features X(1..i-1) of one stage during one forward pass, each squeezed once.

    A feature's squeeze z(j) does not change between the later blocks that read it, so it is
    computed when the feature is added, not once per consuming module.

    The features start as a list of tensors (the reference aggregation). ``Stage`` creates
    ``FeaturePool(capacity=number of blocks)``; under the default ``fast`` aggregation such a
    pool moves its features into one stage buffer (see the module docstring) the first time a
    fused block writes one (:meth:`add_relu`, :meth:`add_bn_relu`), and stays buffered. Blocks
    that only :meth:`add` activations they keep anyway (the other families) never trigger it:
    a buffer would hold a second copy of each. ``features`` then lists read-only views.
    """

    __slots__ = ("fast", "buffered", "squeezed", "_features", "_stage")

    def __init__(self, capacity: int | None = None) -> None:
        self.fast = capacity is not None and _IMPL[0] == "fast"
        self.buffered = False
        self.squeezed: list[Tensor] = []
        self._features: list[Tensor] = []
        self._stage = _StageBuffer(capacity) if self.fast else None

    @property
    def features(self) -> list[Tensor]:
        if not self.buffered:
            return self._features
        return [self._stage.ensure()[:, :, k].detach() for k in range(len(self))]

    @property
    def recompute(self) -> bool:
        """Memory-efficient stage: the buffer is rebuilt in backward instead of kept."""
        return self.fast and self._stage.recompute

    @recompute.setter
    def recompute(self, value: bool) -> None:
        if self.fast:
            self._stage.recompute = value

    @_eager
    def add(self, x: Tensor) -> None:
        """Append X(k) (and z(k))."""
        if not self.buffered:
            self._features.append(x)
            self.squeezed.append(squeeze(x))
        else:
            self.squeezed.append(self._write(x))

    def _write(self, x: Tensor) -> Tensor:
        record = self._stage.recompute and torch.is_grad_enabled()
        return _Write.apply(x, self._stage, len(self.squeezed), False, record)

    @_eager
    def to_buffer(self) -> None:
        """Keep the features in the stage buffer from now on (fast pools; done by the first
        fused write). Listed features move in; their z become the writers' tokens, which order
        the writers' backward after every consumer's."""
        if not self.fast:
            raise RuntimeError("only a fast pool (FeaturePool(capacity=...)) has a stage buffer")
        if self.buffered:
            return
        listed, self._features, self.squeezed = self._features, [], []
        self.buffered = True
        for x in listed:
            self.squeezed.append(self._write(x))

    @_eager
    def add_relu(self, h: Tensor) -> None:
        """Append X(k) = ReLU(h), written straight into the stage buffer on the fast path."""
        if not self.fast:
            self.add(torch.relu(h))
            return
        if not self.buffered:
            self.to_buffer()
        self.squeezed.append(_Write.apply(h, self._stage, len(self), True, False))

    @_eager
    def add_bn_relu(self, c: Tensor, bn: nn.BatchNorm2d) -> None:
        """Append X(k) = ReLU(bn(c)); a memory-efficient stage keeps c, not X(k), for backward.

        ``bn`` must be a plain affine BatchNorm2d that tracks running statistics (callers
        check :func:`plain_batch_norm`); it is applied exactly as its own forward would.
        """
        if not self.recompute or not torch.is_grad_enabled():
            self.add_relu(bn(c))
            return
        if not self.buffered:
            self.to_buffer()
        if bn.training:
            bn.num_batches_tracked.add_(1)
            momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        else:
            momentum = 0.0
        state = (bn.running_mean, bn.running_var, bn.training, momentum, bn.eps)
        self.squeezed.append(_BatchNormReLUWrite.apply(c, bn.weight, bn.bias, self._stage, len(self), state))

    @_eager
    def integrate(self, weights: Tensor | None, n: int) -> Tensor:
        """R = sum_j weights[:, j] X(j) over the first n features (n = 1, no weights: X(1))."""
        if not self.buffered:
            if weights is None:
                return self._features[0]
            return weighted_sum(self._features[:n], weights)
        spec = _Spec(n, own=False, interleave=False, conv=None, recompute=False)
        return _Integrate.apply(weights, None, self._stage, spec, *self.squeezed[:n])

    @_eager
    def integrate_conv(
        self, weights: Tensor | None, conv: nn.Conv2d, *, memory_efficient: bool = False,
    ) -> Tensor:
        """conv([X(i), R(i)]) with X(i) the newest feature and R(i) over all earlier ones.

        Buffered pools only (after :meth:`add_relu` / :meth:`add_bn_relu`): the concatenation
        is kept only for the convolution's backward and, with ``memory_efficient``, not at all:
        backward recomputes it from the stage buffer (the paper's remark on [38]).
        """
        if not self.buffered:
            raise RuntimeError("integrate_conv needs a buffered pool (add_relu first)")
        n = len(self) - 1
        conv_spec = (conv.stride, conv.padding, conv.dilation, conv.groups)
        # Interleaving saves copying [X(i), R(i)] but costs a permuted copy of the weight per
        # forward: only where the activation is much larger than the weight (FAST_OPTIONS).
        interleave = (FAST_OPTIONS["interleave"] and conv.groups == 1
                      and 2 * self._stage.data[:, :, 0].numel() >= 4 * conv.weight.numel())
        spec = _Spec(n, own=True, interleave=interleave, conv=conv_spec, recompute=memory_efficient)
        out = _Integrate.apply(weights, conv.weight, self._stage, spec, *self.squeezed[: n + 1])
        if len(self) == self._stage.capacity:  # the stage's last block: nobody reads X again
            self._stage.release()
        if conv.bias is not None:
            out = out + conv.bias[:, None, None]
        return out

    def __len__(self) -> int:
        return len(self.squeezed)


_ORDERS: dict[tuple[int, torch.device], Tensor] = {}


def _interleave_order(channels: int, device: torch.device) -> Tensor:
    """Input-channel order of a convolution fed [x0, r0, x1, r1, ...] instead of [X, R]."""
    key = (channels, device)
    if key not in _ORDERS:
        half = channels // 2
        order = torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).reshape(-1)
        _ORDERS[key] = order.to(device)
    return _ORDERS[key]


class AFIModule(nn.Module):
    """AFI(i): integrates ``num_inputs`` earlier features of ``channels`` channels (Eq. 1-2).

    The softmax matrix S~ (shape (B, n, C)) passes through the identity submodule
    ``attention``; a forward hook on it reads the attention weights without redoing the math
    (see :func:`afictl.layers.record_attention`).
    """

    def __init__(self, channels: int, num_inputs: int, reduction: int = 4) -> None:
        super().__init__()
        if num_inputs < 2:
            raise ValueError("an AFI module with fewer than two inputs has nothing to weigh")
        hidden = max(1, channels // reduction)
        self.channels = channels
        self.num_inputs = num_inputs
        self.reduction = reduction
        # No biases: Eq. 1 has none, and the paper's parameter counts (Eq. 10) leave none room.
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, channels, bias=False)
        self.attention = nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Default Linear init, with W1 non-negative.

        The squeezed inputs z are means of post-ReLU features, so z >= 0 and its channels are
        correlated: with a zero-mean W1 and no bias, every hidden unit of a module is dead for
        all inputs with probability about 2^-hidden (often one module in a ResNet-32), and a
        dead module never learns. A non-negative W1 keeps ReLU(W1 z) alive at the start.
        """
        self.fc1.reset_parameters()
        self.fc2.reset_parameters()
        if self.fc1.weight.is_meta:  # shapes only; on meta, abs_ would import torch._dynamo (1 s)
            return
        with torch.no_grad():
            self.fc1.weight.abs_()

    def score(self, z: Tensor) -> Tensor:
        """F_sc of Eq. 1 applied to every input at once: (B, n, C) -> (B, n, C)."""
        return self.fc2(torch.relu(self.fc1(z)))

    def weights(self, squeezed: Sequence[Tensor]) -> Tensor:
        """S~ of Eq. 2 from the squeezed inputs z(1..n): (B, n, C), through ``attention``."""
        z = torch.stack(list(squeezed), dim=1)
        return self.attention(torch.softmax(self.score(z), dim=1))

    def forward(self, features: Sequence[Tensor], squeezed: Sequence[Tensor] | None = None) -> Tensor:
        if len(features) != self.num_inputs:
            raise ValueError(f"AFI module built for {self.num_inputs} inputs got {len(features)}")
        if squeezed is None:
            squeezed = [squeeze(x) for x in features]
        return self.integrate(features, self.weights(squeezed))

    @staticmethod
    def integrate(features: Sequence[Tensor], weights: Tensor) -> Tensor:
        """R of Eq. 2."""
        return weighted_sum(features, weights)

    def forward_pool(self, pool: FeaturePool) -> Tensor:
        """R from the first ``num_inputs`` features of a stage's pool."""
        n = self.num_inputs
        if pool.buffered:
            return pool.integrate(self.weights(pool.squeezed[:n]), n)
        return self(pool.features[:n], pool.squeezed[:n])

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_inputs={self.num_inputs}, reduction={self.reduction}"
