"""Progress of long work, for people and for log files, on stderr (stdout carries results).

On a terminal: a transient rich bar. Otherwise (a log file, SLURM, nohup, a pipe): a line every
``every`` steps and at least every ``seconds`` seconds, in the manner of torchvision's
``MetricLogger``::

    selectivity [ 40/128]  31%  elapsed 0:00:28  eta 0:01:02  images/s 812  loss 1.9203

and a closing line when the job took 2 s or more. Every command that can run for more than a
few seconds reports through :func:`progress` (a job of steps, or of named stages:
:meth:`Progress.stage`) or :func:`progress_hook` (for library functions taking a
``progress(description, total) -> tick`` hook), so that a run in a log file is never silent
for long. Training (afictl/train/progress.py) draws its own two bars on a terminal and writes
these lines otherwise.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = [
    "DEFAULT_SECONDS",
    "LogPoints",
    "Progress",
    "format_duration",
    "format_stats",
    "is_terminal",
    "progress",
    "progress_hook",
]

#: Without ``every``, a log line at least this often (seconds; read when a job starts).
DEFAULT_SECONDS = 30.0


def format_duration(seconds: float) -> str:
    """``3723.4`` -> ``'1:02:03'`` (hours unbounded, like MetricLogger's eta)."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` gets a bar: rich's rules (a tty, or ``TTY_COMPATIBLE=1``,
    ``FORCE_COLOR``; ``TTY_COMPATIBLE=0`` or ``TERM=dumb`` for lines)."""
    from rich.console import Console

    return Console(file=stream).is_terminal


def format_stats(stats: dict[str, Any]) -> str:
    """``{'loss': 1.23456, 'lr': 0.1}`` -> ``'loss 1.2346  lr 0.1'`` (None values left out)."""
    parts = []
    for name, value in stats.items():
        if value is None:
            continue
        text = f"{value:.5g}" if isinstance(value, float) else str(value)
        parts.append(f"{name} {text}")
    return "  ".join(parts)


class LogPoints:
    """When a line is due: ``every`` steps crossed, or ``seconds`` passed, since the last
    one (:meth:`mark`). Progress prints by it; training writes per-step metrics by it too."""

    def __init__(
        self,
        every: int | None = None,
        seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        done: int = 0,
    ) -> None:
        self.every, self.clock = every, clock
        self.seconds = DEFAULT_SECONDS if seconds is None else seconds
        self.step, self.last = done, clock()

    def due(self, done: int, now: float | None = None) -> bool:
        """Whether step ``done`` is a log point (nothing marked: see :meth:`mark`)."""
        now = self.clock() if now is None else now
        every = self.every
        return (every is not None and done // every > self.step // every) or (
            now - self.last >= self.seconds
        )

    def mark(self, done: int, now: float | None = None) -> None:
        """A line was written at step ``done``."""
        self.step, self.last = done, self.clock() if now is None else now

    def take(self, done: int) -> bool:
        """:meth:`due`, and marked when it is."""
        now = self.clock()
        if self.due(done, now):
            self.mark(done, now)
            return True
        return False


class Progress:
    """Steps of one job: ``advance(n, **stats)`` after each; ``log(msg)`` for a line of its own;
    ``stage(name)`` for a job made of a few named stages (export: tracing, verifying, ...).

    ``enabled=False`` (other DDP ranks, ``--quiet``) prints nothing. ``stream`` is stderr unless
    given; ``tty`` forces the bar (True) or the lines (False) instead of asking the stream.
    ``done`` starts the count further on (a resumed epoch).
    """

    def __init__(
        self,
        description: str,
        total: int | None,
        *,
        every: int | None = None,
        seconds: float | None = None,
        enabled: bool = True,
        stream: TextIO | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        done: int = 0,
        stage_delay: float = 0.0,
    ) -> None:
        self.description, self.total = description, total
        self.every, self.seconds, self.enabled = every, seconds, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = is_terminal(self.stream) if tty is None else tty
        self.clock = clock
        self.done = self._first = done
        self._start = clock()
        self._points = LogPoints(every, seconds, clock, done)
        self._stage, self.stage_delay = 0, stage_delay
        self._timer: threading.Timer | None = None
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.enabled and self.tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as Bar

            self._bar = Bar(
                TextColumn("{task.description}"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[stats]}"),
                console=Console(file=self.stream, force_terminal=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(
                self.description, total=self.total, completed=self.done, stats=""
            )
        self._start = self._points.last = self.clock()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._cancel()
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def advance(self, steps: int = 1, **stats: Any) -> None:
        """``steps`` more done; ``stats`` (loss, top1, lr, ...) shown beside the count."""
        self.done += steps
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, advance=steps, stats=format_stats(stats))
            return
        now = self.clock()
        # the last step: a closing line, unless the job was too short to need one
        finished = self.total is not None and self.done >= self.total
        finished = finished and (self.every is not None or now - self._start >= 2.0)
        if self._points.due(self.done, now) or finished:
            self._points.mark(self.done, now)
            self._line(now, stats)

    def stage(self, name: str) -> None:
        """The next named stage begins (the one before it is done): the bar shows its name, a
        log file gets a line ``export [2/3] verifying  elapsed 0:00:09``. With
        ``stage_delay``, the line waits that long and is left out when the stage ended first:
        quick stages, and an error raised at once, stay quiet (one line, the error)."""
        if self._stage:
            self.done += 1
        self._stage += 1
        self._cancel()
        if not self.enabled:
            return
        if self._bar is not None:
            description = f"{self.description}: {name}"
            self._bar.update(self._task, completed=self.done, description=description)
            return
        of = f"/{self.total}" if self.total else ""
        head = f"{self.description} [{self._stage}{of}] {name}"
        if self.stage_delay <= 0:
            self._stage_line(head)
            return
        self._timer = threading.Timer(self.stage_delay, self._stage_line, (head,))
        self._timer.daemon = True
        self._timer.start()

    def _stage_line(self, head: str) -> None:
        now = self.clock()
        self._points.mark(self.done, now)
        print(f"{head}  elapsed {format_duration(now - self._start)}", file=self.stream, flush=True)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def update(self, done: int, total: int | None = None, **stats: Any) -> None:
        """For hooks that report a count, ``progress(done, total)``: ``done`` steps in all."""
        if total is not None and total != self.total:
            self.total = total
            if self._bar is not None:
                self._bar.update(self._task, total=total)
        self.advance(done - self.done, **stats)

    def tick(self, *_: Any) -> None:
        """One step, for library hooks that call ``progress()`` or ``progress(name)``."""
        self.advance(1)

    def log(self, message: str) -> None:
        """A line of its own (above the bar on a terminal)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(message, markup=False, highlight=False, soft_wrap=True)
        else:
            print(message, file=self.stream, flush=True)

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at the mean pace so far (of the steps done since the start, not of
        those a resumed job had done before); None before the first step or without total."""
        elapsed = (self.clock() if now is None else now) - self._start
        if self.total is None or self.done <= self._first:
            return None
        return elapsed / (self.done - self._first) * max(0, self.total - self.done)

    def _line(self, now: float, stats: dict[str, Any]) -> None:
        if self.total:
            width = len(str(self.total))
            head = f"{self.description} [{self.done:>{width}}/{self.total}]"
            head += f" {100 * self.done / self.total:3.0f}%"
        else:
            head = f"{self.description} [{self.done}]"
        eta = self.eta(now)
        parts = [head, f"elapsed {format_duration(now - self._start)}"]
        if eta is not None:
            parts.append(f"eta {format_duration(eta)}")
        if stats:
            parts.append(format_stats(stats))
        print("  ".join(parts), file=self.stream, flush=True)


def progress(description: str, total: int | None, **options: Any) -> Progress:
    """A :class:`Progress` for ``with progress("counting", n) as p: ... p.advance()``."""
    return Progress(description, total, **options)


@contextmanager
def progress_hook(**options: Any) -> Iterator[Callable[[str, int], Callable[..., None]]]:
    """For library functions that take a ``progress(description, total) -> tick`` hook (one
    job after another: report, the analyses): each call closes the job before it and starts
    a :class:`Progress` with ``options``; ``tick()`` is one step of it."""
    current: list[Progress] = []

    def start(description: str, total: int) -> Callable[..., None]:
        if current:
            current.pop().__exit__(None, None, None)
        job = Progress(description, total, **options).__enter__()
        current.append(job)
        return job.tick

    try:
        yield start
    finally:
        if current:
            current.pop().__exit__(None, None, None)
