"""The training parts on their own (no training run): optimizers, schedules, EMA, the
checkpoint history, each checked against its formula."""

import bisect
import math
from types import SimpleNamespace

import pytest
import torch
from reference import assert_close_scaled
from torch import nn

from afictl.train.ema import ModelEma, unwrap_model
from afictl.train.history import CheckpointHistory
from afictl.train.optim import (
    build_optimizer,
    build_scheduler,
    param_groups,
)


class Tiny(nn.Module):
    """Conv + BN + linear: 2-d, 4-d and 1-d parameters and BN buffers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def cfg_of(**kw):
    """A config with the fields optim reads (the real TrainConfig may not have them all yet)."""
    base = dict(
        opt="sgd",
        lr=0.1,
        lr_effective=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        nesterov=False,
        wd_norm_bias=True,
        backbone_lr_mult=1.0,
        sched="step",
        lr_schedule="step",
        warmup_epochs=0.0,
        min_lr=0.0,
        milestones=[],
        lr_gamma=0.1,
        epochs=10,
    )
    base.update(kw)
    ns = SimpleNamespace(**base)
    ns.milestone_epochs = lambda: sorted(ns.milestones)
    return ns


def tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def sgd_steps(model: nn.Module, k: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """k SGD steps in train mode (BN statistics move); the state after each."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    out = []
    for _ in range(k):
        x = torch.randn(4, 3, 6, 6, generator=gen) * 2 + 1
        opt.zero_grad()
        model(x).square().sum().backward()
        opt.step()
        out.append(tensors(model))
    return out


# --- EMA ----------------------------------------------------------------------------------


def test_ema_equals_the_closed_form_with_bn_buffers():
    torch.manual_seed(0)
    model = Tiny().train()
    decay = 0.7
    ema = ModelEma(model, decay)
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    expected: dict[str, torch.Tensor] = {}
    for step in range(5):
        opt.zero_grad()
        model(torch.randn(4, 3, 6, 6, generator=gen) * 2 + 1).square().sum().backward()
        opt.step()
        ema.update(model)
        for name, w in model.state_dict().items():
            w = w.detach().double()
            # e_1 = w_1 (the first update copies), e_k = d e_{k-1} + (1 - d) w_k
            expected[name] = w if step == 0 else decay * expected[name] + (1 - decay) * w
    got = ema.module.state_dict()
    assert int(ema.n_averaged) == 5
    for name, want in expected.items():
        if name.endswith("num_batches_tracked"):  # integers are copied, not averaged
            assert int(got[name]) == int(model.state_dict()[name]) == 5
        else:
            assert_close_scaled(got[name].double(), want, 1e-6, name)
    # the BN running mean is averaged, not copied: it differs from the model's
    assert not torch.allclose(got["bn.running_mean"], model.bn.running_mean)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_unwraps_compiled_models_and_round_trips_exactly():
    torch.manual_seed(0)
    model = Tiny().train()
    states = sgd_steps(model, 5)
    model_copy = Tiny()
    wrapper = nn.Module()
    wrapper._orig_mod = model_copy  # what torch.compile's OptimizedModule looks like
    assert unwrap_model(wrapper) is model_copy
    ema = ModelEma(wrapper, 0.9)
    assert set(ema.module.state_dict()) == set(model.state_dict())
    for s in states[:3]:
        model_copy.load_state_dict(s)
        ema.update(wrapper)
    restored = ModelEma(Tiny(), 0.9)
    restored.load_state_dict(ema.state_dict())
    assert int(restored.n_averaged) == 3
    for s in states[3:]:
        model_copy.load_state_dict(s)
        ema.update(model_copy)
        restored.update(model_copy)
    a, b = ema.state_dict(), restored.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- optimizers ---------------------------------------------------------------------------


def test_defaults_build_the_sgd_afictl_always_built():
    torch.manual_seed(0)
    model = Tiny()
    cfg = cfg_of(nesterov=True)
    opt = build_optimizer(model, cfg)
    old = torch.optim.SGD(
        param_groups(model, 0.1, 1.0), lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True
    )
    assert opt.state_dict() == old.state_dict()
    assert [g["name"] for g in opt.param_groups] == ["all"]


def test_wd_norm_bias_false_exempts_norms_and_biases():
    model = Tiny()
    cfg = cfg_of(wd_norm_bias=False, weight_decay=0.01, momentum=0.0, backbone_lr_mult=0.5)
    opt = build_optimizer(model, cfg)
    names = [g["name"] for g in opt.param_groups]
    assert names == ["backbone", "backbone_no_decay", "classifier", "classifier_no_decay"]
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert len(group_of) == len(list(model.parameters()))
    for p in model.parameters():
        g = group_of[id(p)]
        if p.ndim <= 1:
            assert g["weight_decay"] == 0.0 and g["name"].endswith("_no_decay")
        else:
            assert g["weight_decay"] == 0.01 and not g["name"].endswith("_no_decay")
    conv = group_of[id(model.conv.weight)]
    assert conv["name"] == "backbone" and conv["lr"] == pytest.approx(0.05)
    assert group_of[id(model.fc.bias)]["lr"] == pytest.approx(0.1)
    # one step with zero gradients: only decay shrinks weights, p <- p (1 - lr wd)
    before = tensors(model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert_close_scaled(model.conv.weight, before["conv.weight"] * (1 - 0.05 * 0.01), 1e-6)
    assert_close_scaled(model.fc.weight, before["fc.weight"] * (1 - 0.1 * 0.01), 1e-6)
    assert torch.equal(model.bn.weight, before["bn.weight"])
    assert torch.equal(model.fc.bias, before["fc.bias"])


def test_adamw_has_the_lr_weight_decay_and_first_step_of_the_formula():
    torch.manual_seed(0)
    model = Tiny()
    opt = build_optimizer(model, cfg_of(opt="adamw", lr_effective=1e-3, weight_decay=0.05))
    assert isinstance(opt, torch.optim.AdamW)
    (g,) = opt.param_groups
    assert g["lr"] == 1e-3 and g["weight_decay"] == 0.05 and g["betas"] == (0.9, 0.999)
    before = tensors(model)
    grads = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.grad = grads[n].clone()
    opt.step()
    # first Adam step after bias correction: m_hat = g, v_hat = g^2
    for n, p in model.named_parameters():
        want = before[n] * (1 - 1e-3 * 0.05) - 1e-3 * grads[n] / (grads[n].abs() + g["eps"])
        assert_close_scaled(p.detach(), want, 1e-5, n)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(model, cfg_of(opt="lamb"))


# --- schedules ----------------------------------------------------------------------------


def lrs(cfg, steps_per_epoch: int, n: int) -> list[float]:
    """The lr of the first group at iterations 0..n-1."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.lr_effective)
    sched = build_scheduler(opt, cfg, steps_per_epoch)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_step_schedule_is_the_one_afictl_always_had():
    spe, milestones, gamma, warmup = 4, [1.0, 2.5], 0.1, 0.75  # 3 warm-up steps
    got = lrs(cfg_of(milestones=milestones, lr_gamma=gamma, warmup_epochs=warmup), spe, 14)
    for step, lr in enumerate(got):
        want = 0.1 * gamma ** bisect.bisect_right(milestones, step / spe)
        if step < warmup * spe:
            want *= (step + 1) / (warmup * spe)
        assert lr == pytest.approx(want, rel=1e-12), step
    assert got[2] == pytest.approx(0.1) and got[4] == pytest.approx(0.01)
    assert got[10] == pytest.approx(0.001)
    # the config may still call it lr_schedule (no `sched` field): same schedule
    legacy = cfg_of(milestones=milestones, lr_gamma=gamma, warmup_epochs=warmup)
    del legacy.sched
    assert lrs(legacy, spe, 14) == got


def test_cosine_warms_up_linearly_then_reaches_min_lr():
    spe, epochs, lr, min_lr = 5, 10, 0.1, 0.001
    cfg = cfg_of(sched="cosine", warmup_epochs=2, min_lr=min_lr, epochs=epochs, lr_effective=lr)
    got = lrs(cfg, spe, epochs * spe + 1)
    warm = 2 * spe
    for step in range(warm):
        assert got[step] == pytest.approx(lr * (step + 1) / warm, rel=1e-12)
    assert got[warm] == pytest.approx(lr, rel=1e-12)  # the peak at the end of the warm-up
    assert got[-1] == pytest.approx(min_lr, rel=1e-12)  # the floor after epochs x spe steps
    mid = warm + (epochs * spe - warm) // 2
    assert got[mid] == pytest.approx((lr + min_lr) / 2, rel=1e-12)
    for step in range(warm, len(got)):
        t = (step - warm) / (epochs * spe - warm)
        want = min_lr + (lr - min_lr) * (1 + math.cos(math.pi * t)) / 2
        assert got[step] == pytest.approx(want, rel=1e-12)
    assert all(a > b for a, b in zip(got[warm:], got[warm + 1 :], strict=False))
    # a fractional warm-up never overshoots the peak
    frac = lrs(cfg_of(sched="cosine", warmup_epochs=0.5, epochs=2, lr_effective=lr), 5, 10)
    assert max(frac) == pytest.approx(lr) and frac[0] == pytest.approx(lr / 2.5)


def test_inv_schedule_and_unknown_names():
    got = lrs(cfg_of(sched="inv", lr_effective=0.01, epochs=2), 5, 10)
    for step, lr in enumerate(got):
        assert lr == pytest.approx(0.01 * (1 + 10 * step / 10) ** -0.75, rel=1e-12)
    with pytest.raises(ValueError, match="unknown schedule"):
        lrs(cfg_of(sched="poly"), 5, 1)


@pytest.mark.parametrize("sched", ["step", "cosine", "inv"])
def test_scheduler_state_dict_resume_continues_the_sequence(sched):
    cfg = cfg_of(sched=sched, warmup_epochs=0.5, min_lr=1e-4, milestones=[1.0], epochs=3)
    model = Tiny()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)

    def build():
        opt = build_optimizer(model, cfg)
        return opt, build_scheduler(opt, cfg, 4)

    opt, sched_ = build()
    full = []
    for _ in range(12):
        full.append(opt.param_groups[0]["lr"])
        opt.step()
        sched_.step()
    opt, sched_ = build()
    for _ in range(7):
        opt.step()
        sched_.step()
    saved_opt, saved_sched = opt.state_dict(), sched_.state_dict()
    opt, sched_ = build()
    opt.load_state_dict(saved_opt)
    sched_.load_state_dict(saved_sched)
    resumed = []
    for _ in range(5):
        resumed.append(opt.param_groups[0]["lr"])
        opt.step()
        sched_.step()
    assert resumed == full[7:]


# --- checkpoint history -------------------------------------------------------------------


def test_history_keeps_the_best_and_deletes_what_it_pushes_out(tmp_path):
    foreign = [tmp_path / "epoch-99.pt", tmp_path / "notes.txt", tmp_path / "last.pt"]
    for f in foreign:
        f.write_text("not ours")
    hist = CheckpointHistory(tmp_path, keep=2)
    offered = {}
    for epoch, top1 in [(1, 0.5), (2, 0.7), (3, 0.6), (4, 0.7)]:
        offered[epoch] = hist.offer(epoch, top1, {"epoch": epoch})
    assert offered[1] == tmp_path / "epoch-1.pt" and offered[4] == tmp_path / "epoch-4.pt"
    kept = sorted(p.name for p in tmp_path.glob("epoch-*.pt"))
    assert kept == ["epoch-2.pt", "epoch-4.pt", "epoch-99.pt"]  # 1 and 3 pushed out
    saved = torch.load(tmp_path / "epoch-4.pt", weights_only=True)
    assert saved["epoch"] == 4 and saved["format"] == "afictl-checkpoint"
    # a resumed run continues the ranking: 5 pushes out 4 (a tie with 2: the earlier stays)
    again = CheckpointHistory(tmp_path, keep=2)
    again.load_state_dict(hist.state_dict())
    assert again.offer(5, 0.9, {"epoch": 5}) == tmp_path / "epoch-5.pt"
    assert again.offer(6, 0.1, {"epoch": 6}) is None
    kept = sorted(p.name for p in tmp_path.glob("epoch-*.pt"))
    assert kept == ["epoch-2.pt", "epoch-5.pt", "epoch-99.pt"]
    assert again.state_dict() == {"keep": 2, "ranking": [[5, 0.9], [2, 0.7]]}
    assert all(f.read_text() == "not ours" for f in foreign)


def test_history_ties_and_disabled(tmp_path):
    hist = CheckpointHistory(tmp_path / "a", keep=1)
    assert hist.offer(1, 0.5, {}) is not None
    assert hist.offer(2, 0.5, {}) is None  # a tie: the earlier epoch stays
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["epoch-1.pt"]
    off = CheckpointHistory(tmp_path / "b", keep=0)
    assert off.offer(1, 1.0, {}) is None and not (tmp_path / "b").exists()
    with pytest.raises(ValueError):
        CheckpointHistory(tmp_path, keep=-1)
