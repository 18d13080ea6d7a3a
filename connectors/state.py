"""Connect's durable state in two compacted Fabric topics: source offsets and statuses.

Why topics and not local files: a worker that dies on one machine is replaced by another (or by a
group member, in distributed mode) that must find the same offsets; and `fabric connect status`
can read what a worker reported even when that worker is gone.  Both are compacted: only the last
value of each key matters.

Offsets topic (``worker.offsets_topic``, default ``connect-offsets``, one partition):
  key   = JSON ``[connector, source_partition]`` with sorted keys (so equal dicts make equal keys)
  value = JSON source offset (``null``: forget it)
Status topic (``worker.status_topic``, default ``connect-status``, one partition):
  key   = ``status-connector-NAME`` or ``status-task-NAME-ID``
  value = JSON ``{"state", "worker", "trace", "ts", "restarts"}``

One partition each because order matters more than parallelism here (a later write wins) and the
traffic is a few records per second.  Both stores are read fully at start (to the high watermark).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from fabric.client import Admin, Consumer, Producer
from fabric.errors import FabricError

log = logging.getLogger("fabric.connect.state")

READ_TIMEOUT_S = 30.0


def ensure_compacted_topic(admin: Admin, topic: str, partitions: int = 1) -> None:
    try:
        admin.create_topic(topic, partitions=partitions, configs={"cleanup_policy": "compact"})
    except FabricError as exc:
        if exc.name != "TOPIC_ALREADY_EXISTS":
            raise


def read_compacted(bootstrap: str, topic: str) -> dict[bytes, bytes | None]:
    """Every key's latest value in ``topic`` (read from the start up to the high watermark)."""
    out: dict[bytes, bytes | None] = {}
    with Admin(bootstrap) as admin:
        ends = {o["partition"]: o["latest"] for o in admin.topic_offsets(topic)}
    with Consumer(bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=100) as c:
        c.assign([(topic, p) for p in ends])
        c.seek_to_beginning()
        left = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + READ_TIMEOUT_S
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end in {READ_TIMEOUT_S:.0f} s")
            for r in c.poll(200):
                if r.key is not None:
                    out[r.key] = r.value
                if r.offset + 1 >= ends[r.partition]:
                    left.discard(r.partition)
    return out


def offset_key(connector: str, source_partition: dict[str, Any]) -> bytes:
    return json.dumps([connector, source_partition], sort_keys=True, separators=(",", ":")).encode()


class OffsetStore:
    """Committed source offsets: read once at start, written by source tasks after their records
    were acknowledged.  Thread-safe (tasks of several connectors share one store)."""

    def __init__(self, bootstrap: str, topic: str, producer: Producer) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.producer = producer
        self._lock = threading.Lock()
        self._offsets: dict[bytes, Any] = {}

    def load(self) -> None:
        with Admin(self.bootstrap) as admin:
            ensure_compacted_topic(admin, self.topic)
        raw = read_compacted(self.bootstrap, self.topic)
        with self._lock:
            self._offsets = {k: json.loads(v) for k, v in raw.items() if v is not None}
        log.info("loaded %d source offsets from %s", len(self._offsets), self.topic)

    def get(self, connector: str, source_partition: dict[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            return self._offsets.get(offset_key(connector, source_partition))

    def commit(self, connector: str, offsets: dict[bytes, Any], timeout: float = 30.0) -> None:
        """Write ``offsets`` (keyed by ``offset_key``) and wait for the broker's acknowledgement."""
        if not offsets:
            return
        futures = [self.producer.send(self.topic, json.dumps(v, separators=(",", ":"), default=str).encode(), key=k,
                                      partition=0) for k, v in offsets.items()]
        for f in futures:
            f.result(timeout)
        with self._lock:
            self._offsets.update(offsets)


STATES = ("UNASSIGNED", "RUNNING", "PAUSED", "FAILED", "RESTARTING", "STOPPED")


class StatusStore:
    """Connector and task states: written to the status topic (best effort: a status write that
    fails is logged, it must not fail a task) and kept in memory for the control API."""

    def __init__(self, topic: str, producer: Producer, worker_id: str) -> None:
        self.topic = topic
        self.producer = producer
        self.worker_id = worker_id
        self._lock = threading.Lock()
        self._states: dict[str, dict[str, Any]] = {}

    def put(self, key: str, state: str, trace: str | None = None, **extra: Any) -> None:
        assert state in STATES, state
        value = {"state": state, "worker": self.worker_id, "trace": trace, "ts": int(time.time() * 1000), **extra}
        with self._lock:
            self._states[key] = value
        try:
            self.producer.send(self.topic, json.dumps(value).encode(), key=key.encode(), partition=0)
        except Exception:  # noqa: BLE001 - status is advisory
            log.exception("could not write status of %s", key)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._states.get(key)

    @staticmethod
    def connector_key(name: str) -> str:
        return f"status-connector-{name}"

    @staticmethod
    def task_key(name: str, task_id: int) -> str:
        return f"status-task-{name}-{task_id}"
