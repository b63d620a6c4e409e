"""``memory_efficient`` AFI blocks (layers/afi_join.py): [X(i), R(i)] recomputed in backward
gives the stored join's values and gradients in float64, and keeps less for backward."""

import pytest
import torch
import torch.nn.functional as F
from reference import assert_close_scaled

from afictl.layers import record_attention
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


def test_memory_efficient_keeps_only_x_and_features():
    """Memory-efficient blocks keep for backward neither [X(i), R(i)] (C channels) nor the first
    convolution's output (C/2) of AFI blocks 2..n, nor the stage's last X(n) (C/2, read by no
    later block); what else differs is the BN statistics, which are tiny."""
    sizes = {}
    for efficient in (False, True):
        torch.manual_seed(0)
        model = create_model("afi_resnet20", num_classes=4, memory_efficient=efficient)
        x, y = torch.randn(4, 3, 32, 32), torch.arange(4)
        sizes[efficient] = saved_tensor_bytes(model, x, y)
    stages = ((16, 32), (32, 16), (64, 8))  # channels, side; blocks 2 and 3 are AFI blocks
    channels = sum((2 * c + 2 * (c // 2) + c // 2) * hw * hw for c, hw in stages)
    expected = 4 * channels * 4  # batch 4, float32
    assert 0 <= sizes[False] - sizes[True] - expected <= 0.002 * expected


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
    ("name", "size"),
    [
        ("afi_resnet20", 16),
        ("afi_resnet50", 32),
        ("afi_shufflenetv2", 16),  # depthwise conv2
        ("afi_mobilenetv2_se", 16),  # attn on R
    ],
)
def test_memory_efficient_equals_stored(name, size):
    """Outputs, every parameter gradient and the BN running statistics of one training step
    agree in float64, with and without recomputation."""
    x = torch.randn(4, 3, size, size, **F64)
    target = torch.tensor([0, 2, 4, 1])
    results = {}
    for efficient in (False, True):
        torch.manual_seed(0)
        model = create_model(name, num_classes=5, memory_efficient=efficient).double()
        results[efficient] = _train_step(model, x, target)
    assert_same_step(results[True], results[False])


def test_hooks_see_r_in_training_and_at_inference():
    """A hook on afi_out (the analyses' probe) sees R(i) of every AFI block."""
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
        model(x)
    assert len(rec) == 3 and all(len(v) == 1 for v in rec.values())


def test_memory_efficient_recomputes_only_in_training():
    """At inference (eval mode or no gradients) nothing is recomputed: a memory-efficient
    model gives the stored model's logits exactly."""
    torch.manual_seed(0)
    stored = create_model("afi_resnet20", num_classes=5).eval()
    efficient = create_model("afi_resnet20", num_classes=5, memory_efficient=True).eval()
    efficient.load_state_dict(stored.state_dict())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(efficient(x), stored(x))


def test_channels_last_and_bf16_autocast_train():
    """Channels-last (float64, against contiguous) and CPU bf16 autocast (finite, and
    gradients for every parameter), memory-efficient."""
    torch.manual_seed(0)
    model = create_model("afi_resnet20", num_classes=5, memory_efficient=True).double()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 16, 16, **F64)
    want = _train_step(model, x, torch.tensor([1, 3]))
    model.load_state_dict(state)
    model = model.to(memory_format=torch.channels_last)
    got = _train_step(model, x.contiguous(memory_format=torch.channels_last), torch.tensor([1, 3]))
    assert_same_step(got, want)

    model = create_model("afi_resnet20", num_classes=5, memory_efficient=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(4, 3, 16, 16))
        loss = F.cross_entropy(out, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert torch.isfinite(out).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
