"""Result types and the ``System`` contract of the benchmark harness.

Why one contract: every system under test (Fabric, a peer, a Fabric cluster later) is one class
in one module of ``systems/`` that starts its servers, runs the shared workload through its best
client and stops what it started.  The harness never knows more about a system than this file
says, so adding one is writing one class and decorating it with ``@register``.

Lifecycle (the harness guarantees it):
    ``start(workdir)`` once, in a fresh temporary directory the harness removes afterwards;
    ``produce(n, value_bytes)`` then ``consume(n)`` (reads back what ``produce`` wrote);
    then ``e2e(rate, seconds, value_bytes)`` on the same servers, into a stream of its own;
    ``stop()`` always, also after a failed ``start`` or on Ctrl-C, and it must be idempotent.
Each measurement runs its client in a child process of its own (fresh memory, fresh GIL, no
harness threads) which prints one JSON object on stdout; see ``procs.run_json``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

MB = 1_000_000  # MB/s in the table are 10^6 bytes of record *values* per second


def latency_summary(samples_ms: list[float]) -> dict[str, float]:
    """Nearest-rank percentiles of ``samples_ms``; ``count`` tells how much p99.9 can mean."""
    if not samples_ms:
        return {"p50": math.nan, "p99": math.nan, "p999": math.nan, "max": math.nan, "count": 0}
    ordered = sorted(samples_ms)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {
        "p50": rank(0.50),
        "p99": rank(0.99),
        "p999": rank(0.999),
        "max": ordered[-1],
        "count": len(ordered),
    }


def latency_from_json(obj: dict[str, Any]) -> dict[str, float]:
    """``latency_ms`` of a client's JSON as ``latency_summary`` has it (``fabric perf`` says
    ``samples`` for ``count``; a missing percentile is NaN)."""
    lat = obj.get("latency_ms") or {}
    return ({k: float(lat.get(k, math.nan)) for k in ("p50", "p99", "p999", "max")}
            | {"count": int(lat.get("count", lat.get("samples", 0)))})


@dataclass(frozen=True, slots=True)
class ProduceResult:
    records: int
    value_bytes: int  # bytes of one record's value
    seconds: float  # first send to last acknowledgement, connection setup excluded
    latency_ms: dict[str, float]  # latency_summary() of one sample per acknowledgement unit

    @property
    def records_per_sec(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else math.nan

    @property
    def mb_per_sec(self) -> float:
        return self.records * self.value_bytes / self.seconds / MB if self.seconds > 0 else math.nan

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"records_per_sec": self.records_per_sec, "mb_per_sec": self.mb_per_sec}

    @classmethod
    def from_json(cls, obj: dict[str, Any], value_bytes: int) -> ProduceResult:
        """Accepts our clients' JSON and ``fabric perf produce --json`` (no ``value_bytes``)."""
        return cls(
            records=int(obj["records"]),
            value_bytes=int(obj.get("value_bytes", value_bytes)),
            seconds=float(obj["seconds"]),
            latency_ms=latency_from_json(obj),
        )


@dataclass(frozen=True, slots=True)
class ConsumeResult:
    records: int
    bytes: int  # value bytes read back
    seconds: float  # first fetch request to last record in hand

    @property
    def records_per_sec(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else math.nan

    @property
    def mb_per_sec(self) -> float:
        return self.bytes / self.seconds / MB if self.seconds > 0 else math.nan

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"records_per_sec": self.records_per_sec, "mb_per_sec": self.mb_per_sec}

    @classmethod
    def from_json(cls, obj: dict[str, Any], value_bytes: int) -> ConsumeResult:
        records = int(obj["records"])
        return cls(
            records=records,
            bytes=int(obj.get("bytes", records * value_bytes)),
            seconds=float(obj["seconds"]),
        )


@dataclass(frozen=True, slots=True)
class E2EResult:
    """End-to-end latency at a fixed rate: each record timed from its send call to its arrival
    at a consumer that was already waiting, producer and consumer in one client process."""

    records: int  # records received (fewer than target_rate × seconds if the system fell behind)
    target_rate: int  # records per second the producer was paced to
    seconds: float  # first send to last record received
    latency_ms: dict[str, float]  # latency_summary() of every record

    @property
    def records_per_sec(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else math.nan

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"records_per_sec": self.records_per_sec}

    @classmethod
    def from_json(cls, obj: dict[str, Any], target_rate: int) -> E2EResult:
        """Accepts our clients' JSON and ``fabric perf e2e --json`` (``samples`` for ``count``)."""
        return cls(
            records=int(obj["records"]),
            target_rate=int(obj.get("target_rate", target_rate)),
            seconds=float(obj["seconds"]),
            latency_ms=latency_from_json(obj),
        )


@dataclass(slots=True)
class SystemResult:
    """One row of the table: what a system did, or the error that stopped it."""

    name: str
    durability: str
    client: str
    latency_unit: str
    reference: bool = False
    produce: ProduceResult | None = None
    consume: ConsumeResult | None = None
    e2e: E2EResult | None = None
    e2e_client: str = ""  # how e2e() sends and receives, for the table's notes
    error: str | None = None
    versions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "durability": self.durability,
            "client": self.client,
            "latency_unit": self.latency_unit,
            "reference": self.reference,
            "produce": self.produce.to_json() if self.produce else None,
            "consume": self.consume.to_json() if self.consume else None,
            "e2e": self.e2e.to_json() if self.e2e else None,
            "e2e_client": self.e2e_client,
            "error": self.error,
            "versions": self.versions,
        }


class System(ABC):
    """A system under test.  Subclasses fill the class attributes and the four methods."""

    name: ClassVar[str]  # the key for --systems
    durability: ClassVar[str]  # the fsync policy, in words, as configured by start()
    client: ClassVar[str]  # the client and how it is used
    latency_unit: ClassVar[str]  # what one produce latency sample measures
    reference: ClassVar[bool] = False  # a reference row (not a peer Fabric is ranked against)
    reference_for: ClassVar[str | None] = None  # run automatically alongside this system
    e2e_client: ClassVar[str] = ""  # how e2e() sends and receives; empty: no e2e test

    @abstractmethod
    def start(self, workdir: Path) -> None:
        """Start the servers on free loopback ports, data under ``workdir``; return when ready."""

    @abstractmethod
    def produce(self, records: int, value_bytes: int) -> ProduceResult:
        """Write ``records`` records of ``value_bytes``-byte values with the system's client."""

    @abstractmethod
    def consume(self, records: int) -> ConsumeResult | None:
        """Read back ``records`` records from the start; ``None`` if the system cannot."""

    def e2e(self, rate: int, seconds: float, value_bytes: int) -> E2EResult | None:
        """Send ``rate`` records a second, one per send call, for ``seconds`` to a consumer already
        waiting at the end of a fresh stream, and time each from send to receipt.  ``None``: the
        system has no such test (a reference row, or a row that would repeat another's)."""
        return None

    @abstractmethod
    def stop(self) -> None:
        """Stop every process ``start`` started (SIGTERM, then SIGKILL), and wait for them."""

    def versions(self) -> dict[str, str]:
        """Server and client versions for the JSON report."""
        return {}


SYSTEMS: dict[str, type[System]] = {}


def register(cls: type[System]) -> type[System]:
    """Class decorator: make ``cls`` selectable by ``--systems``."""
    if cls.name in SYSTEMS:
        raise ValueError(f"system {cls.name!r} registered twice")
    SYSTEMS[cls.name] = cls
    return cls
