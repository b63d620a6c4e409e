"""Issue 13, security: no data folder or checkpoint runs code; paths stay inside their roots;
crafted checkpoints and tampered resumes are one line and exit 2, with nothing rewritten."""

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli import run
from officehome import make_office_home
from PIL import Image

from afictl.analysis.runs import default_checkpoints
from afictl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from afictl.data import UnsafeDataError
from afictl.data.cifar import read_batch
from afictl.models import create_model
from afictl.transfer.protocol import resolve_domain

TINY = [
    "--data",
    "shapes",
    "--data-size",
    "32",
    "--batch-size",
    "16",
    "--seed",
    "1",
    "--deterministic",
]


class _Touch:
    """Unpickling this creates ``marker``: the payload a hostile file carries."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _one_error_line(err: str) -> None:
    assert err.count("\n") == 1 and err.startswith("afictl: error: ") and "Traceback" not in err, (
        err
    )


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a payload ran"


def _checkpoint(
    path: Path, arch: str = "resnet20", num_classes: int = 10, fields: dict | None = None
) -> Path:
    """A valid checkpoint of ``arch``, with ``fields`` put over it (``config``: merged)."""
    torch.manual_seed(0)
    model = create_model(arch, num_classes=num_classes)
    config = {
        "arch": arch,
        "dataset": "shapes",
        "data_root": None,
        "input_size": 32,
        "eval_split": "eval",
        "data_size": 32,
        "seed": 0,
        "num_classes": num_classes,
    }
    payload = {
        "arch": arch,
        "num_classes": num_classes,
        "model_kwargs": {},
        "model": model.state_dict(),
        "epoch": 1,
        "config": config,
        "class_names": [f"c{i}" for i in range(num_classes)],
    }
    for key, value in (fields or {}).items():
        if key == "config":
            payload["config"] = {**config, **value}
        else:
            payload[key] = value
    return save_checkpoint(path, payload)


# --- 1. a CIFAR folder never runs code ------------------------------------------------------------


def _evil_cifar(root: Path, marker: Path) -> Path:
    """cifar-10-batches-py/ whose every file is a pickle with a ``__reduce__`` payload."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(
            pickle.dumps({"data": _Touch(marker), "labels": [0]}, protocol=2)
        )
    return root


def test_cifar_batches_load_through_the_restricted_unpickler(tmp_path):
    batch = {
        "batch_label": "training batch 1 of 5",
        "data": np.arange(6144, dtype=np.uint8).reshape(2, 3072),
        "labels": [1, 2],
        "filenames": [b"a.png", "b.png"],
    }
    for protocol in (2, 4, 5):  # Python 2's CIFAR files are protocol 2; repacked copies use others
        (tmp_path / "b").write_bytes(pickle.dumps(batch, protocol=protocol))
        got = read_batch(tmp_path / "b")
        assert np.array_equal(got["data"], batch["data"]) and got["labels"] == [1, 2]


def test_cifar_payload_refused_in_train_eval_and_selectivity(capsys, tmp_path, marker, monkeypatch):
    _evil_cifar(tmp_path / "evil", marker)
    with pytest.raises(
        UnsafeDataError, match="test_batch is not a CIFAR batch file: it references .*getattr"
    ):
        read_batch(tmp_path / "evil" / "cifar-10-batches-py" / "test_batch")
    code, out, err = run(
        capsys,
        "train",
        "--arch",
        "resnet20",
        "--data",
        "cifar10",
        "--data-root",
        tmp_path / "evil",
        "--epochs",
        "1",
        "--run-dir",
        tmp_path / "run",
    )
    assert code == 2 and out == ""
    _one_error_line(err)
    assert "data_batch_1" in err and "refused without running it" in err
    assert not marker.exists() and not (tmp_path / "run").exists()

    # a checkpoint that passes weights_only but records dataset cifar10 and a relative data_root
    monkeypatch.chdir(tmp_path)
    ckpt = _checkpoint(
        tmp_path / "ck" / "best.pt", fields={"config": {"dataset": "cifar10", "data_root": "evil"}}
    )
    code, _, err = run(capsys, "eval", "--checkpoint", ckpt)
    assert code == 2 and "test_batch" in err
    _one_error_line(err)
    code, _, err = run(capsys, "selectivity", "-c", ckpt, "--stage", "conv3")
    assert code == 2 and "test_batch" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "selectivity").exists()


def test_cifar_malformed_batches_are_one_line(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(
            pickle.dumps({"data": np.zeros((2, 5), np.uint8), "labels": [0, 1]})
        )
    (folder / "batches.meta").write_bytes(b"\x80\x04 not a pickle at all")
    from afictl.data import build_dataset

    with pytest.raises(UnsafeDataError, match="uint8 array of N x 3072"):
        build_dataset("cifar10", tmp_path, "eval")
    (folder / "test_batch").write_bytes(
        pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]})
    )
    with pytest.raises(UnsafeDataError, match="batches.meta is not a readable CIFAR batch"):
        build_dataset("cifar10", tmp_path, "eval")


# --- 2. paths from input stay inside their roots --------------------------------------------------


def test_transfer_domain_cannot_leave_data_root_or_run_root(capsys, tmp_path):
    root = make_office_home(tmp_path / "data" / "oh", per_class=1, size=32)
    shutil.copytree(
        root / "Clipart", tmp_path / "elsewhere" / "Clipart"
    )  # a plausible target outside
    ckpt = _checkpoint(tmp_path / "pre.pt")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for target in (
        "Clipart/../../../elsewhere/Clipart",
        "../../elsewhere/Clipart",
        str(tmp_path / "elsewhere" / "Clipart"),
    ):
        code, out, err = run(
            capsys,
            "transfer",
            "-c",
            ckpt,
            "--data-root",
            root,
            "--source",
            "Art",
            "--target",
            target,
            "--run-root",
            tmp_path / "runs",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--device",
            "cpu",
        )
        assert code == 2 and out == "" and "not found" in err
        _one_error_line(err)
    assert (
        sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    )  # nothing written anywhere
    with pytest.raises(Exception, match="not found"):
        resolve_domain(root, "Art/.")
    assert resolve_domain(root, "cl") == root / "Clipart"


# --- 3. every checkpoint consumer refuses a torch.save payload ------------------------------------


@pytest.fixture
def evil_run(tmp_path, marker):
    """runs/evil/ with best.pt and last.pt written by torch.save around a ``__reduce__`` payload,
    and a config.json + metrics.csv as a finished run has."""
    folder = tmp_path / "runs" / "evil"
    folder.mkdir(parents=True)
    for name in ("best.pt", "last.pt"):
        torch.save(
            {
                "format": "afictl-checkpoint",
                "version": 1,
                "arch": "afi_resnet20",
                "num_classes": 8,
                "payload": _Touch(marker),
            },
            folder / name,
        )
    (folder / "config.json").write_text(
        json.dumps({"arch": "afi_resnet20", "dataset": "cifar100", "epochs": 1})
    )
    (folder / "metrics.csv").write_text("epoch,eval_top1,eval_top5\n1,50.0,90.0\n")
    return folder


def test_torch_save_payload_refused_by_every_consumer(
    capsys, tmp_path, marker, evil_run, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image)
    office = make_office_home(tmp_path / "oh", per_class=1, size=32)
    bad = evil_run / "best.pt"
    commands = {
        "eval": ["eval", "--checkpoint", bad],
        "resume": ["train", "--resume", evil_run],
        "gradcam": ["gradcam", image, "-c", bad],
        "selectivity": ["selectivity", "-c", bad, "--stage", "conv3"],
        "features": ["features", image, "-c", bad],
        "transfer": [
            "transfer",
            "-c",
            bad,
            "--data-root",
            office,
            "--source",
            "Art",
            "--target",
            "Clipart",
            "--run-root",
            tmp_path / "tr",
            "--epochs",
            "1",
        ],
        "export": ["export", "-c", bad, "--export-file", tmp_path / "x.pt2"],
    }
    for name, args in commands.items():
        code, out, err = run(capsys, *args)
        assert code == 2, (name, err)
        _one_error_line(err)
        assert "not a safe checkpoint" in err and "refused without running them" in err, (name, err)
        assert not marker.exists(), name
    assert not (tmp_path / "tr").exists() and not (tmp_path / "x.pt2").exists()

    # default run discovery: the hostile run is skipped with a one-line warning naming it
    code, _, err = run(capsys, "gradcam", image)
    assert (
        code == 2
        and err.count("\n") == 2
        and "afictl: warning: " in err
        and str(Path("runs/evil/best.pt")) in err
    )
    good = _checkpoint(tmp_path / "runs" / "good" / "best.pt", arch="resnet20", num_classes=8)
    os.utime(bad, (2e9, 2e9))  # the hostile run is the newest
    assert default_checkpoints() == [Path("runs/good/best.pt")]
    assert "skipped" in capsys.readouterr().err
    assert good.exists()

    # report reads config.json and metrics.csv, never a checkpoint
    code, _, err = run(
        capsys,
        "report",
        "--runs",
        "runs",
        "--out-dir",
        tmp_path / "rep",
        "--table",
        "7",
        "--format",
        "csv",
        "--no-show",
    )
    assert code == 0, err
    assert not marker.exists()


# --- 4. crafted checkpoints: one line each, nothing allocated -------------------------------------


CRAFTED = {
    "num_classes_text": ({"num_classes": "eight"}, "num_classes must be an integer"),
    "num_classes_huge": (
        {"num_classes": 2_000_000_000},
        "num_classes must be an integer in 1..100,000",
    ),
    "num_classes_float": ({"num_classes": 2e9}, "num_classes must be an integer"),
    "num_classes_zero": ({"num_classes": 0}, "num_classes must be an integer"),
    "unknown_option": ({"model_kwargs": {"depth": 3}}, "depth are not options of resnet20"),
    "unknown_arch": ({"arch": "resnet9000"}, "unknown architecture 'resnet9000'"),
    "arch_vs_config": ({"config": {"arch": "resnet56"}}, "config records arch 'resnet56'"),
    "wrong_shape": (
        {
            "model": {
                **create_model("resnet20", num_classes=10).state_dict(),
                "conv1.weight": torch.zeros(3),
            }
        },
        "conv1.weight has shape (3,)",
    ),
    "extra_weight": (
        {
            "model": {
                **create_model("resnet20", num_classes=10).state_dict(),
                "extra.weight": torch.zeros(3),
            }
        },
        "unexpected extra.weight",
    ),
    "class_names": ({"class_names": ["a", "b"]}, "class_names must be 10"),
    "input_size": ({"config": {"input_size": "big"}}, "input_size must be a positive integer"),
    "weights_not_tensors": (
        {"model": {"conv1.weight": [1, 2]}},
        "model must map weight names to tensors",
    ),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_checkpoint_is_one_line(capsys, tmp_path, case):
    extra, message = CRAFTED[case]
    path = _checkpoint(tmp_path / "c.pt", fields=extra)
    code, out, err = run(capsys, "eval", "--checkpoint", path, "--data", "shapes")
    assert code == 2 and out == "" and message in err and str(path) in err, err
    _one_error_line(err)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"afi_stages": "x"}, "afi_stages must be stage numbers in 1..3"),
        ({"afi_stages": [9]}, "afi_stages must be stage numbers in 1..3"),
        ({"reduction": 0}, "reduction must be an integer in 1..4096"),
        ({"reduction": "4"}, "reduction must be an integer"),
        ({"memory_efficient": "yes"}, "memory_efficient must be true or false"),
    ],
)
def test_crafted_model_kwargs_are_type_checked(tmp_path, kwargs, message):
    path = _checkpoint(tmp_path / "c.pt", arch="afi_resnet20", fields={"model_kwargs": kwargs})
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_random_bytes_is_not_a_checkpoint_rather_than_unsafe(capsys, tmp_path):
    rng = np.random.default_rng(0)
    for i, blob in enumerate(
        [rng.bytes(4096), b"PK\x03\x04" + rng.bytes(4096), b"", b"half-written"]
    ):
        path = tmp_path / f"r{i}.pt"
        path.write_bytes(blob)
        code, _, err = run(capsys, "eval", "--checkpoint", path)
        assert (
            code == 2
            and "is not a checkpoint: the file is corrupt, truncated or not a torch file" in err
        ), err
        assert "safe" not in err
        _one_error_line(err)


# --- resume: tampered last.pt refused before the run folder is touched ----------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from afictl.cli.app import main

    root = tmp_path_factory.mktemp("resume") / "run"
    try:
        main(
            [
                "train",
                "--arch",
                "resnet20",
                *TINY,
                "--epochs",
                "1",
                "--run-dir",
                str(root),
                "--format",
                "json",
            ]
        )
    except SystemExit as exc:
        assert not exc.code
    return root


def _tamper(ckpt: dict, case: str) -> None:
    if case == "optimizer_not_a_dict":
        ckpt["optimizer"] = "garbage"
    elif case == "momentum_wrong_shape":
        ckpt["optimizer"]["state"][0]["momentum_buffer"] = torch.zeros(3)
    elif case == "optimizer_missing_param":
        ckpt["optimizer"]["param_groups"][0]["params"].pop()
    elif case == "optimizer_extra_state":
        ckpt["optimizer"]["state"][10_000] = {"momentum_buffer": torch.zeros(3)}
    elif case == "model_extra_key":
        ckpt["model"]["extra.weight"] = torch.zeros(3)
    elif case == "model_wrong_shape":
        ckpt["model"]["fc.weight"] = torch.zeros(3, 64)
    elif case == "scheduler_text":
        ckpt["scheduler"]["last_epoch"] = "ten"
    elif case == "rng_garbage":
        ckpt["rng"] = [{"python": 1}]
    elif case == "config_arch":
        ckpt["config"]["arch"] = "resnet32"
    elif case == "lr_group_text":
        ckpt["optimizer"]["param_groups"][0]["lr"] = "fast"


RESUME_CASES = {
    "optimizer_not_a_dict": "not an SGD state dict",
    "momentum_wrong_shape": "momentum_buffer of parameter 0 has shape (3,)",
    "optimizer_missing_param": "does not list the run's",
    "optimizer_extra_state": "for no parameter of the run",
    "model_extra_key": "unexpected extra.weight",
    "model_wrong_shape": "fc.weight has shape (3, 64)",
    "scheduler_text": "scheduler state does not fit",
    "rng_garbage": "RNG state",
    "config_arch": "config records arch 'resnet32'",
    "lr_group_text": "lr = 'fast'",
}


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_tampered_resume_is_refused_before_anything_is_rewritten(
    capsys, tmp_path, finished_run, case
):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    ckpt = torch.load(run_dir / "last.pt", weights_only=True)
    _tamper(ckpt, case)
    save_checkpoint(run_dir / "last.pt", ckpt)
    before = {str(p): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    code, out, err = run(capsys, "train", "--resume", run_dir, "--epochs", "2")
    assert code == 2 and out == "" and RESUME_CASES[case] in err, err
    _one_error_line(err)
    assert {str(p): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_untampered_resume_still_runs(capsys, tmp_path, finished_run):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    code, out, err = run(capsys, "train", "--resume", run_dir, "--epochs", "2", "--format", "json")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["epochs"] == 2
