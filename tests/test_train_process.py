"""`afictl train` as a real process: SIGTERM mid-epoch, and 2-process DDP through torchrun."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from afictl.checkpoint import load_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # a subprocess or a resumed run: seconds
def test_sigterm_checkpoints_mid_epoch_and_resume_is_exact(tmp_path):
    args = [
        "train",
        "--arch",
        "resnet20",
        "--data",
        "shapes",
        "--data-size",
        "160",
        "--batch-size",
        "16",
        "--epochs",
        "1",
        "--seed",
        "2",
        "--deterministic",
        "--format",
        "json",
    ]
    stopped = tmp_path / "stopped"
    proc = subprocess.Popen(
        [sys.executable, "-m", "afictl", *args, "--run-dir", str(stopped)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    lines = []
    for line in proc.stderr:  # wait until the loop is about to start
        lines.append(line)
        if line.startswith("train:"):
            break
    proc.send_signal(signal.SIGTERM)
    out, rest = proc.communicate(timeout=300)
    err = "".join(lines) + rest
    assert proc.returncode == 143, err  # 128 + SIGTERM, after the checkpoint: not a finished run
    assert "interrupted by SIGTERM" in err and "Traceback" not in err
    result = json.loads(out.strip().splitlines()[-1])
    assert (
        result["interrupted"] == "SIGTERM"
        and result["completed"] is False
        and result["epochs"] == 0
    )
    ckpt = load_checkpoint(stopped / "last.pt")
    assert ckpt["epoch"] == 0 and 1 <= ckpt["step"] < 10

    # continuing the interrupted run gives exactly the weights of an uninterrupted one (same
    # thread count as the first process: float sums are only bit-equal for the same split)
    for argv in (
        ["train", "--resume", str(stopped)],
        [*args, "--run-dir", str(tmp_path / "straight")],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "afictl", *argv],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
    assert _equal(
        load_checkpoint(stopped / "last.pt")["model"],
        load_checkpoint(tmp_path / "straight" / "last.pt")["model"],
    )


@pytest.mark.slow  # a subprocess or a resumed run: seconds
def test_sigterm_to_the_process_group_with_workers(tmp_path):
    """A scheduler signals every process of the job: the loader workers must not die first."""
    run_dir = tmp_path / "r"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "afictl",
            "train",
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
            "--workers",
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
        start_new_session=True,
    )
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("train:"):
            break
    os.killpg(proc.pid, signal.SIGTERM)
    out, rest = proc.communicate(timeout=300)
    err = "".join(lines) + rest
    assert proc.returncode == 143 and "Traceback" not in err and "interrupted by SIGTERM" in err, (
        err
    )
    assert json.loads(out.strip().splitlines()[-1])["eval_top1"] is None  # strict JSON: no NaN
    assert load_checkpoint(run_dir / "last.pt")["step"] >= 1


@pytest.mark.slow  # a subprocess or a resumed run: seconds
def test_torchrun_two_processes(tmp_path):
    run_dir, dump = tmp_path / "ddp", tmp_path / "dump"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "afictl",
        "train",
        "--arch",
        "afi_resnet20",
        "--data",
        "shapes",
        "--data-size",
        "64",
        "--batch-size",
        "16",
        "--epochs",
        "1",
        "--run-dir",
        str(run_dir),
        "--format",
        "json",
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**ENV, "AFICTL_RANK_DUMP": str(dump)}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    json_lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(json_lines) == 1  # only rank 0 reports
    assert json.loads(json_lines[0])["epochs"] == 1
    rank0, rank1 = (torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert _equal(rank0, rank1)
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert _equal(ckpt["model"], rank0) and ckpt["config"]["world_size"] == 2
    assert sorted(p.name for p in run_dir.iterdir() if p.suffix == ".pt") == ["best.pt", "last.pt"]
    assert len(list(tmp_path.glob("**/last.pt"))) == 1
    assert proc.stderr.count("epoch 1/1") == 1  # one rank logs
