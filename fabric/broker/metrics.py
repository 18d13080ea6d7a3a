"""Cheap broker counters for the CLI, the dashboard and benchmarks.

Why plain integers in dicts: they are bumped on the hot path once per request or batch (never
per record), read rarely, and must cost nothing when nobody looks.  Rates are computed by the
reader from two snapshots.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PartitionCounters:
    batches_in: int = 0
    records_in: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass
class Metrics:
    started_ms: int = 0
    requests: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    partitions: dict[tuple[str, int], PartitionCounters] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0
    records_in: int = 0
    follow_on_fetches: int = 0  # fetches with ``follows`` (pipelining, SPEC 5.10)
    follow_on_fetches_chained: int = 0  # ... of which the broker could chain to the fetch they follow
    standing_fetch_answers: int = 0  # replies after which a standing fetch waited again

    def partition(self, topic: str, partition: int) -> PartitionCounters:
        key = (topic, partition)
        c = self.partitions.get(key)
        if c is None:
            c = self.partitions[key] = PartitionCounters()
        return c

    def forget_topic(self, topic: str) -> None:
        for key in [k for k in self.partitions if k[0] == topic]:
            del self.partitions[key]

    def snapshot(self, now_ms: int) -> dict[str, Any]:
        return {
            "now_ms": now_ms,
            "uptime_ms": now_ms - self.started_ms,
            "requests": dict(self.requests),
            "errors": dict(self.errors),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "records_in": self.records_in,
            "follow_on_fetches": self.follow_on_fetches,
            "follow_on_fetches_chained": self.follow_on_fetches_chained,
            "standing_fetch_answers": self.standing_fetch_answers,
            "partitions": [{"topic": t, "partition": p, "batches_in": c.batches_in, "records_in": c.records_in,
                            "bytes_in": c.bytes_in, "bytes_out": c.bytes_out}
                           for (t, p), c in sorted(self.partitions.items())],
        }
