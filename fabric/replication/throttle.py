"""``FetchThrottle``: the replication throttle of a replica copying a partition it is being
reassigned to, sans-I/O (Kafka's ``leader/follower.replication.throttled.rate``).

Why on the follower: the replica joining by reassignment is the one that would otherwise pull a
whole log as fast as the leader can read it, starving the leader's disk and network for the
producers and consumers that keep working during the move; it alone knows it is catching up (it is
in the partition's ``adding`` set).  Throttling its own fetches needs no coordination: the leader
serves it as any follower.

Rules:
1. ``rate`` is bytes per second; 0 means unlimited (and then nothing below applies).
2. A fetch asks for at most ``rate / 20`` bytes (at least 1: the leader always sends one whole
   batch), so a throttled replica fetches about twenty times a second in small steps: a few large
   reads and appends a second showed as latency spikes for the producers of the same brokers.
3. After a reply carrying ``n`` bytes, the next fetch waits until ``n / rate`` seconds after the
   later of the time that fetch was sent and the previous wait's end: the average rate never
   exceeds ``rate``, and the round trip is part of the wait rather than added to it.
"""

from __future__ import annotations

__all__ = ["FetchThrottle"]

FETCHES_PER_S = 20  # rule 2


class FetchThrottle:
    def __init__(self, rate: int = 0) -> None:
        self.rate = rate
        self._until_ms = 0.0

    def max_bytes(self, default: int) -> int:
        """Rule 2."""
        return default if self.rate <= 0 else max(1, min(default, self.rate // FETCHES_PER_S))

    def spent(self, nbytes: int, now_ms: int) -> None:
        """Rule 3."""
        if self.rate > 0 and nbytes > 0:
            self._until_ms = max(self._until_ms, float(now_ms)) + nbytes * 1000.0 / self.rate

    def ready(self, now_ms: int) -> bool:
        return self.rate <= 0 or now_ms >= self._until_ms

    @property
    def until_ms(self) -> float:
        return self._until_ms
