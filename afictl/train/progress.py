"""Rich progress bars (loss, accuracy, throughput, ETA) on stderr, rank 0 only.

When stderr is not a terminal (logs, CI, tests) the bars are off and only the one-line epoch
summaries are printed.
"""

from __future__ import annotations

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

__all__ = ["TrainProgress"]


class TrainProgress:
    """One bar for the whole run (its ETA) and one for the current epoch or evaluation."""

    def __init__(self, enabled: bool, total_steps: int, done_steps: int = 0) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True, highlight=False)
        self.bars = Progress(
            TextColumn("{task.description:<14}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=self.console,
            disable=not (enabled and self.console.is_terminal),
            transient=True,
        )
        self.run_task: TaskID | None = None
        self.task: TaskID | None = None
        self._total, self._done = total_steps, done_steps

    def __enter__(self) -> TrainProgress:
        if self.enabled:
            self.bars.start()
            self.run_task = self.bars.add_task(
                "run", total=self._total, completed=self._done, stats=""
            )
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.bars.stop()

    def start(self, description: str, total: int, completed: int = 0) -> None:
        if not self.enabled:
            return
        if self.task is not None:
            self.bars.remove_task(self.task)
        self.task = self.bars.add_task(description, total=total, completed=completed, stats="")

    def advance(self, steps: int, stats: str = "", run: bool = True) -> None:
        if not self.enabled or self.task is None:
            return
        self.bars.update(self.task, advance=steps, stats=stats)
        if run and self.run_task is not None:
            self.bars.update(self.run_task, advance=steps)

    def log(self, message: str) -> None:
        """A line above the bars (stderr)."""
        if self.enabled:
            self.console.print(message, markup=False, soft_wrap=True)
