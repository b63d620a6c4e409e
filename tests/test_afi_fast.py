"""The accelerated AFI path (layers/afi_fast.py: stage buffer, batched matmul, fused next
convolution, memory-efficient recompute) and the paired narrow convolution against the plain
core, in float64: values and gradients, module by module and for whole models."""

import pytest
import torch
import torch.nn.functional as F
from reference import assert_close_scaled, assert_matches_reference, reference_afi

from afictl.layers import AFIModule, aggregation, aggregation_path, record_attention, stage_features
from afictl.layers.afi_fast import BufferedFeatures
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


def buffered(capacity, **kwargs):
    feats = BufferedFeatures(capacity, **kwargs)
    feats.to_buffer()  # a stage does this at its first fused write
    return feats


@pytest.mark.parametrize("n", [2, 3, 5])
def test_buffered_module_matches_reference(n):
    """R(n+1) from a stage buffer: Eq. 1-2, values and gradients."""
    module = AFIModule(channels=8, num_inputs=n, reduction=4).double()
    feats, ref_feats = leaves(n)
    pool = buffered(n + 1)
    for f in feats:
        pool.append(f)
    assert_matches_reference(module, pool.integrate(module, n), feats, ref_feats)


def test_buffer_gradcheck_with_a_consumer_of_every_feature():
    """Gradients through the buffer when features are read by several later consumers."""
    afi3, afi4 = AFIModule(3, 2).double(), AFIModule(3, 3).double()

    def f(x1, x2, x3):
        pool = buffered(4)
        pool.append(x1)
        r2 = pool.integrate(None, 1)  # R(2) = X(1)
        pool.append(x2)
        r3 = pool.integrate(afi3, 2)
        pool.append(x3)
        r4 = pool.integrate(afi4, 3)
        return r2.sum() + (r3 * r3).sum() + (r4**3).sum() + sum(z.sum() for z in pool.squeezed)

    xs = [torch.randn(2, 3, 2, 3, **F64, requires_grad=True) for _ in range(3)]
    assert torch.autograd.gradcheck(f, tuple(xs))


@pytest.mark.parametrize(("groups", "hw"), [(1, (12, 10)), (1, (3, 3)), (2, (6, 5)), (16, (5, 5))])
@pytest.mark.parametrize("memory_efficient", [False, True])
@pytest.mark.parametrize(("stride", "hi"), [(1, 0.0), (2, 0.0), (1, 6.0)])
def test_fused_block_matches_plain(groups, hw, memory_efficient, stride, hi):
    """act(h) -> X(i) into the buffer, conv([X(i), R(i)]) in one Function vs autograd
    (ReLU and ReLU6, plain, grouped and depthwise convolutions)."""
    torch.manual_seed(groups + 2 * memory_efficient + 4 * stride)
    c = 8
    out_ch = 2 * c if groups == 16 else 6
    conv = torch.nn.Conv2d(
        2 * c, out_ch, 3, stride=stride, padding=1, groups=groups, bias=True
    ).double()
    afi = AFIModule(c, 3).double()
    xs, ref_xs = leaves(3, (2, c, *hw))
    h, ref_h = leaves(1, (2, c, *hw))
    with torch.no_grad():
        h[0].mul_(4)  # values above 6 too: ReLU6's upper bound matters
        ref_h[0].copy_(h[0])

    pool = buffered(4)
    for x in xs:
        pool.append(x)
    pool.append_act(h[0], hi)
    out = pool.integrate_conv(afi, conv, memory_efficient=memory_efficient)

    ref_x = torch.clamp(ref_h[0], 0, hi) if hi else torch.relu(ref_h[0])
    ref_r = reference_afi(ref_xs, afi.fc1.weight, afi.fc2.weight)
    ref = F.conv2d(torch.cat([ref_x, ref_r], 1), conv.weight, conv.bias, stride, 1, 1, groups)
    assert_close_scaled(out, ref, 1e-10)

    grad = torch.randn_like(out)
    params = [conv.weight, conv.bias, afi.fc1.weight, afi.fc2.weight]
    got = torch.autograd.grad(out, [*xs, h[0], *params], grad)
    want = torch.autograd.grad(ref, [*ref_xs, ref_h[0], *params], grad)
    for g, w in zip(got, want, strict=True):
        assert_close_scaled(g, w, 1e-9)


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


@pytest.mark.parametrize("name", ["afi_mobilenetv2", "afi_shufflenetv2", "afi_mobilenetv2_se"])
def test_memory_efficient_saves_memory_in_every_family(name):
    sizes = {}
    for efficient in (False, True):
        torch.manual_seed(0)
        model = create_model(name, num_classes=4, memory_efficient=efficient)
        sizes[efficient] = saved_tensor_bytes(model, torch.randn(2, 3, 32, 32), torch.arange(2))
    assert sizes[True] < 0.97 * sizes[False]


def _train_step(model, x, target):
    model.zero_grad(set_to_none=True)
    out = model(x)
    F.cross_entropy(out, target).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    return out.detach(), grads, buffers


def assert_same_step(got, want):
    (out_f, grads_f, bufs_f), (out_p, grads_p, bufs_p) = got, want
    assert_close_scaled(out_f, out_p, 1e-10, "logits")
    # relative to each tensor's largest entry, at least 1e-6 of the largest gradient: a BN bias
    # before another BN has a gradient that is 0 up to rounding (1e-16)
    largest = max(g.abs().max().item() for g in grads_p.values())
    for k in grads_p:
        assert_close_scaled(grads_f[k], grads_p[k], 1e-8, k, floor=1e-6 * largest)
    for k in bufs_p:  # running statistics start at 0 and 1: 1 is their scale
        assert_close_scaled(bufs_f[k].double(), bufs_p[k].double(), 1e-10, k, floor=1.0)


@pytest.mark.parametrize(
    ("name", "size", "kwargs"),
    [
        ("afi_resnet20", 16, {}),
        ("afi_resnet20", 16, {"memory_efficient": True}),
        ("afi_resnet50", 32, {"memory_efficient": True}),
        ("afi_resnext29_32x4d", 16, {}),  # grouped conv2
        ("afi_shufflenetv2", 16, {"memory_efficient": True}),  # depthwise conv2
        ("afi_mobilenetv2", 16, {}),
        ("afi_mobilenetv2_se", 16, {"memory_efficient": True}),  # attn on R: plain, recomputed
        ("afi_mobilenet_v2", 32, {"dropout": 0.0}),  # ReLU6
    ],
)
def test_whole_model_fused_equals_plain(name, size, kwargs):
    """Outputs, every parameter gradient and the BN running statistics agree in float64, in
    training (fused by default) and at inference (plain by default, fused on request)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, **kwargs).double()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 3, size, size, **F64)
    target = torch.tensor([0, 2, 4, 1])
    assert aggregation_path(x) == "fused"
    results = {}
    for mode in ("plain", "auto"):
        model.load_state_dict(state)
        with aggregation(mode):
            results[mode] = _train_step(model, x, target)
    assert_same_step(results["auto"], results["plain"])
    model.eval()
    with torch.no_grad():
        assert aggregation_path(x) == "plain"
        with aggregation("fused"):
            assert aggregation_path(x) == "fused"
            fused = model(x)
        plain = model(x)
    assert_close_scaled(fused, plain, 1e-10)


def test_stage_features_follow_the_mode_and_gradients():
    model = create_model("afi_resnet20", num_classes=5)
    stage, x = model.layer2, torch.randn(2, 16, 32, 32)
    assert isinstance(stage_features(stage, x), BufferedFeatures)
    with torch.no_grad():
        assert not isinstance(stage_features(stage, x), BufferedFeatures)
    with aggregation("plain"):
        assert not isinstance(stage_features(stage, x), BufferedFeatures)
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregation("fast").__enter__()


def test_eq2_changed_in_one_place_changes_every_path(monkeypatch):
    """AFIModule.score is the one definition: replacing it (uniform scores, so R is the mean of
    the inputs) changes the fused and the plain path alike."""
    torch.manual_seed(0)
    model = create_model("afi_resnet20", num_classes=5).double()
    x = torch.randn(2, 3, 16, 16, **F64)
    before = model(x).detach()
    monkeypatch.setattr(AFIModule, "score", lambda self, z: torch.zeros_like(z))
    outs = {}
    for mode in ("auto", "plain"):
        with aggregation(mode):
            outs[mode] = model(x).detach()
    assert_close_scaled(outs["auto"], outs["plain"], 1e-10)
    assert (outs["auto"] - before).abs().max() > 1e-6


def test_hooks_select_the_plain_path_and_see_r():
    """A hook on afi_out (the analyses' probe) sees R(i) of every AFI block, also in training."""
    torch.manual_seed(0)
    model = create_model("afi_resnet20").double()
    x = torch.randn(2, 3, 32, 32, **F64)
    plain = model(x)
    seen = []
    handles = [
        b.join.afi_out.register_forward_hook(lambda m, i, o: seen.append(o.shape))
        for b in model.blocks("conv2")
    ]
    hooked = model(x)
    for h in handles:
        h.remove()
    assert seen == [(2, 32, 16, 16), (2, 16, 16, 16), (2, 16, 16, 16)]  # block 1: full width
    assert_close_scaled(hooked, plain, 1e-10)
    with record_attention(model) as rec:
        model(x)  # the fused path routes S~ through ``attention`` too
    assert len(rec) == 3 and all(len(v) == 1 for v in rec.values())


def test_paired_narrow_convolution_matches_conv():
    """The 16 -> 8 convolution as a two-group convolution over image pairs (float32)."""
    conv = torch.nn.Conv2d(16, 8, 3, padding=1, bias=False)
    x = torch.randn(4, 16, 12, 12, requires_grad=True)
    assert _pairs(conv, x) and not _pairs(conv, x[:3]) and not _pairs(conv, x.double())
    out = conv_narrow(conv, x)
    ref_x = x.detach().clone().requires_grad_(True)
    ref = conv(ref_x)
    assert_close_scaled(out, ref, 1e-5)
    grad = torch.randn_like(out)
    gx, gw = torch.autograd.grad(out, [x, conv.weight], grad)
    rx, rw = torch.autograd.grad(ref, [ref_x, conv.weight], grad)
    assert_close_scaled(gx, rx, 1e-5)
    assert_close_scaled(gw, rw, 1e-4)


def test_buffer_rejects_another_shape_and_a_second_write():
    pool = buffered(3)
    pool.append(torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match="share a shape"):
        pool.append(torch.randn(2, 4, 5, 5))
    pool = buffered(1)
    pool.append(torch.randn(2, 4, 3, 3))
    with pytest.raises(RuntimeError, match="capacity 1"):
        pool.append(torch.randn(2, 4, 3, 3))


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

    pool = buffered(3, recompute=True)
    pool.append(seed)
    outs = []
    for i, (bn, conv) in enumerate(zip(bns, convs, strict=True)):
        pool.append_bn_act(cs[i], bn, 0.0)
        outs.append(pool.integrate_conv(None if i == 0 else afi, conv, memory_efficient=True))
    assert pool.released  # after the last block
    loss = sum((o * torch.arange(o.numel(), **F64).view_as(o).sin()).sum() for o in outs)

    x2 = torch.relu(ref_bns[0](ref_cs[0]))
    ref1 = F.conv2d(torch.cat([x2, ref_seed], 1), convs[0].weight, padding=1)
    x3 = torch.relu(ref_bns[1](ref_cs[1]))
    ref2 = F.conv2d(
        torch.cat([x3, reference_afi([ref_seed, x2], afi.fc1.weight, afi.fc2.weight)], 1),
        convs[1].weight,
        padding=1,
    )
    for o, r in zip(outs, (ref1, ref2), strict=True):
        assert_close_scaled(o, r, 1e-10)
    ref_loss = sum(
        (o * torch.arange(o.numel(), **F64).view_as(o).sin()).sum() for o in (ref1, ref2)
    )
    params = [p for bn in bns for p in bn.parameters()]
    ref_params = [p for bn in ref_bns for p in bn.parameters()]
    got = torch.autograd.grad(loss, [seed, *cs, *params])
    want = torch.autograd.grad(ref_loss, [ref_seed, *ref_cs, *ref_params])
    for g, w in zip(got, want, strict=True):
        assert_close_scaled(g, w, 1e-9)
    for bn, ref in zip(bns, ref_bns, strict=True):
        for k, v in bn.state_dict().items():
            assert_close_scaled(v.double(), ref.state_dict()[k].double(), 1e-10, k)


def test_channels_last_and_bf16_autocast_run_the_fused_path():
    """Channels-last (float64, against the plain path) and CPU bf16 autocast (finite, and
    gradients for every parameter)."""
    torch.manual_seed(0)
    model = (
        create_model("afi_resnet20", num_classes=5).double().to(memory_format=torch.channels_last)
    )
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 16, 16, **F64).contiguous(memory_format=torch.channels_last)
    results = {}
    for mode in ("plain", "auto"):
        model.load_state_dict(state)
        with aggregation(mode):
            results[mode] = _train_step(model, x, torch.tensor([1, 3]))
    assert_same_step(results["auto"], results["plain"])

    model = create_model("afi_resnet20", num_classes=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(4, 3, 16, 16))
        loss = F.cross_entropy(out, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert torch.isfinite(out).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
