"""Weights in and out (afictl/weights.py): plain state dicts and .safetensors wherever a checkpoint
goes, an AFI model started from its baseline's weights, and exported files that say what they
hold (config.json, ONNX metadata, .pt2.json, the ONNX example). Nothing is downloaded: the
torchvision ResNet-50 is built with ``weights=None``."""

import json
import struct

import numpy as np
import pytest
import torch
from cli import run
from PIL import Image
from scripts import ROOT, load_script

from afictl.checkpoint import CheckpointError, model_from_checkpoint, save_checkpoint
from afictl.data.shapes import SHAPE_CLASSES
from afictl.data.transforms import eval_transform, preprocessing
from afictl.exporter import export
from afictl.models import create_model
from afictl.train.pretrained import load_pretrained
from afictl.weights import config_path, first_misfit, load_exported, read_weights

N = len(SHAPE_CLASSES)
HALVED = ("conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var")


def _randomise_bn(model):
    """BatchNorm statistics that are not the identity, so that a wrong copy shows."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


@pytest.fixture(scope="module")
def r20(tmp_path_factory):
    """resnet20 for the 8 shapes classes: as a plain state dict and as a run's checkpoint."""
    root = tmp_path_factory.mktemp("r20")
    torch.manual_seed(0)
    model = _randomise_bn(create_model("resnet20", num_classes=N)).eval()
    torch.save(model.state_dict(), root / "resnet20.pth")
    save_checkpoint(
        root / "run" / "best.pt",
        {
            "arch": "resnet20",
            "num_classes": N,
            "model_kwargs": {},
            "model": model.state_dict(),
            "epoch": 3,
            "best_epoch": 2,
            "metrics": [
                {"epoch": e, "eval_top1": 50.0 + e, "eval_top5": 90.0 + e} for e in (1, 2, 3)
            ],
            "config": {"dataset": "shapes", "input_size": 32, "epochs": 3, "data_size": 64},
            "class_names": list(SHAPE_CLASSES),
        },
    )
    return root, model


def _halved_keys(afi, base):
    """What the AFI model halves: the tensors of another shape than the baseline's, but the
    classifier's (other classes)."""
    b = base.state_dict()
    return [
        k
        for k, v in afi.state_dict().items()
        if k in b and v.shape != b[k].shape and not k.startswith("fc.")
    ]


def _check_afi_from_baseline(afi, before, base, report):
    """Copied tensors equal the baseline's, adapted ones its first half of output channels,
    the AFI modules untouched; the account names each."""
    src, now = base.state_dict(), afi.state_dict()
    halved = _halved_keys(afi, base)
    assert halved and all(k.endswith(HALVED) for k in halved)
    assert sorted(report["adapted"]) == sorted(halved)
    for key in halved:
        assert torch.equal(now[key], src[key][: now[key].shape[0]]), key
    for key in report["loaded"]:
        assert torch.equal(now[key], src[key]), key
    for key in report["initialised"]:
        assert torch.equal(now[key], before[key]), key
    assert all(".afi." in k for k in report["initialised"] if not k.startswith("fc."))


def test_torchvision_resnet50_starts_afi_resnet50(tmp_path, capsys):
    torchvision = pytest.importorskip("torchvision")
    base = _randomise_bn(torchvision.models.resnet50(weights=None))
    path = tmp_path / "resnet50.pth"
    torch.save(base.state_dict(), path)
    afi = create_model("afi_resnet50")
    before = {k: v.clone() for k, v in afi.state_dict().items()}
    out = load_pretrained(afi, path, "afi_resnet50")
    line = capsys.readouterr().err.strip()
    assert line == (
        f"pretrained {path}: 260 tensors loaded, 60 adapted (halved first conv + BN of AFI "
        "blocks), 16 left at initialisation (AFI modules)"
    )
    report = out["pretrained"]
    assert report["counts"] == {"loaded": 260, "adapted": 60, "initialised": 16}
    _check_afi_from_baseline(afi, before, base, report)
    # another number of classes: the classifier keeps its initialisation too
    afi10 = create_model("afi_resnet50", num_classes=10)
    before = {k: v.clone() for k, v in afi10.state_dict().items()}
    report = load_pretrained(afi10, path, "afi_resnet50")["pretrained"]
    assert report["counts"] == {"loaded": 258, "adapted": 60, "initialised": 18}
    assert report["line"].endswith("18 left at initialisation (AFI modules, classifier)")
    _check_afi_from_baseline(afi10, before, base, report)


def test_cifar_pair_from_checkpoint_and_plain_file(r20, capsys):
    root, base = r20
    for source in (root / "run", root / "resnet20.pth"):  # afictl checkpoint, plain state dict
        afi = create_model("afi_resnet20", num_classes=N)
        before = {k: v.clone() for k, v in afi.state_dict().items()}
        report = load_pretrained(afi, source, "afi_resnet20")["pretrained"]
        assert report["counts"] == {"loaded": 98, "adapted": 30, "initialised": 6}
        _check_afi_from_baseline(afi, before, base, report)
        assert capsys.readouterr().err.count("\n") == 1
    # the same arch, as before: every tensor of the file
    same = create_model("resnet20", num_classes=N)
    report = load_pretrained(same, root / "resnet20.pth", "resnet20")["pretrained"]
    assert report["counts"] == {"loaded": 128, "adapted": 0, "initialised": 0}
    # an afictl checkpoint of neither the model nor its baseline; a plain file that misfits
    with pytest.raises(CheckpointError, match="resnet20 checkpoint, not afi_resnet32 or its base"):
        load_pretrained(create_model("afi_resnet32"), root / "run", "afi_resnet32")
    with pytest.raises(CheckpointError, match="layer1.3.conv1.weight is missing from the file"):
        load_pretrained(create_model("afi_resnet32"), root / "resnet20.pth", "afi_resnet32")


def test_train_cli_starts_afi_model_from_plain_baseline(r20, tmp_path, capsys):
    root, _ = r20
    code, _, err = run(
        capsys,
        *("train", "--arch", "afi_resnet20", "--data", "shapes", "--data-size", 16),
        *("--batch-size", 16, "--epochs", 1, "--workers", 0, "--run-dir", tmp_path / "run"),
        *("--pretrained", root / "resnet20.pth"),
    )
    assert code == 0, err
    assert "98 tensors loaded, 30 adapted (halved first conv + BN of AFI blocks), 6 left" in err


def test_plain_state_dicts_wherever_a_checkpoint_goes(r20, tmp_path, capsys):
    root, model = r20
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, wrapped)
    x = torch.randn(2, 3, 32, 32)
    for path in (root / "resnet20.pth", wrapped):
        loaded, ckpt = model_from_checkpoint(path, arch="resnet20")
        assert ckpt["num_classes"] == N and ckpt["config"] == {
            "dataset": "cifar100",
            "input_size": 32,
        }
        assert torch.equal(loaded(x), model(x))
    args = ("--data", "shapes", "--data-size", 16, "-f", "json")
    code, out, err = run(capsys, "eval", "-c", root / "resnet20.pth", "-a", "resnet20", *args)
    assert code == 0, err
    plain = json.loads(out)
    code, out, err = run(capsys, "eval", "-c", root / "run", *args)
    assert code == 0, err
    assert {k: plain[k] for k in ("top1", "top5", "loss")} == {
        k: json.loads(out)[k] for k in ("top1", "top5", "loss")
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-c", "{root}/resnet20.pth"], "resnet20.pth is a plain state dict: name its model with"),
        (
            ["-c", "{root}/resnet20.pth", "-a", "afi_resnet20"],
            "does not fit afi_resnet20: layer1.1.conv1.weight has shape (16, 16, 3, 3) in the "
            "file, (8, 16, 3, 3) in the model",
        ),
        (["-c", "{root}/resnet20.pth", "-a", "resnet32"], "layer1.3.conv1.weight is missing"),
        (["-c", "{root}/resnet20.pth", "-a", "resnt20"], "did you mean resnet20"),
        (["-c", "{root}/run", "-a", "resnet32"], "holds a resnet20 checkpoint, not resnet32"),
    ],
)
def test_plain_file_errors_are_one_line(r20, capsys, args, message):
    root, _ = r20
    args = [a.format(root=root) for a in args]
    for command in (["eval", *args], ["export", *args, "--to", "safetensors"]):
        code, out, err = run(capsys, *command)
        assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err


def test_damaged_files_are_one_line(r20, tmp_path, capsys):
    root, model = r20
    raw = (root / "resnet20.pth").read_bytes()
    from safetensors.torch import save_file

    good = tmp_path / "good.safetensors"
    save_file(model.state_dict(), good)
    blob = good.read_bytes()
    files = {
        "half.pth": raw[: len(raw) // 2],
        "half.safetensors": blob[: len(blob) // 2],
        "noise.safetensors": np.random.default_rng(0).bytes(2048),
        "liar.safetensors": struct.pack("<Q", 1 << 40) + b"{}",  # a header larger than the file
        "empty.safetensors": b"",
        "list.pth": None,
    }
    for name, data in files.items():
        path = tmp_path / name
        if data is None:
            torch.save([1, 2, 3], path)
        else:
            path.write_bytes(data)
        code, out, err = run(capsys, "eval", "-c", path, "-a", "resnet20", "--data", "shapes")
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (name, err)
        assert str(path) in err, err
    assert "neither an afictl checkpoint nor a state dict" in err
    # a bare .safetensors (no config beside it, none in its header) is a plain state dict
    code, _, err = run(capsys, "eval", "-c", good)
    assert code == 2 and "good.safetensors is a plain state dict: name its model with" in err
    # a config beside it that is damaged or crafted: one line naming the field
    for config, message in [
        ("[1, 2", "good.config.json is not a readable config"),
        ({"arch": ["x"]}, "its config's arch must be a model name"),
        ({"arch": "resnet20", "num_classes": "8"}, "num_classes must be an integer"),
        ({"arch": "resnet20", "class_names": ["a"]}, "class_names must be 8 class name(s)"),
        ({"arch": "resnet20", "model_kwargs": {"reduction": 4}}, "not options of resnet20"),
    ]:
        ours = {"format": "afictl-model"}
        text = config if isinstance(config, str) else json.dumps(ours | config)
        config_path(good).write_text(text)
        code, _, err = run(capsys, "eval", "-c", good, "--data", "shapes")
        assert code == 2 and err.count("\n") == 1 and message in err, err


def test_first_misfit_names_missing_shape_and_unexpected():
    a = {"x": torch.zeros(2), "y": torch.zeros(3)}
    assert first_misfit(a, a) is None
    assert first_misfit({"x": torch.zeros(2)}, a) == "y is missing from the file"
    assert first_misfit({"x": torch.zeros(4), "y": torch.zeros(3)}, a) == (
        "x has shape (4,) in the file, (2,) in the model"
    )
    assert first_misfit(a | {"z": torch.zeros(1)}, a) == "the file has z, which the model does not"


def test_safetensors_round_trip_config_and_card(r20, tmp_path, capsys):
    root, model = r20
    out = tmp_path / "exp" / "r20.safetensors"
    code, stdout, err = run(
        capsys, "export", "-c", root / "run", "--export-file", out, "-f", "json"
    )
    assert code == 0, err
    (row,) = json.loads(stdout)
    assert row["format"] == "safetensors" and row["passed"] and row["max_abs_diff"] == 0.0
    card = out.with_suffix(".README.md")
    assert row["companions"] == [str(config_path(out)), str(card)]
    config = json.loads(config_path(out).read_text())
    assert config["arch"] == "resnet20" and config["num_classes"] == N
    assert config["class_names"] == list(SHAPE_CLASSES) and config["dataset"] == "shapes"
    assert config["preprocessing"] == json.loads(json.dumps(preprocessing("shapes", 32)))
    text = card.read_text()
    assert "top-1 52.00% / top-5 92.00% (eval split, epoch 2 of 3)" in text
    assert "load_exported" in text and "circle" in text
    loaded = load_exported(out)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert read_weights(out).config["arch"] == "resnet20"
    # eval reads it without --arch: the config says the model, the dataset and the classes
    code, stdout, err = run(capsys, "eval", "-c", out, "--data-size", 16, "-f", "json")
    assert code == 0 and json.loads(stdout)["dataset"] == "shapes", err
    # without its config.json, the header still says what it is
    config_path(out).unlink()
    with torch.no_grad():
        assert torch.equal(load_exported(out)(x), model(x))


def test_safetensors_from_arch_and_plain_file(r20, tmp_path, capsys, monkeypatch):
    root, model = r20
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "export", "-a", "resnet20", "--to", "safetensors")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "resnet20.config.json",
        "resnet20.safetensors",
    ]  # no model card: random weights
    assert json.loads((tmp_path / "resnet20.config.json").read_text())["num_classes"] == 100
    code, _, err = run(
        capsys,
        "export",
        "-c",
        root / "resnet20.pth",
        "-a",
        "resnet20",
        "--export-file",
        "p.safetensors",
    )
    assert code == 0, err
    assert not (tmp_path / "p.README.md").exists()
    assert torch.equal(load_exported("p.safetensors").fc.weight, model.fc.weight)
    code, _, err = run(capsys, "export", "-a", "resnet20", "--to", "safetensors", "--opset", 18)
    assert code == 2 and "--opset applies to --to onnx only" in err


def test_pt2_json_beside_the_file(r20, tmp_path, capsys):
    root, _ = r20
    out = tmp_path / "r.pt2"
    code, _, err = run(capsys, "export", "-c", root / "run", "--export-file", out)
    assert code == 0, err
    meta = json.loads((tmp_path / "r.pt2.json").read_text())
    assert meta["arch"] == "resnet20" and meta["class_names"] == list(SHAPE_CLASSES)
    assert meta["preprocessing"]["mean"] == [0.5, 0.5, 0.5]


def test_onnx_metadata_and_the_example(r20, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    root, model = r20
    path = tmp_path / "r20.onnx"
    result = export(path, checkpoint=root / "run")
    assert result.passed and result.written
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["afictl.arch"] == "resnet20" and props["afictl.num_classes"] == str(N)
    assert json.loads(props["afictl.class_names"]) == list(SHAPE_CLASSES)
    assert json.loads(props["afictl.preprocessing"])["crop_mode"] == "squash"
    image = tmp_path / "img.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (45, 60, 3), dtype=np.uint8)).save(image)
    example = load_script(ROOT / "examples" / "onnx_predict.py")
    ranked = example.main([str(path), str(image), "--top", "3"])
    with torch.no_grad():
        probs = model(eval_transform("shapes", 32)(Image.open(image))[None]).softmax(1)[0]
    top = probs.topk(3)
    assert [name for name, _ in ranked] == [SHAPE_CLASSES[i] for i in top.indices]
    assert np.allclose([p for _, p in ranked], top.values.numpy(), rtol=1e-4, atol=0)


@pytest.mark.parametrize(
    ("dataset", "size"), [("imagenet", 224), ("imagenet", 160), ("shapes", 32)]
)
def test_example_preprocessing_is_afictls(dataset, size):
    """The example's resize/crop from the metadata alone equals afictl's eval transform."""
    example = load_script(ROOT / "examples" / "onnx_predict.py")
    rng = np.random.default_rng(size)
    for w, h in ((300, 200), (199, 301)):
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        pre = json.loads(json.dumps(preprocessing(dataset, size)))  # as read from the file
        got = example.preprocess(img, pre)[0]
        assert np.array_equal(got, eval_transform(dataset, size)(img).numpy())


def test_analyses_take_plain_files_with_arch(r20, tmp_path, capsys):
    root, _ = r20
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image)
    afi = tmp_path / "afi.pth"
    torch.save(create_model("afi_resnet20", num_classes=N).state_dict(), afi)
    code, out, err = run(
        capsys,
        *("gradcam", image, "-c", root / "resnet20.pth", "-c", afi),
        *("-a", "resnet20", "-a", "afi_resnet20", "--figure", tmp_path / "g.png", "-f", "json"),
    )
    assert code == 0, err
    assert [r["arch"] for r in json.loads(out)] == ["resnet20", "afi_resnet20"]
    code, _, err = run(
        capsys, "gradcam", image, "-c", afi, "-c", afi, "-a", "a", "-a", "b", "-a", "c"
    )
    assert code == 2 and "3 --arch for 2 --checkpoint" in err
    code, _, err = run(
        capsys, "features", image, "-c", afi, "-a", "afi_resnet20", "--figure", tmp_path / "f.png"
    )
    assert code == 0, err
    code, _, err = run(capsys, "features", image, "-c", afi, "--figure", tmp_path / "f.png")
    assert code == 2 and "name its model with --arch" in err
