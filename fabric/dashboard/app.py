"""``fabric dashboard``: poll the broker's ``stats`` once a second, draw, read keys.

The loop: one ``stats`` request per interval (a short timeout, so a dead broker shows as DOWN
within a second or two instead of freezing the screen), keys read between polls (the screen is
redrawn at once after a key), and nothing else.  A broker that goes away is retried every
interval on the same ``Admin`` (its connection reopens its socket after a timeout), so the
dashboard recovers on its own when the broker returns.

Connectors come from Connect's status topic when a worker has written one (``connect_status``);
until then that view says there is nothing to show.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from enum import Enum
from typing import Any, Callable

from rich.console import Console, RenderableType
from rich.live import Live

from ..client.admin import Admin
from ..client.connection import ClientError
from ..protocol.errors import FabricError
from . import views
from .keys import KeyReader
from .model import Model
from .state import NavState, handle_key

log = logging.getLogger("fabric.dashboard")


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Dashboard:
    """The dashboard's state and its polling; drawing is ``views.screen``."""

    def __init__(self, bootstrap: str, *, interval_s: float = 1.0, timeout_ms: int = 1500,
                 nav: NavState | None = None,
                 connectors: Callable[[], list[dict[str, Any]] | None] | None = None) -> None:
        self.bootstrap = bootstrap
        self.interval_s = interval_s
        self.timeout_ms = timeout_ms
        self.model = Model()
        self.nav = nav or NavState()
        self._admin: Admin | None = None
        self._connectors = connectors or (lambda: None)
        self.connectors: list[dict[str, Any]] | None = None
        self.rows: list[str] = []

    def poll(self) -> None:
        """One ``stats`` request; a failure marks the broker down (the next poll retries)."""
        try:
            if self._admin is None:
                self._admin = Admin(self.bootstrap, timeout_ms=self.timeout_ms, client_id="fabric-dashboard")
            self.model.observe(self._admin.stats())
        except (ClientError, FabricError, OSError) as exc:
            self.model.broker_down(wall_ms(), _short(exc))
        try:
            self.connectors = self._connectors()
        except Exception as exc:  # a broken status topic must not take the dashboard down
            log.debug("reading connector status: %s", exc)

    def frame(self) -> RenderableType:
        renderable, self.rows = views.screen(self.model, self.nav, self.bootstrap, self.connectors)
        return renderable

    def key(self, key: str) -> None:
        self.nav = handle_key(self.nav, key, self.rows)

    def numbers(self) -> dict[str, Any]:
        """What the frame shows, as plain data (``--once --output json``): rates per second,
        lag in records and ms, health words; field names as in the dataclasses of ``model.py``."""
        m = self.model
        latest = m.latest or {}
        return {
            "bootstrap": self.bootstrap,
            "health": m.health.value,
            "last_error": m.last_error or None,
            "broker": latest.get("broker"),
            "rates": {k: m.total_rate(k) for k in ("records_in", "records_out", "bytes_in", "bytes_out", "errors")},
            "topics": [_plain(t) for t in m.topics(internal=True)],
            "groups": [_plain(g) for g in m.groups()],
            "operations": [_plain(o) for o in m.operations()],
        }

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    # ------------------------------------------------------------------ ways to run
    def run_interactive(self, console: Console) -> None:
        """Full screen until ``q``: poll every interval, redraw after every poll and key."""
        with KeyReader() as keys, Live(self.frame(), console=console, screen=True, auto_refresh=False,
                                       redirect_stderr=False) as live:
            next_poll = 0.0
            while not self.nav.quit:
                now = time.monotonic()
                if now >= next_poll:
                    self.poll()
                    next_poll = now + self.interval_s
                    live.update(self.frame(), refresh=True)
                pressed = keys.read(max(0.0, next_poll - time.monotonic()))
                if "eof" in pressed:
                    break
                for k in pressed:
                    self.key(k)
                if pressed:
                    live.update(self.frame(), refresh=True)

    def snapshot(self, samples: int = 2) -> RenderableType:
        """Poll ``samples`` times an interval apart (rates need two) and return one frame."""
        for i in range(samples):
            if i:
                time.sleep(self.interval_s)
            self.poll()
        return self.frame()


def _plain(row: Any) -> dict[str, Any]:
    out = dataclasses.asdict(row)
    for k, v in out.items():
        if isinstance(v, Enum):
            out[k] = v.value
    return out


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 80 else text[:77] + "..."
