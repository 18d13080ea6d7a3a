"""Key presses from a terminal, without blocking: cbreak mode, ``select`` with a timeout.

Why by hand and not a TUI framework: the dashboard needs a dozen keys and escape sequences for the
arrows, and rich (already a dependency) draws the screen; a reader of 60 lines beats a new
dependency.  The terminal is put back as it was on exit, whatever happens (``with``).
"""

from __future__ import annotations

import os
import select
import sys
import termios
import tty
from typing import Any

# Escape sequences of the keys the dashboard knows (xterm, tmux, the Linux console).
_SEQUENCES = {
    "\x1b[A": "up", "\x1b[B": "down", "\x1b[C": "right", "\x1b[D": "left",
    "\x1bOA": "up", "\x1bOB": "down", "\x1bOC": "right", "\x1bOD": "left",
    "\x1b[Z": "backtab",
}
_SINGLE = {"\r": "enter", "\n": "enter", "\t": "tab", "\x7f": "backspace", "\x08": "backspace",
           "\x03": "ctrl-c", "\x1b": "esc"}


def decode(data: str) -> list[str]:
    """Raw terminal input -> key names (``up``, ``enter``, ``q``, ...), in order."""
    keys: list[str] = []
    i = 0
    while i < len(data):
        if data[i] == "\x1b":
            seq = next((s for s in _SEQUENCES if data.startswith(s, i)), None)
            if seq is not None:
                keys.append(_SEQUENCES[seq])
                i += len(seq)
                continue
            if data.startswith("\x1b[", i):  # an unknown CSI sequence: skip it whole
                j = i + 2
                while j < len(data) and not ("@" <= data[j] <= "~"):
                    j += 1
                i = j + 1
                continue
        ch = data[i]
        keys.append(_SINGLE.get(ch, ch))
        i += 1
    return keys


class KeyReader:
    """``with KeyReader() as keys: keys.read(timeout_s)`` -> key names pressed meanwhile."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdin
        self.fd = self.stream.fileno()
        self._saved: list[Any] | None = None

    def __enter__(self) -> "KeyReader":
        if os.isatty(self.fd):
            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def read(self, timeout_s: float) -> list[str]:
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout_s))
        if not ready:
            return []
        data = os.read(self.fd, 1024)
        if not data:
            return ["eof"]
        return decode(data.decode("utf-8", "replace"))
