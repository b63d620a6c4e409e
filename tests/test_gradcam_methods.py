"""`afictl gradcam --method` (every CAM method of pytorch-grad-cam 1.5.7) on small CIFAR models:
each method on a baseline and an AFI model, gradcam / ablationcam / fullgrad on one model per
family, the command line end to end."""

from __future__ import annotations

import importlib.util
import sys

import matplotlib
import numpy as np
import pytest
import torch
from cli import run
from PIL import Image
from test_analyses import _train_checkpoint
from torch import nn

import afictl.analysis.gradcam as gradcam_module
import afictl.cli.gradcam as gradcam_cli
from afictl.analysis.gradcam import METHODS, grad_cam, resolve_method
from afictl.data.shapes import render_shapes
from afictl.errors import UserError
from afictl.models import create_model

# the CAM methods of pytorch-grad-cam 1.5.7 that the issue asks for, in its order
ISSUE_METHODS = [
    "gradcam",
    "gradcam++",
    "xgradcam",
    "hirescam",
    "scorecam",
    "eigencam",
    "eigengradcam",
    "layercam",
    "ablationcam",
    "fullgrad",
]


def _clean(model: nn.Module, modules_before: list[nn.Module]) -> None:
    """No hook left behind, and every module back in its place (Ablation-CAM swaps one out)."""
    assert all(
        not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks
        for m in model.modules()
    )
    assert list(model.modules()) == modules_before


def _check_heatmaps(heat: np.ndarray, batch: int, size: int = 32) -> None:
    assert heat.shape == (batch, size, size) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0
    for h in heat:  # a real map, not a constant (all-zero) one
        assert h.max() - h.min() > 0.5


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {a: create_model(a, num_classes=4).eval() for a in ("resnet20", "afi_resnet20")}


def test_methods_and_names():
    import pytorch_grad_cam

    assert list(METHODS) == ISSUE_METHODS
    assert all(hasattr(pytorch_grad_cam, m.cls) for m in METHODS.values())
    assert resolve_method("Grad-CAM++").name == "gradcam++"
    assert resolve_method("ABLATIONCAM").title == "Ablation-CAM"
    assert resolve_method("score_cam").name == "scorecam"
    with pytest.raises(
        UserError, match=r"unknown CAM method 'gradcam3'; valid methods: gradcam, gradcam\+\+, "
    ):
        resolve_method("gradcam3")


@pytest.mark.parametrize("module", [gradcam_module, gradcam_cli])
def test_pytorch_grad_cam_imported_only_when_a_cam_is_computed(module, monkeypatch):
    """The module's code runs with pytorch-grad-cam unimportable (it costs 2 s to import)."""
    name = f"{module.__package__}._probe_{module.__name__.rsplit('.', 1)[-1]}"
    spec = importlib.util.spec_from_file_location(name, module.__file__)
    copy = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, copy)  # dataclasses look their module up there
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # any import of it raises
    spec.loader.exec_module(copy)
    assert copy.METHODS.keys() == METHODS.keys()


# Grad-CAM on the AFI model stays in the quick suite; every other pair takes seconds: slow.
_EVERY = [
    pytest.param(
        method,
        arch,
        marks=() if (method, arch) == ("gradcam", "afi_resnet20") else pytest.mark.slow,
    )
    for method in ISSUE_METHODS
    for arch in ("resnet20", "afi_resnet20")
]


@pytest.mark.parametrize(("method", "arch"), _EVERY)
def test_every_method(models, arch, method):
    model = models[arch]
    before = list(model.modules())
    x = torch.randn(2, 3, 32, 32)
    heat, logits = grad_cam(model, x, model.feature_layer(), method=method)
    _check_heatmaps(heat, 2)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x))
    _clean(model, before)


@pytest.mark.slow  # a trained checkpoint or a CAM per model: seconds
def test_per_image_methods_keep_each_images_target(models):
    """Score-CAM and Ablation-CAM run image by image: each keeps its own target class."""
    model = models["resnet20"]
    x = torch.randn(2, 3, 32, 32)
    both, _ = grad_cam(model, x, model.feature_layer(), [0, 3], method="ablationcam", batch_size=16)
    first, _ = grad_cam(model, x[:1], model.feature_layer(), [0], method="ablationcam")
    second, _ = grad_cam(model, x[1:], model.feature_layer(), [3], method="ablationcam")
    np.testing.assert_allclose(both, np.concatenate([first, second]), atol=1e-5)


@pytest.mark.slow  # a trained checkpoint or a CAM per model: seconds
def test_ablationcam_on_a_block_is_ablating_its_output(models):
    """The block stand-in (blocks are called ``block(x, feats)``) gives the weights of ablating
    the block's output with a forward hook, the block itself running as usual: on an AFI block in
    the middle of a stage, whose X(i) the blocks after it read, and on the last block, where it
    equals targeting the whole stage (same activation)."""
    from pytorch_grad_cam.base_cam import BaseCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    class FixedWeights(BaseCAM):
        def __init__(self, model, target_layers, weights):
            super().__init__(model, target_layers, uses_gradients=False)
            self.weights = weights

        def get_cam_weights(self, *args):
            return self.weights[None]

    model = models["afi_resnet20"]
    last = model.stage_names[-1]
    block = model.blocks(last)[1]
    x = torch.randn(1, 3, 32, 32)
    heat, logits = grad_cam(model, x, block, method="ablationcam")

    seen = {}
    hook = block.register_forward_hook(lambda m, i, out: seen.update(act=out.detach().clone()))
    with torch.no_grad():
        model(x)
    hook.remove()
    act = seen["act"]
    assert act.min() == 0  # post-ReLU: AblationLayer's ablation value is 0

    def ablate(module, inputs, out):  # copy k of the batch loses channel k
        out = out.clone()
        out[torch.arange(len(out)), torch.arange(len(out))] = 0
        return out

    cls = int(logits.argmax())
    hook = block.register_forward_hook(ablate)
    with torch.no_grad():
        ablated = model(x.repeat(act.shape[1], 1, 1, 1))[:, cls].numpy()
    hook.remove()
    score = float(logits[0, cls])
    weights = (score - ablated) / abs(score)
    with FixedWeights(model, [block], weights) as cam:
        expected = cam(x, [ClassifierOutputTarget(cls)])
    np.testing.assert_allclose(heat, expected, atol=1e-5)

    by_block, _ = grad_cam(model, x, model.feature_layer(), method="ablationcam")
    by_stage, _ = grad_cam(model, x, model.stages()[last], method="ablationcam")
    np.testing.assert_allclose(by_block, by_stage, atol=1e-6)


@pytest.mark.slow  # a trained checkpoint or a CAM per model: seconds
def test_fullgrad_matches_the_library_and_needs_no_bias(models):
    from pytorch_grad_cam import FullGrad

    model = models["resnet20"]  # a chain of layers: the library's pairing of biases holds here
    x = torch.randn(2, 3, 32, 32)
    heat, _ = grad_cam(model, x, None, method="fullgrad")
    with FullGrad(model, []) as cam:
        np.testing.assert_allclose(heat, cam(x, None), atol=1e-6)
    plain = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    heat, logits = grad_cam(plain, torch.randn(2, 3, 16, 16), None, method="fullgrad")
    _check_heatmaps(heat, 2, 16)  # no bias to hook: the input x gradient term alone
    assert logits.shape == (2, 4)


# One model per family (resnet20 and afi_resnet20: every method above). Ablation-CAM runs one
# forward pass per channel of the last block: 320-464 channels on MobileNetV2 / ShuffleNetV2
# (1-2 s on 2 idle cores, 20 s on busy ones), DenseNet-40 4 s, 1024 on ResNeXt-29 20 s; the
# other methods 3-7 s per family on a busy machine: all slow.
FAMILIES = [
    "mobilenetv2",
    "afi_mobilenetv2",
    "shufflenetv2",
    "afi_shufflenetv2",
    "densenet40",
    "resnext29_32x4d",
    "afi_resnext29_32x4d",
]
_CASES = [
    pytest.param(arch, method, marks=pytest.mark.slow)  # 3-7 s each on a busy machine
    for arch in FAMILIES
    for method in ("gradcam", "ablationcam", "fullgrad")
]


@pytest.mark.parametrize(("arch", "method"), _CASES)
def test_methods_on_every_family(arch, method):
    model = create_model(arch, num_classes=4).eval()
    before = list(model.modules())
    layer = None if method == "fullgrad" else model.feature_layer()
    heat, logits = grad_cam(model, torch.randn(1, 3, 32, 32), layer, method=method)
    _check_heatmaps(heat, 1)
    assert logits.shape == (1, 4)
    _clean(model, before)


# --- command line ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cam")
    pixels, _ = render_shapes(1, seed=3, split="photos")
    image = root / "shape.png"
    Image.fromarray(pixels[0]).resize((48, 40)).save(image)
    return image, _train_checkpoint(root / "resnet20.pt", "resnet20")


@pytest.mark.slow  # a trained checkpoint or a CAM per model: seconds
def test_cli_ablationcam_end_to_end(inputs, tmp_path, capsys):
    image, ckpt = inputs
    out = tmp_path / "cam.svg"
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # titles as text in the SVG
        code, stdout, err = run(
            capsys, "gradcam", image, "-c", ckpt, "--method", "AblationCAM", "--figure", out
        )
    assert code == 0, err
    svg = out.read_text()
    assert out.is_file() and "Ablation-CAM on the model" in svg and "32×32 input" in svg
    assert "Ablation-CAM" in stdout and "ablationcam" in stdout  # table title and method column
    assert f"wrote {out}" in err and "it/s" not in err  # no progress bars
    code, stdout, err = run(
        capsys,
        "gradcam",
        image,
        "-c",
        ckpt,
        "-m",
        "eigencam",
        "--figure",
        tmp_path / "e.png",
        "--format",
        "json",
    )
    assert code == 0, err
    assert '"method": "eigencam"' in stdout and (tmp_path / "e.png").is_file()


@pytest.mark.slow  # a trained checkpoint or a CAM per model: seconds
def test_cli_unknown_method_and_fullgrad_layer(inputs, tmp_path, capsys):
    image, ckpt = inputs
    code, stdout, err = run(
        capsys, "gradcam", image, "-c", ckpt, "--method", "gradcam3", "--figure", tmp_path / "x.png"
    )
    assert code == 2 and stdout == "" and err.count("\n") == 1
    assert err.startswith("afictl: error: unknown CAM method 'gradcam3'; valid methods: ")
    assert all(m in err for m in ISSUE_METHODS)
    assert not (tmp_path / "x.png").exists()
    code, _, err = run(
        capsys, "gradcam", image, "-c", ckpt, "--method", "fullgrad", "--layer", "conv2"
    )
    assert (
        code == 2 and err.count("\n") == 1 and "--layer does not apply to --method fullgrad" in err
    )
