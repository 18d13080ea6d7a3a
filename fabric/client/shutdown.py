"""Stop a consumer cleanly when its process is asked to stop (SIGTERM, SIGINT).

Why
===
Containers and service managers stop a process with SIGTERM, terminals with SIGINT (Ctrl-C).
Python's defaults are wrong for a group member: SIGTERM kills the process at once (no final
commit, no ``leave_group``, so the member lingers in its group until its session times out and
blocks ``fabric group reset-offsets`` and ``group delete`` with GROUP_NOT_EMPTY), and SIGINT
raises ``KeyboardInterrupt`` wherever the code happens to be: inside a request, a rebalance
callback or a commit.  Worse, a process started as a background job of a non-interactive shell
(``cmd &`` in a script) inherits SIGINT as *ignored*, Python leaves it ignored, and then neither
Ctrl-C nor ``kill -INT`` ever stops it.

How
===
``ShutdownSignals`` installs its own handler for each signal, explicitly, whatever disposition
was inherited.  The handler only records the request and calls ``wakeup()`` on its targets (a
``Consumer``'s ``poll`` then returns within ~100 ms), so the application's loop sees
``requested`` and ends by itself; ``closing_on_signals`` then closes the consumer on the thread
that polls it (commit with auto-commit, ``leave_group``, sockets closed).  A second signal means
"now": the handler restores the default action and sends the signal again, so the process dies
of it at once (a close stuck on an unreachable broker cannot hold a container's stop hostage).
Leaving the ``with`` block restores the previous handlers.

Python runs signal handlers on the main thread and ``signal.signal`` works only there, so enter
the ``with`` block on the main thread; the poll loop itself may run on any thread.

    with consumer.closing_on_signals() as stop:     # or closing_on_signals(consumer)
        while not stop.requested:
            for record in consumer.poll(1000):
                handle(record)
            try:
                consumer.commit()
            except CommitFailedError:
                pass  # a rebalance: the records since the last commit are delivered again
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Any, Iterable, Iterator, Protocol

log = logging.getLogger("fabric.client.shutdown")

__all__ = ["ShutdownSignals", "closing_on_signals", "DEFAULT_SIGNALS"]

DEFAULT_SIGNALS: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)


class Wakeable(Protocol):
    def wakeup(self) -> None: ...  # called from the signal handler: must only set a flag


class Closable(Wakeable, Protocol):
    def close(self) -> None: ...


class ShutdownSignals:
    """A context manager: while it is entered, the first of ``signals`` (default SIGTERM and
    SIGINT) sets ``requested`` and wakes the ``targets``; the second kills the process with it."""

    def __init__(self, *targets: Wakeable, signals: Iterable[int] | None = None) -> None:
        self.signals = tuple(DEFAULT_SIGNALS if signals is None else signals)
        self.received: int | None = None  # the first signal's number
        self._targets = targets
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """True once a signal asked the process to stop."""
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a signal arrives (or ``timeout`` seconds); True if one did."""
        return self._event.wait(timeout)

    def install(self) -> "ShutdownSignals":
        """Install the handlers (main thread only; ``ValueError`` elsewhere)."""
        if self._previous:
            raise RuntimeError("these shutdown handlers are installed already")
        try:
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        except BaseException:
            self.restore()
            raise
        return self

    def restore(self) -> None:
        """Put back the handlers found at ``install``."""
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._event.is_set():  # the second signal: stop waiting for the clean shutdown
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signum
        self._event.set()
        for target in self._targets:
            target.wakeup()

    def __enter__(self) -> "ShutdownSignals":
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.restore()


@contextmanager
def closing_on_signals(consumer: Closable, signals: Iterable[int] | None = None) -> Iterator[ShutdownSignals]:
    """``ShutdownSignals`` for ``consumer`` that also closes it when the block ends, for whatever
    reason, on the thread that ran the block.  The handlers stay installed during ``close``, so a
    second signal still ends a close that hangs."""
    with ShutdownSignals(consumer, signals=signals) as stop:
        try:
            yield stop
        finally:
            if stop.received is not None:
                log.info("%s received: closing the consumer (send it again to exit at once)",
                         signal.Signals(stop.received).name)
            consumer.close()
