"""The Connect worker: starts every connector's tasks from a validated ``WorkerConfig`` and keeps
them running until it is told to stop.

Start-up order (each step must succeed before the next, so a half-started worker never writes):
the whole YAML was validated by ``config.py``; the internal topics exist (compacted); committed
source offsets are read to the end; each connector splits its work (``task_configs``) into the
*plan*, an ordered list of (connector, task id); then tasks start; last, the control API listens.

Standalone (``worker.group`` unset): every task of the plan runs here, and a sink task reads its
share of its topics' partitions directly, without joining a consumer group (``sink_runner.py``).

Distributed (``worker.group: G``, the same YAML on every worker): task *i* of the plan is
partition *i* of the internal topic ``connect-tasks-G`` (created with one partition per task;
nothing is ever written to it).  Every worker subscribes to that topic in the consumer group
``connect-cluster-G``: the group protocol hands each worker a share of the partitions, i.e. of
the tasks, and moves the share of a worker that dies (no heartbeat within
``session_timeout_ms``) or leaves to the survivors.  Assigned: the worker re-reads the offsets
topic and starts those tasks; revoked: it stops them (they commit what they finished).  Workers
announce their control API in the status topic (key ``worker-ID``) so that a pause, resume or
restart sent to one worker is forwarded to the others, and ``status`` shows every task's last
reported state, wherever it runs.

Shutdown (``stop``, SIGTERM, Ctrl-C) stops the tasks, which commit what they finished (source
offsets after acknowledgement, sink offsets after ``flush``), then closes the clients.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import urllib.request
from typing import Any

from fabric.client import Admin, Consumer, Producer
from fabric.errors import FabricError

from .config import ConnectorConfig, WorkerConfig
from .rest import ACTIONS, ControlServer
from .runtime import TaskSupervisor
from .state import OffsetStore, StatusStore, ensure_compacted_topic, read_compacted

log = logging.getLogger("fabric.connect.worker")

STOP_JOIN_TIMEOUT_S = 30.0
FORWARD_TIMEOUT_S = 3.0
MEMBER_POLL_MS = 200

TaskId = tuple[str, int]


class Worker:
    def __init__(self, config: WorkerConfig, worker_id: str | None = None) -> None:
        self.config = config
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{id(self) % 10_000}"
        self.producer: Producer | None = None
        self.offsets: OffsetStore | None = None
        self.status: StatusStore | None = None
        self.plan: list[tuple[ConnectorConfig, int, dict[str, Any]]] = []
        self.running: dict[TaskId, TaskSupervisor] = {}
        self.paused: set[str] = set()
        self.rest: ControlServer | None = None
        self._lock = threading.Lock()  # guards running/paused between the member thread and the API
        self._stopped = threading.Event()
        self._member_thread: threading.Thread | None = None

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
            self._plan_connector(cc)
        if cfg.rest_port is not None:
            self.rest = ControlServer(self, cfg.rest_port)
            self.rest.start()
            log.info("control API on http://127.0.0.1:%d", self.rest.port)
        if cfg.group is None:
            for cc, i, _ in self.plan:
                self._start_task((cc.name, i))
        else:
            self._join_group()

    def _plan_connector(self, cc: ConnectorConfig) -> None:
        assert self.status is not None
        base = dict(cc.config)
        if cc.is_sink:
            base["topics"], base["topics_regex"] = list(cc.topics), cc.topics_regex
        task_configs = cc.connector_class().task_configs(base, cc.tasks_max)[: cc.tasks_max]
        self.plan += [(cc, i, tc) for i, tc in enumerate(task_configs)]
        self.status.put(StatusStore.connector_key(cc.name), "RUNNING", tasks=len(task_configs))

    def _start_task(self, tid: TaskId) -> None:
        assert self.offsets is not None and self.status is not None
        cc, i, tc = next(p for p in self.plan if (p[0].name, p[1]) == tid)
        share = None
        if cc.is_sink and self.config.group is None:  # no peer worker: no group protocol needed
            share = (i, sum(1 for c, _, _ in self.plan if c.name == cc.name))
        sup = TaskSupervisor(cc, i, tc, self.config.bootstrap, self.offsets, self.status,
                             self.config.offset_flush_interval_ms, share)
        with self._lock:
            if tid in self.running or self._stopped.is_set():
                return
            if cc.name in self.paused:
                sup.pause()
            self.running[tid] = sup
        sup.start()
        log.info("task %s-%d started (%s)", cc.name, i, cc.class_name)

    def _stop_tasks(self, tids: list[TaskId]) -> None:
        with self._lock:
            sups = [self.running.pop(t) for t in tids if t in self.running]
        for s in sups:
            s.stop()
        for s in sups:
            s.join(STOP_JOIN_TIMEOUT_S)
            if s.thread.is_alive():
                log.warning("task %s did not stop within %.0f s", s.key, STOP_JOIN_TIMEOUT_S)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._member_thread is not None:
            self._member_thread.join(STOP_JOIN_TIMEOUT_S)
        if self.rest is not None:
            self.rest.close()
        self._stop_tasks(list(self.running))
        if self.producer is not None:
            if self.config.group is not None:
                self.producer.send(self.config.status_topic, None, key=f"worker-{self.worker_id}".encode(),
                                   partition=0)
            else:
                for cc in self.config.connectors:
                    self.status.put(StatusStore.connector_key(cc.name), "STOPPED")  # type: ignore[union-attr]
            self.producer.close(timeout=10)

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    # ------------------------------------------------------------------ distributed mode
    def _join_group(self) -> None:
        cfg = self.config
        topic = f"connect-tasks-{cfg.group}"
        with Admin(cfg.bootstrap) as admin:
            try:
                admin.create_topic(topic, partitions=len(self.plan))
            except FabricError as exc:
                if exc.name != "TOPIC_ALREADY_EXISTS":
                    raise
                if admin.partitions_for(topic) < len(self.plan):
                    admin.create_partitions(topic, len(self.plan))
        assert self.producer is not None and self.rest is not None, "distributed mode needs rest_port"
        self.producer.send(cfg.status_topic, json.dumps({"rest": f"127.0.0.1:{self.rest.port}", "group": cfg.group})
                           .encode(), key=f"worker-{self.worker_id}".encode(), partition=0).result(30)
        member = Consumer(cfg.bootstrap, group_id=f"connect-cluster-{cfg.group}", enable_auto_commit=False,
                          session_timeout_ms=cfg.session_timeout_ms,
                          heartbeat_interval_ms=max(100, cfg.session_timeout_ms // 3),
                          client_id=f"connect-worker-{self.worker_id}")
        member.subscribe([topic], on_assigned=self._on_assigned, on_revoked=self._on_revoked,
                         on_lost=self._on_revoked)
        self._member_thread = threading.Thread(target=self._member_loop, args=(member,), name="connect-member",
                                               daemon=True)
        self._member_thread.start()

    def _member_loop(self, member: Consumer) -> None:
        try:
            while not self._stopped.is_set():
                member.poll(MEMBER_POLL_MS)
        except Exception:  # noqa: BLE001 - a worker outside the group must not keep running tasks
            log.exception("group membership failed; stopping this worker's tasks")
        finally:
            self._stop_tasks(list(self.running))  # before leaving: a task must never run on two workers
            member.close()

    def _tid(self, partition: int) -> TaskId | None:
        if partition < len(self.plan):
            cc, i, _ = self.plan[partition]
            return (cc.name, i)
        return None

    def _on_assigned(self, tps: list) -> None:
        tids = [t for t in (self._tid(tp[1]) for tp in tps) if t is not None]
        if tids:
            assert self.offsets is not None
            self.offsets.load()  # a task that moved here resumes from its last committed offsets
            log.info("assigned %s", ", ".join(f"{n}-{i}" for n, i in tids))
        for tid in tids:
            self._start_task(tid)

    def _on_revoked(self, tps: list) -> None:
        tids = [t for t in (self._tid(tp[1]) for tp in tps) if t is not None]
        if tids:
            log.info("revoked %s", ", ".join(f"{n}-{i}" for n, i in tids))
            self._stop_tasks(tids)

    def _peers(self) -> list[str]:
        raw = read_compacted(self.config.bootstrap, self.config.status_topic)
        out = []
        for k, v in raw.items():
            if k.startswith(b"worker-") and v is not None and k != f"worker-{self.worker_id}".encode():
                doc = json.loads(v)
                if doc.get("group") == self.config.group:
                    out.append(doc["rest"])
        return out

    # ------------------------------------------------------------------ control (any thread)
    def connector_names(self) -> list[str]:
        return [cc.name for cc in self.config.connectors]

    def connector_status(self, name: str) -> dict[str, Any] | None:
        cc = next((c for c in self.config.connectors if c.name == name), None)
        if cc is None or self.status is None:
            return None
        ids = [i for c, i, _ in self.plan if c.name == name]
        remote: dict[bytes, bytes | None] = {}
        if self.config.group is not None:
            remote = read_compacted(self.config.bootstrap, self.config.status_topic)
        tasks = []
        for i in ids:
            sup = self.running.get((name, i))
            if sup is not None:
                st = self.status.get(sup.key) or {"state": sup.state, "trace": None}
                tasks.append({"id": i, "state": st["state"], "trace": st.get("trace"), "worker": self.worker_id,
                              "restarts": sup.failures})
                continue
            raw = remote.get(StatusStore.task_key(name, i).encode())
            doc = json.loads(raw) if raw else {"state": "UNASSIGNED", "worker": None}
            tasks.append({"id": i, "state": doc["state"], "trace": doc.get("trace"), "worker": doc.get("worker"),
                          "restarts": doc.get("restarts", 0)})
        states = {t["state"] for t in tasks}
        if name in self.paused:
            state = "PAUSED"
        elif states and states <= {"FAILED"}:
            state = "FAILED"
        else:
            state = "RUNNING"
        return {"name": name, "class": cc.class_name, "type": "sink" if cc.is_sink else "source",
                "state": state, "worker": self.worker_id, "tasks": tasks}

    def control(self, name: str, action: str, forward: bool = True) -> bool:
        assert action in ACTIONS
        if name not in self.connector_names():
            return False
        with self._lock:
            if action == "pause":
                self.paused.add(name)
            elif action == "resume":
                self.paused.discard(name)
            sups = [s for (n, _), s in self.running.items() if n == name]
        for s in sups:
            getattr(s, action)()
        if self.status is not None:
            self.status.put(StatusStore.connector_key(name), "PAUSED" if name in self.paused else "RUNNING")
        if forward and self.config.group is not None:
            for peer in self._peers():
                try:
                    req = urllib.request.Request(f"http://{peer}/connectors/{name}/{action}?local=1", data=b"",
                                                 method="POST")
                    urllib.request.urlopen(req, timeout=FORWARD_TIMEOUT_S).close()
                except OSError as exc:  # a dead peer: its tasks move, and the new owner is told above
                    log.info("could not forward %s of %s to %s: %s", action, name, peer, exc)
        return True

    def running_tasks(self) -> list[TaskId]:
        with self._lock:
            return sorted(self.running)

    def wait_running(self, timeout: float) -> bool:
        """True once every local task reported RUNNING (used by tests and ``run``'s banner)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(s.state == "RUNNING" for s in self.running.values()):
                    return True
            time.sleep(0.05)
        return False
