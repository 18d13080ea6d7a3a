"""The purgatory: requests that cannot be answered yet, keyed by what they wait for (Kafka's
``DelayedOperationPurgatory``), without sockets or clocks.

Why one structure for every delayed operation: a fetch waiting for bytes, a produce waiting for
its batch to be durable (``flush_every_batch``: the group commit at the end of a loop turn) and,
with replication, a produce waiting for the high watermark to pass its offset (``acks=all``) are
the same problem: park the request under the partitions it watches, re-check it when one of them
changes, answer it with what there is when its deadline passes.  The fetcher parks long polls
here (``fetching.py``, ``BYTES`` keys) and ``durability.py`` the replies that wait for an fsync
(``DURABLE`` keys); each owns its own instance, so one kind cannot use up the other's capacity.

Keys say *what* is awaited, not just where (``WaitKey(kind, topic, partition)``): an append wakes
``BYTES`` waiters, a flush ``DURABLE`` ones, a high-watermark advance ``HIGH_WATERMARK`` ones, so an
event only re-checks the operations it can complete.

Rules:

1. An operation is parked once, under one or more keys, with a deadline (monotonic ms: the
   caller's ``now_ms`` plus the request's wait).  At most ``capacity`` are parked; the caller checks
   ``full()`` first and answers at once (or refuses) when it is.
2. ``watching(keys)`` returns the parked operations under any of ``keys``, each once, in the
   order they were parked (deterministic, so a simulation replays exactly).  It removes nothing:
   the caller re-checks each and ``finish``es those it answers.
3. ``expired(now_ms)`` removes and returns every operation whose deadline is <= ``now_ms``, oldest
   deadline first.  ``next_deadline_ms`` tells the shell how long it may sleep.
4. ``rearm`` gives a parked operation a new deadline (a standing fetch answered and waiting
   again) without leaving its keys; the old deadline entry is ignored from then on.
5. ``finish`` is idempotent; a finished operation is never returned again.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from typing import Generic, Hashable, Iterable, NamedTuple, TypeVar

__all__ = ["Delayed", "Purgatory", "WaitFor", "WaitKey"]

T = TypeVar("T")


class WaitFor(enum.Enum):
    BYTES = "new records appended (a fetch short of min_bytes)"
    DURABLE = "appended records fsynced (a produce with flush_every_batch)"
    HIGH_WATERMARK = "the high watermark passing an offset (a produce with acks=all)"


class WaitKey(NamedTuple):
    kind: WaitFor
    topic: str
    partition: int


class Delayed(Generic[T]):
    """A parked operation: the caller's object ``op``, its keys and deadline."""

    __slots__ = ("op", "keys", "deadline_ms", "done", "_seq", "_order")

    def __init__(self, op: T, keys: tuple[Hashable, ...], deadline_ms: int, seq: int) -> None:
        self.op = op
        self.keys = keys
        self.deadline_ms = deadline_ms
        self.done = False
        self._seq = seq  # of its live deadline entry (rule 4)
        self._order = seq  # when it was parked (rule 2)

    def __repr__(self) -> str:
        return f"Delayed({self.op!r}, keys={self.keys}, deadline_ms={self.deadline_ms}, done={self.done})"


class Purgatory(Generic[T]):
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, not {capacity}")
        self.capacity = capacity
        self._by_key: dict[Hashable, dict[Delayed[T], None]] = {}  # insertion-ordered sets
        self._deadlines: list[tuple[int, int, Delayed[T]]] = []
        self._count = 0
        self._seq = itertools.count()

    def __len__(self) -> int:
        return self._count

    def full(self) -> bool:
        return self._count >= self.capacity

    def park(self, op: T, keys: Iterable[Hashable], deadline_ms: int) -> Delayed[T]:
        """Rule 1."""
        if self._count >= self.capacity:
            raise OverflowError(f"the purgatory holds its capacity of {self.capacity} operations")
        entry = Delayed(op, tuple(dict.fromkeys(keys)), deadline_ms, next(self._seq))
        if not entry.keys:
            raise ValueError("an operation must wait for something: no keys")
        for key in entry.keys:
            self._by_key.setdefault(key, {})[entry] = None
        heapq.heappush(self._deadlines, (deadline_ms, entry._seq, entry))
        self._count += 1
        return entry

    def watching(self, keys: Iterable[Hashable]) -> list[Delayed[T]]:
        """Rule 2."""
        found: dict[Delayed[T], None] = {}
        for key in keys:
            found.update(self._by_key.get(key, {}))
        return sorted(found, key=_park_order) if len(found) > 1 else list(found)

    def rearm(self, entry: Delayed[T], deadline_ms: int) -> None:
        """Rule 4."""
        if entry.done:
            raise ValueError(f"{entry} is finished: park it again instead")
        entry.deadline_ms = deadline_ms
        entry._seq = next(self._seq)
        heapq.heappush(self._deadlines, (deadline_ms, entry._seq, entry))

    def finish(self, entry: Delayed[T]) -> None:
        """Rule 5."""
        if entry.done:
            return
        entry.done = True
        self._count -= 1
        for key in entry.keys:
            waiting = self._by_key.get(key)
            if waiting is not None:
                waiting.pop(entry, None)
                if not waiting:
                    del self._by_key[key]

    def expired(self, now_ms: int) -> list[Delayed[T]]:
        """Rule 3."""
        out = []
        while self._deadlines and self._deadlines[0][0] <= now_ms:
            _, seq, entry = heapq.heappop(self._deadlines)
            if not entry.done and seq == entry._seq:
                self.finish(entry)
                out.append(entry)
        return out

    def next_deadline_ms(self) -> int | None:
        heap = self._deadlines
        while heap and (heap[0][2].done or heap[0][1] != heap[0][2]._seq):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def all(self) -> list[Delayed[T]]:
        """Every parked operation, in park order (for shutdown: answer them all)."""
        return sorted({e: None for _, seq, e in self._deadlines if not e.done and seq == e._seq}, key=_park_order)


def _park_order(entry: Delayed) -> int:
    return entry._order
