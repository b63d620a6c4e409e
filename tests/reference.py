"""The plain, obviously-correct reference of Eq. 1-2.

Every AFI implementation is checked against it.
"""

import torch


def reference_afi(features, w1, w2):
    """Eq. 2 written out literally: loops over images, inputs and channels."""
    n = len(features)
    b, c, h, w = features[0].shape
    out = torch.zeros_like(features[0])
    for bi in range(b):
        s = torch.stack([w2 @ torch.relu(w1 @ features[i][bi].mean(dim=(1, 2))) for i in range(n)])
        s_tilde = torch.exp(s) / torch.exp(s).sum(dim=0, keepdim=True)  # softmax over the N inputs
        for k in range(c):
            for j in range(n):
                out[bi, k] += s_tilde[j, k] * features[j][bi, k]
    return out


def assert_matches_reference(module, out, feats, ref_feats):
    """``out`` (from ``feats``) equals the reference on ``ref_feats``.

    Values and gradients (float64).
    """
    w1 = module.fc1.weight.detach().clone().requires_grad_(True)
    w2 = module.fc2.weight.detach().clone().requires_grad_(True)
    ref = reference_afi(ref_feats, w1, w2)
    assert_close_scaled(out, ref, 1e-10, "R")
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    for f, rf in zip(feats, ref_feats, strict=True):
        assert_close_scaled(f.grad, rf.grad, 1e-9, "dL/dX")
    assert_close_scaled(module.fc1.weight.grad, w1.grad, 1e-9, "dL/dW1")
    assert_close_scaled(module.fc2.weight.grad, w2.grad, 1e-9, "dL/dW2")


def assert_close_scaled(actual, expected, rel=1e-9, msg="", floor=0.0):
    """``actual`` equals ``expected`` up to ``rel`` times the largest magnitude compared (or
    ``floor``, the magnitude of related values, where this tensor is 0 up to rounding).

    Kernels differ between CPUs (oneDNN picks others on Intel and AMD), so absolute tolerances
    fixed in advance break on values of another size; this one scales with what is compared.
    """
    scale = max(
        expected.abs().max().item(),
        actual.abs().max().item(),
        floor,
        torch.finfo(expected.dtype).tiny,
    )
    err = (actual - expected).abs().max().item()
    assert err <= rel * scale, f"{msg} max |diff| {err:.3g} > {rel:g} x {scale:.3g}"
