"""Cheap broker counters for the CLI, the dashboard, Prometheus and benchmarks.

Why plain integers in dicts: they are bumped on the hot path once per request or batch (never
per record), read rarely, and must cost nothing when nobody looks.  Rates are computed by the
reader from two snapshots.  Latencies go into log-bucket histograms (``histogram.py``): one
``observe`` per request, no allocation.

Threads: everything here is written by the loop thread only, except ``fsync``, which the flusher
thread writes too; it has its own lock (an fsync costs milliseconds, the lock nanoseconds).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from .histogram import Histogram


@dataclass
class PartitionCounters:
    batches_in: int = 0
    records_in: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    records_out: int = 0
    fetches: int = 0  # fetch replies that carried data of this partition


class FsyncStats:
    """fsync count, failures and latency (µs), from the loop and the flusher thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latency = Histogram()
        self.failures = 0

    def observe(self, micros: int) -> None:
        with self._lock:
            self.latency.observe(micros)

    def failed(self) -> None:
        with self._lock:
            self.failures += 1

    def to_wire(self, histograms: bool = False) -> dict[str, Any]:
        with self._lock:
            latency: dict[str, Any] = self.latency.summary()
            if histograms:
                latency["buckets"] = self.latency.buckets()
            return {"failures": self.failures, "latency_us": latency}


@dataclass
class Metrics:
    started_ms: int = 0
    requests: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    partitions: dict[tuple[str, int], PartitionCounters] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0
    records_in: int = 0
    duplicates: int = 0  # idempotent batches answered with their original offsets, not appended
    follow_on_fetches: int = 0  # fetches with ``follows`` (pipelining, SPEC 5.10)
    follow_on_fetches_chained: int = 0  # ... of which the broker could chain to the fetch they follow
    standing_fetch_answers: int = 0  # replies after which a standing fetch waited again
    records_out: int = 0
    latency: dict[str, Histogram] = field(default_factory=dict)  # per operation, µs in the handler
    fsync: FsyncStats = field(default_factory=FsyncStats)

    def observe_request(self, op: str, micros: int) -> None:
        h = self.latency.get(op)
        if h is None:
            h = self.latency[op] = Histogram()
        h.observe(micros)

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
