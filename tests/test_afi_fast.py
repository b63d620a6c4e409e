"""The fast aggregation (stage buffer, batched matmul, fused next convolution, memory-efficient
recompute, paired narrow convolution) against plain references, in float64: values and
gradients, module by module and for whole models."""

import pytest
import torch
import torch.nn.functional as F
from reference import assert_matches_reference, reference_afi

from afictl.layers import AFIModule, FeaturePool, record_attention
from afictl.layers.afi import aggregation
from afictl.layers.narrow_conv import _pairs, conv_narrow
from afictl.models import create_model
from afictl.profiling.memory import saved_tensor_bytes

F64 = dict(dtype=torch.float64)


@pytest.fixture(autouse=True)
def _one_thread():
    """float64 convolutions of tiny inputs: one thread avoids OpenMP spin-waits on busy CPUs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def leaves(n, shape=(2, 8, 5, 4)):
    xs = [torch.randn(*shape, **F64, requires_grad=True) for _ in range(n)]
    return xs, [x.detach().clone().requires_grad_(True) for x in xs]


def fast_pool(capacity):
    with aggregation("fast"):
        pool = FeaturePool(capacity=capacity)
    pool.to_buffer()  # a Stage's pool does this at the first fused write
    assert pool.fast and pool.buffered
    return pool


@pytest.mark.parametrize("n", [2, 3, 5])
def test_fast_module_matches_reference(n):
    """AFIModule.forward_pool on a stage buffer: Eq. 1-2, values and gradients."""
    module = AFIModule(channels=8, num_inputs=n, reduction=4).double()
    feats, ref_feats = leaves(n)
    pool = fast_pool(n + 1)
    for f in feats:
        pool.add(f)
    assert_matches_reference(module, module.forward_pool(pool), feats, ref_feats)


def test_fast_pool_gradcheck_with_a_consumer_of_every_feature():
    """Gradients through the buffer when features are read by several later consumers."""
    def f(x1, x2, x3, w3, w4):
        pool = fast_pool(4)
        pool.add(x1)
        r2 = pool.integrate(None, 1)  # R(2) = X(1)
        pool.add(x2)
        r3 = pool.integrate(w3, 2)
        pool.add(x3)
        r4 = pool.integrate(w4, 3)
        return r2.sum() + (r3 * r3).sum() + (r4 ** 3).sum() + sum(z.sum() for z in pool.squeezed)

    xs = [torch.randn(2, 3, 2, 3, **F64, requires_grad=True) for _ in range(3)]
    w3 = torch.rand(2, 2, 3, **F64, requires_grad=True)
    w4 = torch.rand(2, 3, 3, **F64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (*xs, w3, w4))


@pytest.mark.parametrize(("groups", "hw", "interleaved"), [
    (1, (12, 10), True),  # activation >> weight: [x0, r0, x1, r1, ...] and a permuted weight
    (1, (3, 3), False),  # weight-heavy: [X, R] in the standard order
    (2, (6, 5), False),  # grouped convolution: standard order
])
@pytest.mark.parametrize("memory_efficient", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
def test_fused_block_matches_plain(groups, hw, interleaved, memory_efficient, stride, monkeypatch):
    """relu(h) -> X(i) into the buffer, conv([X(i), R(i)]) in one Function vs autograd."""
    import afictl.layers.afi as afi_mod

    monkeypatch.setitem(afi_mod.FAST_OPTIONS, "interleave", True)  # off by default: exercise it
    seen = []
    original = afi_mod._integrate_forward
    monkeypatch.setattr(afi_mod, "_integrate_forward",
                        lambda stage, spec, mixing: seen.append(spec.interleave) or original(stage, spec, mixing))
    torch.manual_seed(groups + 2 * memory_efficient + 4 * stride)
    c = 8
    conv = torch.nn.Conv2d(2 * c, 6, 3, stride=stride, padding=1, groups=groups, bias=True).double()
    afi = AFIModule(c, 3).double()
    xs, ref_xs = leaves(3, (2, c, *hw))
    h, ref_h = leaves(1, (2, c, *hw))

    pool = fast_pool(4)
    for x in xs:
        pool.add(x)
    weights = afi.weights(pool.squeezed[:3])
    pool.add_relu(h[0])
    out = pool.integrate_conv(weights, conv, memory_efficient=memory_efficient)

    ref_x = torch.relu(ref_h[0])
    ref_r = reference_afi(ref_xs, afi.fc1.weight, afi.fc2.weight)
    ref = F.conv2d(torch.cat([ref_x, ref_r], 1), conv.weight, conv.bias, stride, 1, 1, groups)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)

    grad = torch.randn_like(out)
    params = [conv.weight, conv.bias, afi.fc1.weight, afi.fc2.weight]
    got = torch.autograd.grad(out, [*xs, h[0], *params], grad)
    want = torch.autograd.grad(ref, [*ref_xs, ref_h[0], *params], grad)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)
    assert set(seen) == {interleaved} and len(seen) == 1 + memory_efficient  # recomputed once


def test_memory_efficient_keeps_neither_concatenation_nor_buffer():
    """Memory-efficient blocks keep no [X(i), R(i)] and no stage buffer for backward."""
    sizes = {}
    for efficient in (False, True):
        torch.manual_seed(0)
        model = create_model("afi_resnet20", num_classes=4, memory_efficient=efficient)
        x, y = torch.randn(4, 3, 32, 32), torch.arange(4)
        sizes[efficient] = saved_tensor_bytes(model, x, y)
    # one [X(i), R(i)] of 4 x C x H x W floats per AFI block i >= 2 (2 per stage), and the
    # stage buffer of 3 features of C/2 channels (rebuilt from BN inputs kept anyway)
    stages = ((16, 32), (32, 16), (64, 8))
    concat = sum(2 * 4 * c * hw * hw * 4 for c, hw in stages)
    buffer = sum(4 * (c // 2) * 3 * hw * hw * 4 for c, hw in stages)
    assert sizes[False] - sizes[True] == concat + buffer


def _train_step(model, x, target):
    model.zero_grad(set_to_none=True)
    out = model(x)
    F.cross_entropy(out, target).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    return out.detach(), grads, buffers


@pytest.mark.parametrize(("name", "size", "kwargs"), [
    ("afi_resnet20", 16, {}),
    ("afi_resnet20", 16, {"interleave": True}),  # FAST_OPTIONS, not a model option
    ("afi_resnet20", 16, {"memory_efficient": True}),
    ("afi_resnet50", 32, {"memory_efficient": True}),
    ("afi_resnext29_32x4d", 16, {}),  # grouped conv2: standard-order [X, R]
    ("afi_shufflenetv2", 16, {}),  # AFIJoin.forward (no fused convolution)
])
def test_whole_model_fast_equals_reference(name, size, kwargs, monkeypatch):
    """Outputs, every parameter gradient and the BN running statistics agree in float64."""
    import afictl.layers.afi as afi_mod

    kwargs = dict(kwargs)
    monkeypatch.setitem(afi_mod.FAST_OPTIONS, "interleave", kwargs.pop("interleave", False))
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, **kwargs).double()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 3, size, size, **F64)
    target = torch.tensor([0, 2, 4])
    results = {}
    for impl in ("reference", "fast"):
        model.load_state_dict(state)
        with aggregation(impl):
            results[impl] = _train_step(model, x, target)
    (out_r, grads_r, bufs_r), (out_f, grads_f, bufs_f) = results["reference"], results["fast"]
    torch.testing.assert_close(out_f, out_r, rtol=1e-10, atol=1e-12)
    for k in grads_r:
        # relative to the tensor's largest entry: some BN biases have gradients that are 0 up
        # to rounding (1e-16), and small batches make others large (1e4)
        scale = grads_r[k].abs().max().item()
        assert (grads_f[k] - grads_r[k]).abs().max().item() <= 1e-9 * scale + 1e-13, k
    for k in bufs_r:
        torch.testing.assert_close(bufs_f[k], bufs_r[k], rtol=1e-10, atol=1e-12, msg=k)
    model.eval()
    with torch.no_grad():
        with aggregation("reference"):
            ref = model(x)
        fast = model(x)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-12)


def test_hooks_select_the_plain_path_and_see_r():
    """A hook on afi_out (the analyses' probe) still sees R(i) of every AFI block."""
    model = create_model("afi_resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
    seen = []
    handles = [b.join.afi_out.register_forward_hook(lambda m, i, o: seen.append(o.shape))
               for b in model.blocks("conv2")]
    with torch.no_grad():
        hooked = model(x)
    for h in handles:
        h.remove()
    assert seen == [(2, 32, 16, 16), (2, 16, 16, 16), (2, 16, 16, 16)]  # block 1: full width
    torch.testing.assert_close(hooked, plain, rtol=1e-5, atol=1e-5)
    with record_attention(model) as rec, torch.no_grad():
        model(x)  # the fast path still routes S~ through ``attention``
    assert len(rec) == 3 and all(len(v) == 1 for v in rec.values())


def test_paired_narrow_convolution_matches_conv():
    """The 16 -> 8 convolution as a two-group convolution over image pairs (float32)."""
    conv = torch.nn.Conv2d(16, 8, 3, padding=1, bias=False)
    x = torch.randn(4, 16, 12, 12, requires_grad=True)
    assert _pairs(conv, x) and not _pairs(conv, x[:3]) and not _pairs(conv, x.double())
    out = conv_narrow(conv, x)
    ref_x = x.detach().clone().requires_grad_(True)
    ref = conv(ref_x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    gx, gw = torch.autograd.grad(out, [x, conv.weight], grad)
    rx, rw = torch.autograd.grad(ref, [ref_x, conv.weight], grad)
    torch.testing.assert_close(gx, rx, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, rw, rtol=1e-4, atol=1e-4)


def test_pool_rejects_features_of_another_shape():
    pool = fast_pool(3)
    pool.add(torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match="share a shape"):
        pool.add(torch.randn(2, 4, 5, 5))


@pytest.mark.parametrize("training", [True, False])
def test_memory_efficient_stage_rebuilds_its_buffer(training):
    """Seed X(1), then two blocks X(i) = ReLU(BN(c_i)) whose buffer is released after the
    stage and rebuilt in backward: same values, gradients and BN statistics as autograd."""
    torch.manual_seed(3)
    c = 4
    bns = [torch.nn.BatchNorm2d(c).double().train(training) for _ in range(2)]
    ref_bns = [torch.nn.BatchNorm2d(c).double().train(training) for _ in range(2)]
    for bn, ref in zip(bns, ref_bns, strict=True):
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2)
        ref.load_state_dict(bn.state_dict())
    convs = [torch.nn.Conv2d(2 * c, 3, 3, padding=1, bias=False).double() for _ in range(2)]
    afi = AFIModule(c, 2).double()
    (seed, *cs), (ref_seed, *ref_cs) = leaves(3, (3, c, 9, 9))

    pool = fast_pool(3)
    pool.recompute = True
    pool.add(seed)
    outs = []
    for i, (bn, conv) in enumerate(zip(bns, convs, strict=True)):
        pool.add_bn_relu(cs[i], bn)
        weights = None if i == 0 else afi.weights(pool.squeezed[:2])
        outs.append(pool.integrate_conv(weights, conv, memory_efficient=True))
    assert pool._stage.data is None  # released after the last block
    loss = sum((o * torch.arange(o.numel(), **F64).view_as(o).sin()).sum() for o in outs)

    x2 = torch.relu(ref_bns[0](ref_cs[0]))
    ref1 = F.conv2d(torch.cat([x2, ref_seed], 1), convs[0].weight, padding=1)
    x3 = torch.relu(ref_bns[1](ref_cs[1]))
    ref2 = F.conv2d(torch.cat([x3, reference_afi([ref_seed, x2], afi.fc1.weight, afi.fc2.weight)], 1),
                    convs[1].weight, padding=1)
    for o, r in zip(outs, (ref1, ref2), strict=True):
        torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-12)
    ref_loss = sum((o * torch.arange(o.numel(), **F64).view_as(o).sin()).sum() for o in (ref1, ref2))
    params = [p for bn in bns for p in bn.parameters()]
    ref_params = [p for bn in ref_bns for p in bn.parameters()]
    got = torch.autograd.grad(loss, [seed, *cs, *params])
    want = torch.autograd.grad(ref_loss, [ref_seed, *ref_cs, *ref_params])
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)
    for bn, ref in zip(bns, ref_bns, strict=True):
        for k, v in bn.state_dict().items():
            torch.testing.assert_close(v, ref.state_dict()[k], msg=k)


def test_channels_last_and_bf16_autocast_run_the_fast_path():
    """Channels-last (float64, against the reference) and CPU bf16 autocast (finite, and
    gradients for every parameter)."""
    torch.manual_seed(0)
    model = create_model("afi_resnet20", num_classes=5).double().to(memory_format=torch.channels_last)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 16, 16, **F64).contiguous(memory_format=torch.channels_last)
    results = {}
    for impl in ("reference", "fast"):
        model.load_state_dict(state)
        with aggregation(impl):
            results[impl] = _train_step(model, x, torch.tensor([1, 3]))
    torch.testing.assert_close(results["fast"][0], results["reference"][0], rtol=1e-10, atol=1e-12)
    for k, g in results["reference"][1].items():
        assert (results["fast"][1][k] - g).abs().max() <= 1e-9 * g.abs().max() + 1e-13, k

    model = create_model("afi_resnet20", num_classes=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(4, 3, 16, 16))
        loss = F.cross_entropy(out, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert torch.isfinite(out).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
