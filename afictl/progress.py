"""Progress of long work, for people and for log files, on stderr (stdout carries results).

On a terminal: a transient rich bar. Otherwise (a log file, SLURM, nohup, a pipe): a line every
``every`` steps and at least every ``seconds`` seconds, in the manner of torchvision's
``MetricLogger``::

    selectivity [  40/ 128]  31%  eta 0:01:02  images/s 812  loss 1.9203

Every command that can run for more than a few seconds reports through :func:`progress`, so
that a run in a log file is never silent for long.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["DEFAULT_SECONDS", "Progress", "format_duration", "format_stats", "progress"]

#: Without ``every``, a log line at least this often (seconds).
DEFAULT_SECONDS = 30.0


def format_duration(seconds: float) -> str:
    """``3723.4`` -> ``'1:02:03'`` (hours unbounded, like MetricLogger's eta)."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def format_stats(stats: dict[str, Any]) -> str:
    """``{'loss': 1.23456, 'lr': 0.1}`` -> ``'loss 1.2346  lr 0.1'`` (None values left out)."""
    parts = []
    for name, value in stats.items():
        if value is None:
            continue
        text = f"{value:.5g}" if isinstance(value, float) else str(value)
        parts.append(f"{name} {text}")
    return "  ".join(parts)


class Progress:
    """Steps of one job: ``advance(n, **stats)`` after each; ``log(msg)`` for a line of its own.

    ``enabled=False`` (other DDP ranks, ``--quiet``) prints nothing. ``stream`` is stderr unless
    given; ``tty`` forces the bar (True) or the lines (False) instead of asking the stream.
    """

    def __init__(
        self,
        description: str,
        total: int | None,
        *,
        every: int | None = None,
        seconds: float = DEFAULT_SECONDS,
        enabled: bool = True,
        stream: TextIO | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.description, self.total = description, total
        self.every, self.seconds, self.enabled = every, seconds, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.clock = clock
        self.done = 0
        self._start = self._last = clock()
        self._last_step = 0
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
                console=Console(file=self.stream, stderr=self.stream is sys.stderr),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, stats="")
        self._start = self._last = self.clock()
        return self

    def __exit__(self, *exc: Any) -> None:
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
        every = self.every
        due_step = every is not None and self.done // every > self._last_step // every
        due_time = now - self._last >= self.seconds
        # the last step: a closing line, unless the job was too short to need one
        finished = self.total is not None and self.done >= self.total
        finished = finished and (self.every is not None or now - self._start >= 2.0)
        if due_step or due_time or finished:
            self._line(now, stats)

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
        """Seconds left at the mean pace so far; None before the first step or without total."""
        elapsed = (self.clock() if now is None else now) - self._start
        if self.total is None or self.done <= 0:
            return None
        return elapsed / self.done * max(0, self.total - self.done)

    def _line(self, now: float, stats: dict[str, Any]) -> None:
        self._last, self._last_step = now, self.done
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
