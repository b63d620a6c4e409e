"""One writer per run folder: an OS lock that a run holds on its folder for its whole life.

``fcntl.flock`` on ``<run>/.lock``. The kernel drops the lock when the process ends, however
it ends (SIGKILL and power loss included), so a killed run never leaves a stale lock and
nothing has to be cleaned up by hand. The file holds the holder's pid, for the message that
refuses a second run; it is removed when the run ends normally.

Forked children (data-loader workers) close their copy of the descriptor at once, so a lock
never outlives the run that took it. Without ``fcntl`` (Windows) runs are not locked.

The lock follows the folder: :meth:`RunLock.check` (before each write of the run's files)
compares the folder and the lock file on disk with the ones locked at the start (device and
inode), so a run whose folder was removed, or removed and made again by a new run, stops with
:class:`RunFolderGoneError` instead of writing into the new run's folder; and its release
leaves a lock file that is not its own alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "RunFolderGoneError", "RunLock", "RunLockedError"]

#: The lock file inside a run folder.
LOCK_NAME = ".lock"

_held: set[int] = set()  # descriptors of the locks this process holds


def _forget_in_child() -> None:
    """After ``fork``: the child's copies of the lock descriptors would keep the lock alive
    after the run died (a worker outlives its parent for a few seconds); close them."""
    for fd in _held:
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


class RunLockedError(UserError):
    """Another live process holds the run folder."""


class RunFolderGoneError(UserError):
    """The locked run folder was removed or replaced under the live run."""


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "pid unknown"


class RunLock:
    """The lock of one run folder: ``RunLock(run_dir).acquire()`` ... ``release()`` (or ``with``).

    :meth:`acquire` raises :class:`RunLockedError` (one line naming the holder's pid) when a
    live process holds the folder, and :class:`UserError` when the folder is not writable.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None
        self._dir_id: tuple[int, int] | None = None  # the locked folder's (st_dev, st_ino)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        if fcntl is None or self._fd is not None:
            return self
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise UserError(
                    f"cannot write in run folder {self.run_dir}: {exc.strerror or exc}"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise RunLockedError(
                    f"{self.run_dir} is in use by another afictl run ({holder}); "
                    "wait for it to end or "
                    "stop it, then start or resume the run again"
                ) from None
            except OSError as exc:  # e.g. a network file system without locks
                os.close(fd)
                raise UserError(
                    f"cannot lock run folder {self.run_dir}: {exc.strerror or exc}"
                ) from None
            # A holder that just ended removed the file after we opened it: lock the one on disk.
            try:
                on_disk = os.stat(self.path)
                mine = os.fstat(fd)
                same = (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._dir_id = _identity(os.stat(self.run_dir))
        self._fd = fd
        _held.add(fd)
        return self

    def _still_mine(self) -> bool:
        """Whether the folder and its lock file on disk are the ones this lock took."""
        try:
            same_dir = _identity(os.stat(self.run_dir)) == self._dir_id
            return same_dir and _identity(os.stat(self.path)) == _identity(os.fstat(self._fd))
        except FileNotFoundError:
            return False

    def check(self) -> None:
        """Raise :class:`RunFolderGoneError` (one line) unless the run folder and its lock file
        are still the ones locked: two ``stat`` calls, once per write. A no-op when unlocked."""
        if self._fd is None or self._still_mine():
            return
        raise RunFolderGoneError(
            f"run folder {self.run_dir} was removed or replaced while this run was writing to "
            "it; this run stopped and wrote nothing more there"
        )

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if self._still_mine():  # never the lock file of a new run in a replaced folder
                self.path.unlink()  # while still locked, so no one locks a removed file
        except OSError:
            pass
        _held.discard(self._fd)
        os.close(self._fd)  # closing the last descriptor drops the lock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
