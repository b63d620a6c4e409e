"""--decode choices, encoded batches, loader settings and benchmarks/input_pipeline.py."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scripts import ROOT, load_script

from afictl.data import BrokenImage, build_dataset, make_loader, on_device
from afictl.data.decode import draft_load, encoded_load, is_encoded, resolve_decode
from afictl.data.loaders import collate_skip_broken
from afictl.errors import UserError

CPU_DECODERS = ["auto", "pil", "pil-draft", "torchvision"]


def _photo(w: int, h: int, seed: int) -> Image.Image:
    """Smooth colours (JPEG decoders agree to about a grey level on such content)."""
    rng = np.random.default_rng(seed)
    low = (rng.random((6, 6, 3)) * 255).astype(np.uint8)
    return Image.fromarray(low).resize((w, h), Image.BICUBIC)


def _tree(root: Path, n: int = 2, size=(300, 240), png: bool = False) -> Path:
    for i in range(n):
        folder = root / "train" / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        _photo(*size, i).save(folder / f"{i}.jpg", quality=95)
    if png:
        _photo(260, 230, 99).save(root / "train" / "c0" / "z.png")
    (root / "val").mkdir(exist_ok=True)
    (root / "val" / "c0").symlink_to(root / "train" / "c0", target_is_directory=True)
    (root / "val" / "c1").symlink_to(root / "train" / "c1", target_is_directory=True)
    return root


@pytest.mark.parametrize("decode", CPU_DECODERS)
def test_each_decoder_gives_model_sized_tensors_pngs_included(tmp_path, decode):
    _tree(tmp_path, png=True)
    for split, n in (("train", 3), ("eval", 3)):
        ds = build_dataset("imagenet", tmp_path, split, decode=decode)
        assert len(ds) == n and ds.device_transform is None
        for i in range(n):  # the PNG among them
            x, _ = ds[i]
            assert x.shape == (3, 224, 224) and x.dtype == torch.float32
            assert type(x) is torch.Tensor  # no tv_tensors subclass reaches the model


def test_pil_and_torchvision_agree_on_the_eval_pipeline(tmp_path):
    _tree(tmp_path, n=2, size=(500, 375), png=True)  # downscaled: PIL's and torch's kernels
    pil = build_dataset("imagenet", tmp_path, "eval", decode="pil")
    tv = build_dataset("imagenet", tmp_path, "eval", decode="torchvision")
    for i in range(len(pil)):
        a, b = pil[i][0], tv[i][0]
        # normalised values (|x| up to ~2.6): the JPEG decoders and antialiased resizes differ
        # by about a grey level at most (1/255 / std ~ 0.017)
        assert (a - b).abs().mean() < 0.01 * a.abs().max()
        assert (a - b).abs().max() < 0.1 * a.abs().max()


def test_pil_draft_decodes_smaller_but_keeps_the_needed_size(tmp_path):
    big, small = tmp_path / "big.jpg", tmp_path / "small.jpg"
    _photo(1000, 750, 0).save(big)
    _photo(500, 375, 1).save(small)
    assert draft_load(str(big), 224).size == (500, 375)  # 1/2: 1/4 would leave 188 < 224
    assert draft_load(str(big), 180).size == (250, 188)  # 1/4: both sides still >= 180
    assert draft_load(str(big), 400).size == (1000, 750)  # under 2x the size: full size
    assert draft_load(str(small), 224).size == (500, 375)
    assert draft_load(str(small), 224).mode == "RGB"


def test_gpu_decode_needs_cuda(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _tree(tmp_path)
    with pytest.raises(UserError) as err:
        build_dataset("imagenet", tmp_path, "train", decode="gpu")
    assert str(err.value) == "--decode gpu needs a CUDA device"
    with pytest.raises(UserError, match="unknown --decode"):
        resolve_decode("nvjpeg")
    with pytest.raises(UserError, match="in memory"):
        build_dataset("shapes", None, "train", size=4, decode="torchvision")


def test_encoded_batches_pass_collate_and_decode_on_device(tmp_path, monkeypatch):
    """The --decode gpu path, run on the CPU (decode_jpeg of a list works on any device)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    _tree(tmp_path, png=True)
    (tmp_path / "train" / "c1" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    ds = build_dataset("imagenet", tmp_path, "eval", decode="gpu", on_error="mark")
    assert ds.device_transform is not None and ds.transform is None
    samples = [ds[i] for i in range(len(ds))]
    assert sum(isinstance(s[0], BrokenImage) for s in samples) == 1
    assert sum(is_encoded(s[0]) for s in samples) == 2  # the PNG comes decoded
    batch = collate_skip_broken(samples)
    assert isinstance(batch.images, list) and len(batch.images) == 3 == len(batch.targets)
    assert [b.path.endswith("bad.jpg") for b in batch.broken] == [True]
    x = on_device(batch.images, "cpu", ds.device_transform)
    assert x.shape == (3, 3, 224, 224) and x.dtype == torch.float32
    ref = build_dataset("imagenet", tmp_path, "eval", decode="torchvision", on_error="mark")
    good = [ref[i][0] for i in range(len(ref)) if not isinstance(ref[i][0], BrokenImage)]
    torch.testing.assert_close(x, torch.stack(good))  # same decoder, same transform
    png = [s for s in samples if isinstance(s[0], torch.Tensor) and not is_encoded(s[0])]
    only_png = collate_skip_broken(png)  # decoded in the worker, still transformed on device
    assert isinstance(only_png.images, list)
    assert on_device(only_png.images, "cpu", ds.device_transform).shape == (1, 3, 224, 224)
    plain = torch.rand(2, 3, 4, 4)
    assert torch.equal(on_device(plain, "cpu"), plain)


@pytest.mark.slow
def test_encoded_batches_through_worker_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    _tree(tmp_path, png=True)
    (tmp_path / "train" / "c1" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    _tree(tmp_path / "more", n=4)
    for f in (tmp_path / "more" / "train" / "c0").iterdir():
        f.rename(tmp_path / "train" / "c0" / f"m{f.name}")
    ds = build_dataset("imagenet", tmp_path, "train", decode="gpu", on_error="mark", size=5)
    assert ds.device_transform is not None  # kept through the subset
    loader = make_loader(ds, 3, train=False, workers=1)
    batches = list(loader)  # encoded tensors cross the process boundary
    out = [on_device(b.images, "cpu", ds.device_transform) for b in batches]
    assert sum(len(o) for o in out) + sum(len(b.broken) for b in batches) == 5
    assert [tuple(o.shape[1:]) for o in out] == [(3, 224, 224)] * len(out), [o.shape for o in out]
    assert is_encoded(encoded_load(str(tmp_path / "train" / "c0" / "0.jpg")))


def test_loader_defaults_and_settings(tmp_path):
    ds = build_dataset("shapes", None, "train", size=8)
    train = make_loader(ds, 4, train=True, workers=1)
    ev = make_loader(ds, 4, train=False, workers=1, prefetch_factor=4)
    assert not train.persistent_workers and ev.persistent_workers  # exact resume: see docs
    assert ev.prefetch_factor == 4 and train.prefetch_factor >= 1
    assert make_loader(ds, 4, train=True, workers=1, persistent_workers=True).persistent_workers
    none = make_loader(ds, 4, train=True, workers=0, persistent_workers=True, prefetch_factor=4)
    assert not none.persistent_workers and none.prefetch_factor is None
    with pytest.raises(UserError, match="prefetch"):
        make_loader(ds, 4, train=True, workers=1, prefetch_factor=0)


@pytest.mark.slow
def test_benchmark_quick_rows_are_positive(capsys):
    bench = load_script(ROOT / "benchmarks" / "input_pipeline.py")
    rows = bench.main(["--quick", "-f", "json"])
    import json

    printed = json.loads(capsys.readouterr().out)
    assert len(printed) == len(rows) == 3 * 2 + 3
    assert {r["decode"] for r in printed} == {"pil", "pil-draft", "torchvision"}
    assert {r["workers"] for r in printed} == {0, 1}
    assert all(r["images_per_s"] > 0 and r["per_worker"] > 0 for r in printed)
    assert {r["note"].split(";")[0] for r in printed} >= {"persistent", "prefetch 4", "pin_memory"}
