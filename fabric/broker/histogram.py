"""A latency histogram with logarithmic buckets (HDR-style), cheap enough for every request.

Why log buckets: a request takes from a few microseconds to many seconds (a long poll), and what
an operator reads is p50 / p99 / p99.9, each to a few percent.  Buckets that double in width, each
split into ``SUB_BUCKETS`` equal parts, give a relative error under 1/``SUB_BUCKETS`` (12.5%) at
every scale with a fixed, small array: ``observe`` is one ``bit_length``, a shift and an index,
no allocation.  Values are integers (microseconds for latencies); the wire form lists only the
non-empty buckets so that any language can merge or re-compute percentiles from them.

Bucket ``i`` covers ``[lower(i), lower(i + 1))``.  Values below ``SUB_BUCKETS`` get a bucket each
(exact); above, the value's top ``SUB_BITS + 1`` bits choose the bucket.  SPEC.md (``stats``)
describes the same layout.
"""

from __future__ import annotations

SUB_BITS = 3
SUB_BUCKETS = 1 << SUB_BITS  # 8 buckets per power of two: < 12.5% error
MAX_BITS = 40  # values up to 2^40 µs (12 days); larger ones land in the last bucket
BUCKETS = (MAX_BITS - SUB_BITS + 1) * SUB_BUCKETS


def bucket_of(value: int) -> int:
    """The bucket index of a non-negative integer."""
    if value < SUB_BUCKETS:
        return max(value, 0)
    shift = value.bit_length() - SUB_BITS - 1
    index = (shift + 1) * SUB_BUCKETS + ((value >> shift) - SUB_BUCKETS)
    return index if index < BUCKETS else BUCKETS - 1


def lower_bound(index: int) -> int:
    """The smallest value that falls into bucket ``index``."""
    if index < SUB_BUCKETS:
        return index
    shift = index // SUB_BUCKETS - 1
    return (SUB_BUCKETS + index % SUB_BUCKETS) << shift


class Histogram:
    """Counts of integer observations in log buckets, with the exact count, sum and maximum."""

    __slots__ = ("counts", "count", "total", "max")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.count = 0
        self.total = 0
        self.max = 0

    def observe(self, value: int) -> None:
        self.counts[bucket_of(value)] += 1
        self.count += 1
        self.total += value
        if value > self.max:
            self.max = value

    def percentile(self, q: float) -> int:
        """The value at quantile ``q`` (0..1): the upper edge of the bucket holding it, never
        more than the largest value seen (nearest rank, so p100 is the maximum)."""
        if self.count == 0:
            return 0
        rank = max(1, -(-int(q * self.count * 1_000_000) // 1_000_000))  # ceil without float drift
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(lower_bound(i + 1) - 1, self.max)
        return self.max

    def summary(self) -> dict[str, int]:
        """Count, sum, max and the three percentiles operators read."""
        return {"count": self.count, "sum": self.total, "max": self.max, "p50": self.percentile(0.50),
                "p99": self.percentile(0.99), "p999": self.percentile(0.999)}

    def buckets(self) -> list[list[int]]:
        """The non-empty buckets as ``[lower bound, count]`` pairs, ascending."""
        return [[lower_bound(i), n] for i, n in enumerate(self.counts) if n]
