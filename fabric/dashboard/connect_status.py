"""Connector and task states for the dashboard's Connect view, read from Connect's status topic.

Why the topic and not a worker's REST port: the dashboard is pointed at a broker, not at a worker,
and every worker (standalone or in a group) writes its states there (``connectors/state.py``:
keys ``status-connector-NAME`` and ``status-task-NAME-ID``, JSON values with ``state``, ``worker``,
``trace``, ``ts``).  The topic is compacted; the reader keeps the latest value per key and reads
only what is new at each poll.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..client.consumer import Consumer
from ..client.connection import ClientError
from ..protocol.errors import FabricError

log = logging.getLogger("fabric.dashboard")

STATUS_TOPIC = "connect-status"
CONNECTOR_PREFIX = "status-connector-"
TASK_PREFIX = "status-task-"


def summarize(states: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Latest status values by key -> one row per connector: state, tasks, workers, error."""
    rows: dict[str, dict[str, Any]] = {}
    tasks: dict[str, list[dict[str, Any]]] = {}
    for key, value in states.items():
        if key.startswith(CONNECTOR_PREFIX):
            rows[key[len(CONNECTOR_PREFIX):]] = value
        elif key.startswith(TASK_PREFIX):
            name, _, task_id = key[len(TASK_PREFIX):].rpartition("-")
            if name and task_id.isdigit():
                tasks.setdefault(name, []).append(value)
    out = []
    for name in sorted(set(rows) | set(tasks)):
        c = rows.get(name, {})
        ts = tasks.get(name, [])
        running = sum(1 for t in ts if t.get("state") == "RUNNING")
        failed = [t for t in ts if t.get("state") == "FAILED"]
        trace = (c.get("trace") or (failed[0].get("trace") if failed else "") or "").strip()
        out.append({"name": name, "state": c.get("state") or ("FAILED" if failed else "?"),
                    "tasks": f"{running}/{len(ts)} running" if ts else "-",
                    "worker": ", ".join(sorted({str(t.get("worker")) for t in ts if t.get("worker")}))
                    or str(c.get("worker") or ""),
                    "error": trace.splitlines()[-1] if trace else ""})
    return out


class ConnectStatusReader:
    """``read()`` -> connector rows, or None while the cluster has no status topic."""

    def __init__(self, bootstrap: str, topic: str = STATUS_TOPIC) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._consumer: Consumer | None = None
        self._states: dict[str, dict[str, Any]] = {}

    def read(self) -> list[dict[str, Any]] | None:
        try:
            if self._consumer is None:
                consumer = Consumer(self.bootstrap, auto_offset_reset="earliest", request_timeout_ms=2000)
                consumer.assign([(self.topic, 0)])
                self._consumer = consumer
            for r in self._consumer.poll(timeout_ms=50):
                if r.key is None:
                    continue
                key = r.key.decode("utf-8", "replace")
                if r.value is None:
                    self._states.pop(key, None)
                    continue
                try:
                    self._states[key] = json.loads(r.value)
                except ValueError:
                    log.debug("unreadable status value for %s", key)
        except (ClientError, FabricError) as exc:  # no status topic yet, or the broker is away
            log.debug("connect status: %s", exc)
            self.close()
            return summarize(self._states) if self._states else None
        return summarize(self._states) if self._states else None

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception:  # noqa: BLE001 - closing a broken consumer
                pass
            self._consumer = None
