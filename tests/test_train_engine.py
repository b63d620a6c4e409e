"""The decomposed engine: parts, one epoch, options declared once, the modern recipe options
(accumulation, clipping, EMA, mixing, checkpoint history) through the engine and the CLI, and
exact resume / DDP with all of them on."""

import ast
import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from cli import run
from reference import assert_close_scaled
from torch import nn

from afictl.checkpoint import load_checkpoint
from afictl.data import Batch
from afictl.model_options import MODEL_OPTIONS
from afictl.train import TrainCheckpoint, TrainConfig, TrainParts, resolve_config
from afictl.train.config import DERIVED_KEYS, load_config_file
from afictl.train.distributed import DistContext
from afictl.train.engine import RunProgress, train_epoch
from afictl.train.options import TRAIN_OPTIONS
from afictl.train.state import StopFlag

ROOT = Path(__file__).resolve().parents[1]
CPU = DistContext(0, 1, 0, torch.device("cpu"))
TINY = ["--data", "shapes", "--data-size", "64", "--batch-size", "16", "--seed", "1"]
ALL_OPTIONS = [
    *("--opt", "adamw", "--lr", "0.002", "--no-wd-norm-bias"),
    *("--sched", "cosine", "--warmup-epochs", "0.5", "--min-lr", "1e-5"),
    *("--model-ema", "--model-ema-decay", "0.9", "--best-of", "ema"),
    *("--mixup", "0.2", "--cutmix", "1.0", "--mixup-prob", "0.8", "--smoothing", "0.1"),
    *("--aa", "trivial", "--reprob", "0.25", "--clip-grad", "1.0"),
    *("--grad-accum-steps", "2", "--checkpoint-hist", "1"),
]


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(arch="resnet20", dataset="shapes", recipe="quick", **kw)


# --- the shape of the code -------------------------------------------------------------------


def test_no_function_over_60_lines():
    """The style rule (about 60 lines at most), held for the whole package, not just training."""
    long = []
    for path in sorted((ROOT / "afictl").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    long.append(f"{path.relative_to(ROOT)}:{node.name} ({n} lines)")
    assert long == []


def test_every_config_field_is_one_option():
    derived = DERIVED_KEYS - {"run_dir"}  # run_dir: an option, but not read from a config file
    settable = {f.name for f in dataclasses.fields(TrainConfig)} - derived - {"eval_split"}
    # model_kwargs is set through one flag per model option (afictl/model_options.py)
    settable = settable - {"model_kwargs"} | set(MODEL_OPTIONS)
    declared = [o.field for o in TRAIN_OPTIONS]
    assert sorted(declared) == sorted(settable) and len(set(declared)) == len(declared)
    flags = [f for o in TRAIN_OPTIONS for flag in o.flags for f in flag.split("/")]
    assert len(flags) == len(set(flags))  # no flag declared twice


def test_config_is_immutable_and_derived_values_come_by_replace():
    cfg = resolve_config({"arch": "resnet20", "dataset": "shapes", "grad_accum_steps": 4})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3
    assert cfg.effective_batch == 4 * cfg.batch_size
    img = resolve_config({"arch": "resnet20", "dataset": "shapes", "recipe": "paper-imagenet"})
    img4 = dataclasses.replace(img, grad_accum_steps=4)
    assert img4.lr_effective == pytest.approx(4 * img.lr_effective)  # the linear scaling rule


def test_old_names_still_load(tmp_path):
    """Configs and checkpoints written before the rename of lr_schedule to sched."""
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"lr_schedule": "inv", "label_smoothing": 0.2, "epochs": 3}))
    assert load_config_file(old) == {"sched": "inv", "label_smoothing": 0.2, "epochs": 3}
    cfg = resolve_config({"arch": "resnet20", "dataset": "shapes"}, old)
    assert (cfg.sched, cfg.lr_schedule, cfg.label_smoothing) == ("inv", "inv", 0.2)
    assert TrainConfig.from_dict({**cfg.to_dict(), "lr_schedule": "step"}).sched == "step"
    # a version-1 training checkpoint: no best_epoch, partial_ranks, model_ema, version 1
    v1 = {
        "arch": "resnet20",
        "num_classes": 8,
        "model_kwargs": {},
        "model": {},
        "epoch": 2,
        "optimizer": {},
        "scheduler": {},
        "scaler": {},
        "config": {"lr_schedule": "step"},
        "metrics": [{"epoch": 1, "eval_top1": 40.0}, {"epoch": 2, "eval_top1": 30.0}],
        "best_top1": 40.0,
        "version": 1,
        "format": "afictl-checkpoint",
    }
    ckpt = TrainCheckpoint.from_dict(v1)
    p = ckpt.progress
    assert (p.best_epoch, p.step, ckpt.version, ckpt.model_ema) == (1, 0, 1, None)
    out = ckpt.to_dict()
    assert out["version"] == 2 and "model_ema" not in out and "format" not in out
    assert TrainCheckpoint.from_dict(out).to_dict() == out


def test_help_keeps_placeholders_lists_every_option_without_torch():
    code = (
        "import sys\nfrom afictl.cli.app import main\n"
        "try:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    ).stdout
    assert out.strip().endswith("NO-TORCH")
    for text in ("<run>/config.json", "$AFICTL_DATA/<dataset>", "runs/<arch>-<dataset>-<time>/"):
        assert text in out, text
    for spec in TRAIN_OPTIONS:
        assert spec.flags[0].split("/")[0] in out, spec.field
    for flag in ("--label-smoothing", "--wd", "--no-wd-norm-bias", "--config", "--resume"):
        assert flag in out


@pytest.mark.parametrize(
    "args, says",
    [
        (["--opt", "lamb"], "--opt must be one of sgd, adamw"),
        (["--sched", "poly"], "--sched must be one of"),
        (["--aa", "rand-x9"], "--aa must be rand-m9-mstd0.5"),
        (["--reprob", "1.5"], "--reprob must be <= 1"),
        (["--model-ema-decay", "1.0"], "--model-ema-decay must be below 1"),
        (["--mixup", "-1"], "--mixup must be >= 0"),
        (["--mixup-prob", "2"], "--mixup-prob must be <= 1"),
        (["--clip-grad", "-1"], "--clip-grad must be >= 0"),
        (["--grad-accum-steps", "0"], "--grad-accum-steps must be > 0"),
        (["--checkpoint-hist", "-1"], "--checkpoint-hist must be >= 0"),
        (["--decode", "cuda"], "--decode must be one of auto, pil"),
        (["--best-of", "ema"], "--best-of ema needs --model-ema"),
        (["--best-of", "mean"], "--best-of must be one of raw, ema"),
        (["--decode", "gpu", "--device", "cpu"], "--decode gpu needs a CUDA device"),
    ],
)
def test_bad_values_are_one_line(capsys, tmp_path, args, says):
    code, out, err = run(capsys, "train", "--arch", "resnet20", *TINY, *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and says in err, err
    assert list(tmp_path.iterdir()) == []


def test_recipes_modern():
    cfg = resolve_config({"arch": "resnet20", "dataset": "cifar10", "recipe": "modern-cifar"})
    assert (cfg.sched, cfg.model_ema, cfg.wd_norm_bias, cfg.aa) == (
        "cosine",
        True,
        False,
        "autoaugment-cifar10",
    )
    img = resolve_config(
        {"arch": "resnet50", "dataset": "imagenet", "recipe": "modern-imagenet", "aa": "none"}
    )
    assert img.augment_policy is None and img.lr_effective == pytest.approx(0.5)  # batch 1024
    assert img.label_smoothing == 0.1 and img.mixup == 0.2 and img.cutmix == 1.0


# --- the engine with a model whose result does not depend on how a batch is split -----------


def _linear_parts(cfg, batches, lr=0.1, momentum=0.0, ema=None, mixer=None):
    torch.manual_seed(0)
    model = nn.Linear(6, 3)  # no BatchNorm: N small batches = one big batch, up to rounding
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return TrainParts(model, batches, [], opt, sched, scaler, ema=ema, mixer=mixer)


def _data(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _epoch(parts, cfg):
    with StopFlag() as stop:
        return train_epoch(parts, cfg, CPU, RunProgress(), stop=stop)


def test_accumulation_of_n_steps_equals_one_step_of_n_times_the_batch():
    x, y = _data(16)
    small = [Batch(x[i : i + 4], y[i : i + 4], []) for i in range(0, 16, 4)]
    accumulated = _linear_parts(_cfg(grad_accum_steps=4), small, momentum=0.9)
    out = _epoch(accumulated, _cfg(grad_accum_steps=4))
    whole = _linear_parts(_cfg(), [Batch(x, y, [])], momentum=0.9)
    _epoch(whole, _cfg())
    for a, b in zip(accumulated.model.parameters(), whole.model.parameters(), strict=True):
        assert_close_scaled(a.detach(), b.detach(), rel=1e-6)  # float32 sums in another order
    assert accumulated.scheduler.last_epoch == 1 and out.step == 4  # one optimizer step
    # a ragged last group (5 batches, 2 per step): 3 steps, the last of one batch
    five = [Batch(x[i : i + 3], y[i : i + 3], []) for i in range(0, 15, 3)]
    ragged = _linear_parts(_cfg(grad_accum_steps=2), five)
    _epoch(ragged, _cfg(grad_accum_steps=2))
    assert ragged.scheduler.last_epoch == 3


def test_clip_grad_bounds_the_norm_of_the_update():
    x, y = _data(16)
    x = x * 100  # large gradients
    for clip in (None, 0.01):
        parts = _linear_parts(_cfg(clip_grad=clip), [Batch(x, y, [])], lr=1.0)
        before = torch.cat([p.detach().clone().flatten() for p in parts.model.parameters()])
        _epoch(parts, _cfg(clip_grad=clip))
        after = torch.cat([p.detach().flatten() for p in parts.model.parameters()])
        norm = (after - before).norm().item()  # SGD, lr 1, no momentum: the gradient's norm
        if clip is None:
            assert norm > 1.0
        else:
            assert norm <= clip * (1 + 1e-5) and norm > clip * 0.99


def test_ema_follows_each_optimizer_step_and_mixer_targets_are_soft():
    from afictl.train.ema import ModelEma

    x, y = _data(16)
    batches = [Batch(x[i : i + 4], y[i : i + 4], []) for i in range(0, 16, 4)]
    seen = []

    def mixer(images, labels):  # always the next class: train accuracy counts those
        seen.append(images.device)
        return images, nn.functional.one_hot((labels + 1) % 3, 3).float()

    parts = _linear_parts(_cfg(grad_accum_steps=2), batches, mixer=mixer)
    parts.ema = ModelEma(parts.model, 0.5)
    _epoch(parts, _cfg(grad_accum_steps=2))
    assert int(parts.ema.n_averaged) == 2 and len(seen) == 4  # 2 optimizer steps, 4 batches
    assert not torch.equal(parts.ema.module.weight, parts.model.weight)
    # train accuracy is measured against the mixed targets' dominant label (lr 0: fixed logits)
    frozen = _linear_parts(_cfg(), batches, lr=0.0, mixer=mixer)
    with torch.no_grad():
        pred = frozen.model(x).argmax(1)
    out = _epoch(frozen, _cfg())
    assert out.sums.n == 16 and out.sums.top1 == (pred == (y + 1) % 3).sum().item()
    assert (pred == (y + 1) % 3).sum() != (pred == y).sum()  # the two countings differ here


# --- through the CLI ---------------------------------------------------------------------------


@pytest.mark.slow
def test_json_stdout_is_one_document_and_fine_tuning_logs_both_lrs(capsys, tmp_path):
    run_dir = tmp_path / "r"
    code, out, err = run(
        capsys,
        "train",
        "--arch",
        "resnet20",
        *TINY,
        "--epochs",
        "1",
        "--backbone-lr-mult",
        "0.5",
        "--tensorboard",
        "--run-dir",
        run_dir,
        "--format",
        "json",
    )
    assert code == 0, err
    assert json.loads(out)["epochs"] == 1  # the whole of stdout is one JSON document
    assert "tensorboard" in err and "1 epoch," in err and "1 process on" in err
    m = pd.read_csv(run_dir / "metrics.csv")
    assert m["lr_backbone"].iloc[0] == pytest.approx(0.5 * m["lr"].iloc[0])


def _interrupt_after_first_epoch(monkeypatch):
    """SIGTERM to this process at the end of epoch 1 (as a scheduler would, during eval)."""
    from afictl.train import run as run_module

    original = run_module._Run.finish_epoch

    def finish(self, out):
        original(self, out)
        if self.state.epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(run_module._Run, "finish_epoch", finish)


@pytest.mark.slow
def test_all_options_train_evaluate_ema_and_resume_exactly(capsys, tmp_path, monkeypatch):
    args = ["train", "--arch", "afi_resnet20", *TINY, "--deterministic", *ALL_OPTIONS]
    straight, split = tmp_path / "straight", tmp_path / "split"
    code, _, err = run(capsys, *args, "--epochs", "2", "--run-dir", straight)
    assert code == 0, err
    assert "x 2 accumulation steps = 32 per optimizer step" in err
    with monkeypatch.context() as m:
        _interrupt_after_first_epoch(m)
        code, _, err = run(capsys, *args, "--epochs", "2", "--run-dir", split)
    assert code == 143 and "interrupted by SIGTERM after epoch 1" in err, err
    code, _, err = run(capsys, "train", "--resume", split)
    assert code == 0, err
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(split / "last.pt")
    for key in ("model", "model_ema"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert a["checkpoint_hist"] == b["checkpoint_hist"] and a["best_epoch"] == b["best_epoch"]
    ma, mb = pd.read_csv(straight / "metrics.csv"), pd.read_csv(split / "metrics.csv")
    cols = ["lr", "train_loss", "train_top1", "eval_top1", "eval_top1_ema", "eval_loss_ema"]
    assert ma[cols].equals(mb[cols]) and mb["epoch"].tolist() == [1, 2]
    # best.pt holds the EMA weights of the epoch that ranked best by eval_top1_ema
    best = load_checkpoint(straight / "best.pt")
    epoch = int(ma["eval_top1_ema"].idxmax()) + 1
    assert best["epoch"] == epoch == a["best_epoch"]
    assert (straight / f"epoch-{epoch}.pt").is_file()
    assert sorted(p.name for p in straight.glob("epoch-*.pt")) == [f"epoch-{epoch}.pt"]
    if epoch == 2:
        ema = {k[len("module.") :]: v for k, v in a["model_ema"].items() if k != "n_averaged"}
        assert all(torch.equal(best["model"][k], ema[k]) for k in best["model"])
    code, out, _ = run(capsys, "eval", "--checkpoint", straight / "best.pt", "--format", "json")
    assert code == 0
    assert json.loads(out)["top1"] == pytest.approx(ma["eval_top1_ema"].iloc[epoch - 1], abs=1e-3)


@pytest.mark.slow
def test_torchrun_two_processes_with_all_options(tmp_path):
    from test_train_process import ENV, _equal

    run_dir, dump = tmp_path / "ddp", tmp_path / "dump"
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"),
        *("-m", "afictl", "train", "--arch", "afi_resnet20", *TINY, "--epochs", "1"),
        *ALL_OPTIONS,
        *("--run-dir", str(run_dir), "--format", "json"),
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=400, env={**ENV, "AFICTL_RANK_DUMP": str(dump)}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes on cpu" in proc.stderr
    rank0, rank1 = (torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert _equal(rank0, rank1)
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert _equal(ckpt["model"], rank0) and ckpt["config"]["world_size"] == 2
    # 32 images per rank in batches of 8, 2 batches per optimizer step: 2 EMA updates
    assert int(ckpt["model_ema"]["n_averaged"]) == 2
    assert "eval_top1_ema" in pd.read_csv(run_dir / "metrics.csv")
