"""Files written so that a crash or a full disk never leaves half of one.

Every writer that replaces a file afictl reads back (checkpoints, exports, a run's
``config.json``, the decoded-tensor cache) goes through :func:`atomic_write`: the bytes go to a
temporary file in the target's folder (same file system, so the rename is atomic), are flushed
and, with ``fsync=True``, made durable, and only then renamed over the target; the rename is
then made durable too. On any error the temporary file is removed and the target is as it was;
the ``OSError`` (``ENOSPC``, ``EROFS``, ``EACCES``, ...) goes to the caller, which words it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "fsync_dir", "temp_file", "write_bytes"]

#: What :func:`atomic_write` writes: bytes, text (UTF-8), or a writer given the temporary
#: file's path (``torch.save``, safetensors' ``save_file``).
Writer = Callable[[Path], None]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_file(path: Path, suffix: str = ".tmp") -> Path:
    """An empty file next to ``path`` (its folder made if missing) with the permissions of a
    new file: ``mkstemp``'s 0600 would carry over to the renamed file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_bytes(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """``data`` into ``path`` with plain Python I/O: written, flushed and (``fsync``) synced."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def atomic_write(
    path: str | Path, data: bytes | str | Writer, *, fsync: bool = True, suffix: str = ".tmp"
) -> Path:
    """Replace ``path`` with ``data`` all at once: the old file or the new one, never a part.

    ``data`` is bytes, text (written as UTF-8) or a writer called with the temporary file's
    path. ``fsync=False`` skips the syncs (a cache that can be rebuilt). Returns ``path``.
    """
    path = Path(path)
    tmp = temp_file(path, suffix)
    try:
        if callable(data):
            data(tmp)
            if fsync:
                _fsync_file(tmp)
        else:
            raw = data.encode("utf-8") if isinstance(data, str) else data
            write_bytes(tmp, raw, fsync=fsync)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(path.parent)
    return path
