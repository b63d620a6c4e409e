"""Every backbone of the paper besides ResNet: shapes, gradients, paper counts, torchvision
compatibility, the AFI wiring of each family and the attention layers of Table 9."""

import pytest
import torch
import torchvision

from afictl.errors import UserError
from afictl.layers import AFIModule
from afictl.layers.attention import ATTENTION_LAYERS, create_attn
from afictl.layers.cbam import CBAM
from afictl.layers.eca import EfficientChannelAttention, eca_kernel_size
from afictl.layers.gather_excite import GatherExcite
from afictl.layers.se import SqueezeExcite
from afictl.models import create_meta_model, create_model, get_model_info, list_models
from afictl.models.densenet import DenseNet
from afictl.paper import paper_row
from afictl.profiling.compare import paper_table
from afictl.profiling.flops import count_flops, count_params


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these small CPU passes run many times faster that way when the two
    cores are shared (OpenMP workers spin waiting for a busy core); the setting is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


NEW = [
    "mobilenetv2",
    "afi_mobilenetv2",
    "afi_mobilenetv2_se",
    "afi_mobilenetv2_ge",
    "afi_mobilenetv2_cbam",
    "afi_mobilenetv2_eca",
    "shufflenetv2",
    "afi_shufflenetv2",
    "resnext29_32x4d",
    "afi_resnext29_32x4d",
    "densenet40",
    "densenet100",
    "mobilenet_v2",
    "afi_mobilenet_v2",
    "resnext50_32x4d",
    "afi_resnext50_32x4d",
]


def test_all_new_models_registered_with_their_baselines():
    assert set(NEW) <= set(list_models())
    assert get_model_info("afi_mobilenetv2_cbam").baseline == "mobilenetv2"
    assert get_model_info("afi_mobilenet_v2").baseline == "mobilenet_v2"
    assert get_model_info("afi_resnext50_32x4d").input_size == 224
    assert (
        get_model_info("densenet100").baseline is None
        and get_model_info("densenet100").family == "densenet"
    )
    assert {get_model_info(n).family for n in NEW} == {
        "mobilenetv2",
        "shufflenetv2",
        "resnext",
        "densenet",
    }


@pytest.mark.parametrize("name", NEW)
def test_output_shape_at_input_size(name):
    size = get_model_info(name).input_size
    model = create_meta_model(name, num_classes=7)
    assert model(torch.empty(2, 3, size, size, device="meta")).shape == (2, 7)


@pytest.mark.parametrize(
    "name", [n for n in NEW if get_model_info(n).is_afi]
)  # baselines: test_models.py
def test_forward_backward_reaches_every_afi_and_attention_parameter(name):
    size = 32 if get_model_info(name).input_size == 32 else 64
    model = create_model(name, num_classes=7)
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        if ".afi." in pname or ".attn." in pname:
            assert p.grad.abs().sum() > 0, pname  # scoring and attention weights are live


def test_afi_mobilenetv2_pair_of_the_paper_is_unreachable():
    """CIFAR and ImageNet MobileNetV2 share every width, so AFI changes both by the same count;
    the paper reports -0.16M (CIFAR) and +0.12M (ImageNet)."""
    cifar = count_params(create_meta_model("afi_mobilenetv2")) - count_params(
        create_meta_model("mobilenetv2")
    )
    imagenet = count_params(create_meta_model("afi_mobilenet_v2")) - count_params(
        create_meta_model("mobilenet_v2")
    )
    assert cifar == imagenet == -60_240


@pytest.mark.parametrize(
    "afi", ["afi_mobilenetv2", "afi_mobilenet_v2", "afi_resnext29_32x4d", "afi_resnext50_32x4d"]
)
def test_afi_to_baseline_flop_ratio_matches_paper(afi):
    base = get_model_info(afi).baseline
    ours = count_flops(afi, exact=False).flops / count_flops(base, exact=False).flops
    paper = paper_row(afi).flops / paper_row(base).flops
    assert abs(ours / paper - 1) < 0.03, (ours, paper)


@pytest.mark.parametrize("table", [4, 5])
def test_paper_tables_have_every_row(table):
    rows = paper_table(table, exact=False)
    assert rows and all(r["params"] and r["flops"] for r in rows)
    assert all(r["params_delta_pct"] is not None for r in rows if r["arch"].startswith("afi_"))


@pytest.mark.parametrize(
    ("ours", "theirs"), [("mobilenet_v2", "mobilenet_v2"), ("resnext50_32x4d", "resnext50_32x4d")]
)
def test_torchvision_state_dict_loads_strictly_and_agrees(ours, theirs):
    tv = getattr(torchvision.models, theirs)().eval()
    model = create_model(ours).eval()
    assert count_params(model) == count_params(tv)
    result = model.load_state_dict(tv.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv(x))
    model.load_state_dict(model.state_dict(), strict=True)  # our own keys still load


# --- AFI wiring per family -------------------------------------------------------------------


def test_mobilenetv2_stages_group_blocks_by_expansion_shape():
    model = create_meta_model("afi_mobilenetv2")
    assert model.stage_names == [f"conv{i}" for i in range(1, 8)]
    assert [len(model.blocks(s)) for s in model.stage_names] == [1, 1, 2, 3, 4, 3, 3]
    blocks = model.blocks("conv5")  # row 4's blocks 2-4 (64 -> 64) and row 5's first (64 -> 96)
    assert [b.first_conv.out_channels for b in blocks] == [384, 192, 192, 192]  # halved for i >= 2
    assert [b.join.afi.num_inputs if b.join.afi else None for b in blocks] == [None, None, 2, 3]
    assert [b.conv[1][0].in_channels for b in blocks] == [384] * 4  # depthwise gets [X(i), R(i)]
    assert blocks[-1].conv[2].out_channels == 96
    assert isinstance(model.feature_layer(), type(blocks[0]))


def test_shufflenetv2_afi_sits_at_the_branch_first_1x1():
    model = create_meta_model("afi_shufflenetv2")
    assert [len(model.blocks(s)) for s in model.stage_names] == [4, 8, 4]
    units = model.blocks("conv2")  # width 232, branch 116, X(i) 58
    assert (
        units[0].branch1 is not None and units[0].conv1.out_channels == 116
    )  # X(1) = half of it, pooled
    assert units[0].join.seed_stride == 2
    assert all(u.conv1.out_channels == 58 and u.conv2.in_channels == 116 for u in units[1:])
    assert [u.join.afi.num_inputs if u.join.afi else None for u in units] == [
        None,
        None,
        *range(2, 8),
    ]


def test_family_size_options():
    assert (
        count_params(create_meta_model("shufflenetv2", width=0.5)) == 444_292
    )  # pytorch-cifar 0.5x
    with pytest.raises(ValueError, match="width"):
        create_meta_model("shufflenetv2", width=0.75)
    with pytest.raises(ValueError, match="3n \\+ 4"):
        DenseNet(41)


def test_resnext29_afi_halves_the_first_1x1():
    model = create_meta_model("afi_resnext29_32x4d")
    blocks = model.blocks("conv3")  # group width 512
    assert [b.conv1.out_channels for b in blocks] == [512, 256, 256]
    assert blocks[2].join.afi.num_inputs == 2 and blocks[1].conv2.groups == 32
    assert model.conv1.kernel_size == (1, 1) and model.stage_names == ["conv1", "conv2", "conv3"]


@pytest.mark.parametrize(
    ("name", "stages"),
    [
        ("afi_mobilenetv2", 7),
        ("afi_shufflenetv2", 3),
        ("afi_resnext29_32x4d", 3),
        ("afi_mobilenet_v2", 7),
    ],
)
def test_afi_stages_and_reduction_work_for_every_family(name, stages):
    full = create_meta_model(name)
    only = create_meta_model(name, afi_stages=[stages])
    assert only.afi_stages == (stages,)
    prefix = only.stage_attrs[-1] + "."
    assert only.afi_modules() and all(n.startswith(prefix) for n in only.afi_modules())
    assert count_params(only) > count_params(full)  # fewer halved convolutions
    r2 = create_meta_model(name, reduction=2)
    m = next(iter(r2.afi_modules().values()))
    assert m.fc1.out_features == m.channels // 2 and count_params(r2) > count_params(full)
    with pytest.raises(ValueError):
        create_meta_model(name, afi_stages=[stages + 1])


def test_densenet_stages_are_dense_blocks():
    model = create_meta_model("densenet40")
    assert [len(model.blocks(s)) for s in model.stage_names] == [12, 12, 12]
    assert model.afi_modules() == {} and model.num_features == 16 + 36 * 12
    seen = []
    model.probes("conv2")[0].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    model(torch.empty(1, 3, 32, 32, device="meta"))
    assert seen == [(1, 12, 16, 16)]  # the k new maps of the layer, at the stage resolution


# --- attention (Table 9) ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ATTENTION_LAYERS))
def test_attention_keeps_shape_and_changes_input(name):
    layer = create_attn(name, 24)
    x = torch.randn(2, 24, 8, 8, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape and not torch.allclose(x, y)
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_attention_factory_and_variants():
    assert create_attn(None, 8) is None and create_attn("none", 8) is None
    assert isinstance(create_attn("SE", 32), SqueezeExcite) and isinstance(
        create_attn("cbam", 32), CBAM
    )
    with pytest.raises(ValueError, match="se, ge, cbam, eca"):
        create_attn("sk", 8)
    assert [eca_kernel_size(c) for c in (64, 256, 512)] == [3, 5, 5]  # Eq. 12 of ECA-Net
    assert EfficientChannelAttention(256).conv.kernel_size == (5,)
    assert sum(p.numel() for p in GatherExcite(32).parameters()) == 0  # GE-theta-minus
    x = torch.randn(1, 4, 8, 8)
    local = GatherExcite(4, extent=4)(x)  # gates constant on each 4 x 4 cell
    gate = local / x
    torch.testing.assert_close(gate[..., :4, :4], gate[..., :1, :1].expand(1, 4, 4, 4))
    assert GatherExcite(32, use_mlp=True).mlp is not None


def test_attention_is_applied_to_r_in_afi_blocks():
    model = create_meta_model("afi_mobilenetv2_eca")
    blocks = model.blocks("conv5")
    assert blocks[0].attn is None  # block 1 has no R
    assert all(isinstance(b.attn, EfficientChannelAttention) for b in blocks[1:])
    seen = {}
    blocks[2].attn.register_forward_hook(lambda m, i, o: seen.update(attn=i[0].shape))
    blocks[2].join.afi_out.register_forward_hook(lambda m, i, o: seen.update(r=o.shape))
    model(torch.empty(1, 3, 32, 32, device="meta"))
    assert seen["attn"] == seen["r"] == (1, 192, 8, 8)
    with pytest.raises(UserError, match="mobilenetv2 does not take attn"):  # a baseline has no R(i)
        create_model("mobilenetv2", attn="se")
    assert isinstance(next(iter(model.afi_modules().values())), AFIModule)
