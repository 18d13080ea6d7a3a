"""A progress bar on stderr for long work (producing a big file, ``consume --max N`` into a file).

Shown only when stderr is a terminal and the command's own output is not (so it never mixes into
what a pipe or a log captures), and redrawn at most ten times a second: the count is kept in a
plain integer, the bar reads it, so the per-record cost is one addition.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, \
    TimeElapsedColumn, TimeRemainingColumn

from .common import err_console

REDRAW_S = 0.1


class ProgressBar:
    """``with ProgressBar("producing", total=size) as bar: bar.advance(n)``; a no-op when off."""

    def __init__(self, label: str, total: int | None, *, unit: str = "", stdout_is_output: bool = True) -> None:
        self.enabled = err_console.is_terminal and not (stdout_is_output and sys.stdout.isatty())
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self._shown_at = 0.0
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> "ProgressBar":
        if self.enabled:
            columns = [TextColumn(f"[bold]{self.label}"), BarColumn(), TaskProgressColumn(),
                       MofNCompleteColumn() if not self.unit else TextColumn(f"{{task.completed:,.0f}} {self.unit}"),
                       TimeElapsedColumn(), TimeRemainingColumn()]
            self._progress = Progress(*columns, console=err_console, transient=True, auto_refresh=False,
                                      redirect_stdout=False, redirect_stderr=False)  # stdout is the data
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=self.total)
        return self

    def advance(self, n: int) -> None:
        self.done += n
        if self._progress is not None:
            now = time.monotonic()
            if now - self._shown_at >= REDRAW_S:
                self._shown_at = now
                self._progress.update(self._task, completed=self.done, refresh=True)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done, refresh=True)
            self._progress.stop()
