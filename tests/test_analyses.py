"""`afictl gradcam`, `selectivity`, `features` (issue 6) and their bare lines (issue 9) on tiny
models trained for a few steps on generated images."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from cli import run
from PIL import Image

from afictl.analysis.features import run_features
from afictl.analysis.gradcam import attention_area, grad_cam, run_gradcam
from afictl.analysis.runs import default_checkpoints, free_path
from afictl.analysis.selectivity import (
    class_means,
    selectivity_frame,
    selectivity_index,
    summarize,
)
from afictl.checkpoint import model_from_checkpoint, save_checkpoint
from afictl.data import eval_transform
from afictl.data.shapes import SHAPE_CLASSES, ShapesDataset, render_shapes
from afictl.errors import UserError
from afictl.models import StageError, create_model


def _train_checkpoint(path: Path, arch: str, steps: int = 4, dataset: str = "shapes") -> Path:
    """A model trained for a few SGD steps on generated shapes, saved as ``afictl train`` would."""
    torch.manual_seed(0)
    data = ShapesDataset(64, seed=0, split="train", transform=eval_transform("shapes", 32))
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.tensor(data.targets)
    model = create_model(arch, num_classes=len(SHAPE_CLASSES))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for step in range(steps):
        idx = torch.arange(step * 16, step * 16 + 16) % len(x)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    config = {
        "arch": arch,
        "dataset": dataset,
        "data_root": None,
        "input_size": 32,
        "eval_split": "eval",
        "data_size": 48,
        "seed": 0,
        "num_classes": len(SHAPE_CLASSES),
    }
    return save_checkpoint(
        path,
        {
            "arch": arch,
            "num_classes": len(SHAPE_CLASSES),
            "model_kwargs": {},
            "model": model.state_dict(),
            "epoch": 1,
            "config": config,
            "class_names": list(SHAPE_CLASSES),
        },
    )


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    return {a: _train_checkpoint(root / f"{a}.pt", a) for a in ("resnet20", "afi_resnet20")}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two generated photos-to-be (larger than the models' input) and a file that is not one."""
    root = tmp_path_factory.mktemp("images")
    pixels, _ = render_shapes(2, seed=7, split="photos")
    paths = []
    for i, p in enumerate(pixels):
        path = root / f"shape{i}.png"
        Image.fromarray(p).resize((80, 64)).save(path)
        paths.append(path)
    bad = root / "notes.jpg"
    bad.write_text("not an image")
    return paths, bad


# --- Grad-CAM --------------------------------------------------------------------------------


def test_attention_area():
    heat = np.zeros((4, 4), np.float32)
    assert attention_area(heat) == 0.0  # all zero: nothing attended, not NaN
    heat[0, :2] = 1.0
    heat[1, 0] = 0.4  # below half the maximum
    assert attention_area(heat) == pytest.approx(2 / 16)


def test_view_matches_the_pipeline():
    """A CIFAR model sees the whole image resized; an ImageNet model the center crop 224/256."""
    from afictl.analysis.inputs import view_of

    img = Image.new("RGB", (400, 300))
    assert view_of(img, 32).shape == (192, 256, 3)  # whole image, longer side scaled to 256
    assert view_of(img, 224, max_side=1000).shape == (262, 262, 3)  # 300 * 224 / 256 = 262.5
    assert eval_transform("imagenet", 224)(img).shape == (3, 224, 224)


@pytest.mark.slow  # a trained checkpoint or a CAM per model: seconds
def test_gradcam_heatmaps_and_png(ckpts, images, tmp_path, capsys):
    good, _ = images
    report = run_gradcam(good, [ckpts["resnet20"], ckpts["afi_resnet20"]])
    assert report.errors == [] and len(report.results) == 4
    for r in report.results:
        assert r.heatmap.shape == (32, 32)  # the model's input size
        assert r.heatmap.min() >= 0.0 and r.heatmap.max() <= 1.0
        assert 0.0 < r.attention_area <= 1.0
        assert r.view.shape == (32, 32, 3)  # the model's input: the 80x64 photo squashed
        assert r.predicted_class in SHAPE_CLASSES and 0.0 < r.probability <= 1.0
    out = tmp_path / "cam.png"
    code, stdout, err = run(
        capsys,
        "gradcam",
        *good,
        "-c",
        ckpts["resnet20"],
        "-c",
        ckpts["afi_resnet20"],
        "--figure",
        out,
        "--format",
        "json",
    )
    assert code == 0, err
    rows = json.loads(stdout)
    assert len(rows) == 4
    for key in ("image", "checkpoint", "predicted_class", "probability", "attention_area"):
        assert all(key in row for row in rows)
    assert {r["checkpoint"] for r in rows} == {str(ckpts["resnet20"]), str(ckpts["afi_resnet20"])}
    with Image.open(out) as fig:
        assert fig.format == "PNG" and fig.width > fig.height  # 2 rows x 3 panels


@pytest.mark.slow  # a trained checkpoint or a CAM per model: seconds
def test_gradcam_target_class_by_name_or_index_and_hooks_removed(ckpts, images):
    good, _ = images
    by_name = run_gradcam(good[:1], [ckpts["afi_resnet20"]], target_class="Ring").results[0]
    by_index = run_gradcam(
        good[:1], [ckpts["afi_resnet20"]], target_class=str(SHAPE_CLASSES.index("ring"))
    ).results[0]
    assert by_name.target_class == by_index.target_class == "ring"
    np.testing.assert_allclose(by_name.heatmap, by_index.heatmap, atol=1e-6)
    with pytest.raises(UserError, match="unknown class 'zebra'"):
        from afictl.analysis.inputs import resolve_class

        resolve_class({"num_classes": 8, "class_names": SHAPE_CLASSES, "path": "x.pt"}, "zebra")
    model, _ = model_from_checkpoint(ckpts["afi_resnet20"])
    layer = model.feature_layer()
    x = torch.randn(2, 3, 32, 32)
    heat, logits = grad_cam(model, x, layer)
    assert heat.shape == (2, 32, 32) and logits.shape == (2, 8)
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


@pytest.mark.slow  # a trained checkpoint or a CAM per model: seconds
def test_gradcam_bad_inputs_one_line_each_others_processed(ckpts, images, tmp_path, capsys):
    good, bad = images
    not_ckpt = tmp_path / "weights.pt"
    not_ckpt.write_bytes(b"\x00garbage")
    out = tmp_path / "partial.png"
    code, stdout, err = run(
        capsys,
        "gradcam",
        good[0],
        bad,
        tmp_path / "missing.jpg",
        good[1],
        "-c",
        ckpts["resnet20"],
        "-c",
        not_ckpt,
        "--figure",
        out,
        "--format",
        "json",
    )
    assert code == 2
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("afictl: error:")]
    assert len(errors) == 3 and "Traceback" not in err
    assert any("notes.jpg" in e for e in errors)
    assert any("missing.jpg" in e for e in errors)
    assert any("weights.pt" in e for e in errors)
    rows = json.loads(stdout)
    assert sorted(r["image"] for r in rows) == sorted(
        str(p) for p in good
    )  # the good ones still ran
    assert out.is_file()


@pytest.mark.slow  # a trained checkpoint or a CAM per model: seconds
def test_gradcam_layer_option(ckpts, images, capsys):
    good, _ = images
    for name in ("layer2", "conv2"):  # stage names first (conv1 is also the stem's path)
        r = run_gradcam(good[:1], [ckpts["resnet20"]], layer=name).results[0]
        assert r.layer == "conv2" and r.heatmap.shape == (32, 32)
    r = run_gradcam(good[:1], [ckpts["resnet20"]], layer="layer3.1.conv1").results[0]
    assert r.layer == "layer3.1.conv1"
    code, _, err = run(
        capsys, "gradcam", good[0], "-c", ckpts["resnet20"], "--layer", "layer9.nope"
    )
    assert code == 2 and "no such module" in err and err.count("\n") == 1


# --- class selectivity -----------------------------------------------------------------------


def test_selectivity_of_hand_built_activations_equals_formula():
    """Four channels over three classes: uniform, single-class, never firing, mixed."""
    acts = torch.tensor(
        [  # (N=6 images, C=4 channels), each image's spatial mean
            [1.0, 3.0, 0.0, 2.0],
            [1.0, 1.0, 0.0, 4.0],  # class 0: means [1, 2, 0, 3]
            [1.0, 0.0, 0.0, 1.0],
            [1.0, 0.0, 0.0, 1.0],  # class 1: means [1, 0, 0, 1]
            [1.0, 0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0, 2.0],  # class 2: means [1, 0, 0, 1]
        ]
    )
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    # 2x2 maps whose spatial mean is the activation: the probe averages them back
    x = acts[:, :, None, None].expand(-1, -1, 2, 2).contiguous()
    probe = torch.nn.Identity()
    cm = class_means(probe, [probe], [(x[:4], labels[:4]), (x[4:], labels[4:])], num_classes=3)
    np.testing.assert_allclose(cm.means[0], [[1, 2, 0, 3], [1, 0, 0, 1], [1, 0, 0, 1]])
    index, dead = selectivity_index(cm.means[0])
    # (mu_max - mu_rest) / (mu_max + mu_rest), mu_rest = mean of the other classes
    expected = [(1 - 1) / (1 + 1), (2 - 0) / (2 + 0), 0.0, (3 - 1) / (3 + 1)]
    np.testing.assert_allclose(index, expected)
    assert dead.tolist() == [False, False, True, False]
    assert not np.isnan(index).any()
    frame = selectivity_frame(
        cm, checkpoint="m.pt", arch="toy", stage="conv1", class_names=["a", "b", "c"]
    )
    assert frame["preferred_class"].tolist() == ["a", "a", "", "a"]
    (row,) = summarize(frame)
    assert row["channels"] == 4 and row["dead_channels"] == 1
    assert row["mean_index"] == pytest.approx(np.mean([0.0, 1.0, 0.5]))  # dead channel left out


def test_selectivity_index_rejects_one_class_and_ignores_unseen_classes():
    with pytest.raises(ValueError):
        selectivity_index(np.ones((1, 3)))
    probe = torch.nn.Identity()
    x = torch.tensor([[[[2.0]], [[0.0]]], [[[1.0]], [[1.0]]]])  # (2 images, 2 channels, 1, 1)
    cm = class_means(probe, [probe], [(x, torch.tensor([0, 3]))], num_classes=5)
    frame = selectivity_frame(cm, checkpoint="m.pt", arch="toy", stage="conv1")
    # only classes 0 and 3 were seen: channel 0 means [2, 1] -> 1/3, channel 1 means [0, 1] -> 1
    assert frame["index"].tolist() == pytest.approx([1 / 3, 1.0])
    with pytest.raises(UserError, match="at least two classes"):
        selectivity_frame(
            class_means(probe, [probe], [(x[:1], torch.tensor([0]))], num_classes=5),
            checkpoint="m.pt",
            arch="toy",
            stage="conv1",
        )


def test_stage_aliases_resolve_to_the_same_modules():
    for arch, stages in (("afi_resnet20", 3), ("resnet50", 4)):
        model = create_model(arch, num_classes=10)
        assert model.stage_names == [f"conv{i}" for i in range(1, stages + 1)]
        for k in range(1, stages + 1):
            probes = model.probes(f"conv{k}")
            for alias in (f"layer{k}", f"stage{k}", f"Stage_{k}", f"LAYER{k}"):
                assert all(a is b for a, b in zip(model.probes(alias), probes, strict=True))
            assert model.get_stage(f"layer{k}") is getattr(model, f"layer{k}")
        with pytest.raises(StageError, match=f"valid stages: conv1, .*conv{stages}"):
            model.resolve_stage(f"conv{stages + 1}")


@pytest.mark.slow  # a trained checkpoint or a CAM per model: seconds
def test_selectivity_unknown_stage_exit_2_lists_valid(ckpts, capsys):
    code, out, err = run(capsys, "selectivity", "-c", ckpts["afi_resnet20"], "--stage", "conv4")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "valid stages: conv1, conv2, conv3" in err and "layerK" in err


@pytest.mark.slow  # a trained checkpoint or a CAM per model: seconds
def test_selectivity_cli_on_recorded_data_json_csv_png(ckpts, tmp_path, capsys):
    out = tmp_path / "sel"
    code, stdout, err = run(
        capsys,
        "selectivity",
        "-c",
        ckpts["resnet20"],
        "-c",
        ckpts["afi_resnet20"],
        "--stage",
        "stage3",
        "--out-dir",
        out,
        "--format",
        "json",
        "--plot",
        "violin",
    )
    assert code == 0, err
    rows = json.loads(stdout)
    assert [(r["block"], r["channels"]) for r in rows] == [
        (1, 64),
        (2, 64),
        (3, 64),
        (1, 64),
        (2, 32),
        (3, 32),
    ]
    for r in rows:
        assert set(r) >= {"block", "checkpoint", "mean_index", "channels", "dead_channels"}
        assert 0.0 <= r["mean_index"] <= 1.0 and r["dead_channels"] <= r["channels"]
    csv = out / "selectivity-conv3.csv"
    assert str(csv) in err and str(out / "selectivity-conv3.png") in err
    import pandas as pd

    frame = pd.read_csv(csv)
    assert len(frame) == sum(r["channels"] for r in rows) and not frame["index"].isna().any()
    assert frame["index"].between(0, 1).all()
    with Image.open(out / "selectivity-conv3.png") as fig:
        assert fig.format == "PNG"


# --- features ----------------------------------------------------------------------------------


@pytest.mark.slow  # a trained checkpoint or a CAM per model: seconds
def test_features_attention_sums_to_one_and_integrates_inputs(ckpts, images):
    good, _ = images
    res = run_features(ckpts["afi_resnet20"], good[0], stage="layer3", block=3)
    assert res.stage == "conv3" and res.block == 3 and res.module == "layer3.2.join.afi"
    n, c = res.attention.shape
    assert (n, c) == (2, 32) and len(res.inputs) == 2
    np.testing.assert_allclose(res.attention.sum(axis=0), np.ones(c), atol=1e-5)
    # R = sum_j S~[j] * X(j), channel by channel (Eq. 2): what we read is what the model used
    r = sum(res.attention[j][:, None, None] * res.inputs[j] for j in range(n))
    np.testing.assert_allclose(res.output, r, rtol=1e-5, atol=1e-6)
    assert list(res.stage_alpha) == [3]
    with pytest.raises(UserError, match="blocks 3..3"):
        run_features(ckpts["afi_resnet20"], good[0], stage="conv3", block=2)
    with pytest.raises(UserError, match="no AFI module"):
        run_features(ckpts["resnet20"], good[0])


@pytest.mark.slow  # a trained checkpoint or a CAM per model: seconds
def test_features_dataset_average_sums_to_one(ckpts, images):
    """The dataset path through record_attention: averaged S~ still sums to 1 per channel."""
    from afictl.analysis.features import dataset_attention

    model, _ = model_from_checkpoint(ckpts["afi_resnet20"])
    batches = [(torch.randn(5, 3, 32, 32), torch.zeros(5)) for _ in range(3)]
    per_module, count = dataset_attention(model, batches, max_batches=2)
    assert count == 10 and set(per_module) == set(model.afi_modules())
    for w in per_module.values():
        np.testing.assert_allclose(w.sum(axis=0), np.ones(w.shape[1]), atol=1e-5)


@pytest.mark.slow  # a trained checkpoint or a CAM per model: seconds
def test_features_cli_writes_figure(ckpts, images, tmp_path, capsys):
    good, bad = images
    out = tmp_path / "feat.png"
    code, stdout, err = run(
        capsys,
        "features",
        good[1],
        "-c",
        ckpts["afi_resnet20"],
        "--stage",
        "conv2",
        "--figure",
        out,
        "--format",
        "json",
    )
    assert code == 0, err
    rows = json.loads(stdout)
    assert [r["input"] for r in rows] == ["X(1)", "X(2)"]
    assert sum(r["mean_alpha"] for r in rows) == pytest.approx(1.0, abs=1e-4)
    assert sum(r["channels_dominated"] for r in rows) == 16
    with Image.open(out) as fig:
        assert fig.format == "PNG"
    code, _, err = run(capsys, "features", bad, "-c", ckpts["afi_resnet20"], "--figure", out)
    assert code == 2 and err.count("\n") == 1 and "notes.jpg" in err


# --- the bare lines (issue 9): checkpoints found under ./runs/ ------------------------------------


def test_bare_lines_without_runs_say_what_to_do(tmp_path, monkeypatch, capsys, images):
    monkeypatch.chdir(tmp_path)
    for args in (["gradcam", images[0][0]], ["selectivity", "--stage", "conv3"]):
        code, out, err = run(capsys, *args)
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and "--checkpoint FILE" in err and "train" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # a trained checkpoint or a CAM per model: seconds
def test_run_discovery_pairs_newest_run_with_its_counterpart(tmp_path, monkeypatch, ckpts):
    monkeypatch.chdir(tmp_path)
    data = Path(ckpts["resnet20"]).read_bytes(), Path(ckpts["afi_resnet20"]).read_bytes()

    def put(name: str, blob: bytes, age: int, dataset: str = "shapes") -> Path:
        path = tmp_path / "runs" / name / "best.pt"
        if dataset == "shapes":
            path.parent.mkdir(parents=True)
            path.write_bytes(blob)
        else:
            model, ckpt = model_from_checkpoint(ckpts["resnet20"])
            ckpt["config"] = {**ckpt["config"], "dataset": dataset}
            ckpt.pop("path")
            save_checkpoint(path, ckpt)
        os.utime(path, (1e9 - age, 1e9 - age))
        return path

    old_base = put("resnet20-shapes-old", data[0], age=500)
    base = put("resnet20-shapes", data[0], age=300)
    put("resnet20-cifar10", data[0], age=100, dataset="cifar10")  # newer, but other data
    afi = put("afi_resnet20-shapes", data[1], age=10)  # the newest run
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "best.pt").write_text("half-written")
    assert default_checkpoints() == [
        Path("runs/resnet20-shapes/best.pt"),
        Path("runs/afi_resnet20-shapes/best.pt"),
    ]
    assert base.exists() and afi.exists() and old_base.exists()
    assert default_checkpoints(afi_only=True) == [Path("runs/afi_resnet20-shapes/best.pt")]
    os.utime(tmp_path / "runs" / "resnet20-cifar10" / "best.pt", (1e9, 1e9))  # now the newest
    assert default_checkpoints() == [Path("runs/resnet20-cifar10/best.pt")]  # no AFI run on cifar10
    (tmp_path / "gradcam.png").write_bytes(b"x")
    assert free_path("gradcam.png") == Path("gradcam-2.png")  # the README's promise
    (tmp_path / "gradcam-2.png").write_bytes(b"x")
    assert free_path("gradcam.png") == Path("gradcam-3.png")
    assert free_path("other.png") == Path("other.png")


@pytest.mark.slow  # a trained checkpoint or a CAM per model: seconds
def test_bare_gradcam_and_selectivity_after_training_both_models(
    tmp_path, monkeypatch, capsys, images
):
    """Issue 9: train resnet20 and afi_resnet20 for a few steps, then the bare lines use both."""
    monkeypatch.chdir(tmp_path)
    for arch in ("resnet20", "afi_resnet20"):
        code, _, err = run(
            capsys,
            "train",
            "--arch",
            arch,
            "--data",
            "shapes",
            "--data-size",
            "32",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--format",
            "json",
        )
        assert code == 0, err
    Image.open(images[0][0]).convert("RGB").save("image.jpg")
    code, stdout, err = run(capsys, "gradcam", "image.jpg", "--format", "json")
    assert code == 0, err
    rows = json.loads(stdout)
    assert [r["arch"] for r in rows] == [
        "resnet20",
        "afi_resnet20",
    ]  # baseline first, as in Figure 3
    assert "using checkpoints: runs/resnet20-shapes-" in err and "runs/afi_resnet20-shapes-" in err
    assert "wrote gradcam.png" in err
    with Image.open("gradcam.png") as fig:
        assert fig.width > 2 * fig.height  # one row: the image and two heatmaps
    code, _, err = run(capsys, "gradcam", "image.jpg")
    assert code == 0 and "wrote gradcam-2.png" in err and Path("gradcam.png").exists()
    code, stdout, err = run(capsys, "selectivity", "--stage", "conv3", "--format", "json")
    assert code == 0, err
    rows = json.loads(stdout)
    assert {r["arch"] for r in rows} == {"resnet20", "afi_resnet20"} and len(rows) == 6
    assert Path("selectivity/selectivity-conv3.png").is_file()
    assert Path("selectivity/selectivity-conv3.csv").is_file()
