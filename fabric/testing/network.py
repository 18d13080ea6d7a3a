"""A seeded fake network for deterministic simulations: drops, delays, reordering, partitions.

Why: a leader and its followers, or a controller quorum, are tested back to back in one process
(STYLE: h11's ``ConnectionPair``; FoundationDB's simulation) by routing their messages through
this object instead of sockets.  Everything random comes from one ``random.Random(seed)`` and
time from a ``ManualClock``, so a failing run replays exactly from its seed; ``repr`` names the
seed, and so should every assertion message of a test that uses it.

Model: ``send(src, dst, message)`` decides at once, from the seed, whether the message is lost
(``drop``) and when it arrives (``now + delay``, uniform in ``delay_ms``).  With ``reorder=False``
each link (src, dst) stays FIFO, as a TCP connection is: a message never arrives before one sent
earlier on the same link.  With ``reorder=True`` only the delays order them.  ``cut(a, b)`` blocks
the link both ways (messages sent meanwhile are lost) until ``heal(a, b)``; messages already in
flight still arrive, as packets on the wire do.  Nothing is ever duplicated.

The network never advances the clock itself: ``deliver()`` hands over what is due now, and
``next_delivery_ms()`` says when the next message is due, so the test (or ``run``) decides.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from ..clock import ManualClock

__all__ = ["Envelope", "FakeNetwork"]


@dataclass(frozen=True, slots=True)
class Envelope:
    src: Hashable
    dst: Hashable
    message: Any
    sent_ms: int
    due_ms: int
    seq: int  # send order, network-wide


class FakeNetwork:
    def __init__(self, seed: int, clock: ManualClock, *, drop: float = 0.0, delay_ms: tuple[int, int] = (0, 0),
                 reorder: bool = False) -> None:
        if not 0.0 <= drop <= 1.0:
            raise ValueError(f"drop is a probability, not {drop}")
        if not 0 <= delay_ms[0] <= delay_ms[1]:
            raise ValueError(f"delay_ms must be (low, high) with 0 <= low <= high, not {delay_ms}")
        self.seed = seed
        self.clock = clock
        self.drop = drop
        self.delay_ms = delay_ms
        self.reorder = reorder
        self.rng = random.Random(seed)
        self.sent = self.dropped = self.delivered = 0
        self._queue: list[tuple[int, int, Envelope]] = []
        self._last_due: dict[tuple[Hashable, Hashable], int] = {}  # per link, for FIFO
        self._cut: set[frozenset] = set()
        self._seq = itertools.count()

    def __repr__(self) -> str:
        return (f"FakeNetwork(seed={self.seed}, drop={self.drop}, delay_ms={self.delay_ms}, "
                f"reorder={self.reorder}, in_flight={len(self._queue)})")

    # ------------------------------------------------------------------ faults
    def cut(self, a: Hashable, b: Hashable) -> None:
        """Lose every message between ``a`` and ``b`` (both ways) from now until ``heal``."""
        self._cut.add(frozenset((a, b)))

    def heal(self, a: Hashable, b: Hashable) -> None:
        self._cut.discard(frozenset((a, b)))

    def isolate(self, node: Hashable, others: list[Hashable]) -> None:
        for other in others:
            if other != node:
                self.cut(node, other)

    # ------------------------------------------------------------------ traffic
    def send(self, src: Hashable, dst: Hashable, message: Any) -> bool:
        """Queue ``message``; False if the network lost it (a cut link or a seeded drop)."""
        self.sent += 1
        lost = self.rng.random() < self.drop  # drawn for every message, so a cut does not shift the sequence
        delay = self.rng.randint(*self.delay_ms)
        if lost or frozenset((src, dst)) in self._cut:
            self.dropped += 1
            return False
        now = self.clock.monotonic_ms()
        due = now + delay
        if not self.reorder:
            due = max(due, self._last_due.get((src, dst), due))
            self._last_due[(src, dst)] = due
        seq = next(self._seq)
        heapq.heappush(self._queue, (due, seq, Envelope(src, dst, message, now, due, seq)))
        return True

    def next_delivery_ms(self) -> int | None:
        return self._queue[0][0] if self._queue else None

    def in_flight(self) -> int:
        return len(self._queue)

    def deliver(self) -> list[Envelope]:
        """Every message due by now, in (due time, send order) order."""
        now = self.clock.monotonic_ms()
        out = []
        while self._queue and self._queue[0][0] <= now:
            out.append(heapq.heappop(self._queue)[2])
        self.delivered += len(out)
        return out

    def run(self, handle: Callable[[Envelope], None], *, until_ms: int | None = None, max_messages: int = 100_000
            ) -> int:
        """Deliver messages one due time after another, advancing the clock to each, until none is
        in flight (or the next is due after ``until_ms``); ``handle`` may send more.  Returns how
        many were delivered.  ``max_messages`` bounds a run that would never go quiet."""
        count = 0
        while (due := self.next_delivery_ms()) is not None and (until_ms is None or due <= until_ms):
            if due > self.clock.monotonic_ms():
                self.clock.set_monotonic(due)
            for envelope in self.deliver():
                handle(envelope)
                count += 1
                if count >= max_messages:
                    raise RuntimeError(f"{self}: more than {max_messages} messages without going quiet")
        if until_ms is not None and until_ms > self.clock.monotonic_ms():
            self.clock.set_monotonic(until_ms)
        return count
