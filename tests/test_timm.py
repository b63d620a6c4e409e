"""timm's model surface on every registered model, and timm building and driving them.

The surface tests run without timm; those that need it skip when it is not installed.
"""

import copy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from afictl.data.transforms import NORMALIZATION, preprocessing
from afictl.errors import UserError
from afictl.models import (
    Backbone,
    FeatureNet,
    ModelOptionError,
    create_meta_model,
    create_model,
    get_model_info,
    list_models,
)

ALL = list_models()
#: the names timm 1.0 already has, which afictl registers with the prefix afictl_
TIMM_OWN = {"resnet50", "resnet101", "resnet152", "resnext50_32x4d"}


def _timm_names() -> list[str]:
    try:
        import timm  # noqa: F401
    except ImportError:
        return []
    from afictl.models.timm_bridge import REGISTERED

    return sorted(REGISTERED)


TIMM = _timm_names()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: many small passes run faster so on two shared cores (restored)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _batch(name: str, channels: int = 3) -> torch.Tensor:
    size = 32 if get_model_info(name).input_size == 32 else 64  # ImageNet nets: small, valid
    return torch.randn(2, channels, size, size)


# --- the surface, on every model ----------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_stages_features_only_and_heads(name):
    model = create_model(name, num_classes=5).eval()
    x = _batch(name)
    seen = {}
    for attr in model.stage_attrs:
        getattr(model, attr).register_forward_hook(lambda m, i, o, a=attr: seen.__setitem__(a, o))
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
        final, stages = model.forward_intermediates(x)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    assert pooled.shape == (2, model.num_features) and features.shape[1] == model.num_features
    assert torch.equal(final, features)
    assert len(stages) == len(model.feature_info) == get_model_info(name).num_stages
    for info, out, attr in zip(model.feature_info, stages, model.stage_attrs, strict=True):
        assert torch.equal(out, seen[attr])  # the stages' own outputs
        assert info["module"] == attr and out.shape[1] == info["num_chs"]
        assert x.shape[-1] == out.shape[-1] * info["reduction"]

    # features_only on the same weights: the stage outputs, and nothing unused left
    feats = FeatureNet(copy.deepcopy(model), out_indices=(0, 1))
    with torch.no_grad():
        outs = feats(x)
    assert [torch.equal(a, b) for a, b in zip(outs, stages[:2], strict=True)] == [True, True]
    assert feats.feature_info.channels() == [o.shape[1] for o in outs]
    assert feats.feature_info.reduction() == [x.shape[-1] // o.shape[-1] for o in outs]
    sum(o.mean() for o in feats.train()(x)).backward()
    assert all(p.grad is not None for p in feats.parameters())

    # no classifier: the pooled features; a new one for 7 classes
    model.reset_classifier(0)
    with torch.no_grad():
        assert torch.equal(model(x), pooled)
    assert isinstance(model.get_classifier(), nn.Identity) and model.num_classes == 0
    model.reset_classifier(7)
    assert model(x).shape == (2, 7) and model.get_classifier().out_features == 7


@pytest.mark.parametrize("name", ALL)
def test_headless_and_features_only_models(name):
    info = get_model_info(name)
    x = torch.empty(2, 3, info.input_size, info.input_size, device="meta")
    model = create_meta_model(name, num_classes=0)
    assert isinstance(model.get_classifier(), nn.Identity) and model.num_classes == 0
    assert model(x).shape == (2, model.num_features)
    assert create_meta_model(name).num_classes == info.num_classes  # None: the home dataset's

    feats = create_meta_model(name, features_only=True, out_indices=(0, -1))
    last = info.num_stages - 1
    assert isinstance(feats, FeatureNet) and feats.feature_info.out_indices == (0, last)
    assert feats.feature_info.channels() == [o.shape[1] for o in feats(x)]
    assert "num_classes" not in feats.pretrained_cfg
    assert feats.pretrained_cfg["input_size"] == (3, info.input_size, info.input_size)


@pytest.mark.parametrize("name", ALL)
def test_pretrained_cfg_is_the_eval_pipeline(name):
    info = get_model_info(name)
    model = create_meta_model(name)
    cfg = model.pretrained_cfg
    expected = preprocessing(info.home_dataset, info.input_size)
    assert {k: cfg[k] for k in expected} == expected
    assert cfg["num_classes"] == info.num_classes and cfg["architecture"] == name
    first = model.get_submodule(cfg["first_conv"])
    assert isinstance(first, nn.Conv2d) and first.in_channels == 3
    assert model.get_submodule(cfg["classifier"]) is model.get_classifier()
    size = info.input_size // model.feature_info[-1]["reduction"]
    assert cfg["pool_size"] == (size, size)


@pytest.mark.parametrize("name", ALL)
def test_group_matcher_groups_stem_blocks_and_head(name):
    pytest.importorskip("timm")
    from timm.models import group_parameters

    model = create_meta_model(name)
    blocks = sum(len(list(getattr(model, a).children())) for a in model.stage_attrs)
    for coarse, middle in ((False, blocks), (True, len(model.stage_attrs))):
        groups = group_parameters(model, model.group_matcher(coarse=coarse))
        assert len(groups) == 1 + middle + 1  # stem, stages or blocks, the rest (head)
        assert f"{model.first_conv_path}.weight" in groups[0]
        assert not any(n.startswith(tuple(model.stage_attrs)) for n in groups[0])
        assert f"{model.classifier_path}.weight" in groups[len(groups) - 1]
    assert model.no_weight_decay() == set()


def test_classifier_and_option_refusals_are_one_line():
    bad = [
        dict(num_classes=-1),
        dict(out_indices=(0,)),  # without features_only
        dict(features_only=True, out_indices=(3,)),
        dict(features_only=True, out_indices=0),
        dict(drop_rate=1.5),
        dict(in_chans=0),
        dict(img_size=64),
    ]
    for kwargs in bad:
        with pytest.raises(ModelOptionError) as err:
            create_meta_model("afi_resnet20", **kwargs)
        assert isinstance(err.value, ValueError) and isinstance(err.value, UserError)
        assert "\n" not in str(err.value), kwargs
    model = create_meta_model("resnet20")
    with pytest.raises(ValueError, match="avg"):
        model.reset_classifier(3, global_pool="max")


def test_in_chans_and_drop_rate():
    model = create_model("afi_resnet20", num_classes=4, in_chans=1, drop_rate=0.5)
    assert model.conv1.in_channels == 1 and model.pretrained_cfg["input_size"] == (1, 32, 32)
    assert len(model.pretrained_cfg["mean"]) == len(model.pretrained_cfg["std"]) == 1
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x))  # dropout before the classifier
        model.eval()
        assert torch.equal(model(x), model(x))
    mobile = create_meta_model("mobilenetv2", drop_rate=0.3)  # the family's own dropout
    assert mobile.classifier[0].p == 0.3 and mobile.drop_rate == 0.0


# --- gradient checkpointing, per stage -----------------------------------------------------

FAST_CKPT = ["afi_resnet20", "densenet40", "afi_shufflenetv2", "afi_mobilenetv2_se"]
CKPT = [
    *[(n, {}) for n in FAST_CKPT],
    ("afi_resnet20", {"memory_efficient": True}),  # checkpoints nested in the stage's
    *[
        pytest.param(n, {}, marks=pytest.mark.slow)
        for n in ALL
        if n not in FAST_CKPT and not n.endswith(("101", "152"))
    ],
]


@pytest.mark.parametrize(("name", "kwargs"), CKPT)
def test_grad_checkpointing_same_loss_gradients_and_statistics(name, kwargs):
    plain = create_model(name, num_classes=5, **kwargs).double().train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing()
    calls = []
    ckpt.get_stage("conv1").register_forward_pre_hook(lambda *a: calls.append(1))
    x, y = _batch(name).double(), torch.tensor([1, 3])
    losses = []
    for model in (plain, ckpt):
        torch.manual_seed(1)  # the same dropout masks (ImageNet MobileNetV2's classifier)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss.detach())
    assert len(calls) == 2  # forward, and its recomputation in backward
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-12, atol=0)
    for (key, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        scale = p.grad.abs().max()
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-12 * scale, msg=key)
    for (key, a), b in zip(plain.named_buffers(), ckpt.buffers(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=0, msg=key)  # updated once


def test_grad_checkpointing_features_only():
    feats = create_model("afi_resnet20", features_only=True)
    feats.set_grad_checkpointing()
    outs = feats(torch.randn(2, 3, 32, 32))
    sum(o.mean() for o in outs).backward()
    assert feats.model.grad_checkpointing and all(p.grad is not None for p in feats.parameters())


# --- timm ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", TIMM)
def test_timm_creates_every_model(key):
    timm = pytest.importorskip("timm")
    from afictl.models.timm_bridge import REGISTERED

    name = REGISTERED[key]
    assert key == (f"afictl_{name}" if name in TIMM_OWN else name)
    model = timm.create_model(key, pretrained=False, num_classes=3)
    assert isinstance(model, Backbone) and model.arch == name
    with torch.no_grad():
        assert model.eval()(_batch(name)).shape == (2, 3)
    info = get_model_info(name)
    data = timm.data.resolve_data_config({}, model=model)
    assert data == {k: model.pretrained_cfg[k] for k in data}
    assert data == preprocessing(info.home_dataset, info.input_size)
    assert model.pretrained_cfg["architecture"] == key
    registry_cfg = timm.models.get_pretrained_cfg(key)
    assert registry_cfg.input_size == data["input_size"] and not registry_cfg.has_weights

    feats = timm.create_model(key, features_only=True, out_indices=(-2, -1))
    assert feats.feature_info.reduction() == [f["reduction"] for f in model.feature_info[-2:]]
    with torch.no_grad():
        assert [o.shape[1] for o in feats(_batch(name))] == feats.feature_info.channels()


def test_timm_prefix_rule_and_resolve_data_config():
    timm = pytest.importorskip("timm")
    own = set(timm.list_models()) - set(timm.list_models(module="timm_bridge"))
    assert {n for n in ALL if n in own} == TIMM_OWN  # docs/ARCHITECTURE.md names them
    assert set(timm.list_models(module="timm_bridge")) == {
        f"afictl_{n}" if n in TIMM_OWN else n for n in ALL
    }
    assert not isinstance(timm.create_model("resnet50"), Backbone)  # timm's own stays timm's
    data = timm.data.resolve_data_config({}, model=timm.create_model("afi_resnet20"))
    assert data["input_size"] == (3, 32, 32)
    assert (data["mean"], data["std"]) == NORMALIZATION["cifar100"]
    assert timm.list_models(pretrained=True, filter="afi_*") == []


@pytest.mark.parametrize("key", ["afi_resnet20", "afi_resnet50"])
def test_timm_eval_transform_is_afictls(key):
    """timm's eval transform, made from the model's cfg, gives afictl's eval inputs."""
    timm = pytest.importorskip("timm")
    import numpy as np
    from PIL import Image

    from afictl.data.transforms import eval_transform

    model = timm.create_model(key, device="meta")
    info = get_model_info(key)
    theirs = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    ours = eval_transform(info.home_dataset, info.input_size)
    pixels = np.random.default_rng(0).integers(0, 256, (300, 260, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    torch.testing.assert_close(theirs(image), ours(image), rtol=0, atol=1e-5)


REFUSED = [
    dict(pretrained=True),
    dict(pretrained_cfg="in1k"),
    dict(drop_path_rate=0.1),
    dict(global_pool="max"),
    dict(output_stride=8),
    dict(features_only=True, output_fmt="NHWC"),
    dict(features_only=True, feature_cls="hook"),
    dict(img_size=64),
    dict(num_classes=-1),
]


@pytest.mark.parametrize("kwargs", REFUSED, ids=lambda k: ",".join(k))
def test_timm_refuses_in_one_line(kwargs):
    timm = pytest.importorskip("timm")
    with pytest.raises(ModelOptionError) as err:
        timm.create_model("afi_resnet20", **kwargs)
    message = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in message
    assert any(k in message for k in (*kwargs, "pretrained")), message
    if kwargs.get("pretrained"):
        assert message == (
            "afi_resnet20 has no pretrained weights (nothing is downloaded); pass "
            "pretrained=False or load a file with afictl.weights"
        )


def test_timm_takes_its_arguments():
    timm = pytest.importorskip("timm")
    model = timm.create_model(
        "afi_resnet20",
        num_classes=4,
        in_chans=1,
        drop_rate=0.2,
        drop_path_rate=0.0,
        global_pool="avg",
        output_stride=4,
        cache_dir="/nonexistent",
        pretrained_cfg_overlay=dict(crop_pct=0.9),
        dtype=torch.float64,
    )
    assert model.drop_rate == 0.2 and model.conv1.weight.dtype == torch.float64
    assert model(torch.randn(2, 1, 32, 32, dtype=torch.float64)).shape == (2, 4)
    data = timm.data.resolve_data_config({}, model=model)
    assert data["crop_pct"] == 0.9 and data["input_size"] == (1, 32, 32)
    meta = timm.create_model("afictl_resnet50", device="meta", num_classes=0)
    assert meta.fc.__class__ is nn.Identity and next(meta.parameters()).is_meta


def test_timm_trains_and_validates_afi_resnet20(tmp_path):
    """The pieces timm's train.py / validate.py are built from, driving an AFI model."""
    timm = pytest.importorskip("timm")
    from PIL import Image
    from timm.data import create_dataset, create_loader, resolve_data_config
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.task import ClassificationTask
    from timm.utils import AverageMeter, ModelEmaV3, accuracy

    for split in ("train", "validation"):
        for c, color in enumerate(((220, 30, 30), (30, 30, 220))):
            folder = tmp_path / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(4):
                shade = tuple(max(0, v - 20 * i) for v in color)
                Image.new("RGB", (40, 36), shade).save(folder / f"{i}.png")

    model = timm.create_model("afi_resnet20", num_classes=2)
    config = resolve_data_config({}, model=model)
    loaders = {}
    for split, training in (("train", True), ("validation", False)):
        dataset = create_dataset("", root=str(tmp_path), split=split, is_training=training)
        loaders[split] = create_loader(
            dataset,
            batch_size=4,
            is_training=training,
            use_prefetcher=False,
            num_workers=0,
            persistent_workers=False,
            device=torch.device("cpu"),
            **config,
        )
    optimizer = create_optimizer_v2(model, opt="adamw", lr=1e-2, weight_decay=0.05, layer_decay=0.8)
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=2, warmup_epochs=1)
    task = ClassificationTask(model, criterion_kwargs=dict(smoothing=0.1), verbose=False)
    ema = ModelEmaV3(model, decay=0.9)
    before = copy.deepcopy(model.state_dict())
    meter = AverageMeter()
    for epoch in range(2):
        task.train()
        for images, target in loaders["train"]:
            assert images.shape[1:] == (3, 32, 32)
            loss = task(images, target)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            ema.update(model)
            meter.update(loss.item(), images.shape[0])
        scheduler.step(epoch + 1)
    assert torch.isfinite(torch.tensor(meter.avg)) and meter.count == 16
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "conv1.weight" in changed and "fc.weight" in changed

    evaluator = task.create_evaluator()
    top1 = AverageMeter()
    ema.module.eval()
    with torch.no_grad():
        for images, target in loaders["validation"]:
            output = ema.module(images)
            evaluator.update(output, target)
            top1.update(accuracy(output, target, topk=(1,))[0].item(), images.shape[0])
    summary = evaluator.compute()
    assert summary["top1"] == pytest.approx(top1.avg) and 0 <= summary["top1"] <= 100
    assert torch.isfinite(torch.tensor(summary["loss"]))


# --- timm optional, and imported only when wanted ---------------------------------------------


def _run(code: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_registration_in_either_import_order_and_without_timm():
    pytest.importorskip("timm")
    after = (
        "import sys\nimport afictl.models\n"
        "assert 'timm' not in sys.modules and 'torch._dynamo' not in sys.modules\n"
        "import timm\nm = timm.create_model('afi_resnet20')\nprint(type(m).__name__)"
    )
    before = (
        "import timm\nimport afictl.models\n"
        "print(type(timm.create_model('afictl_resnet50')).__name__)"
    )
    without = (
        "import sys\nsys.modules['timm'] = None\nimport warnings\nwarnings.simplefilter('error')\n"
        "from afictl.models import create_model\n"
        "f = create_model('afi_resnet20', features_only=True)\n"
        "print(len(f.feature_info), create_model('resnet20', num_classes=0).num_features)"
    )
    runs = [_run(code) for code in (after, before, without)]
    outs = [p.communicate(timeout=120) for p in runs]
    for p, (_, err) in zip(runs, outs, strict=True):
        assert p.returncode == 0, err
    assert [o.strip() for o, _ in outs] == ["ResNet", "ResNet", "3 64"]
