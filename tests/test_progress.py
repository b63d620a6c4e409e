"""Progress for people and for log files: afictl.progress with a fake clock, and the commands
(train, export, bench) writing MetricLogger-style lines on stderr when it is not a terminal."""

import io
import json
import re

import pytest
from cli import run

from afictl import progress as progress_module
from afictl.progress import LogPoints, Progress, format_duration, progress_hook


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _job(total, clock, **options):
    stream = io.StringIO()
    job = Progress("counting", total, stream=stream, tty=False, clock=clock, **options)
    return job, stream


def test_lines_every_n_steps_with_stats_and_eta():
    clock = Clock()
    job, stream = _job(10, clock, every=4)
    with job:
        for _ in range(10):
            clock.now += 1.0
            job.advance(1, loss=0.5)
    lines = stream.getvalue().splitlines()
    # steps 4 and 8, then the closing line at 10/10
    assert [re.search(r"\[\s*(\d+)/10\]", x).group(1) for x in lines] == ["4", "8", "10"]
    assert lines[0].startswith("counting [ 4/10]  40%")
    assert "elapsed 0:00:04" in lines[0] and "eta 0:00:06" in lines[0]
    assert "loss 0.5" in lines[0]
    assert "eta 0:00:00" in lines[-1]


def test_lines_by_time_without_every():
    clock = Clock()
    job, stream = _job(100, clock, seconds=30)
    with job:
        for _ in range(100):
            clock.now += 10.0  # a line every third step: 30 s
            job.advance()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 33 + 1  # steps 3, 6, ..., 99, and the closing line at 100
    assert "[  3/100]" in lines[0] and "[100/100]" in lines[-1]


def test_a_short_job_without_every_writes_nothing():
    clock = Clock()
    job, stream = _job(5, clock)
    with job:
        for _ in range(5):
            clock.now += 0.1  # 0.5 s in all: no closing line for a job this short
            job.advance()
    assert stream.getvalue() == ""


def test_disabled_writes_nothing_but_counts():
    clock = Clock()
    job, stream = _job(10, clock, every=1, enabled=False)
    with job:
        for _ in range(10):
            clock.now += 60
            job.advance(1, loss=1.0)
        job.log("a message")
        job.stage("verifying")
    assert stream.getvalue() == "" and job.done == 10


def test_resumed_job_counts_from_where_it_was():
    clock = Clock()
    job, stream = _job(10, clock, every=5, done=5)
    with job:
        for _ in range(5):
            clock.now += 2.0
            job.advance()
    (line,) = stream.getvalue().splitlines()
    assert "[10/10]" in line and "elapsed 0:00:10" in line


def test_stages_and_quiet_quick_stages():
    clock = Clock()
    job, stream = _job(3, clock)
    with job:
        job.stage("tracing")
        clock.now += 5
        job.stage("verifying")
    assert stream.getvalue().splitlines() == [
        "counting [1/3] tracing  elapsed 0:00:00",
        "counting [2/3] verifying  elapsed 0:00:05",
    ]
    job, stream = _job(2, clock, stage_delay=30.0)
    with job:
        job.stage("loading")
        job.stage("writing")  # the first ended before its line was due: nothing written
    assert stream.getvalue() == ""


def test_progress_hook_one_job_after_another(monkeypatch):
    stream = io.StringIO()
    with progress_hook(stream=stream, tty=False, every=2) as start:
        tick = start("counting", 4)
        for _ in range(4):
            tick()
        tick = start("drawing", 2)
        tick()
        tick()
    lines = stream.getvalue().splitlines()
    assert [x.split(" [")[0] for x in lines] == ["counting", "counting", "drawing"]


def test_update_sets_the_count_and_the_total():
    clock = Clock()
    job, stream = _job(None, clock, every=5)
    with job:
        job.update(5, 10)  # hooks that report (done, total)
        clock.now += 3
        job.update(10, 10)
    lines = stream.getvalue().splitlines()
    assert [re.search(r"\[\s*(\d+)/10\]", x).group(1) for x in lines] == ["5", "10"]


def test_log_points_and_duration():
    clock = Clock()
    points = LogPoints(every=3, seconds=60, clock=clock)
    taken = [step for step in range(1, 10) if points.take(step)]
    assert taken == [3, 6, 9]
    clock.now += 61
    assert points.take(10)  # time-based, between multiples
    assert format_duration(3723.4) == "1:02:03" and format_duration(-1) == "0:00:00"


# --- through the entry point ------------------------------------------------------------------


def test_train_log_interval_writes_a_line_per_n_batches(capsys, tmp_path):
    """stderr captured (not a terminal): 64 images / batch 4 = 16 batches, a line per 4."""
    code, out, err = run(
        capsys,
        "train",
        *("--arch", "resnet20", "--data", "shapes", "--data-size", "64", "--input-size", "32"),
        *("--epochs", "1", "--batch-size", "4", "--log-interval", "4", "--no-tensorboard"),
        *("--run-dir", tmp_path / "r", "--format", "json"),
    )
    assert code == 0, err
    assert json.loads(out)["epochs"] == 1  # stdout: the result alone
    lines = [x for x in err.splitlines() if x.startswith("epoch 1/1 [")]
    assert [re.search(r"\[\s*(\d+)/16\]", x).group(1) for x in lines] == ["4", "8", "12", "16"]
    for line in lines:
        for field in ("loss ", "acc ", "lr ", "images/s ", "eta ", "run eta "):
            assert field in line, line


def test_train_log_interval_is_checked(capsys, tmp_path):
    code, _, err = run(
        capsys, "train", "--arch", "resnet20", "--data", "shapes", "--log-interval", "0"
    )
    assert code == 2 and "--log-interval" in err and err.count("\n") == 1, err


def test_tensorboard_gets_per_step_scalars(capsys, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "r"
    code, _, err = run(
        capsys,
        "train",
        *("--arch", "resnet20", "--data", "shapes", "--data-size", "64", "--input-size", "32"),
        *("--epochs", "1", "--batch-size", "8", "--log-interval", "2", "--tensorboard"),
        *("--run-dir", run_dir),
    )
    assert code == 0, err
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"step/loss", "step/top1", "step/lr", "eval_top1"} <= set(tags)
    assert [e.step for e in events.Scalars("step/loss")] == [2, 4, 6, 8]  # 8 batches, every 2
    assert [e.step for e in events.Scalars("eval_top1")] == [1]  # per epoch, as before


def test_tensorboard_missing_is_one_line(capsys, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "tensorboard" or name.startswith("tensorboard."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    code, out, err = run(
        capsys,
        "train",
        *("--arch", "resnet20", "--data", "shapes", "--data-size", "64", "--tensorboard"),
        *("--run-dir", tmp_path / "r"),
    )
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "pip install 'afictl[tensorboard]'" in err
    assert not (tmp_path / "r").exists()  # refused before the run folder is made


def test_bench_in_a_log_file_writes_lines_on_stderr_only(capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "DEFAULT_SECONDS", 0.0)  # a line at every step
    code, out, err = run(
        capsys,
        "bench",
        *("--arch", "resnet20", "--mode", "infer", "-b", "2", "--input-size", "16"),
        *("--repeats", "2", "--warmup", "0", "--format", "json"),
    )
    assert code == 0, err
    assert len(json.loads(out)) == 1  # stdout: the JSON document alone
    heads = [re.match(r"timing \[(\d)/2\]\s+(\d+)%", x).groups() for x in err.splitlines()]
    assert heads == [("1", "50"), ("2", "100")]


def _no_stage_delay(monkeypatch):
    """Every stage named at once (tests/conftest.py otherwise delays the lines past any test)."""
    monkeypatch.setattr("afictl.cli.export.STAGE_LINE_DELAY", 0.0)


def _stages(err: str, total: int) -> list[tuple[str, str]]:
    return [re.match(rf"export \[(\d)/{total}\] (\w+)", x).groups() for x in err.splitlines()]


def test_export_safetensors_in_a_log_file_names_its_stages(capsys, monkeypatch, tmp_path):
    _no_stage_delay(monkeypatch)
    target = tmp_path / "m.safetensors"
    code, out, err = run(
        capsys, "export", "--arch", "resnet20", "--export-file", target, "-f", "csv"
    )
    assert code == 0, err
    assert out.startswith("arch,") and target.is_file()  # stdout: the results alone
    assert _stages(err, 2) == [("1", "loading"), ("2", "writing")]


@pytest.mark.slow
def test_export_in_a_log_file_names_its_stages(capsys, monkeypatch, tmp_path):
    """Each stage that lasts is named on stderr (here: every one, the delay set to 0)."""
    _no_stage_delay(monkeypatch)
    target = tmp_path / "m.pt2"
    code, out, err = run(
        capsys, "export", "--arch", "resnet20", "--export-file", target, "--format", "json"
    )
    assert code == 0, err
    assert json.loads(out)[0]["passed"] is True  # stdout: the JSON document alone
    assert _stages(err, 4) == [
        ("1", "loading"),
        ("2", "exporting"),
        ("3", "verifying"),
        ("4", "writing"),
    ]


@pytest.mark.parametrize(
    "every, reported, step, due",
    [(8, 20, 24, True), (8, 24, 30, False), (8, 30, 40, True), (None, 0, 100, False)],
)
def test_a_gpu_reads_the_loss_at_each_log_interval(every, reported, step, due):
    """On a GPU the loss is read every 20 optimizer steps, and also when a multiple of
    --log-interval passed since the last read (so that each line falls on its step)."""
    from types import SimpleNamespace

    from afictl.train.engine import _log_due

    assert _log_due(SimpleNamespace(log_interval=every), reported, step) is due
