"""afictl.fileio.atomic_write: the target is the old file or the new one, never half of one."""

import errno

import pytest

from afictl.fileio import atomic_write


@pytest.mark.parametrize("data", [b"\x00bytes\xff", "text é", "writer"])
def test_every_form_round_trips(tmp_path, data):
    target = tmp_path / "f"
    if data == "writer":
        atomic_write(target, lambda tmp: tmp.write_bytes(b"from a writer"))
        assert target.read_bytes() == b"from a writer"
    else:
        atomic_write(target, data)
        got = target.read_bytes() if isinstance(data, bytes) else target.read_text("utf-8")
        assert got == data
    assert [p.name for p in tmp_path.iterdir()] == ["f"]  # no temporary file left


def test_a_full_disk_midway_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "f"
    target.write_bytes(b"old")

    def half_then_full(tmp):
        tmp.write_bytes(b"half of the new")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as err:
        atomic_write(target, half_then_full)
    assert err.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
