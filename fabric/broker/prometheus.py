"""Prometheus text exposition of the ``stats`` reply, served on an optional HTTP port.

Why the same numbers as ``stats``: one source of truth; a metric here is a field there, renamed
to Prometheus conventions (``fabric_`` prefix, ``_total`` for counters, base units: seconds and
bytes).  ``render`` is a pure function of a ``stats`` reply.

Threads: the HTTP server runs on its own thread (``metrics_port``, off by default) and never
touches broker state.  It asks the event loop for a snapshot through a ``StatsExchange``; the loop
answers between two turns (within ``TICK_MS``), so a scrape costs the loop one ``stats`` build
every scrape interval and nothing otherwise (one attribute check per turn).
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable

log = logging.getLogger("fabric.broker.prometheus")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SCRAPE_TIMEOUT_S = 5.0
# Bucket edges (seconds) of the exported latency histograms: Prometheus wants the same ``le`` set
# on every scrape, so the broker's log buckets are folded into these.
LATENCY_EDGES_S = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5, 5.0, 10.0)


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: Any) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self._declared: set[str] = set()

    def metric(self, name: str, kind: str, help_text: str, value: float | int,
               **labels: Any) -> None:
        if name not in self._declared:
            self._declared.add(name)
            self.lines.append(f"# HELP {name} {help_text}")
            self.lines.append(f"# TYPE {name} {kind}")
        self.lines.append(f"{name}{_labels(**labels)} {value}")

    def histogram(self, name: str, help_text: str, latency_us: dict[str, Any], **labels: Any) -> None:
        """A latency summary with ``buckets`` (µs, log buckets) as a Prometheus histogram (s)."""
        if name not in self._declared:
            self._declared.add(name)
            self.lines.append(f"# HELP {name} {help_text}")
            self.lines.append(f"# TYPE {name} histogram")
        buckets = latency_us.get("buckets") or []
        for edge in LATENCY_EDGES_S:
            # A log bucket counts below an edge when its lower bound is: at most 12.5% early.
            below = sum(n for lower, n in buckets if lower <= edge * 1_000_000)
            self.lines.append(f"{name}_bucket{_labels(**labels, le=repr(edge))} {below}")
        self.lines.append(f"{name}_bucket{_labels(**labels, le='+Inf')} {latency_us['count']}")
        self.lines.append(f"{name}_sum{_labels(**labels)} {latency_us['sum'] / 1_000_000}")
        self.lines.append(f"{name}_count{_labels(**labels)} {latency_us['count']}")


def render(stats: dict[str, Any]) -> str:
    """A ``stats`` reply (requested with ``histograms: true``) in Prometheus text format 0.0.4."""
    w = _Writer()
    b = stats["broker"]
    w.metric("fabric_broker_info", "gauge", "Constant 1, labelled with the broker's identity.", 1,
             node_id=b["node_id"], cluster_id=b["cluster_id"], version=b["version"])
    w.metric("fabric_broker_uptime_seconds", "gauge", "Seconds since the broker started.", b["uptime_ms"] / 1000)
    w.metric("fabric_connections", "gauge", "Client connections open now.", stats["connections"]["open"])
    w.metric("fabric_connections_refused_total", "counter",
             "Connections closed at accept because connections_max were open.", stats["connections"]["refused"])
    w.metric("fabric_parked_fetches", "gauge", "Long-polling fetches waiting now.", stats["parked"]["fetches"])
    t = stats["totals"]
    for key, help_text in (("records_in", "Records appended."), ("bytes_in", "Bytes of batches appended."),
                           ("records_out", "Records sent by fetch."), ("bytes_out", "Bytes sent by fetch.")):
        w.metric(f"fabric_{key}_total", "counter", help_text, t[key])
    for op in stats["operations"]:
        w.metric("fabric_requests_total", "counter", "Requests read, per operation.", op["requests"], op=op["op"])
    for op in stats["operations"]:
        w.histogram("fabric_request_duration_seconds", "Time each request's handler ran.", op["latency_us"],
                    op=op["op"])
    for name, count in stats["errors"].items():
        w.metric("fabric_errors_total", "counter", "Error replies, per error name.", count, error=name)
    f = stats["fsync"]
    w.metric("fabric_fsync_failures_total", "counter", "fsyncs that failed.", f["failures"])
    w.histogram("fabric_fsync_duration_seconds", "Duration of each fsync of a partition log.", f["latency_us"])
    for p in stats["partitions"] or []:
        lab = {"topic": p["topic"], "partition": p["partition"]}
        for key, kind, help_text in (
                ("records_in", "counter", "Records appended to the partition."),
                ("bytes_in", "counter", "Bytes appended to the partition."),
                ("records_out", "counter", "Records fetched from the partition."),
                ("bytes_out", "counter", "Bytes fetched from the partition.")):
            w.metric(f"fabric_partition_{key}_total", kind, help_text, p[key], **lab)
        for key, help_text in (("log_start_offset", "First offset still stored."),
                               ("log_end_offset", "Offset the next record gets."),
                               ("high_watermark", "Offset readers may read up to."),
                               ("size_bytes", "Bytes on disk."), ("segments", "Segment files.")):
            w.metric(f"fabric_partition_{key}", "gauge", help_text, p[key], **lab)
        w.metric("fabric_partition_in_sync_replicas", "gauge", "Replicas in the ISR.", len(p["isr"]), **lab)
    for g in stats["groups"] or []:
        w.metric("fabric_group_members", "gauge", "Members of the consumer group.", g["members"],
                 group=g["group_id"], state=g["state"])
        for p in g["partitions"]:
            lab = {"group": g["group_id"], "topic": p["topic"], "partition": p["partition"]}
            w.metric("fabric_group_lag_records", "gauge", "Records behind the log end.", p["lag"], **lab)
            w.metric("fabric_group_lag_seconds", "gauge", "Age of the oldest unconsumed record.",
                     p["lag_ms"] / 1000, **lab)
            w.metric("fabric_group_committed_offset", "gauge", "Committed offset.", p["committed_offset"], **lab)
    return "\n".join(w.lines) + "\n"


class StatsExchange:
    """Hands ``stats`` snapshots from the event loop to other threads.

    ``ask`` (any thread) registers a wish and waits; the loop calls ``answer`` when ``pending``,
    building one snapshot for every waiter.  The loop never blocks here."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[tuple[threading.Event, list[dict[str, Any]]]] = []

    @property
    def pending(self) -> bool:
        return bool(self._waiting)

    def ask(self, timeout_s: float) -> dict[str, Any] | None:
        done, box = threading.Event(), []
        with self._lock:
            self._waiting.append((done, box))
        done.wait(timeout_s)
        return box[0] if box else None

    def answer(self, build: Callable[[], dict[str, Any]]) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, []
        if not waiting:
            return
        try:
            snapshot = build()
        except Exception:
            log.exception("building stats for the metrics endpoint")
            snapshot = None
        for done, box in waiting:
            if snapshot is not None:
                box.append(snapshot)
            done.set()


class MetricsEndpoint:
    """``GET /metrics`` on ``host:port`` in a daemon thread; anything else is 404."""

    def __init__(self, host: str, port: int, exchange: StatsExchange) -> None:
        exchange_ = exchange

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics is served here")
                    return
                snapshot = exchange_.ask(SCRAPE_TIMEOUT_S)
                if snapshot is None:
                    self.send_error(503, "the broker did not answer in time")
                    return
                body = render(snapshot).encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: Iterable[Any]) -> None:
                log.debug("metrics endpoint: " + fmt, *args)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="fabric-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
