"""What the dashboard shows, computed from successive ``stats`` replies: no sockets, no terminal.

Why a model apart from the views: rates, trends and health are arithmetic on two or more
snapshots, and that arithmetic is what must be right (tested with hand-made snapshots); the views
only lay it out.  Every rate is a difference of two cumulative counters divided by the difference
of the broker's own clocks (``broker.now_ms``), so a slow or late poll never inflates a rate.
A counter that goes down means the broker restarted: the rate is then unknown (shown as 0), not
negative.

Health, from the numbers alone:
- a broker that does not answer is DOWN (red); one answering errors faster than 1/s is WARN;
- a group is WARN while it rebalances or its lag grows over the window, BAD when it has lag and
  no members (nobody is consuming);
- a partition is BAD when it has no leader or fewer in-sync replicas than replicas (cluster).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable

HISTORY = 120  # snapshots kept (two minutes at 1 Hz): the sparklines and trends


class Health(Enum):
    OK = "ok"
    WARN = "warn"
    BAD = "bad"
    DOWN = "down"


@dataclass(frozen=True)
class Sample:
    """One ``stats`` reply, as received."""

    stats: dict[str, Any]

    @property
    def now_ms(self) -> int:
        return int(self.stats["broker"]["now_ms"])


def _rate(new: int, old: int, seconds: float) -> float:
    if seconds <= 0 or new < old:
        return 0.0
    return (new - old) / seconds


@dataclass
class TopicRow:
    name: str
    internal: bool
    partitions: int
    size_bytes: int
    records_in_rate: float
    bytes_in_rate: float
    records_out_rate: float
    bytes_out_rate: float
    records_in: int
    lag: int  # the largest lag of one group on this topic, over its partitions
    health: Health


@dataclass
class PartitionRow:
    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]
    log_start_offset: int
    log_end_offset: int
    high_watermark: int
    size_bytes: int
    segments: int
    records_in_rate: float
    records_out_rate: float
    health: Health


@dataclass
class GroupPartitionRow:
    topic: str
    partition: int
    committed_offset: int
    log_end_offset: int
    lag: int
    lag_ms: int
    trend: list[int]  # lag over the history window, oldest first


@dataclass
class GroupRow:
    group_id: str
    state: str
    protocol: str | None
    generation: int
    members: int
    lag: int
    lag_ms: int
    lag_trend: list[int]
    consume_rate: float  # committed offsets advanced per second over the window
    health: Health
    partitions: list[GroupPartitionRow] = field(default_factory=list)


@dataclass
class OperationRow:
    op: str
    rate: float
    p50_us: int
    p99_us: int
    p999_us: int


class Model:
    """Snapshots in, rows out.  ``observe`` a reply (or ``broker_down``); read the properties."""

    def __init__(self, history: int = HISTORY) -> None:
        self.samples: deque[Sample] = deque(maxlen=history)
        self.down_since_ms: int | None = None
        self.last_error: str = ""

    # ------------------------------------------------------------------ input
    def observe(self, stats: dict[str, Any]) -> None:
        if self.samples and stats["broker"]["now_ms"] <= self.samples[-1].now_ms:
            return  # the same or an older snapshot (a clock step back): keep the series monotonic
        if self.samples and stats["broker"]["uptime_ms"] < self.samples[-1].stats["broker"]["uptime_ms"]:
            self.samples.clear()  # the broker restarted: counters began again
        self.samples.append(Sample(stats))
        self.down_since_ms = None
        self.last_error = ""

    def broker_down(self, now_ms: int, error: str) -> None:
        if self.down_since_ms is None:
            self.down_since_ms = now_ms
        self.last_error = error

    # ------------------------------------------------------------------ broker
    @property
    def latest(self) -> dict[str, Any] | None:
        return self.samples[-1].stats if self.samples else None

    @property
    def health(self) -> Health:
        if self.down_since_ms is not None or not self.samples:
            return Health.DOWN
        return Health.WARN if self.error_rate() > 1.0 else Health.OK

    def _pair(self) -> tuple[Sample, Sample, float] | None:
        """The two newest samples and the seconds between them."""
        if len(self.samples) < 2:
            return None
        old, new = self.samples[-2], self.samples[-1]
        return old, new, (new.now_ms - old.now_ms) / 1000

    def total_rate(self, key: str) -> float:
        pair = self._pair()
        if pair is None:
            return 0.0
        old, new, dt = pair
        return _rate(new.stats["totals"][key], old.stats["totals"][key], dt)

    def error_rate(self) -> float:
        return self.total_rate("errors")

    def total_series(self, key: str) -> list[float]:
        """The rate of a ``totals`` counter between each two consecutive samples, oldest first."""
        s = list(self.samples)
        return [_rate(b.stats["totals"][key], a.stats["totals"][key], (b.now_ms - a.now_ms) / 1000)
                for a, b in zip(s, s[1:])]

    def operations(self) -> list[OperationRow]:
        latest = self.latest
        if latest is None:
            return []
        pair = self._pair()
        before = {o["op"]: o["requests"] for o in pair[0].stats["operations"]} if pair else {}
        rows = []
        for o in latest["operations"]:
            rate = _rate(o["requests"], before.get(o["op"], o["requests"]), pair[2]) if pair else 0.0
            lat = o["latency_us"]
            rows.append(OperationRow(o["op"], rate, lat["p50"], lat["p99"], lat["p999"]))
        return rows

    # ------------------------------------------------------------------ topics and partitions
    def _partition_index(self, sample: Sample) -> dict[tuple[str, int], dict[str, Any]]:
        return {(p["topic"], p["partition"]): p for p in sample.stats.get("partitions") or []}

    def topics(self, *, internal: bool = False, name_filter: str = "") -> list[TopicRow]:
        latest = self.latest
        if latest is None:
            return []
        pair = self._pair()
        old_topics = {t["name"]: t for t in pair[0].stats["topics"]} if pair else {}
        dt = pair[2] if pair else 0.0
        lag_by_topic: dict[str, int] = {}  # the largest lag of one group on the topic
        for g in latest.get("groups") or []:
            per_topic: dict[str, int] = {}
            for p in g["partitions"]:
                per_topic[p["topic"]] = per_topic.get(p["topic"], 0) + p["lag"]
            for topic, lag in per_topic.items():
                lag_by_topic[topic] = max(lag_by_topic.get(topic, 0), lag)
        bad = {p["topic"] for p in latest.get("partitions") or [] if _partition_health(p) is Health.BAD}
        rows = []
        for t in latest["topics"]:
            if (t["internal"] and not internal) or name_filter.lower() not in t["name"].lower():
                continue
            o = old_topics.get(t["name"], t)
            rows.append(TopicRow(
                t["name"], t["internal"], t["partitions"], t["size_bytes"],
                _rate(t["records_in"], o["records_in"], dt), _rate(t["bytes_in"], o["bytes_in"], dt),
                _rate(t["records_out"], o["records_out"], dt), _rate(t["bytes_out"], o["bytes_out"], dt),
                t["records_in"], lag_by_topic.get(t["name"], 0), Health.BAD if t["name"] in bad else Health.OK))
        return rows

    def partitions(self, topic: str) -> list[PartitionRow]:
        latest = self.latest
        if latest is None:
            return []
        pair = self._pair()
        old = self._partition_index(pair[0]) if pair else {}
        dt = pair[2] if pair else 0.0
        rows = []
        for p in latest.get("partitions") or []:
            if p["topic"] != topic:
                continue
            o = old.get((topic, p["partition"]), p)
            rows.append(PartitionRow(
                p["partition"], p["leader"], list(p["replicas"]), list(p["isr"]), p["log_start_offset"],
                p["log_end_offset"], p["high_watermark"], p["size_bytes"], p["segments"],
                _rate(p["records_in"], o["records_in"], dt), _rate(p["records_out"], o["records_out"], dt),
                _partition_health(p)))
        return rows

    def partition_counts(self) -> dict[str, int]:
        """Partitions by health, over the whole broker (for the overview)."""
        latest = self.latest or {}
        counts = {"total": 0, "under_replicated": 0, "offline": 0}
        for p in latest.get("partitions") or []:
            counts["total"] += 1
            if p["leader"] < 0:
                counts["offline"] += 1
            elif len(p["isr"]) < len(p["replicas"]):
                counts["under_replicated"] += 1
        return counts

    # ------------------------------------------------------------------ groups
    def groups(self, name_filter: str = "") -> list[GroupRow]:
        latest = self.latest
        if latest is None:
            return []
        history = [s.stats.get("groups") or [] for s in self.samples]
        first = self.samples[0]
        window = (self.samples[-1].now_ms - first.now_ms) / 1000
        rows = []
        for g in latest.get("groups") or []:
            gid = g["group_id"]
            if name_filter.lower() not in gid.lower():
                continue
            past = [next((x for x in snap if x["group_id"] == gid), None) for snap in history]
            lag_trend = [x["lag"] for x in past if x is not None]
            committed_then = sum(p["committed_offset"] for p in (past[0] or {}).get("partitions", [])
                                 if p["committed_offset"] >= 0) if past and past[0] else 0
            committed_now = sum(p["committed_offset"] for p in g["partitions"] if p["committed_offset"] >= 0)
            consume_rate = _rate(committed_now, committed_then, window) if past and past[0] else 0.0
            parts = []
            for p in g["partitions"]:
                key = (p["topic"], p["partition"])
                trend = []
                for x in past:
                    if x is None:
                        continue
                    hit = next((q for q in x["partitions"] if (q["topic"], q["partition"]) == key), None)
                    if hit is not None:
                        trend.append(hit["lag"])
                parts.append(GroupPartitionRow(p["topic"], p["partition"], p["committed_offset"],
                                               p["log_end_offset"], p["lag"], p["lag_ms"], trend))
            rows.append(GroupRow(gid, g["state"], g["protocol"], g["generation"], g["members"], g["lag"],
                                 g["lag_ms"], lag_trend, consume_rate, _group_health(g, lag_trend), parts))
        return rows

    def group(self, group_id: str) -> GroupRow | None:
        return next((g for g in self.groups() if g.group_id == group_id), None)


def _partition_health(p: dict[str, Any]) -> Health:
    if p["leader"] < 0 or len(p["isr"]) < len(p["replicas"]):
        return Health.BAD
    return Health.OK


def _group_health(g: dict[str, Any], lag_trend: list[int]) -> Health:
    if g["lag"] > 0 and g["members"] == 0:
        return Health.BAD
    if g["state"] in ("PREPARING_REBALANCE", "COMPLETING_REBALANCE"):
        return Health.WARN
    if len(lag_trend) >= 3 and lag_trend[-1] > lag_trend[0] and g["lag"] > 0:
        return Health.WARN  # falling behind over the window
    return Health.OK


def sparkline(values: Iterable[float], width: int) -> str:
    """Unicode block sparkline of the last ``width`` values, scaled to their maximum."""
    blocks = " ▁▂▃▄▅▆▇█"
    vals = list(values)[-width:]
    if not vals:
        return ""
    top = max(vals)
    if top <= 0:
        return blocks[1] * len(vals)
    return "".join(blocks[max(1, min(8, round(v / top * 8)))] for v in vals)
