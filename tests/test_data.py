"""Datasets: shapes, CIFAR (tiny fake batches), ImageFolder, roots, unreadable images."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from afictl.data import (
    SHAPE_CLASSES,
    BrokenImage,
    CorruptImageError,
    DataMissingError,
    build_dataset,
    default_data_root,
    make_loader,
    resolve_data_root,
)
from afictl.data.shapes import render_shapes
from afictl.errors import UserError


def test_shapes_deterministic_balanced_and_split_dependent():
    a, ya = render_shapes(48, seed=3, split="train")
    b, yb = render_shapes(48, seed=3, split="train")
    c, _ = render_shapes(48, seed=3, split="eval")
    d, _ = render_shapes(48, seed=4, split="train")
    assert a.shape == (48, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(ya, yb)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    assert np.bincount(ya, minlength=len(SHAPE_CLASSES)).tolist() == [6] * 8
    # varied backgrounds: corner pixels differ between images
    assert len({tuple(img[0, 0]) for img in a}) > 40


def test_build_dataset_shapes_transforms():
    train = build_dataset("shapes", None, "train", size=16, seed=1)
    ev = build_dataset("shapes", None, "eval", size=16, seed=1)
    assert train.classes == SHAPE_CLASSES and len(train) == len(ev) == 16
    x, y = ev[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 8
    assert torch.equal(ev[0][0], ev[0][0])  # eval transform is deterministic
    big = build_dataset("shapes", None, "eval", size=4, input_size=64)
    assert big[0][0].shape == (3, 64, 64)


def _write_cifar(root: Path, hundred: bool = False, n: int = 10) -> None:
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    label_key = "fine_labels" if hundred else "labels"
    names = (
        ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    )
    for name in names:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), label_key: list(range(n))}
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = (
        {"fine_label_names": [f"c{i}" for i in range(100)]}
        if hundred
        else {"label_names": [f"c{i}" for i in range(10)]}
    )
    (folder / ("meta" if hundred else "batches.meta")).write_bytes(pickle.dumps(meta))


def test_cifar10_from_fake_batches(tmp_path):
    _write_cifar(tmp_path)
    train = build_dataset("cifar10", tmp_path, "train")
    test = build_dataset("cifar10", tmp_path, "eval")
    assert len(train) == 50 and len(test) == 10 and len(train.classes) == 10
    x, y = test[3]
    assert x.shape == (3, 32, 32) and y == 3
    # pointing at the batches folder itself works too
    assert len(build_dataset("cifar10", tmp_path / "cifar-10-batches-py", "eval")) == 10
    sub = build_dataset("cifar10", tmp_path, "train", size=7, seed=2)
    assert len(sub) == 7 and sub.classes == train.classes


def test_cifar100_from_fake_batches(tmp_path):
    _write_cifar(tmp_path, hundred=True, n=12)
    ds = build_dataset("cifar100", tmp_path, "train")
    assert len(ds) == 12 and len(ds.classes) == 100


def test_cifar_missing_names_folder_and_download(tmp_path):
    with pytest.raises(DataMissingError) as err:
        build_dataset("cifar100", tmp_path / "nothing", "train", download_hint="--download")
    msg = str(err.value)
    assert str(tmp_path / "nothing") in msg and "--download" in msg and "--data shapes" in msg
    assert "\n" not in msg


def _write_folder(root: Path, split: str, classes: list[str], per_class: int = 3) -> None:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / split / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / split / c / f"{i}.jpg")


def test_imagefolder_train_and_test_split_keep_train_classes(tmp_path):
    _write_folder(tmp_path, "train", ["ant", "bee", "cat"])
    _write_folder(tmp_path, "test", ["ant", "cat"])  # eval lacks "bee": labels must not shift
    train = build_dataset("imagefolder", tmp_path, "train", input_size=32)
    ev = build_dataset("imagefolder", tmp_path, "eval", input_size=32)
    assert train.classes == ev.classes == ["ant", "bee", "cat"]
    assert sorted({y for _, y in ev.samples}) == [0, 2]
    assert ev[0][0].shape == (3, 32, 32)
    big = build_dataset("imagenet", tmp_path, "eval")  # ImageNet pipeline: resize 256, crop 224
    assert big[0][0].shape == (3, 224, 224)


def test_imagefolder_missing_and_empty(tmp_path):
    with pytest.raises(DataMissingError, match="expected .*train/<class>"):
        build_dataset("imagenet", tmp_path, "train")
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataMissingError, match="no images in"):
        build_dataset("imagenet", tmp_path, "train")


def test_corrupt_image_raise_and_mark(tmp_path):
    _write_folder(tmp_path, "train", ["a", "b"], per_class=2)
    bad = tmp_path / "train" / "a" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    ds = build_dataset("imagefolder", tmp_path, "train", input_size=32)
    idx = [i for i, (p, _) in enumerate(ds.samples) if p.endswith("broken.jpg")][0]
    with pytest.raises(CorruptImageError, match="broken.jpg"):
        ds[idx]
    marked = build_dataset("imagefolder", tmp_path, "train", input_size=32, on_error="mark")
    sample, _ = marked[idx]
    assert isinstance(sample, BrokenImage) and sample.path == str(bad)
    batches = list(make_loader(marked, 8, train=False))
    assert sum(len(b.images) for b in batches) == 4 and [
        x.path for b in batches for x in b.broken
    ] == [str(bad)]


def test_corrupt_image_error_from_worker_is_one_line():
    wrapped = CorruptImageError(
        "Caught CorruptImageError in DataLoader worker process 0.\n"
        "Original Traceback (most recent call last):\n"
        '  File "x.py", line 1\n'
        "afictl.data.errors.CorruptImageError: cannot read image /d/a.jpg (bad)\n"
    )
    assert str(wrapped) == "cannot read image /d/a.jpg (bad)"


def test_data_roots(tmp_path, monkeypatch):
    monkeypatch.delenv("AFICTL_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_data_root("imagenet") == tmp_path / "data" / "imagenet"
    monkeypatch.setenv("AFICTL_DATA", str(tmp_path / "store"))
    assert resolve_data_root("cifar100", None) == tmp_path / "store" / "cifar100"
    assert resolve_data_root("cifar100", "x") == tmp_path / "x"
    assert resolve_data_root("shapes", "x") is None
    with pytest.raises(UserError, match="unknown dataset"):
        build_dataset("mnist", None, "train")


def test_pipelines_equal_torchvision_v1_on_pil_images():
    """The v2 pipelines (which also take uint8 tensors) give the v1 ToTensor values bit for bit."""
    from torchvision import transforms as T

    from afictl.data import eval_transform, normalization, train_transform

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (75, 100, 3), dtype=np.uint8))
    norm = T.Normalize(*normalization("imagenet"))
    v1_train = T.Compose(
        [T.RandomResizedCrop(64 + 1), T.RandomHorizontalFlip(), T.ToTensor(), norm]
    )
    v1_eval = T.Compose([T.Resize(round(65 * 256 / 224)), T.CenterCrop(65), T.ToTensor(), norm])
    small = T.Compose([T.Resize((32, 32)), T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()])
    v1_small = T.Compose([small, T.ToTensor(), norm])
    pairs = [
        (v1_train, train_transform("imagenet", 65)),
        (v1_eval, eval_transform("imagenet", 65)),
        (v1_small, train_transform("imagenet", 32)),
    ]
    for old, new in pairs:
        for seed in range(3):
            torch.manual_seed(seed)
            a = old(img)
            torch.manual_seed(seed)
            b = new(img)
            assert type(b) is torch.Tensor and torch.equal(a, b)
