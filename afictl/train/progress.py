"""Progress of a run on stderr, rank 0 only: bars on a terminal, lines in a log file.

On a terminal: one rich bar for the whole run (its ETA) and one for the current epoch or
evaluation, with loss, accuracy and throughput. Otherwise (SLURM, nohup, CI, a pipe): an
:mod:`afictl.progress` line every ``--log-interval`` batches (default: at least every 30 s)::

    epoch 1/90 [ 400/5005]   8%  elapsed 0:02:01  eta 0:23:12  loss 2.3411  acc 41.2%  lr 0.1
    images/s 812  run eta 3:10:40

Per-step metrics (TensorBoard) are written at the same log points, on a terminal too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ..progress import LogPoints, format_duration, is_terminal
from ..progress import Progress as Lines

__all__ = ["TrainProgress", "bar_text", "line_stats"]

#: ``scalars(global_step, stats)``: per-step metrics at each log point
Scalars = Callable[[int, dict[str, float]], None]


def bar_text(stats: dict[str, float]) -> str:
    """The bar's stats column: ``loss 1.234  acc 45.2%  812 img/s``."""
    return (
        f"loss {stats['loss']:.3f}  acc {stats['top1']:.1f}%  {stats['images_per_sec']:.0f} img/s"
    )


def line_stats(stats: dict[str, float]) -> dict[str, Any]:
    """A log line's stats: loss, acc, lr, images/s (shown as they read best)."""
    return {
        "loss": f"{stats['loss']:.4f}",
        "acc": f"{stats['top1']:.1f}%",
        "lr": f"{stats['lr']:.4g}",
        "images/s": f"{stats['images_per_sec']:.0f}",
    }


class TrainProgress:
    """The run's progress: :meth:`start` an epoch or evaluation, :meth:`advance` it.

    ``enabled`` is False on ranks other than 0. ``every``: batches between log lines (None:
    time-based). ``scalars`` receives the stats of training steps at each log point.
    """

    def __init__(
        self,
        enabled: bool,
        total_steps: int,
        done_steps: int = 0,
        *,
        every: int | None = None,
        scalars: Scalars | None = None,
    ) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True, highlight=False)
        self.tty = enabled and is_terminal(sys.stderr)
        self.bars = Progress(
            TextColumn("{task.description:<14}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=self.console,
            disable=not self.tty,
            transient=True,
        )
        self.every, self.scalars = every, scalars
        self.run_task: TaskID | None = None
        self.task: TaskID | None = None
        self.lines: Lines | None = None  # the current epoch's or evaluation's, in a log file
        self.training = False
        self._total, self._done, self._first = total_steps, done_steps, done_steps
        self._start = time.monotonic()
        self._points = LogPoints(every, done=done_steps)

    def __enter__(self) -> TrainProgress:
        self._start = time.monotonic()
        if self.tty:
            self.bars.start()
            self.run_task = self.bars.add_task(
                "run", total=self._total, completed=self._done, stats=""
            )
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.tty:
            self.bars.stop()

    def start(self, description: str, total: int, completed: int = 0, training: bool = True):
        """A new epoch (``training``) or evaluation of ``total`` batches, ``completed`` done."""
        self.training = training
        if not self.enabled:
            return
        if not self.tty:  # log lines: every N batches in training, time-based in evaluation
            every = self.every if training else None
            self.lines = Lines(description, total, every=every, tty=False, done=completed)
            return
        if self.task is not None:
            self.bars.remove_task(self.task)
        self.task = self.bars.add_task(description, total=total, completed=completed, stats="")

    def advance(self, steps: int, stats: dict[str, float] | None = None, run: bool = True):
        """``steps`` more batches; ``stats`` (loss, top1, lr, images_per_sec) of training."""
        if not self.enabled:
            return
        if run:
            self._done += steps
        if stats and self.training and self.scalars is not None:
            if self._points.take(self._done):
                self.scalars(self._done, stats)
        if self.lines is not None:
            shown = line_stats(stats) if stats else {}
            if stats and run:
                shown["run eta"] = self.run_eta()
            self.lines.advance(steps, **shown)
        elif self.task is not None:
            self.bars.update(self.task, advance=steps, stats=bar_text(stats) if stats else "")
            if run and self.run_task is not None:
                self.bars.update(self.run_task, advance=steps)

    def run_eta(self) -> str:
        """Time left of the whole run (its training steps) at this session's pace."""
        done = self._done - self._first
        if done <= 0:
            return "?"
        elapsed = time.monotonic() - self._start
        return format_duration(elapsed / done * max(0, self._total - self._done))

    def log(self, message: str) -> None:
        """A line on stderr (above the bars on a terminal)."""
        if not self.enabled:
            return
        if self.tty and self.bars.live.is_started:
            self.console.print(message, markup=False, soft_wrap=True)
        else:
            print(message, file=sys.stderr, flush=True)
