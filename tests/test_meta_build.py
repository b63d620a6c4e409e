"""`create_meta_model` builds on the meta device without patching torch (issue 24)."""

import threading

import pytest
import torch
from torch import nn

from afictl.models import create_meta_model, create_model, get_model_info, list_models

#: every public initialiser of ``torch.nn.init`` (the old meta build replaced ten of them)
INIT_NAMES = sorted(n for n in dir(nn.init) if n.endswith("_") and not n.startswith("_"))


def _init_functions() -> dict[str, object]:
    return {name: getattr(nn.init, name) for name in INIT_NAMES}


def _kaiming_fan_out_std(w: torch.Tensor) -> float:
    return (2 / (w.shape[0] * w.shape[2] * w.shape[3])) ** 0.5


def test_meta_builds_leave_torch_nn_init_untouched(monkeypatch):
    """Identity of every nn.init function before, during (at each module's construction) and
    after building every registered model, whose parameter count is the registered one."""
    before = _init_functions()
    assert {"normal_", "kaiming_normal_", "trunc_normal_", "uniform_"} <= set(before)
    seen_changed: list[str] = []
    original = nn.Module.__init__
    pairs = list(before.items())

    def watching_init(self, *args, **kwargs):
        seen_changed.extend(n for n, f in pairs if getattr(nn.init, n) is not f)
        original(self, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "__init__", watching_init)
    for name in list_models():
        model = create_meta_model(name)
        assert all(p.is_meta for p in model.parameters()), name
        assert sum(p.numel() for p in model.parameters()) == get_model_info(name).num_params, name
    assert seen_changed == []
    assert _init_functions() == before


def test_initialisers_in_another_thread_still_initialise_during_a_meta_build():
    """A thread initialising real weights while meta models are built gets real values."""
    stop = threading.Event()
    bad: list[str] = []

    def initialise() -> None:
        t = torch.zeros(64)
        while not stop.is_set():
            t.zero_()
            nn.init.normal_(t)
            nn.init.kaiming_normal_(t.view(8, 8))
            if not t.abs().sum() > 0:
                bad.append("an initialiser left zeros")

    worker = threading.Thread(target=initialise)
    worker.start()
    try:
        for name in ("afi_mobilenetv2_se", "afi_resnet110", "densenet100", "afi_shufflenetv2"):
            create_meta_model(name)
    finally:
        stop.set()
        worker.join()
    assert bad == []


def test_real_builds_are_still_initialised():
    """The families skip their initialisers on meta only: a CPU build draws kaiming_normal
    (fan_out) convolutions and torchvision's MobileNetV2 classifier (std 0.01)."""
    torch.manual_seed(0)
    resnet = create_model("resnet20")
    w = resnet.conv1.weight
    assert w.std().item() == pytest.approx(_kaiming_fan_out_std(w), rel=0.3)
    mobile = create_model("afi_mobilenetv2_se")
    assert mobile.classifier[1].weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert resnet.bn1.weight.eq(1).all() and not resnet.is_meta
    assert create_meta_model("resnet20").is_meta


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_in_chans_on_meta_and_cpu(device):
    """A fresh first convolution: shape-only on meta, kaiming_normal on CPU."""
    build = create_meta_model if device == "meta" else create_model
    model = build("densenet40", in_chans=1)
    w = model.get_submodule(model.first_conv_path).weight
    assert w.shape[1] == 1 and w.device.type == device
    if device == "cpu":
        assert w.std().item() == pytest.approx(_kaiming_fan_out_std(w), rel=0.3)
