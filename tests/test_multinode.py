"""Two "nodes" on one machine: two torchrun agents meeting through a c10d rendezvous (gloo).

What a multi-node launch adds over ``torchrun --standalone``: the agents elect a store host,
c10d hands out the ranks (no ``--node-rank``), and a SIGTERM to one agent (a preempted node)
must stop the other one too, leaving a ``last.pt`` that ``--resume`` continues exactly.

Exit codes measured here (torch 2.14): the workers exit 143 (128 + SIGTERM) after writing
``last.pt``; each torchrun agent exits 1, the signalled one by re-raising its SignalException,
the other after reporting its worker's ``exitcode : 143`` (ChildFailedError).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from scripts import ROOT
from test_train_process import ENV, _equal

from afictl.checkpoint import load_checkpoint

SBATCH = ROOT / "examples" / "slurm" / "afictl-train.sbatch"
TIMEOUT = 300  # seconds per launch: four Python processes start on two busy cores
TRAIN = [
    *("train", "--arch", "resnet20", "--data", "shapes", "--data-size", "64"),
    *("--batch-size", "16", "--epochs", "2", "--seed", "1", "--deterministic"),
    *("--device", "cpu", "--format", "json"),
]
RESUME = ["train", "--format", "json", "--resume"]  # the output format is no run setting


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agents(args: list[str], nodes: Path, env: dict | None = None) -> list[subprocess.Popen]:
    """Two torchrun agents (one process each) that rendezvous on a fresh local port; each runs
    in its own empty folder ``nodes/node<i>``, so that anything written beside the run shows."""
    port = _free_port()
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--nnodes", "2"),
        *("--nproc-per-node", "1", "--rdzv-backend", "c10d"),
        *("--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"afictl-{port}"),
        *("-m", "afictl", *args),
    ]
    procs = []
    for i in range(2):
        cwd = nodes / f"node{i}"
        cwd.mkdir(parents=True, exist_ok=True)
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**ENV, **(env or {})},
                start_new_session=True,  # its own group: killed whole if the test fails
            )
        )
    return procs


def _finish(procs: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of each agent; on a timeout every process group is killed."""
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=TIMEOUT)
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return results


def _reports(results) -> list[dict]:
    lines = [ln for _, out, _ in results for ln in out.splitlines() if ln.startswith("{")]
    return [json.loads(ln) for ln in lines]


FAKE_SRUN = """#!/usr/bin/env bash
# srun on one machine: the command once per node, each in $NODES/node<i>; or, with FAKE_CODE,
# only record the command line (and a result.json) and exit FAKE_CODE
while [[ $1 == --* ]]; do shift; done
if [ -n "${FAKE_CODE:-}" ]; then
  echo "$*" > "$RUN_DIR/srun-args"
  [ -n "${FAKE_RESULT:-}" ] && echo "$FAKE_RESULT" > "$RUN_DIR/result.json"
  exit "$FAKE_CODE"
fi
pids=()
for i in $(seq 0 $((SLURM_NNODES - 1))); do
  mkdir -p "$NODES/node$i" && (cd "$NODES/node$i" && SLURM_NODEID=$i exec "$@") & pids+=($!)
done
code=0
for p in "${pids[@]}"; do wait "$p" || code=$?; done
exit "$code"
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
case "$1" in
  show) echo 127.0.0.1 ;;
  requeue) echo "$2" >> "$RUN_DIR/requeued" ;;
esac
"""


def _sbatch(root: Path, run_dir: Path, new_run: str, **env: str) -> subprocess.CompletedProcess:
    """examples/slurm/afictl-train.sbatch as a 2-node job on this machine (fake srun and
    scontrol on PATH; the venv's torchrun)."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    job = {
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "SLURM_JOB_ID": "7",
        "SLURM_JOB_NODELIST": "node[1-2]",
        "SLURM_NNODES": "2",
        "NODES_GPUS": "1",
        "PORT": str(_free_port()),
        "RUN_DIR": str(run_dir),
        "NODES": str(root / "nodes"),
        "NEW_RUN": new_run,
    }
    return subprocess.run(
        ["bash", str(SBATCH)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**ENV, **job, **env},
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted two-node run of two epochs through the SLURM example, every rank's
    final weights dumped."""
    root = tmp_path_factory.mktemp("straight")
    run_dir, dump = root / "run", root / "dump"
    new_run = " ".join(a for a in TRAIN[1:] if a not in ("--format", "json"))
    job = _sbatch(root, run_dir, new_run, AFICTL_RANK_DUMP=str(dump))
    return root, run_dir, dump, job


@pytest.mark.slow
def test_two_nodes_train_as_one(straight):
    root, run_dir, dump, job = straight
    assert job.returncode == 0, job.stderr[-3000:]
    report = json.loads((run_dir / "result.json").read_text())  # rank 0's, on shared storage
    assert report["completed"] and report["epochs"] == 2 and not (run_dir / "requeued").exists()
    ckpt = load_checkpoint(run_dir / "last.pt")
    rank0, rank1 = (torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert _equal(rank0, rank1) and _equal(ckpt["model"], rank0)
    assert json.loads((run_dir / "config.json").read_text())["world_size"] == 2
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 3  # header + 2 epochs
    assert report["eval_top1"] == ckpt["metrics"][-1]["eval_top1"]
    # rank 0 wrote the run folder; nothing else was written, by either node, anywhere
    assert sorted(p.name for p in (root / "nodes").iterdir()) == ["node0", "node1"]
    assert not any((root / "nodes").rglob("*.*"))
    assert sorted(p.name for p in root.rglob("*.pt")) == [
        "best.pt",
        "last.pt",
        "rank0.pt",
        "rank1.pt",
    ]
    assert job.stderr.count("epoch 2/2") == 1  # one rank logs


@pytest.mark.slow
def test_a_preempted_node_stops_both_and_resume_is_exact(straight, tmp_path):
    run_dir = tmp_path / "run"
    procs = _agents([*TRAIN, "--run-dir", str(run_dir)], tmp_path / "nodes")
    deadline = time.monotonic() + TIMEOUT
    try:
        while not (run_dir / "last.pt").exists():  # epoch 1 is done: preempt node 1
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.05)
    finally:
        procs[1].send_signal(signal.SIGTERM)  # to the agent, which passes it to its worker
        results = _finish(procs)
    codes = [code for code, _, _ in results]
    errs = "".join(err for _, _, err in results)
    # torchrun's code (its workers exited 143); the signalled agent itself sometimes aborts in
    # C++ while shutting down under load ("terminate called without an active exception",
    # -6): torch's agent, after afictl's worker has stopped and saved
    assert codes[0] == 1 and codes[1] in (1, -signal.SIGABRT), errs[-3000:]
    assert "exitcode  : 143" in errs and "interrupted by" in errs
    (report,) = _reports(results)
    assert report["completed"] is False and report["interrupted"] is not None
    # stopped after epoch 1 (during its evaluation) or in epoch 2 (mid-epoch, with its step)
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1

    resumed = _finish(_agents(RESUME + [str(run_dir)], tmp_path / "nodes"))
    for code, _, err in resumed:
        assert code == 0, err[-3000:]
    (report,) = _reports(resumed)
    assert report["completed"] and report["epochs"] == 2
    expected = load_checkpoint(straight[1] / "last.pt")
    got = load_checkpoint(run_dir / "last.pt")
    assert _equal(got["model"], expected["model"])  # bit-exact, as on one machine
    assert [r["eval_top1"] for r in got["metrics"]] == [r["eval_top1"] for r in expected["metrics"]]


INTERRUPTED = json.dumps({"completed": False, "interrupted": "SIGTERM"})


@pytest.mark.parametrize(
    ("code", "result", "restarts", "requeued"),
    [
        (1, INTERRUPTED, "0", True),  # preempted: last.pt written, requeue
        (1, INTERRUPTED, "20", False),  # requeued MAX_REQUEUES times already
        (1, None, "0", False),  # a crash (no record of an interruption): not requeued
        (0, json.dumps({"completed": True, "interrupted": None}), "0", False),
    ],
)
def test_sbatch_requeues_only_an_interrupted_run(tmp_path, code, result, restarts, requeued):
    run_dir = tmp_path / "run"
    env = {"FAKE_CODE": str(code), "SLURM_RESTART_COUNT": restarts}
    if result is not None:
        env["FAKE_RESULT"] = result
    job = _sbatch(tmp_path, run_dir, "--arch resnet20 --data shapes", **env)
    assert job.returncode == code, job.stderr
    assert (run_dir / "requeued").exists() == requeued
    if requeued:
        assert (run_dir / "requeued").read_text().split() == ["7"]
    args = (run_dir / "srun-args").read_text().split()
    assert args[:1] == ["torchrun"] and "--run-dir" in args and "--resume" not in args
    joined = " ".join(args)
    assert "--nnodes 2 --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:" in joined


def test_sbatch_resumes_a_run_that_has_a_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.pt").write_bytes(b"")  # only its presence matters to the script
    (run_dir / "result.json").write_text(INTERRUPTED)  # the last segment's: removed first
    job = _sbatch(tmp_path, run_dir, "--arch resnet20", FAKE_CODE="1")
    assert job.returncode == 1 and not (run_dir / "requeued").exists(), job.stdout
    args = (run_dir / "srun-args").read_text().split()
    assert args[args.index("train") :] == [
        *("train", "--resume", str(run_dir)),
        *("--format", "json", "--output", str(run_dir / "result.json")),
    ]
