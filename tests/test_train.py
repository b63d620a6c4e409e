"""`afictl train` / `afictl eval`: files, config, resume exactness, errors, safety."""

import json
import pickle
from pathlib import Path

import pandas as pd
import pytest
import torch
from cli import run

from afictl.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from afictl.train import RECIPES, resolve_config
from afictl.train.optim import lr_factor

TINY = [
    "--data",
    "shapes",
    "--data-size",
    "48",
    "--batch-size",
    "16",
    "--seed",
    "1",
    "--deterministic",
]


def weights(path):
    return load_checkpoint(path)["model"]


def test_recipes_and_overrides(tmp_path):
    cfg = resolve_config({"arch": "afi_resnet32"})
    assert (cfg.dataset, cfg.recipe, cfg.epochs, cfg.batch_size) == (
        "cifar100",
        "paper-cifar",
        300,
        64,
    )
    assert (
        cfg.milestone_epochs() == [150, 225]
        and cfg.lr_effective == 0.1
        and cfg.weight_decay == 1e-4
    )
    img = resolve_config({"arch": "afi_resnet50"})
    assert (img.dataset, img.recipe, img.input_size, img.epochs) == (
        "imagenet",
        "paper-imagenet",
        224,
        90,
    )
    assert img.milestone_epochs() == [30, 60, 80] and img.lr_effective == pytest.approx(
        0.1 * 64 / 256
    )
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('epochs = 10\nlr = 0.2\nlr_milestones = ["50%"]\nmomentum = 0.8\n')
    cfg = resolve_config({"arch": "resnet20", "dataset": "cifar10", "lr": 0.3}, cfg_file)
    assert (cfg.epochs, cfg.lr, cfg.momentum, cfg.milestone_epochs()) == (10, 0.3, 0.8, [5.0])
    assert set(RECIPES) >= {"paper-cifar", "paper-imagenet"}
    bad = tmp_path / "bad.toml"
    bad.write_text("epochz = 3\n")
    with pytest.raises(Exception, match="unknown keys epochz"):
        resolve_config({"arch": "resnet20"}, bad)


def test_lr_schedule_steps_and_warmup():
    assert lr_factor(0, 10, [1.0, 2.0], 0.1, 0.0) == 1.0
    assert lr_factor(10, 10, [1.0, 2.0], 0.1, 0.0) == pytest.approx(0.1)
    assert lr_factor(25, 10, [1.0, 2.0], 0.1, 0.0) == pytest.approx(0.01)
    assert lr_factor(0, 10, [], 0.1, 0.5) == pytest.approx(0.2)  # 1/5 of the warm-up


def test_train_writes_run_files_and_json(capsys, tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = run(
        capsys,
        "train",
        "--arch",
        "afi_resnet20",
        *TINY,
        "--epochs",
        "1",
        "--afi-stages",
        "1,3",
        "--reduction",
        "2",
        "--run-dir",
        run_dir,
        "--format",
        "json",
    )
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert (
        result["arch"] == "afi_resnet20"
        and result["epochs"] == 1
        and result["run_dir"] == str(run_dir)
    )
    assert 0 <= result["eval_top1"] <= 100 and result["eval_top5"] >= result["eval_top1"]
    assert f"run: {run_dir}" in err
    for name in ("last.pt", "best.pt", "config.json", "metrics.csv", "metrics.jsonl"):
        assert (run_dir / name).is_file()
    metrics = pd.read_csv(run_dir / "metrics.csv")
    for col in ("epoch", "train_loss", "eval_loss", "eval_top1", "eval_top5", "images_per_sec"):
        assert col in metrics
    assert metrics["epoch"].tolist() == [1] and metrics["eval_top1"].iloc[0] == pytest.approx(
        result["eval_top1"]
    )
    config = json.loads((run_dir / "config.json").read_text())
    ckpt = load_checkpoint(run_dir / "last.pt")
    for key, value in {
        "arch": "afi_resnet20",
        "dataset": "shapes",
        "data_root": None,
        "input_size": 32,
        "eval_split": "eval",
        "data_size": 48,
        "seed": 1,
        "num_classes": 8,
    }.items():
        assert config[key] == value and ckpt["config"][key] == value
    assert ckpt["model_kwargs"] == config["model_kwargs"] == {"afi_stages": [1, 3], "reduction": 2}
    assert (
        ckpt["arch"] == "afi_resnet20" and ckpt["class_names"][0] == "circle" and ckpt["epoch"] == 1
    )
    for key in ("optimizer", "scheduler", "scaler", "rng"):
        assert key in ckpt
    # the model of the checkpoint really has stage 2 without AFI and r = 2
    model = model_from_checkpoint(run_dir / "best.pt")[0]
    assert model.afi_stages == (1, 3) and model.reduction == 2

    # eval of best.pt reproduces the recorded eval accuracy (same data from the recorded seed/size)
    code, out, err = run(
        capsys, "eval", "--checkpoint", run_dir / "best.pt", "--data", "shapes", "--format", "json"
    )
    assert code == 0, err
    ev = json.loads(out)
    assert ev["arch"] == "afi_resnet20" and ev["images"] == 48
    assert (
        ev["top1"] == pytest.approx(result["eval_top1"], abs=1e-3)
        and ev["loss"] > 0
        and ev["top5"] >= ev["top1"]
    )
    code, out, _ = run(
        capsys,
        "eval",
        "--checkpoint",
        run_dir,
        "--output",
        tmp_path / "ev.json",
        "--format",
        "json",
    )
    assert code == 0 and json.loads((tmp_path / "ev.json").read_text())["images"] == 48

    # a run folder holding a run is not overwritten by accident
    code, _, err = run(
        capsys, "train", "--arch", "afi_resnet20", *TINY, "--epochs", "1", "--run-dir", run_dir
    )
    assert code == 2 and "--resume" in err


@pytest.mark.slow  # a subprocess or a resumed run: seconds
@pytest.mark.parametrize("pipeline", ["tensor", "loader"])
def test_resume_is_exact(capsys, tmp_path, pipeline):
    straight, split = tmp_path / "straight", tmp_path / "split"
    args = ["train", "--arch", "afi_resnet20", *TINY, "--pipeline", pipeline]
    if pipeline == "loader":
        args += ["--workers", "1"]  # augmentation in a worker
    assert run(capsys, *args, "--epochs", "2", "--run-dir", straight)[0] == 0
    assert run(capsys, *args, "--epochs", "1", "--run-dir", split)[0] == 0
    code, out, err = run(capsys, "train", "--resume", split, "--epochs", "2", "--format", "json")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["epochs"] == 2
    a, b = weights(straight / "last.pt"), weights(split / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = pd.read_csv(straight / "metrics.csv"), pd.read_csv(split / "metrics.csv")
    assert mb["epoch"].tolist() == [1, 2]
    assert ma["train_loss"].tolist() == mb["train_loss"].tolist()
    # learning settings are fixed once a run exists
    code, _, err = run(capsys, "train", "--resume", split, "--epochs", "3", "--lr", "0.5")
    assert code == 2 and "cannot change lr" in err


def test_nonfinite_loss_keeps_last_good_checkpoint(tmp_path):
    from afictl.data import build_dataset
    from afictl.train import NonFiniteLossError, load_resume, train

    cfg = resolve_config(
        {
            "arch": "resnet20",
            "dataset": "shapes",
            "data_size": 32,
            "batch_size": 16,
            "epochs": 1,
            "run_dir": str(tmp_path / "r"),
            "deterministic": True,
        }
    )
    train(cfg)
    before = (tmp_path / "r" / "last.pt").read_bytes()

    class Poisoned(torch.utils.data.Dataset):
        def __init__(self, ds):
            self.ds, self.classes = ds, ds.classes

        def __len__(self):
            return len(self.ds)

        def __getitem__(self, i):
            x, y = self.ds[i]
            return torch.full_like(x, float("nan")), y

    cfg2, ckpt = load_resume(tmp_path / "r", {"epochs": 2})
    ev = build_dataset("shapes", None, "eval", size=32)
    with pytest.raises(NonFiniteLossError, match="non-finite.*untouched"):
        train(
            cfg2,
            resume=ckpt,
            datasets=(Poisoned(build_dataset("shapes", None, "train", size=32)), ev),
        )
    assert (tmp_path / "r" / "last.pt").read_bytes() == before
    assert len(pd.read_csv(tmp_path / "r" / "metrics.csv")) == 1


def test_atomic_checkpoint_survives_crash_mid_write(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"arch": "resnet20", "epoch": 1, "model": {"w": torch.ones(3)}})
    original = path.read_bytes()

    def crash(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(
        CheckpointError, match="cannot write checkpoint .*last.pt: disk full; the previous"
    ):
        save_checkpoint(path, {"arch": "resnet20", "epoch": 2, "model": {"w": torch.zeros(3)}})
    assert path.read_bytes() == original and load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


class _Evil:
    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_malicious_pickle_is_refused_without_running(capsys, tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = str(marker)
    bad = tmp_path / "evil" / "last.pt"
    bad.parent.mkdir()
    bad.write_bytes(pickle.dumps({"format": "afictl-checkpoint", "payload": evil}))
    code, _, err = run(capsys, "eval", "--checkpoint", bad)
    assert code == 2 and "not a safe checkpoint" in err and "Traceback" not in err
    code, _, err = run(capsys, "train", "--resume", bad.parent)
    assert code == 2 and err.count("\n") == 1
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        load_checkpoint(bad)
    assert not marker.exists()


def test_wrong_arch_checkpoint_names_both(capsys, tmp_path):
    path = tmp_path / "r" / "last.pt"
    save_checkpoint(
        path,
        {
            "arch": "afi_resnet20",
            "num_classes": 8,
            "model_kwargs": {},
            "epoch": 1,
            "model": {},
            "config": {},
            "optimizer": {},
        },
    )
    code, _, err = run(capsys, "eval", "--checkpoint", path, "--arch", "resnet20")
    assert code == 2 and "afi_resnet20 checkpoint, not resnet20" in err
    code, _, err = run(capsys, "train", "--resume", path.parent, "--arch", "resnet56")
    assert code == 2 and "afi_resnet20" in err and "resnet56" in err


def test_missing_home_dataset_creates_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AFICTL_DATA", raising=False)
    code, out, err = run(capsys, "train", "--arch", "afi_resnet50")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert str(tmp_path / "data" / "imagenet") in err and "train/" in err and "--data shapes" in err
    assert list(tmp_path.iterdir()) == []  # no runs/ folder, no data/ folder
    monkeypatch.setenv("AFICTL_DATA", str(tmp_path / "store"))
    code, _, err = run(capsys, "train", "--arch", "afi_resnet32")
    assert code == 2 and str(tmp_path / "store" / "cifar100") in err and "--download" in err
    assert list(tmp_path.iterdir()) == []


def test_bad_options_are_one_line(capsys, tmp_path):
    code, _, err = run(
        capsys, "train", "--arch", "resnet20", "--afi-stages", "1", "--data", "shapes"
    )
    assert code == 2 and "no AFI modules" in err
    code, _, err = run(capsys, "train", "--arch", "resnet20", "--data", "shapes", "--amp", "fp8")
    assert code == 2 and "--amp" in err
    code, _, err = run(
        capsys, "train", "--arch", "resnet20", "--data", "shapes", "--recipe", "paper-mnist"
    )
    assert code == 2 and "paper-cifar" in err


def test_unreadable_images_skipped_with_warning_or_stop(capsys, tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, per_class in (("train", 4), ("val", 2)):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(per_class - (split == "train" and c == "a")):
                Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(
                    tmp_path / split / c / f"{i}.png"
                )
    bad = tmp_path / "train" / "a" / "zz_truncated.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    args = [
        "train",
        "--arch",
        "resnet20",
        "--data",
        "imagefolder",
        "--data-root",
        tmp_path,
        "--batch-size",
        "4",
        "--epochs",
        "1",
        "--workers",
        "0",
        "--deterministic",
    ]
    code, _, err = run(capsys, *args, "--run-dir", tmp_path / "skip")
    assert code == 0, err
    assert f"skipped unreadable image {bad}" in err
    assert pd.read_csv(tmp_path / "skip" / "metrics.csv")["skipped_images"].tolist() == [1]
    code, _, err = run(capsys, *args, "--run-dir", tmp_path / "stop", "--bad-images", "stop")
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("afictl: error: cannot read image") and str(bad) in last
    assert "Traceback" not in err
    assert not (tmp_path / "stop" / "last.pt").exists()


def test_cpu_threads_busy_machine_and_restore(monkeypatch):
    from afictl.train import state

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(state, "_busy_cpus", lambda: 8)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    with state.cpu_threads(None, auto=True) as note:
        assert calls[-1] == 1 and "1 CPU thread" in note
    assert calls[-1] == 2  # restored
    with state.cpu_threads(None, auto=False) as note:  # --deterministic: torch's default
        assert calls[-1] == 2 and note == ""
    with state.cpu_threads(3, auto=True):
        assert calls[-1] == 3
    monkeypatch.undo()
    assert torch.get_num_threads() == before
