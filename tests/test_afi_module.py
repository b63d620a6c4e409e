"""The plain AFI core (layers/afi.py) against a plain, obviously-correct reference of Eq. 1-2."""

import pytest
import torch
from reference import assert_matches_reference

from afictl.layers import AFIModule, StageFeatures, integrate, record_attention
from afictl.layers.afi import negligible
from afictl.models import create_model


@pytest.mark.parametrize("n", [2, 3, 5])
def test_forward_and_backward_match_reference(n):
    torch.manual_seed(n)
    module = AFIModule(channels=8, num_inputs=n, reduction=4).double()
    feats = [torch.randn(2, 8, 5, 4, dtype=torch.float64, requires_grad=True) for _ in range(n)]
    ref_feats = [f.detach().clone().requires_grad_(True) for f in feats]
    assert_matches_reference(module, module(feats), feats, ref_feats)


def test_integrate_gradcheck_and_no_grad_agree():
    feats = [torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    weights = torch.rand(2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, *f: integrate(f, w), (weights, *feats))
    with torch.no_grad():  # the in-place running sum of inference
        torch.testing.assert_close(
            integrate(feats, weights), integrate(feats, weights.detach()).detach()
        )


def test_stage_features_squeeze_each_feature_once(monkeypatch):
    import afictl.layers.afi as afi

    calls = []
    original = afi.squeeze
    monkeypatch.setattr(afi, "squeeze", lambda x: calls.append(1) or original(x))
    feats = StageFeatures()
    for _ in range(4):
        feats.append(torch.randn(1, 4, 3, 3))
    feats.integrate(AFIModule(4, 3), 3)
    feats.integrate(AFIModule(4, 4), 4)
    assert len(calls) == 4  # once per feature, not once per consumer
    assert feats.integrate(None, 1) is feats.features[0]  # R(2) = X(1)


def test_negligible_weights_are_zero_and_the_rest_still_sum_to_one():
    """Scores 100 apart underflow float32's softmax to subnormals: weights() sets them to 0."""
    module = AFIModule(channels=4, num_inputs=3)
    with torch.no_grad():
        module.fc1.weight.fill_(0.0)
        module.fc1.weight[0, 0] = 1.0  # hidden unit 0 = z[:, 0]
        module.fc2.weight.fill_(1.0)  # every channel's score = z[:, 0]
    z = [torch.full((1, 4), v) for v in (0.0, 100.0, 1.0)]
    plain = torch.softmax(module.score(torch.stack(z, 1)), dim=1)
    assert 0 < plain[0, 0, 0] < torch.finfo(torch.float32).tiny  # a subnormal weight
    s = module.weights(z)
    assert (s[:, 0] == 0).all() and (s[:, 2] == 0).all()
    torch.testing.assert_close(s.sum(dim=1), torch.ones(1, 4))
    assert negligible(torch.float32) < 1e-30 and negligible(torch.float64) < 1e-290


def test_softmax_weights_sum_to_one_per_channel():
    model = create_model("afi_resnet20").eval()
    with record_attention(model) as rec, torch.no_grad():
        model(torch.randn(3, 3, 32, 32))
    assert len(rec) == 3 * 1  # blocks 3..n of each 3-block stage have an AFI module
    for name, calls in rec.items():
        (s,) = calls
        n = model.get_submodule(name).num_inputs
        assert s.shape[1] == n and s.shape[0] == 3
        torch.testing.assert_close(s.sum(dim=1), torch.ones(s.shape[0], s.shape[2]))
        assert (s >= 0).all()
    # hooks are gone afterwards
    assert all(not m.attention._forward_hooks for m in model.afi_modules().values())


def test_module_rejects_single_input():
    with pytest.raises(ValueError):
        AFIModule(8, 1)


def test_every_afi_parameter_gets_a_gradient():
    model = create_model("afi_resnet32", num_classes=7)
    out = model(torch.randn(8, 3, 32, 32))
    torch.nn.functional.cross_entropy(out, torch.arange(8) % 7).backward()
    assert all(p.grad is not None for p in model.parameters())
    # a scoring hidden unit can be dead (ReLU) for one batch; the module as a whole may not
    for name, m in model.afi_modules().items():
        assert m.fc2.weight.grad.abs().sum() > 0 or m.fc1.weight.grad.abs().sum() > 0, name
