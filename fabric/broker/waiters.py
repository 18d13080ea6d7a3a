"""Parked long-poll fetches (Kafka's fetch "purgatory"), without sockets or clocks.

Why: a consumer at the tail asks "give me at least ``min_bytes``, wait up to ``max_wait_ms``".
Answering empty at once would make idle consumers spin; holding the request costs nothing.  A
parked fetch is re-evaluated only when a partition it watches gets an append (``wake``) or its
deadline passes (``expired``), so the cost is proportional to activity, not to waiters.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Waiter:
    peer: bytes
    cid: int
    request: Any  # FetchRequest
    deadline_ms: int
    keys: tuple[tuple[str, int], ...]
    done: bool = False
    seq: int = field(default=0)
    follow_on: Any = None  # the pipelined fetches waiting for this one (fetching._FollowOn)
    spent: int = 0  # a standing fetch's replies so far (fetching rule 6)


class FetchWaiters:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._by_partition: dict[tuple[str, int], set[Waiter]] = {}
        self._deadlines: list[tuple[int, int, Waiter]] = []
        self._count = 0
        self._seq = itertools.count()

    def __len__(self) -> int:
        return self._count

    def full(self) -> bool:
        return self._count >= self.capacity

    def park(self, waiter: Waiter) -> None:
        waiter.seq = next(self._seq)
        for key in waiter.keys:
            self._by_partition.setdefault(key, set()).add(waiter)
        heapq.heappush(self._deadlines, (waiter.deadline_ms, waiter.seq, waiter))
        self._count += 1

    def rearm(self, waiter: Waiter, request: Any, deadline_ms: int, spent: int) -> None:
        """A parked standing fetch answered and waiting again (same peer, cid and partitions): it
        keeps its place in the partition sets, and a new deadline entry supersedes its old one
        (entries are matched by ``seq``).  Cheaper than ``finish`` and a new ``park``."""
        waiter.request = request
        waiter.deadline_ms = deadline_ms
        waiter.spent = spent
        waiter.seq = next(self._seq)
        heapq.heappush(self._deadlines, (deadline_ms, waiter.seq, waiter))

    def _remove(self, waiter: Waiter) -> None:
        waiter.done = True
        self._count -= 1
        for key in waiter.keys:
            s = self._by_partition.get(key)
            if s is not None:
                s.discard(waiter)
                if not s:
                    del self._by_partition[key]

    def candidates(self, keys: set[tuple[str, int]] | list[tuple[str, int]]) -> list[Waiter]:
        """Waiters watching any of ``keys`` (each once)."""
        if len(keys) == 1:  # a produce to one partition, the usual case
            for key in keys:
                return list(self._by_partition.get(key, ()))
        seen: dict[int, Waiter] = {}
        for key in keys:
            for w in self._by_partition.get(key, ()):
                seen[id(w)] = w
        return list(seen.values())

    def finish(self, waiter: Waiter) -> None:
        if not waiter.done:
            self._remove(waiter)

    def expired(self, now_ms: int) -> list[Waiter]:
        out = []
        while self._deadlines and self._deadlines[0][0] <= now_ms:
            _, seq, w = heapq.heappop(self._deadlines)
            if not w.done and seq == w.seq:
                self._remove(w)
                out.append(w)
        return out

    def all(self) -> list[Waiter]:
        return [w for _, seq, w in self._deadlines if not w.done and seq == w.seq]

    def next_deadline_ms(self) -> int | None:
        while self._deadlines and (self._deadlines[0][2].done or self._deadlines[0][1] != self._deadlines[0][2].seq):
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None
