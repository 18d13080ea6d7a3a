"""Key -> partition, compatible with Kafka's Java client.

Why murmur2 and not something faster: a user moving from Kafka (or sharing a topic with a Java
producer) must see the same key land in the same partition, so we use exactly Kafka's
``Utils.murmur2`` (seed 0x9747b28c) and ``toPositive(h) % partitions``.  Pure Python costs ~2 µs a
key; ``KeyPartitioner`` caches results because real workloads repeat keys.
"""

from __future__ import annotations

import random

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 as a signed 32-bit int (the Java ``int`` result)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    n4 = length & ~3
    for i in range(0, n4, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    extra = length & 3
    if extra == 3:
        h ^= data[n4 + 2] << 16
    if extra >= 2:
        h ^= data[n4 + 1] << 8
    if extra >= 1:
        h ^= data[n4]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_key(key: bytes, partitions: int) -> int:
    """``toPositive(murmur2(key)) % partitions`` exactly as Kafka's default partitioner."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class KeyPartitioner:
    """Keyed records: murmur2 with a bounded cache.  Null keys: sticky (one partition until the
    producer finishes a batch there, then another), which makes fuller batches than round-robin
    (KIP-480)."""

    def __init__(self, cache_max: int = 100_000, rng: random.Random | None = None) -> None:
        self._cache: dict[tuple[bytes, int], int] = {}
        self._cache_max = cache_max
        self._rng = rng or random.Random()
        self._sticky: dict[str, int] = {}

    def partition(self, topic: str, key: bytes | None, partitions: int) -> int:
        if key is None:
            p = self._sticky.get(topic)
            if p is None or p >= partitions:
                p = self._sticky[topic] = self._rng.randrange(partitions)
            return p
        ck = (key, partitions)
        p = self._cache.get(ck)
        if p is None:
            if len(self._cache) >= self._cache_max:
                self._cache.clear()
            p = self._cache[ck] = partition_for_key(key, partitions)
        return p

    def batch_done(self, topic: str, partition: int, partitions: int) -> None:
        """Called when a batch for ``topic`` closes: move the sticky partition elsewhere."""
        if self._sticky.get(topic) == partition and partitions > 1:
            nxt = self._rng.randrange(partitions - 1)
            self._sticky[topic] = nxt + 1 if nxt >= partition else nxt
