"""A real terminal for tests: a tmux session running one command, keys in, screen text out.

Why tmux: the dashboard and the progress bars behave differently on a terminal, and a test must
see what a person sees (``capture-pane``) and type what a person types (``send-keys``).  Every
wait polls the screen with a deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from typing import Callable


def wait_for(what: str, check: Callable[[], object], timeout: float = 20.0, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        threading.Event().wait(interval)


class Terminal:
    """A tmux session running one command: keys in, screen text out."""

    def __init__(self, command: list[str], width: int = 160, height: int = 50) -> None:
        self.name = f"fabric-test-{uuid.uuid4().hex[:8]}"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height),
                        " ".join(command)], check=True)
        # A tmux server started earlier may size new windows its own way: set ours explicitly.
        subprocess.run(["tmux", "resize-window", "-t", self.name, "-x", str(width), "-y", str(height)],
                       capture_output=True)

    def screen(self) -> str:
        r = subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True)
        return r.stdout if r.returncode == 0 else ""

    def alive(self) -> bool:
        return subprocess.run(["tmux", "has-session", "-t", self.name], capture_output=True).returncode == 0

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def wait(self, *texts: str, timeout: float = 20.0) -> str:
        """The first screen that shows every one of ``texts`` (a capture may catch a redraw
        half done, so they are looked for together, in one capture)."""
        def check() -> str:
            screen = self.screen()
            return screen if all(t in screen for t in texts) else ""
        try:
            return wait_for(f"{texts!r} on the screen", check, timeout)  # type: ignore[return-value]
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the screen:\n{self.screen()}") from None

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)
