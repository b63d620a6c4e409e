"""A full disk never costs last.pt (nor leaves an export behind); the run lock follows the
run folder (a folder removed or replaced under a live run gets no more of its files)."""

import errno
from pathlib import Path

import pandas as pd
import pytest
from cli import run

import afictl.checkpoint as checkpoint
import afictl.train.run as train_run

TINY = ["--data", "shapes", "--data-size", "48", "--batch-size", "16", "--seed", "1"]


def _full_for_history(monkeypatch):
    """save_checkpoint that fails with ENOSPC for epoch-*.pt (the history's files) only."""
    real = checkpoint.save_checkpoint
    tried = []

    def save(path, payload):
        if Path(path).name.startswith("epoch-"):
            tried.append(Path(path).name)
            raise checkpoint._write_error(Path(path), OSError(errno.ENOSPC, "No space left"))
        return real(path, payload)

    monkeypatch.setattr(checkpoint, "save_checkpoint", save)
    monkeypatch.setattr(train_run, "save_checkpoint", save)
    return tried


def test_a_full_disk_for_the_history_keeps_last_pt_and_resume(tmp_path, capsys, monkeypatch):
    tried = _full_for_history(monkeypatch)
    run_dir = tmp_path / "r"
    args = ["train", "--arch", "resnet20", *TINY, "--checkpoint-hist", "2"]
    code, _, err = run(capsys, *args, "--epochs", "1", "--run-dir", run_dir)
    assert code == 0, err
    assert tried == ["epoch-1.pt"]
    assert "warning: cannot write checkpoint" in err and "epoch-1.pt" in err
    assert (run_dir / "last.pt").is_file() and (run_dir / "best.pt").is_file()
    assert not list(run_dir.glob("epoch-*.pt")) and not list(run_dir.glob(".*.tmp"))
    monkeypatch.undo()
    code, _, err = run(capsys, "train", "--resume", run_dir, "--epochs", "2")
    assert code == 0, err
    assert pd.read_csv(run_dir / "metrics.csv")["epoch"].tolist() == [1, 2]
    assert (run_dir / "epoch-2.pt").is_file()


def test_other_history_write_errors_still_fail(tmp_path, monkeypatch):
    from afictl.checkpoint import CheckpointWriteError
    from afictl.train.history import CheckpointHistory

    hist = CheckpointHistory(tmp_path, 1)
    before = hist.state_dict_after(1, 50.0)
    assert before["ranking"] == [[1, 50.0]] and hist.ranking == []  # nothing written yet

    def denied(path, payload):
        raise checkpoint._write_error(Path(path), OSError(errno.EACCES, "Permission denied"))

    monkeypatch.setattr(checkpoint, "save_checkpoint", denied)
    with pytest.raises(CheckpointWriteError):
        hist.offer(1, 50.0, {})
    assert hist.ranking == []  # a failed write leaves the ranking as it was


# --- export onto a full disk: exit 2, one line, nothing left in the folder --------------------

FORMATS = ["onnx", "pt2", "safetensors"]


def _export(capsys, fmt, target):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    return run(capsys, "export", "--arch", "resnet20", "--to", fmt, "--export-file", target)


def _assert_full_disk_line(code, err, folder):
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"cannot write to {folder}: the disk is full" in err, err


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_onto_a_full_disk_leaves_nothing(capsys, tmp_path, monkeypatch, fmt):
    import afictl.export as export_mod

    real = export_mod.write_bytes
    tried = []

    def full(path, data):
        tried.append(Path(path).name)
        Path(path).write_bytes(data[: len(data) // 2])  # half a file, then no room
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export_mod, "write_bytes", full)
    out = tmp_path / "out"
    code, _, err = _export(capsys, fmt, out / f"m.{fmt}")
    _assert_full_disk_line(code, err, out)
    assert tried and list(out.iterdir()) == []
    monkeypatch.setattr(export_mod, "write_bytes", real)
    code, _, err = _export(capsys, fmt, out / f"m.{fmt}")  # room again: the same export works
    assert code == 0, err
    assert (out / f"m.{fmt}").is_file()


@pytest.mark.parametrize("fmt", ["pt2", "safetensors"])
def test_a_full_disk_for_the_companion_json_leaves_nothing(capsys, tmp_path, monkeypatch, fmt):
    import afictl.export as export_mod

    real = export_mod.write_bytes

    def full_for_json(path, data):
        if ".json." in Path(path).name:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        return real(path, data)

    monkeypatch.setattr(export_mod, "write_bytes", full_for_json)
    out = tmp_path / "out"
    code, _, err = _export(capsys, fmt, out / f"m.{fmt}")
    _assert_full_disk_line(code, err, out)
    assert "Disk quota exceeded" in err and list(out.iterdir()) == []


def test_write_json_temp_removes_its_temporary_when_the_write_fails(tmp_path, monkeypatch):
    import afictl.export as export_mod

    def full(path, data):
        Path(path).write_bytes(data[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export_mod, "write_bytes", full)
    with pytest.raises(OSError):
        export_mod.write_json_temp(tmp_path / "m.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_disk_full_error_looks_through_the_whole_chain():
    from afictl.export import disk_full_error

    inner = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise inner
        except OSError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as outer:
        assert disk_full_error(outer) is inner
    assert disk_full_error(OSError(errno.EACCES, "Permission denied")) is None


@pytest.fixture
def full_disk(tmp_path):
    """A 512 KiB tmpfs (smaller than any export of resnet20); skipped where it cannot be
    mounted (not root, no mount, a container without the capability)."""
    import shutil
    import subprocess

    folder = tmp_path / "full"
    folder.mkdir()
    mount = shutil.which("mount")
    if (
        mount is None
        or subprocess.run(
            [mount, "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(folder)], capture_output=True
        ).returncode
    ):
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_onto_a_real_full_disk(capsys, full_disk, fmt):
    code, _, err = _export(capsys, fmt, full_disk / f"m.{fmt}")
    _assert_full_disk_line(code, err, full_disk)
    assert list(full_disk.iterdir()) == []


# --- the run lock follows the folder --------------------------------------------------------


def _replace_folder(folder: Path) -> None:
    """What `rm -rf RUN; afictl train --run-dir RUN` does under a live run: a new folder at the
    same path, with a new run's lock (held) and files."""
    import shutil

    from afictl.train.lock import RunLock

    shutil.rmtree(folder)
    folder.mkdir()
    (folder / "metrics.csv").write_text("the new run's\n")
    _replace_folder.new_lock = RunLock(folder).acquire()


def test_a_run_whose_folder_is_replaced_writes_nothing_into_the_new_one(
    tmp_path, capsys, monkeypatch
):
    run_dir = tmp_path / "r"
    real = train_run._Run.evaluate
    calls = []

    def evaluate(self):
        calls.append(self.state.epoch)
        if len(calls) == 2:  # epoch 2's files are next
            _replace_folder(run_dir)
        return real(self)

    monkeypatch.setattr(train_run._Run, "evaluate", evaluate)
    args = ["train", "--arch", "resnet20", *TINY, "--checkpoint-hist", "2", "--epochs", "3"]
    code, _, err = run(capsys, *args, "--run-dir", run_dir)
    new_lock = _replace_folder.new_lock
    try:
        assert code == 2, err
        assert "Traceback" not in err and err.count("error:") == 1, err
        last = err.strip().splitlines()[-1]  # the run's log lines come before it
        assert last.startswith(f"afictl: error: run folder {run_dir} was removed or replaced")
        assert calls == [0, 1]  # stopped at the first write after the folder went
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "metrics.csv"]
        assert (run_dir / "metrics.csv").read_text() == "the new run's\n"
        assert new_lock.path.is_file()  # the old run's release left the new run's lock alone
    finally:
        new_lock.release()


def test_run_lock_check_follows_the_folder(tmp_path):
    from afictl.train.lock import RunFolderGoneError, RunLock

    folder = tmp_path / "r"
    folder.mkdir()
    lock = RunLock(folder).acquire()
    lock.check()  # the same folder: nothing to say
    (folder / RunLock(folder).path.name).unlink()  # the lock file alone removed
    with pytest.raises(RunFolderGoneError, match="removed or replaced"):
        lock.check()
    lock.release()
    lock = RunLock(folder).acquire()
    import shutil

    shutil.rmtree(folder)
    with pytest.raises(RunFolderGoneError):
        lock.check()  # the folder removed
    folder.mkdir()
    (folder / ".lock").write_text("someone else's\n")
    with pytest.raises(RunFolderGoneError):
        lock.check()  # and made again
    lock.release()
    assert (folder / ".lock").read_text() == "someone else's\n"
