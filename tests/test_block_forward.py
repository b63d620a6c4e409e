"""Each family's stage equals the paper's block equations written out from the block's own
layers (Eq. 3, and Eq. 4 with R(i) from the literal Eq. 2 of tests/reference.py), in eval mode
and in memory-efficient training (values and gradients, float64); the join takes X(i) only."""

import pytest
import torch
import torch.nn.functional as F
from reference import assert_close_scaled, reference_afi
from torch import nn

from afictl.layers import record_attention
from afictl.models import create_model

F64 = dict(dtype=torch.float64)


@pytest.fixture(autouse=True)
def _one_thread():
    """float64 convolutions of tiny inputs: one thread avoids OpenMP spin-waits on busy CPUs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the blocks in the paper's terms: X(i) = first(block, I(i)), I(i+1) = rest(block, h, I(i))
# where h is what the next convolution reads (X(i), or [X(i), R(i)] in an AFI block)


def _identity(block, x):
    return x if block.downsample is None else block.downsample(x)


def _resnet_first(block, x):
    return F.relu(block.bn1(block.conv1(x)))


def _basic_rest(block, h, x):
    return F.relu(block.bn2(block.conv2(h)) + _identity(block, x))


def _bottleneck_rest(block, h, x):
    out = F.relu(block.bn2(block.conv2(h)))
    return F.relu(block.bn3(block.conv3(out)) + _identity(block, x))


def _shuffle_first(unit, x):
    branch = x.chunk(2, dim=1)[1] if unit.branch1 is None else x
    return F.relu(unit.bn1(unit.conv1(branch)))


def _shuffle_rest(unit, h, x):
    keep = x.chunk(2, dim=1)[0] if unit.branch1 is None else unit.branch1(x)
    out = torch.cat([keep, F.relu(unit.bn3(unit.conv3(unit.bn2(unit.conv2(h)))))], dim=1)
    b, c, hh, ww = out.shape
    return out.view(b, 2, c // 2, hh, ww).transpose(1, 2).reshape(b, c, hh, ww)


def _mobilenet_first(block, x):
    conv, bn, _ = block.conv[0]  # the 1x1 expansion (ReLU in the CIFAR variant)
    return F.relu(bn(conv(x)))


def _mobilenet_rest(block, h, x):
    dw_conv, dw_bn, _ = block.conv[1]
    out = block.conv[3](block.conv[2](F.relu(dw_bn(dw_conv(h)))))
    if block.use_res_connect:
        return x + out
    return out if block.shortcut is None else out + block.shortcut(x)


FAMILIES = {  # first, rest, stride of the seed X(1) (where the stride follows X)
    "resnet20": (_resnet_first, _basic_rest, 1),
    "afi_resnet20": (_resnet_first, _basic_rest, 1),
    "afi_resnext29_32x4d": (_resnet_first, _bottleneck_rest, 2),
    "afi_shufflenetv2": (_shuffle_first, _shuffle_rest, 2),
    "afi_mobilenetv2_se": (_mobilenet_first, _mobilenet_rest, 1),
}


def reference_stage(name, blocks, x):
    """Eq. 3 in a baseline stage; Eq. 4 in an AFI stage: block 1 keeps its width and gives X(1)
    (its first half, pooled to the stage resolution); block 2 reads [X(2), X(1)]; block i >= 3
    reads [X(i), AFI(i)(X(1..i-1))], with the attention layer of Table 9 on R(i) if any."""
    first, rest, seed_stride = FAMILIES[name]
    afi = name.startswith("afi_")
    feats = []
    for i, block in enumerate(blocks, start=1):
        xi = first(block, x)
        h = xi
        if afi and i == 1:
            seed = xi[:, : xi.shape[1] // 2]
            feats.append(F.avg_pool2d(seed, seed_stride) if seed_stride > 1 else seed)
        elif afi:
            module = block.join.afi
            r = feats[0] if i == 2 else reference_afi(feats, module.fc1.weight, module.fc2.weight)
            attn = getattr(block, "attn", None)
            h = torch.cat([xi, r if attn is None else attn(r)], dim=1)
            feats.append(xi)
        x = rest(block, h, x)
    return x


def _model_and_stage(name, **kwargs):
    """The model in float64 with random BatchNorm affines and statistics (so that a skipped or
    misplaced BN shows), and its stage of most blocks with an input of the right width."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **kwargs).double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    stage = max(model.stage_names, key=lambda s: (len(model.blocks(s)), s))
    blocks = model.blocks(stage)
    first = blocks[0]
    conv = first.conv[0][0] if name.startswith("afi_mobilenetv2") else first.conv1
    x = torch.randn(2, conv.in_channels, 8, 8, **F64)
    return model, model.get_stage(stage), blocks, x


@pytest.mark.parametrize("name", list(FAMILIES))
def test_stage_is_eq3_or_eq4_at_inference(name):
    model, stage, blocks, x = _model_and_stage(name)
    model.eval()
    with torch.no_grad():
        assert_close_scaled(stage(x), reference_stage(name, blocks, x), 1e-10, name)


@pytest.mark.parametrize("name", [n for n in FAMILIES if n.startswith("afi_")])
def test_memory_efficient_training_is_eq4_with_its_gradients(name):
    """Recomputed in backward, the stage still computes Eq. 4 and its gradients (input and
    every parameter), with BatchNorm on batch statistics."""
    model, stage, blocks, x = _model_and_stage(name, memory_efficient=True)
    model.train()
    params = dict(stage.named_parameters())
    grad = None
    results = []
    for run in (stage, lambda x: reference_stage(name, blocks, x)):
        model.zero_grad(set_to_none=True)
        xin = x.clone().requires_grad_(True)
        out = run(xin)
        grad = torch.randn_like(out) if grad is None else grad
        out.backward(grad)
        results.append((out.detach(), xin.grad, {k: p.grad for k, p in params.items()}))
    (out, dx, grads), (ref, ref_dx, ref_grads) = results
    assert_close_scaled(out, ref, 1e-10, "output")
    assert_close_scaled(dx, ref_dx, 1e-9, "dL/dx")
    largest = max(g.abs().max().item() for g in ref_grads.values())
    for k, g in ref_grads.items():
        assert_close_scaled(grads[k], g, 1e-9, k, floor=1e-6 * largest)


def test_join_receives_x_i_and_memory_efficient_training_weighs_once():
    """The join's input is the block's first activation X(i) (conv1 -> bn1 -> ReLU run in the
    block, not in the join); memory-efficient training scores each AFI module once per step
    (the softmax weights are not recomputed), while hooks on the recomputed part see it twice."""
    torch.manual_seed(0)
    model = create_model("afi_resnet20", num_classes=3, memory_efficient=True).train()
    block = model.blocks("conv2")[2]
    seen = {}  # the first call of each (a hook returning a tensor would replace the output)
    block.bn1.register_forward_hook(lambda m, i, o: None if "bn1" in seen else seen.update(bn1=o))
    block.join.register_forward_pre_hook(
        lambda m, i: None if "join" in seen else seen.update(join=i[0])
    )
    calls = []
    block.join.afi_out.register_forward_hook(lambda *a: calls.append(1))
    with record_attention(model) as weights:
        loss = model(torch.randn(2, 3, 16, 16)).logsumexp(1).sum()
        loss.backward()
    # ReLU runs in place on bn1's output: the very tensor the join receives
    assert seen["join"] is seen["bn1"] and seen["join"].shape[1] == 16  # halved
    assert len(weights) == 3 and all(len(w) == 1 for w in weights.values())
    assert len(calls) == 2  # the forward and its recomputation in backward
