"""Faults a run survives: two writers, signals, a kill between saves, a full disk, unwritable
places, and a DDP run interrupted mid-epoch (docs/TRAINING.md, "What survives what")."""

import dataclasses
import errno
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

from afictl.checkpoint import load_checkpoint
from afictl.train import resolve_config, train
from afictl.train.lock import LOCK_NAME, RunLock
from afictl.train.run import TrainResult

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TINY = [
    "--arch",
    "resnet20",
    "--data",
    "shapes",
    "--data-size",
    "32",
    "--batch-size",
    "16",
    "--seed",
    "1",
    "--deterministic",
    "--workers",
    "0",
]


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _started(proc, lines):
    """Read stderr until the loop is about to start (the run folder is locked by then)."""
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("train:"):
            return
    raise AssertionError("".join(lines))


# -- one writer per run folder ------------------------------------------------------------------


def test_second_run_or_resume_on_a_held_folder_is_refused(capsys, tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    with RunLock(run_dir):  # another process would hold it the same way (flock is per open file)
        code, out, err = run(capsys, "train", *TINY, "--epochs", "1", "--run-dir", run_dir)
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert f"{run_dir} is in use by another afictl run (pid {os.getpid()})" in err
    assert not (run_dir / "config.json").exists()  # the refused run wrote nothing
    code, _, err = run(capsys, "train", *TINY, "--epochs", "1", "--run-dir", run_dir)
    assert code == 0, err
    assert not (run_dir / LOCK_NAME).exists()  # released and removed at the end of the run
    before = (run_dir / "last.pt").read_bytes()
    with RunLock(run_dir):
        code, _, err = run(capsys, "train", "--resume", run_dir, "--epochs", "2")
        assert code == 2 and err.count("\n") == 1 and f"(pid {os.getpid()})" in err
    assert (run_dir / "last.pt").read_bytes() == before
    assert run(capsys, "train", "--resume", run_dir, "--epochs", "2")[0] == 0


@pytest.mark.slow  # a subprocess or a resumed run: seconds
def test_live_run_holds_its_folder_and_a_killed_one_leaves_no_lock(capsys, tmp_path):
    run_dir = tmp_path / "r"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "afictl",
            "train",
            *TINY[:4],
            "--data-size",
            "4000",
            "--batch-size",
            "16",
            "--epochs",
            "1",
            "--run-dir",
            str(run_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        _started(proc, [])
        code, _, err = run(capsys, "train", *TINY, "--epochs", "1", "--run-dir", run_dir)
        assert (
            code == 2
            and err.count("\n") == 1
            and f"in use by another afictl run (pid {proc.pid})" in err
        ), err
        assert proc.poll() is None  # the holder runs on, undisturbed
    finally:
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert (run_dir / LOCK_NAME).exists()  # the file stays, the lock died with the process
    code, _, err = run(capsys, "train", *TINY, "--epochs", "1", "--run-dir", run_dir)
    assert code == 0, err


# -- signals ------------------------------------------------------------------------------------


@pytest.mark.slow  # a subprocess or a resumed run: seconds
def test_signal_exit_codes(tmp_path):
    """SIGINT: 130 after the checkpoint (SIGTERM's 143 is asserted in test_train_process.py)."""

    def code(interrupted):
        return TrainResult(
            **{f.name: None for f in dataclasses.fields(TrainResult)} | {"interrupted": interrupted}
        ).exit_code

    assert [code(s) for s in (None, "SIGTERM", "SIGINT", "signal")] == [0, 143, 130, 143]
    run_dir = tmp_path / "r"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "afictl",
            "train",
            *TINY[:4],
            "--data-size",
            "4000",
            "--epochs",
            "1",
            "--run-dir",
            str(run_dir),
            "--format",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    lines = []
    _started(proc, lines)
    proc.send_signal(signal.SIGINT)
    out, rest = proc.communicate(timeout=120)
    err = "".join(lines) + rest
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT" in err and "Traceback" not in err
    assert json.loads(out.strip().splitlines()[-1])["interrupted"] == "SIGINT"
    assert load_checkpoint(run_dir / "last.pt")["step"] >= 1


# -- best.pt never lags what last.pt records ----------------------------------------------------


class Killed(BaseException):
    """What a SIGKILL between two saves looks like from inside: nothing after it runs."""


def test_kill_between_last_and_best_is_repaired_on_resume(capsys, tmp_path, monkeypatch):
    import afictl.train.run as run_module

    real_eval, real_save, evals = run_module.evaluate, run_module.save_checkpoint, []

    def improving(**kw):  # every epoch is a new best, so epoch 2 must be saved to best.pt
        ev = real_eval(**kw)
        evals.append(1)
        ev.top1 = ev.n * len(evals) / 10
        return ev

    def kill_before_second_best(path, payload):
        if Path(path).name == "best.pt" and payload["epoch"] == 2:
            raise Killed
        return real_save(path, payload)

    monkeypatch.setattr(run_module, "evaluate", improving)
    monkeypatch.setattr(run_module, "save_checkpoint", kill_before_second_best)
    run_dir = tmp_path / "r"
    cfg = resolve_config(
        {
            "arch": "resnet20",
            "dataset": "shapes",
            "data_size": 32,
            "batch_size": 16,
            "epochs": 2,
            "seed": 1,
            "workers": 0,
            "deterministic": True,
            "run_dir": str(run_dir),
        }
    )
    with pytest.raises(Killed):
        train(cfg)
    last = load_checkpoint(run_dir / "last.pt")
    assert (
        last["epoch"] == 2 and last["best_epoch"] == 2 and last["best_top1"] == pytest.approx(20.0)
    )
    assert load_checkpoint(run_dir / "best.pt")["epoch"] == 1  # behind what the run records
    monkeypatch.undo()

    # the run is complete, so the resume trains nothing, but best.pt follows last.pt again
    code, _, err = run(capsys, "train", "--resume", run_dir)
    assert code == 0, err
    assert f"repaired {run_dir / 'best.pt'}: it held epoch 1, the run's best is epoch 2" in err
    best = load_checkpoint(run_dir / "best.pt")
    assert (
        best["epoch"] == 2
        and best["best_top1"] == last["best_top1"]
        and _equal(best["model"], last["model"])
    )
    code, _, err = run(capsys, "train", "--resume", run_dir)
    assert code == 0 and "repaired" not in err  # nothing to repair twice


# -- disk full and unwritable places ------------------------------------------------------------


def test_disk_full_checkpoint_is_one_line_and_keeps_the_previous(capsys, tmp_path, monkeypatch):
    run_dir = tmp_path / "r"
    assert run(capsys, "train", *TINY, "--epochs", "1", "--run-dir", run_dir)[0] == 0
    before = (run_dir / "last.pt").read_bytes()
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        f.write(b"the first blocks of a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    code, _, err = run(capsys, "train", "--resume", run_dir, "--epochs", "2")
    assert code == 2 and err.count("afictl: error") == 1 and "Traceback" not in err, err
    assert err.strip().splitlines()[
        -1
    ] == (  # after the run's "run:"/"train:" lines, one error line
        f"afictl: error: cannot write checkpoint {run_dir / 'last.pt'}: No space left on device; "
        "the previous checkpoint there is intact"
    )
    assert (run_dir / "last.pt").read_bytes() == before
    assert not list(run_dir.glob(".*.tmp")) and not (run_dir / LOCK_NAME).exists()
    monkeypatch.setattr(torch, "save", real_save)  # space again: the run continues from epoch 1
    assert run(capsys, "train", "--resume", run_dir, "--epochs", "2")[0] == 0
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 2


def test_unwritable_output_or_run_folder_fails_before_training(capsys, tmp_path, monkeypatch):
    import tempfile

    blocker = tmp_path / "file.txt"  # a regular file: nothing can be created under it, even by root
    blocker.write_text("x")
    run_dir = tmp_path / "r"
    code, out, err = run(
        capsys,
        "train",
        *TINY,
        "--epochs",
        "1",
        "--run-dir",
        run_dir,
        "--format",
        "json",
        "--output",
        blocker / "out.json",
    )
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert f"cannot write {blocker / 'out.json'}: {blocker} is not a folder" in err
    assert not run_dir.exists()  # refused before any training

    def read_only(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    code, _, err = run(
        capsys,
        "train",
        *TINY,
        "--epochs",
        "1",
        "--run-dir",
        run_dir,
        "--format",
        "json",
        "--output",
        tmp_path / "ro" / "out.json",
    )
    assert (
        code == 2
        and err.count("\n") == 1
        and "Read-only file system" in err
        and not run_dir.exists()
    )
    monkeypatch.undo()

    code, _, err = run(capsys, "train", *TINY, "--epochs", "1", "--run-dir", blocker / "run")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err and str(blocker) in err


# -- DDP: every rank's running sums survive an interruption -------------------------------------


def _rank0_pid(launcher_pid):
    """The torchrun worker with RANK=0 (Linux /proc)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == launcher_pid and b"RANK=0" in environ:
            return int(proc.name)
    raise AssertionError("no rank 0 worker found")


@pytest.mark.slow
@pytest.mark.skipif(
    not Path("/proc/self/environ").exists(), reason="finds the rank-0 worker through /proc"
)
def test_ddp_interrupted_mid_epoch_and_resumed_equals_uninterrupted(tmp_path):
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "afictl",
        "train",
    ]
    args = [
        "--arch",
        "resnet20",
        "--data",
        "shapes",
        "--data-size",
        "320",
        "--batch-size",
        "16",
        "--epochs",
        "1",
        "--seed",
        "3",
        "--deterministic",
        "--pipeline",
        "tensor",  # batches augmented per (seed, epoch, step, rank)
        "--format",
        "json",
    ]
    stopped, straight = tmp_path / "stopped", tmp_path / "straight"
    proc = subprocess.Popen(
        [*launch, *args, "--run-dir", str(stopped)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    lines = []
    _started(proc, lines)  # rank 0 logs "train:" inside its signal handler's scope
    os.kill(_rank0_pid(proc.pid), signal.SIGTERM)  # rank 1 learns it collectively, at the same step
    _, rest = proc.communicate(timeout=300)
    err = "".join(lines) + rest
    assert proc.returncode != 0 and "interrupted by SIGTERM in epoch 1" in err, err[-3000:]
    ckpt = load_checkpoint(stopped / "last.pt")
    assert ckpt["epoch"] == 0 and 1 <= ckpt["step"] < 20
    per_rank = ckpt["partial_ranks"]
    assert len(per_rank) == 2 and per_rank[0] != per_rank[1]  # each rank's own sums, both kept
    assert ckpt["partial"] == [a + b for a, b in zip(*per_rank, strict=True)]

    for argv in (["--resume", str(stopped)], [*args, "--run-dir", str(straight)]):
        done = subprocess.run(
            [*launch, *argv], capture_output=True, text=True, env=ENV, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
    a, b = load_checkpoint(stopped / "last.pt"), load_checkpoint(straight / "last.pt")
    assert _equal(a["model"], b["model"])
    cols = [
        "epoch",
        "train_loss",
        "train_top1",
        "eval_loss",
        "eval_top1",
        "eval_top5",
        "skipped_images",
    ]
    ma, mb = pd.read_csv(stopped / "metrics.csv"), pd.read_csv(straight / "metrics.csv")
    assert ma[cols].to_dict("records") == mb[cols].to_dict("records")
