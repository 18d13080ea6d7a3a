"""The Connect worker: starts every connector's tasks from a validated ``WorkerConfig`` and keeps
them running until it is told to stop.

Start-up order (each step must succeed before the next, so a half-started worker never writes):
the whole YAML was validated by ``config.py``; the internal topics exist (compacted); committed
source offsets are read to the end; then each connector splits its work (``task_configs``) and one
``TaskSupervisor`` thread per task starts; last, the control API listens.

Standalone mode (``worker.group`` unset) runs every task here.  Shutdown (``stop``, SIGTERM,
Ctrl-C) stops the tasks, which commit what they finished (source offsets after acknowledgement,
sink offsets after ``flush``), then closes the clients.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from fabric.client import Admin, Producer

from .config import ConnectorConfig, WorkerConfig
from .rest import ACTIONS, ControlServer
from .runtime import TaskSupervisor
from .state import OffsetStore, StatusStore, ensure_compacted_topic

log = logging.getLogger("fabric.connect.worker")

STOP_JOIN_TIMEOUT_S = 30.0


class Worker:
    def __init__(self, config: WorkerConfig, worker_id: str | None = None) -> None:
        if config.group is not None:
            raise NotImplementedError("distributed mode (worker.group) is not available yet; remove 'group'")
        self.config = config
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.producer: Producer | None = None
        self.offsets: OffsetStore | None = None
        self.status: StatusStore | None = None
        self.tasks: dict[str, list[TaskSupervisor]] = {}
        self.paused: set[str] = set()
        self.rest: ControlServer | None = None
        self._stopped = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        cfg = self.config
        with Admin(cfg.bootstrap) as admin:
            ensure_compacted_topic(admin, cfg.offsets_topic)
            ensure_compacted_topic(admin, cfg.status_topic)
        self.producer = Producer(cfg.bootstrap, acks=-1, linger_ms=1, client_id=f"connect-worker-{self.worker_id}")
        self.offsets = OffsetStore(cfg.bootstrap, cfg.offsets_topic, self.producer)
        self.offsets.load()
        self.status = StatusStore(cfg.status_topic, self.producer, self.worker_id)
        for cc in cfg.connectors:
            self._start_connector(cc)
        if cfg.rest_port is not None:
            self.rest = ControlServer(self, cfg.rest_port)
            self.rest.start()
            log.info("control API on http://127.0.0.1:%d", self.rest.port)

    def _start_connector(self, cc: ConnectorConfig) -> None:
        assert self.offsets is not None and self.status is not None
        connector = cc.connector_class()
        base = dict(cc.config)
        if cc.is_sink:
            base["topics"], base["topics_regex"] = list(cc.topics), cc.topics_regex
        task_configs = connector.task_configs(base, cc.tasks_max)[: cc.tasks_max]
        sups = [TaskSupervisor(cc, i, tc, self.config.bootstrap, self.offsets, self.status,
                               self.config.offset_flush_interval_ms) for i, tc in enumerate(task_configs)]
        self.tasks[cc.name] = sups
        self.status.put(StatusStore.connector_key(cc.name), "RUNNING", tasks=len(sups))
        for s in sups:
            s.start()
        log.info("connector %s (%s): %d task(s) started", cc.name, cc.class_name, len(sups))

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.rest is not None:
            self.rest.close()
        for sups in self.tasks.values():
            for s in sups:
                s.stop()
        for sups in self.tasks.values():
            for s in sups:
                s.join(STOP_JOIN_TIMEOUT_S)
                if s.thread.is_alive():
                    log.warning("task %s did not stop within %.0f s", s.key, STOP_JOIN_TIMEOUT_S)
        if self.status is not None:
            for name in self.tasks:
                self.status.put(StatusStore.connector_key(name), "STOPPED")
        if self.producer is not None:
            self.producer.close(timeout=10)

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    # ------------------------------------------------------------------ control (any thread)
    def connector_names(self) -> list[str]:
        return list(self.tasks)

    def connector_status(self, name: str) -> dict[str, Any] | None:
        sups = self.tasks.get(name)
        if sups is None or self.status is None:
            return None
        tasks = []
        for s in sups:
            st = self.status.get(s.key) or {"state": s.state, "trace": None}
            tasks.append({"id": s.task_id, "state": st["state"], "trace": st.get("trace"),
                          "worker": self.worker_id, "restarts": s.failures})
        states = {t["state"] for t in tasks}
        if name in self.paused:
            state = "PAUSED"
        elif states and states <= {"FAILED"}:
            state = "FAILED"
        else:
            state = "RUNNING"
        cc = next(c for c in self.config.connectors if c.name == name)
        return {"name": name, "class": cc.class_name, "type": "sink" if cc.is_sink else "source",
                "state": state, "worker": self.worker_id, "tasks": tasks}

    def control(self, name: str, action: str) -> bool:
        assert action in ACTIONS
        sups = self.tasks.get(name)
        if sups is None:
            return False
        for s in sups:
            getattr(s, action)()
        if action == "pause":
            self.paused.add(name)
        elif action == "resume":
            self.paused.discard(name)
        if self.status is not None:
            self.status.put(StatusStore.connector_key(name), "PAUSED" if name in self.paused else "RUNNING")
        return True
