"""The decoded-split cache and the batch augmentation of the tensor input pipeline."""

import os

import pytest
import torch
from torchvision.transforms import v2

from afictl.data.batch_augment import batch_generator, normalise, pad_crop_flip
from afictl.data.tensor_cache import DecodedSplit, cached_split, decode_files, source_digest


def _files(tmp_path, n=6):
    root = tmp_path / "train"
    files = []
    for i in range(n):
        p = root / f"c{i % 2}" / f"{i}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(bytes([i]) * 12)
        files.append(p)
    return root, files


def _load(path):  # a "decoder": the file's first byte as a constant 3x2x2 image
    return torch.full((3, 2, 2), open(path, "rb").read(1)[0], dtype=torch.uint8)


def _split(root, files, calls):
    def build():
        calls.append(1)
        return decode_files(files, [i % 2 for i in range(len(files))], ["c0", "c1"], _load)

    return build


def test_decode_files_stacks_images_and_labels(tmp_path):
    _, files = _files(tmp_path)
    split = decode_files(files, [0, 1, 0, 1, 0, 1], ["c0", "c1"], _load)
    assert split.images.shape == (6, 3, 2, 2) and split.images.dtype == torch.uint8
    assert split.images[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert split.labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert split.nbytes == 6 * 12 + 6 * 8


def test_decode_files_refuses_mixed_sizes(tmp_path):
    _, files = _files(tmp_path, 2)
    shapes = iter([(3, 2, 2), (3, 4, 4)])
    with pytest.raises(ValueError, match="1.bin"):
        decode_files(
            files, [0, 1], ["a", "b"], lambda p: torch.zeros(next(shapes), dtype=torch.uint8)
        )


def test_cache_hit_skips_decoding(tmp_path):
    root, files = _files(tmp_path)
    digest, calls = source_digest(files, root), []
    first, hit1 = cached_split("t", digest, _split(root, files, calls), tmp_path / "cache")
    second, hit2 = cached_split("t", digest, _split(root, files, calls), tmp_path / "cache")
    assert (hit1, hit2, len(calls)) == (False, True, 1)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert second.classes == ["c0", "c1"]


def test_changed_folder_changes_the_digest(tmp_path):
    root, files = _files(tmp_path)
    before = source_digest(files, root)
    os.utime(files[3], ns=(1, 1))
    assert source_digest(files, root) != before
    files[0].write_bytes(b"longer than before")
    assert len({before, source_digest(files, root), source_digest(files[1:], root)}) == 3


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other_digest"])
def test_damaged_cache_is_rebuilt(tmp_path, damage):
    root, files = _files(tmp_path)
    digest, calls, cache = source_digest(files, root), [], tmp_path / "cache"
    cached_split("t", digest, _split(root, files, calls), cache)
    (path,) = cache.iterdir()
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:40])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 300)
    else:  # a valid file whose metadata names another source
        other = DecodedSplit(
            torch.zeros(6, 3, 2, 2, dtype=torch.uint8), torch.zeros(6, dtype=torch.int64), ["a"]
        )
        from afictl.data.tensor_cache import _write

        _write(path, other, "0" * 32)
    split, hit = cached_split("t", digest, _split(root, files, calls), cache)
    assert not hit and len(calls) == 2
    assert split.images[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert cached_split("t", digest, _split(root, files, calls), cache)[1]  # rebuilt file good


def test_unwritable_cache_warns_and_still_returns(tmp_path, capsys):
    root, files = _files(tmp_path)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    split, hit = cached_split("t", source_digest(files, root), _split(root, files, []), blocker)
    assert not hit and len(split) == 6
    assert "cannot cache t" in capsys.readouterr().err


def test_pad_crop_flip_matches_per_image_crops():
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = pad_crop_flip(images, batch_generator(0, 1, 2), pad=2)
    g = batch_generator(0, 1, 2)  # the same draws, replayed image by image
    dy = torch.randint(0, 5, (16,), generator=g)
    dx = torch.randint(0, 5, (16,), generator=g)
    mirror = torch.rand(16, generator=g) < 0.5
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(16):
        crop = padded[i, :, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8]
        assert torch.equal(out[i], crop.flip(-1) if mirror[i] else crop)
    assert out.dtype == torch.uint8 and out.shape == images.shape


def test_batch_generator_is_a_function_of_where_the_batch_stands():
    x = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    a = pad_crop_flip(x, batch_generator(3, 2, 7))
    assert torch.equal(a, pad_crop_flip(x, batch_generator(3, 2, 7)))
    for other in [(3, 2, 8), (3, 3, 7), (4, 2, 7)]:
        assert not torch.equal(a, pad_crop_flip(x, batch_generator(*other)))
    assert not torch.equal(a, pad_crop_flip(x, batch_generator(3, 2, 7, rank=1)))


def test_offsets_and_flips_cover_their_range():
    # a one-hot image: where its pixel lands gives the offset drawn
    x = torch.zeros(4000, 1, 9, 9, dtype=torch.uint8)
    x[:, 0, 4, 4] = 255
    out = pad_crop_flip(x, batch_generator(0, 0, 0), pad=4, flip=False)
    seen = {tuple(int(v) for v in torch.nonzero(img[0])[0]) for img in out if img.any()}
    assert seen == {(r, c) for r in range(9) for c in range(9)}  # all 81 offsets
    flipped = pad_crop_flip(x[:, :, :, :], batch_generator(0, 0, 1), pad=0)
    assert torch.equal(flipped, x)  # a centred pixel is its own mirror
    asym = torch.zeros(4000, 1, 1, 2, dtype=torch.uint8)
    asym[:, 0, 0, 0] = 1
    share = pad_crop_flip(asym, batch_generator(0, 0, 2), pad=0)[:, 0, 0, 1].float().mean()
    assert abs(float(share) - 0.5) < 0.05


def test_normalise_matches_torchvision():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    ref = v2.Normalize(mean, std)(v2.ToDtype(torch.float32, scale=True)(x))
    got = normalise(x, mean, std)
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def _decoded(n=40, size=8):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return DecodedSplit(images, torch.arange(n) % 5, [f"k{i}" for i in range(5)])


def _tensor_loader(split, **kw):
    from afictl.data.tensor_loader import TensorLoader

    kw.setdefault("train", True)
    return TensorLoader(split, 8, mean=(0.5,) * 3, std=(0.25,) * 3, seed=3, **kw)


def test_tensor_loader_draws_the_dataloaders_order():
    from torch.utils.data import TensorDataset

    from afictl.data.loaders import make_loader

    split = _decoded()
    ref = make_loader(TensorDataset(split.images, split.labels), 8, train=True, seed=3)
    ours = _tensor_loader(split)
    for epoch in (0, 1):
        ref.sampler.set_epoch(epoch)
        ours.sampler.set_epoch(epoch)
        got = [b.targets.tolist() for b in ours]
        assert got == [b.targets.tolist() for b in ref] and len(got) == len(ours) == 5
    assert ours.epoch == 1


def test_resume_part_way_gives_the_same_batches():
    split = _decoded()
    whole = _tensor_loader(split)
    whole.sampler.set_epoch(2)
    full = list(whole)
    resumed = _tensor_loader(split)
    resumed.sampler.set_epoch(2, skip=3 * 8)
    tail = list(resumed)
    assert len(tail) == 2
    for a, b in zip(full[3:], tail, strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)


def test_ranks_share_the_epoch_without_overlap():
    split = _decoded()
    seen = []
    for rank in (0, 1):
        loader = _tensor_loader(split, world=2, rank=rank)
        loader.sampler.set_epoch(0)
        seen += [t for b in loader for t in b.images[:, 0, 0, 0].tolist()]
        assert len(loader) == 2  # 20 images per rank, batches of 8, ragged one dropped
    assert len(seen) == 32


def test_eval_batches_every_image_once_unaugmented():
    split = _decoded(n=21)
    loader = _tensor_loader(split, train=False)
    batches = list(loader)
    assert [len(b.targets) for b in batches] == [8, 8, 5]
    x = torch.cat([b.images for b in batches])
    assert torch.equal(x, normalise(split.images, (0.5,) * 3, (0.25,) * 3))


def _stacked(ds):
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return torch.stack(xs), torch.tensor(ys)


def _png_folder(root, n=12, size=32):
    from PIL import Image

    g = torch.Generator().manual_seed(1)
    for i in range(n):
        p = root / "train" / f"class{i % 3}" / f"{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        pixels = torch.randint(0, 256, (size, size, 3), dtype=torch.uint8, generator=g)
        Image.fromarray(pixels.numpy()).save(p)
    return root


@pytest.mark.parametrize("size", [None, 24])
def test_decoded_shapes_are_the_loader_images(size):
    from afictl.data import build_dataset
    from afictl.data.decoded import decoded_split
    from afictl.data.transforms import normalization

    ds = build_dataset("shapes", None, "eval", size=40, train_transforms=False)
    sub = build_dataset("shapes", None, "eval", size=40, train_transforms=False)
    if size:  # a --data-size subset of a bigger split
        from afictl.data.datasets import _fixed_subset

        sub = _fixed_subset(build_dataset("shapes", None, "eval", size=40), size, 0, "eval")
        ds = _fixed_subset(ds, size, 0, "eval")
    split, why = decoded_split(sub, "shapes", 32)
    assert why == "" and split.images.dtype == torch.uint8
    x, y = _stacked(ds)
    got = normalise(split.images, *normalization("shapes"))
    assert torch.allclose(got, x, atol=1e-5 * float(x.abs().max())) and torch.equal(split.labels, y)


def test_decoded_folder_is_cached_and_matches(tmp_path, monkeypatch):
    from afictl.data import build_dataset, decoded
    from afictl.data.transforms import normalization

    monkeypatch.setenv("AFICTL_CACHE", str(tmp_path / "cache"))
    root = _png_folder(tmp_path / "data")
    ds = build_dataset("imagefolder", root, "train", input_size=32, train_transforms=False)
    split, why = decoded.decoded_split(ds, "imagefolder", 32)
    x, y = _stacked(ds)
    assert why == "" and torch.equal(split.labels, y)
    assert torch.allclose(normalise(split.images, *normalization("imagefolder")), x, atol=1e-4)
    assert len(list((tmp_path / "cache").iterdir())) == 1

    def no_decoding(path):
        raise AssertionError("decoded again")

    monkeypatch.setattr(decoded, "pil_load", no_decoding)
    again, _ = decoded.decoded_split(ds, "imagefolder", 32)  # from the cache
    assert torch.equal(again.images, split.images)


def test_large_or_unreadable_images_fall_back(tmp_path, monkeypatch):
    from afictl.data import build_dataset
    from afictl.data.decoded import decoded_split

    monkeypatch.setenv("AFICTL_CACHE", str(tmp_path / "cache"))
    big = _png_folder(tmp_path / "big", n=3, size=96)
    ds = build_dataset("imagefolder", big, "train", input_size=32, train_transforms=False)
    split, why = decoded_split(ds, "imagefolder", 32)
    assert split is None and "96x96" in why
    assert decoded_split(ds, "imagefolder", 224)[0] is None
    small = _png_folder(tmp_path / "small", n=3)
    (small / "train" / "class0" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    ds = build_dataset("imagefolder", small, "train", input_size=32, train_transforms=False)
    split, why = decoded_split(ds, "imagefolder", 32)
    assert split is None and "cannot be decoded" in why


def test_choose_pipeline(tmp_path, monkeypatch):
    from afictl.data import build_dataset
    from afictl.data.pipeline import choose_pipeline
    from afictl.errors import UserError

    monkeypatch.setenv("AFICTL_CACHE", str(tmp_path / "cache"))
    shapes = tuple(build_dataset("shapes", None, s, size=16) for s in ("train", "eval"))
    assert choose_pipeline("loader", "shapes", shapes, 32).kind == "loader"
    auto = choose_pipeline("auto", "shapes", shapes, 32)
    assert auto.kind == "tensor" and len(auto.train) == len(auto.eval) == 16
    big = _png_folder(tmp_path / "big", n=3, size=96)
    folder = tuple(build_dataset("imagefolder", big, "train", input_size=32) for _ in range(2))
    fallback = choose_pipeline("auto", "imagefolder", folder, 32)
    assert fallback.kind == "loader" and "96x96" in fallback.reason
    with pytest.raises(UserError, match="--pipeline tensor does not apply: its images are 96x96"):
        choose_pipeline("tensor", "imagefolder", folder, 32)
    with pytest.raises(UserError, match="unknown --pipeline"):
        choose_pipeline("fast", "shapes", shapes, 32)
    assert choose_pipeline("auto", "shapes", shapes, 32, decode="pil-draft").kind == "loader"


def test_per_image_augmentation_is_exact_and_leaves_the_global_rng():
    from afictl.data import build_dataset
    from afictl.data.pipeline import choose_pipeline, tensor_loaders

    shapes = tuple(build_dataset("shapes", None, s, size=32) for s in ("train", "eval"))
    pipe = choose_pipeline("auto", "shapes", shapes, 32)
    common = dict(device=torch.device("cpu"), on_device=False, seed=5)

    def first_batch(**kw):
        train, _ = tensor_loaders(pipe, "shapes", 32, 16, **common, **kw)
        train.sampler.set_epoch(1)
        return next(iter(train)).images

    plain = first_batch()
    state = torch.random.get_rng_state()
    augmented = first_batch(aa="rand-m9-mstd0.5", reprob=0.5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(augmented, first_batch(aa="rand-m9-mstd0.5", reprob=0.5))
    assert not torch.equal(augmented, plain)
    erased = (augmented == 0).flatten(1).float().mean(1) > 0.05  # zeroed rectangles
    assert 0 < int(erased.sum()) < 16  # some images erased, not all: drawn per image


def test_eval_through_the_tensor_pipeline_equals_the_loader(tmp_path, monkeypatch):
    from test_analyses import _train_checkpoint

    from afictl.train import evaluate as ev

    ckpt = _train_checkpoint(tmp_path / "best.pt", "resnet20")
    fast = ev.evaluate_checkpoint(ckpt, workers=0)
    used = []
    real = ev.eval_tensor_loader
    monkeypatch.setattr(ev, "eval_tensor_loader", lambda *a: used.append(real(*a)))
    slow = ev.evaluate_checkpoint(ckpt, workers=0)
    assert used and used[0] is not None  # the first run took the tensor pipeline
    assert fast["top1"] == slow["top1"] and fast["top5"] == slow["top5"]
    assert abs(fast["loss"] - slow["loss"]) <= 1e-5 * max(1.0, abs(slow["loss"]))
