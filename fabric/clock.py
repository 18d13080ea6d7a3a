"""Time, in one place: a monotonic clock for deadlines and a wall clock for timestamps.

Why two clocks: a deadline ("this fetch waits at most 500 ms", "this follower has not caught up
for 10 s") must not jump when an operator or NTP steps the system time, so it is measured on a
monotonic clock.  A record timestamp, a retention decision or a log-append time is a date, so it
comes from the wall clock.  Mixing them is the classic bug this module exists to prevent: code
that takes ``now_ms`` says in its parameter name which one it means (``now_ms`` is monotonic,
``wall_ms`` is the date), and a test can step the wall clock backwards without moving deadlines.

Pure code (the log, the group coordinator, replication state) never reads a clock: it takes
``now_ms`` as a parameter (STYLE rule "time is a parameter").  Shells own a ``Clock``:

- The broker's shell (``BrokerServer(config, clock=SystemClock())``) reads both clocks as a
  ``Now`` for each request and loop turn and passes it to the core, which uses ``mono_ms`` for
  every deadline (long-poll fetch waits, group sessions and rebalance timers, idle connections,
  housekeeping's schedule) and ``wall_ms`` for the dates it writes (record and log-append
  timestamps, ``created_ms``, commit timestamps, retention, ``stats``' ``now_ms``).
- Tests give it a ``ManualClock`` and ``advance`` it instead of sleeping, as trio's
  ``MockClock`` does; ``step_wall`` tests that a wall-clock step (NTP, an operator) changes no
  deadline.

Both return integer milliseconds: every time in the protocol and on disk is an int64 of ms.
"""

from __future__ import annotations

import threading
import time
from typing import NamedTuple, Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "Now", "SystemClock", "as_now", "read"]


@runtime_checkable
class Clock(Protocol):
    def monotonic_ms(self) -> int:
        """Milliseconds on a clock that never goes back; only differences mean anything."""
        ...

    def wall_ms(self) -> int:
        """Milliseconds since the Unix epoch (UTC); may jump either way when the system time is set."""
        ...


class Now(NamedTuple):
    """One reading of both clocks, taken by a shell and passed down to pure code that needs both
    (the broker core: a fetch's deadline and a produce's log-append time come from one request).
    ``mono_ms`` is for deadlines, ``wall_ms`` for dates; a handler picks the one it means."""

    mono_ms: int
    wall_ms: int


def read(clock: Clock) -> Now:
    """Both clocks, now."""
    return Now(clock.monotonic_ms(), clock.wall_ms())


def as_now(now: "int | Now") -> Now:
    """``now`` as a ``Now``: a bare int stands for both clocks reading the same (what a test or a
    SPEC vector with one fixed clock passes; SPEC.md's vector setup says so)."""
    return now if isinstance(now, Now) else Now(now, now)


class SystemClock:
    """The real clocks: ``time.monotonic_ns`` and ``time.time_ns``."""

    __slots__ = ()

    def monotonic_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to, for deterministic tests.

    ``advance(ms)`` moves both clocks forward together (time passing).  ``set_monotonic`` jumps
    the monotonic clock forward to a given reading (never back: that would break the one promise
    a monotonic clock makes, so it raises).  ``step_wall`` / ``set_wall`` move only the wall
    clock, in either direction, as an NTP or operator step does.  Thread-safe, so a test may
    advance it while a shell thread reads it.
    """

    def __init__(self, monotonic_ms: int = 0, wall_ms: int = 1_700_000_000_000) -> None:
        if monotonic_ms < 0:
            raise ValueError(f"monotonic_ms must be >= 0, not {monotonic_ms}")
        self._lock = threading.Lock()
        self._monotonic = monotonic_ms
        self._wall = wall_ms

    def monotonic_ms(self) -> int:
        with self._lock:
            return self._monotonic

    def wall_ms(self) -> int:
        with self._lock:
            return self._wall

    def advance(self, ms: int) -> None:
        """Let ``ms`` milliseconds pass on both clocks."""
        if ms < 0:
            raise ValueError(f"time cannot pass backwards: advance({ms})")
        with self._lock:
            self._monotonic += ms
            self._wall += ms

    def set_monotonic(self, ms: int) -> None:
        """Jump the monotonic clock to ``ms`` (>= its reading); the wall clock moves as much."""
        with self._lock:
            if ms < self._monotonic:
                raise ValueError(f"a monotonic clock never goes back: {self._monotonic} -> {ms}")
            self._wall += ms - self._monotonic
            self._monotonic = ms

    def set_wall(self, ms: int) -> None:
        """Set the wall clock to ``ms`` (either direction); the monotonic clock does not move."""
        with self._lock:
            self._wall = ms

    def step_wall(self, delta_ms: int) -> None:
        """Step the wall clock by ``delta_ms`` (negative: backwards); the monotonic clock does not move."""
        with self._lock:
            self._wall += delta_ms

    def __repr__(self) -> str:
        return f"ManualClock(monotonic_ms={self._monotonic}, wall_ms={self._wall})"
