"""The ``stats`` operation's reply (SPEC 5.14): what an operator watches, in one map.

Why one operation for everything: the dashboard, the Prometheus exporter and scripts in any
language read the same numbers the same way, and a new panel needs no new operation.  Counters
are cumulative since the broker started (rates are the reader's job, from two replies); gauges
(log ends, sizes, lag) are read when the request is handled.  Nothing here runs per record: the
counters are bumped per request or batch (``metrics.py``), and lag in seconds costs one 61-byte
header read per lagging partition, only when someone asks.

Built from explicit inputs (metrics, topics, group overview, connection counts), no sockets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from ..log.errors import LogError
from ..protocol.errors import FabricError
from ..protocol.messages import StatsRequest
from .histogram import Histogram
from .metrics import Metrics
from .topics import TopicManager

if TYPE_CHECKING:
    from .leadership import Leadership


_EMPTY = Histogram()  # an operation whose first request is the one being answered


def operations_section(metrics: Metrics, histograms: bool) -> list[dict[str, Any]]:
    """Per operation: requests read and the handler's latency (µs): a summary, plus the
    non-empty log buckets when ``histograms`` (for exporters that keep distributions)."""
    out = []
    for op in sorted(metrics.requests):
        h = metrics.latency.get(op) or _EMPTY
        latency: dict[str, Any] = h.summary()
        if histograms:
            latency["buckets"] = h.buckets()
        out.append({"op": op, "requests": metrics.requests[op], "latency_us": latency})
    return out


def partitions_section(metrics: Metrics, topics: TopicManager, leadership: "Leadership",
                       wanted: set[str] | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(per-topic totals, per-partition rows), topics sorted by name, partitions by index."""
    topic_rows: list[dict[str, Any]] = []
    partition_rows: list[dict[str, Any]] = []
    for name in sorted(topics.topics):
        if wanted is not None and name not in wanted:
            continue
        topic = topics.topics[name]
        totals = {"records_in": 0, "bytes_in": 0, "records_out": 0, "bytes_out": 0, "size_bytes": 0}
        for p, plog in enumerate(topic.partitions):
            c = metrics.partitions.get((name, p))
            try:
                if plog is None:  # a replica held by other brokers only: no local figures
                    raise FabricError("NOT_LEADER", "not held here")
                start, end, size, segments = plog.start_offset, plog.end_offset, plog.size_bytes, plog.segment_count
                meta = leadership.partition_meta(name, p)
                hw = leadership.high_watermark(name, p)
            except (FabricError, LogError):  # closed under us (topic being deleted): report what is known
                start = end = size = segments = hw = 0
                meta = {"leader": -1, "leader_epoch": -1, "replicas": [], "isr": []}
            row = {"topic": name, "partition": p, "leader": meta["leader"], "leader_epoch": meta["leader_epoch"],
                   "replicas": meta["replicas"], "isr": meta["isr"], "log_start_offset": start,
                   "log_end_offset": end, "high_watermark": hw,
                   "size_bytes": size, "segments": segments,
                   "batches_in": c.batches_in if c else 0, "records_in": c.records_in if c else 0,
                   "bytes_in": c.bytes_in if c else 0, "records_out": c.records_out if c else 0,
                   "bytes_out": c.bytes_out if c else 0}
            for k in totals:
                totals[k] += row[k]
            partition_rows.append(row)
        topic_rows.append({"name": name, "internal": topic.internal, "partitions": len(topic.partitions),
                           **totals})
    return topic_rows, partition_rows


def groups_section(overview: Iterable[dict[str, Any]], topics: TopicManager, now_ms: int,
                   wanted: set[str] | None) -> list[dict[str, Any]]:
    """Per group: state, members and lag per committed partition, in records and in ms.

    Lag in records is the log end minus the committed offset; lag in ms is how long ago the
    oldest unconsumed record was written (its batch's first timestamp), 0 when caught up.
    """
    out = []
    for g in overview:
        rows = []
        lag_total = 0
        lag_ms_max = 0
        for o in g["offsets"]:
            if wanted is not None and o["topic"] not in wanted:
                continue
            committed = o["offset"]
            try:
                plog = topics.partition(o["topic"], o["partition"])
                end = plog.end_offset
                lag = max(0, end - max(committed, plog.start_offset)) if committed >= 0 else end - plog.start_offset
                ts = plog.timestamp_at(max(committed, plog.start_offset)) if lag > 0 else None
            except (FabricError, LogError):
                continue  # the topic went away: nothing to lag behind
            lag_ms = max(0, now_ms - ts) if ts is not None and ts >= 0 else 0
            lag_total += lag
            lag_ms_max = max(lag_ms_max, lag_ms)
            rows.append({"topic": o["topic"], "partition": o["partition"], "committed_offset": committed,
                         "log_end_offset": end, "lag": lag, "lag_ms": lag_ms})
        out.append({"group_id": g["group_id"], "state": g["state"], "protocol": g["protocol"],
                    "generation": g["generation"], "members": g["members"], "lag": lag_total,
                    "lag_ms": lag_ms_max, "partitions": rows})
    return out


def build(req: StatsRequest, *, metrics: Metrics, topics: TopicManager, leadership: "Leadership", group_overview: Iterable[dict[str, Any]],
          node_id: int, cluster_id: str, version: str, connections_open: int, connections_refused: int,
          parked_fetches: int, parked_group_requests: int, now_ms: int) -> dict[str, Any]:
    """The whole ``stats`` reply body."""
    wanted = None if req.topics is None else set(req.topics)
    topic_rows, partition_rows = partitions_section(metrics, topics, leadership, wanted)
    return {
        "broker": {"node_id": node_id, "cluster_id": cluster_id, "version": version, "now_ms": now_ms,
                   "uptime_ms": now_ms - metrics.started_ms},
        "connections": {"open": connections_open, "refused": connections_refused},
        "parked": {"fetches": parked_fetches, "group_requests": parked_group_requests},
        "totals": {"records_in": metrics.records_in, "bytes_in": metrics.bytes_in,
                   "records_out": metrics.records_out, "bytes_out": metrics.bytes_out,
                   "requests": sum(metrics.requests.values()), "errors": sum(metrics.errors.values())},
        "operations": operations_section(metrics, req.histograms),
        "errors": dict(sorted(metrics.errors.items())),
        "fsync": metrics.fsync.to_wire(req.histograms),
        "topics": topic_rows,
        "partitions": partition_rows if req.partitions else None,
        "groups": groups_section(group_overview, topics, now_ms, wanted) if req.groups else None,
        "cluster": None,  # a single node: no controller, no replication (SPEC 5.14)
    }
