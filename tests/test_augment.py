"""timm-named recipe options of the data package: --aa, --reprob, mixup/cutmix (--mixup-prob)."""

import numpy as np
import pytest
import torch
from PIL import Image

from afictl.data import build_dataset, build_mixer, dominant_label, train_transform
from afictl.data.transforms import NoisyRandAugment, auto_augment
from afictl.errors import UserError

POLICIES = [
    "rand-m9-mstd0.5",
    "trivial",
    "autoaugment",
    "autoaugment-cifar10",
    "autoaugment-imagenet",
]


def _image(size=48, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.zeros((size, size, 3), np.uint8)
    arr[:, : size // 2] = rng.integers(0, 256, 3)
    arr[size // 4 :, size // 3 :] = rng.integers(0, 256, 3)  # edges: geometric ops show
    return Image.fromarray(arr)


@pytest.mark.parametrize("aa", POLICIES)
def test_each_policy_changes_images_keeps_shape_and_dtype(aa):
    img = _image()
    plain = train_transform("shapes", 48)
    augmented = train_transform("shapes", 48, aa=aa)
    changed = 0
    for seed in range(12):
        torch.manual_seed(seed)
        a = plain(img)
        torch.manual_seed(seed)
        b = augmented(img)
        assert b.shape == a.shape == (3, 48, 48) and b.dtype == torch.float32
        changed += not torch.equal(a, b)
    assert changed >= 6  # (some ops, e.g. Identity, leave an image as it is)
    # the same policy works on uint8 tensors (--decode torchvision), same shape out
    t = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
    assert augmented(t).shape == (3, 48, 48)


def test_autoaugment_follows_the_pipeline_and_rand_is_on_timms_scale():
    assert auto_augment("autoaugment", 32).policy.name == "CIFAR10"
    assert auto_augment("autoaugment", 224).policy.name == "IMAGENET"
    ra = auto_augment("rand-m9-mstd0.5", 224)
    assert isinstance(ra, NoisyRandAugment) and ra.num_ops == 2
    assert (ra.level, ra.magnitude_std, ra.num_magnitude_bins) == (9.0, 0.5, 11)
    # level 9 of 10 is 90% of an op's maximum (rotation 30 degrees -> 27), noise-free at std 0
    exact = auto_augment("rand-m9-n3", 224)
    assert exact.num_ops == 3 and exact._value(torch.linspace(0, 30, 11)) == pytest.approx(27)
    torch.manual_seed(0)
    noisy = [ra._value(torch.linspace(0, 30, 11)) for _ in range(400)]
    assert 26 < np.mean(noisy) < 28 and 1.0 < np.std(noisy) < 2.0  # 0.5 level = 1.5 degrees
    assert max(noisy) <= 30


@pytest.mark.parametrize("bad", ["rand", "rand-m12", "randaugment", "auto", ""])
def test_bad_aa_is_one_line_user_error(bad):
    with pytest.raises(UserError) as err:
        train_transform("imagenet", 224, aa=bad or "x y")
    assert "\n" not in str(err.value) and "--aa" in str(err.value)


def test_reprob_one_erases_a_region_and_bad_values_fail():
    img = _image(64)
    torch.manual_seed(0)
    a = train_transform("shapes", 64)(img)
    torch.manual_seed(0)
    b = train_transform("shapes", 64, reprob=1.0)(img)
    erased = (a != b).any(0)
    assert 0 < erased.sum() < 64 * 64
    assert torch.all(b[:, erased] == 0)  # filled with 0 after normalisation (the mean colour)
    rows, cols = erased.any(1).nonzero(), erased.any(0).nonzero()
    box = erased[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    assert box.float().mean() > 0.9  # one rectangle (up to pixels equal to 0 before)
    for bad in (-0.1, 1.5):
        with pytest.raises(UserError, match="--reprob"):
            train_transform("shapes", 64, reprob=bad)


def test_aa_and_reprob_only_touch_the_train_split():
    ev = build_dataset("shapes", None, "eval", size=4, aa="trivial", reprob=1.0)
    plain = build_dataset("shapes", None, "eval", size=4)
    assert torch.equal(ev[0][0], plain[0][0])
    with pytest.raises(UserError, match="--aa"):
        build_dataset("shapes", None, "eval", size=4, aa="nope")


def _batch(b=6, c=10):
    g = torch.Generator().manual_seed(1)
    return torch.rand(b, 3, 16, 16, generator=g), torch.arange(b) % c


def test_mixup_is_a_convex_combination_of_two_batch_members():
    x, y = _batch()
    torch.manual_seed(0)
    out, t = build_mixer(num_classes=10, mixup=0.8)(x, y)
    assert t.shape == (6, 10) and t.dtype == torch.float32
    torch.testing.assert_close(t.sum(1), torch.ones(6))
    lam = t[torch.arange(6), y]
    assert 0 < lam.min() and lam.max() < 1 and torch.allclose(lam, lam[0])  # one lambda
    partner = x.roll(1, 0)
    mix = lam[0] * x + (1 - lam[0]) * partner
    torch.testing.assert_close(out, mix)
    torch.testing.assert_close(t[torch.arange(6), y.roll(1)], 1 - lam)
    assert torch.equal(dominant_label(t), torch.where(lam > 0.5, y, y.roll(1)))


def test_cutmix_pastes_a_box_and_weights_are_the_area():
    x, y = _batch()
    torch.manual_seed(3)
    out, t = build_mixer(num_classes=10, cutmix=1.0)(x, y)
    pasted = (out != x).any(1)[0]
    rows, cols = pasted.any(1).nonzero(), pasted.any(0).nonzero()
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    assert pasted[r0:r1, c0:c1].all() and pasted.sum() == (r1 - r0) * (c1 - c0)  # a box
    assert torch.equal(out[:, :, r0:r1, c0:c1], x.roll(1, 0)[:, :, r0:r1, c0:c1])
    area = float((r1 - r0) * (c1 - c0)) / (16 * 16)
    assert t[0, y[0].item()] == pytest.approx(1 - area)  # own label keeps the rest
    assert t[0, y.roll(1)[0].item()] == pytest.approx(area)


def test_prob_zero_leaves_the_batch_with_one_hot_targets_and_both_switch():
    x, y = _batch()
    out, t = build_mixer(num_classes=10, mixup=1.0, cutmix=1.0, prob=0.0)(x, y)
    assert torch.equal(out, x) and torch.equal(t, torch.nn.functional.one_hot(y, 10).float())
    both = build_mixer(num_classes=10, mixup=1.0, cutmix=1.0)
    kinds = set()
    torch.manual_seed(0)
    for _ in range(20):
        out, t = both(x, y)
        boxed = ((out != x).any(1)[0].float().mean() < 1).item()  # CutMix leaves pixels as are
        kinds.add(boxed)
    assert kinds == {True, False}
    assert build_mixer(num_classes=10) is None


def test_mixing_is_deterministic_under_manual_seed():
    x, y = _batch()
    mixer = build_mixer(num_classes=10, mixup=0.2, cutmix=1.0, prob=0.5)
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append([mixer(x, y) for _ in range(6)])
    for (a, ta), (b, tb) in zip(*runs, strict=True):
        assert torch.equal(a, b) and torch.equal(ta, tb)
    torch.manual_seed(8)
    other = [mixer(x, y)[1] for _ in range(6)]
    assert any(not torch.equal(o, r[1]) for o, r in zip(other, runs[0], strict=True))


@pytest.mark.parametrize(
    "kw,flag",
    [({"mixup": -1}, "--mixup"), ({"cutmix": -0.5}, "--cutmix"), ({"mixup": 1, "prob": 2}, "prob")],
)
def test_bad_mixer_values_are_user_errors(kw, flag):
    with pytest.raises(UserError, match=flag):
        build_mixer(num_classes=10, **kw)
