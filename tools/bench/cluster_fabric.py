"""A real 3-broker Fabric cluster for ``tools/bench_cluster.py``: start, workload, SIGKILL, restart.

The configs are the process harness's (``fabric.testing.cluster.ClusterProcesses``: free loopback
ports, one YAML per node naming the same voters, as ``fabric cluster up`` writes them) with the
defaults a user gets (session timeout, heartbeats, Raft timers, fsync once a second) plus
``default_replication_factor`` 3 and ``min_insync_replicas`` 2.  The processes themselves are
``tools.bench.procs.ServerProcess``es (own session, ``PR_SET_PDEATHSIG``, stopped in ``stop``),
one log file per start of a node (``node1/broker.3.log`` is node 1's third life), so a stall can be
read afterwards (``FABRIC_BENCH_KEEP=1`` keeps the directory).
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Any

from fabric.client.admin import Admin
from fabric.testing.cluster import ClusterProcesses
from fabric.testing.cluster_check import check, read_acks, read_data_dir
from tools.bench.core import ConsumeResult, E2EResult, ProduceResult
from tools.bench.failover import Failover, KillPlan
from tools.bench.procs import ServerProcess, run_json
from tools.bench.systems.fabric_system import fabric_argv

log = logging.getLogger("bench.cluster.fabric")

SETTINGS = {"default_replication_factor": 3, "min_insync_replicas": 2}
TOPIC, E2E_TOPIC, FAIL_TOPIC = "bench", "bench-e2e", "failover"
READY_TIMEOUT_S = 60.0
CLIENT_TIMEOUT_S = 3600.0


def out_of_send_order(ack_log: Path) -> list[dict[str, Any]]:
    """``cluster_check``'s "reordered" compares offsets in *acknowledgement* order; this tells
    whether the log itself broke the producer's promise: per partition and key, records sorted by
    their send time (the load child logs it) must have increasing offsets."""
    import json

    by_key: dict[tuple[int, str], list[tuple[float, int]]] = {}
    for line in ack_log.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_key.setdefault((row["partition"], row["key"]), []).append((row["sent"], row["offset"]))
    found = []
    for (partition, key), rows in by_key.items():
        rows.sort()
        for (s1, o1), (s2, o2) in zip(rows, rows[1:]):
            if o2 < o1:
                found.append({"partition": partition, "key": key, "sent_first": [s1, o1], "sent_later": [s2, o2]})
    return found[:20]


class FabricCluster:
    name = "fabric"
    client = ("fabric perf, Producer.send_batch(1000), acks=all / Consumer.poll_batches; "
              "e2e: fabric perf e2e --acks all")
    e2e_client = "fabric perf e2e --acks all: Producer.send() per record, linger 0; Consumer.poll()"

    def __init__(self, workdir: Path, brokers: int = 3, partitions: int = 3, replication: int = 3,
                 settings: dict[str, Any] | None = None) -> None:
        cfg = dict(SETTINGS) | {"default_replication_factor": min(replication, brokers),
                                "min_insync_replicas": min(2, replication)} | dict(settings or {})
        self.layout = ClusterProcesses(workdir / "fabric", brokers, config=cfg)
        self.partitions = partitions
        self.replication = min(replication, brokers)
        self.servers: dict[int, ServerProcess] = {}
        self.lives: dict[int, int] = {}
        self.value_bytes = 100
        self._expected_up: set[int] = set(self.layout.node_ids)  # a death of one of these is an error

    # ------------------------------------------------------------------ processes
    @property
    def nodes(self) -> list[int]:
        return self.layout.node_ids

    def start(self) -> None:
        for n in self.nodes:
            self.start_node(n)
        self.wait(lambda: self.registered(len(self.nodes)), "every broker registered")
        self.create_topic(TOPIC, self.partitions)

    def start_node(self, node: int) -> ServerProcess:
        spec = self.layout.specs[node]
        self.lives[node] = self.lives.get(node, 0) + 1
        server = ServerProcess(f"fabric broker {node}", fabric_argv("broker", "--config", spec.config_path),
                               spec.data_dir.parent / f"broker.{self.lives[node]}.log")
        self.servers[node] = server
        return server

    def alive(self, node: int) -> bool:
        s = self.servers.get(node)
        return s is not None and s.proc.poll() is None

    def kill(self, node: int) -> None:
        """SIGKILL (a crash) and reap."""
        proc = self.servers[node].proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.servers[node].stop()  # closes its log file

    def pids(self) -> dict[int, int]:
        return {n: s.pid for n, s in self.servers.items() if s.proc.poll() is None}

    def stop(self) -> None:
        for s in self.servers.values():
            s.stop()

    def bootstrap(self, nodes: list[int] | None = None) -> str:
        return ",".join(self.layout.specs[n].bootstrap for n in (nodes or self.nodes))

    def live_bootstrap(self) -> str:
        return self.bootstrap([n for n in self.nodes if self.alive(n)])

    # ------------------------------------------------------------------ health
    def status(self) -> dict[str, Any] | None:
        for n in self.nodes:
            if not self.alive(n):
                continue
            try:
                with Admin(self.layout.specs[n].bootstrap, timeout_ms=1500) as admin:
                    return admin.cluster_status()
            except Exception:  # noqa: BLE001 - ask the next broker
                continue
        return None

    def registered(self, brokers: int) -> bool:
        st = self.status()
        return bool(st) and sum(not b.get("fenced") for b in st["brokers"]) == brokers

    def in_sync(self) -> bool:
        st = self.status()
        return bool(st) and sum(not b.get("fenced") for b in st["brokers"]) == len(self.nodes) \
            and not st["under_replicated"] and not st["offline"] and st["partitions_total"] > 0

    def controller_leader(self) -> int | None:
        st = self.status()
        lid = (st or {}).get("controller", {}).get("leader_id")
        return lid if isinstance(lid, int) and lid > 0 else None

    def leaders(self, topic: str) -> dict[int, int]:
        """partition -> leader id (-1: none) as the live brokers' metadata says."""
        with Admin(self.live_bootstrap(), timeout_ms=2000) as admin:
            meta = admin.metadata([topic])
        return {p["partition"]: p["leader"] for p in meta["topics"][0]["partitions"]}

    def wait(self, cond: Any, what: str, timeout_s: float = READY_TIMEOUT_S) -> float:
        started = time.monotonic()
        while not cond():
            for n in self._expected_up & set(self.servers):
                self.servers[n].check_alive()
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"fabric: {what} not reached after {timeout_s:.0f}s")
            time.sleep(0.1)
        return time.monotonic() - started

    def create_topic(self, topic: str, partitions: int) -> None:
        with Admin(self.live_bootstrap(), timeout_ms=10_000) as admin:
            admin.create_topic(topic, partitions=partitions, replication_factor=self.replication)
        self.wait(lambda: all(l >= 0 for l in self.leaders(topic).values()) and self.in_sync(),
                  f"topic {topic} led and in sync")

    # ------------------------------------------------------------------ workload
    def produce(self, records: int, value_bytes: int) -> ProduceResult:
        self.value_bytes = value_bytes
        obj = run_json(fabric_argv("perf", "produce", "--bootstrap", self.bootstrap(), "--topic", TOPIC,
                                   "--records", records, "--record-size", value_bytes, "--acks", "all",
                                   "--batch", 1000, "--json"), CLIENT_TIMEOUT_S, "fabric perf produce")
        return ProduceResult.from_json(obj, value_bytes)

    def consume(self, records: int) -> ConsumeResult:
        obj = run_json(fabric_argv("perf", "consume", "--bootstrap", self.bootstrap(), "--topic", TOPIC,
                                   "--records", records, "--columnar", "--json"), CLIENT_TIMEOUT_S,
                       "fabric perf consume")
        return ConsumeResult.from_json(obj, self.value_bytes)

    def e2e(self, rate: int, seconds: float, value_bytes: int) -> E2EResult:
        self.create_topic(E2E_TOPIC, 1)
        obj = run_json(fabric_argv("perf", "e2e", "--bootstrap", self.bootstrap(), "--topic", E2E_TOPIC,
                                   "--rate", rate, "--seconds", seconds, "--record-size", value_bytes,
                                   "--acks", "all", "--json"), CLIENT_TIMEOUT_S, "fabric perf e2e")
        return E2EResult.from_json(obj, rate)

    # ------------------------------------------------------------------ failover
    def failover(self, run: Failover) -> dict[str, Any]:
        """SIGKILL leaders under the steady load ``run`` drives; judge the disks afterwards."""
        self.create_topic(FAIL_TOPIC, self.partitions)
        run.start_load(["tools.bench.failover_load", "--bootstrap", self.bootstrap(), "--topic", FAIL_TOPIC])
        try:
            run.wait_flowing(range(self.partitions))
            for k in range(run.kills):
                plan = self._plan(k)
                self._expected_up = set(self.nodes) - {plan.victim}
                t_kill = time.monotonic()
                self.kill(plan.victim)
                if run.restart_delay_s is not None:  # restart while the cluster still elects
                    time.sleep(run.restart_delay_s)
                    self.start_node(plan.victim)
                run.measure(plan, t_kill, lambda: self._diagnose())
                if run.restart_delay_s is None:
                    self.start_node(plan.victim)
                self._expected_up = set(self.nodes)
                run.record_in_sync(self.wait(self.in_sync, "in sync after restart", run.stall_s), plan)
                run.wait_flowing(range(self.partitions))
        finally:
            result = run.stop_load()
        self.stop()
        acks = read_acks(run.ack_log.read_text().splitlines())
        replicas = {f"broker-{n}": {tp: d for tp, d in read_data_dir(self.layout.specs[n].data_dir).items()
                                    if tp[0] == FAIL_TOPIC} for n in self.nodes}
        report = check(acks, replicas)
        result["check"] = {k: v for k, v in report.to_dict().items() if k != "findings"} | {
            "first_findings": [f.__dict__ for f in report.findings if f.kind != "duplicate"][:5],
            "written_out_of_send_order": out_of_send_order(run.ack_log)}
        return result

    def _plan(self, k: int) -> KillPlan:
        """Even kills: the controller leader (when it leads a partition); odd kills: the leader of
        partition k mod P."""
        leaders = self.leaders(FAIL_TOPIC)
        ctrl = self.controller_leader()
        led_by = lambda n: sorted(p for p, l in leaders.items() if l == n)  # noqa: E731
        if k % 2 == 0 and ctrl is not None and led_by(ctrl):
            victim = ctrl
        else:
            victim = leaders[k % self.partitions]
            if victim < 0:
                raise RuntimeError(f"partition {k % self.partitions} has no leader before kill {k + 1}")
        return KillPlan(k, victim, led_by(victim), victim == ctrl)

    def _diagnose(self) -> dict[str, Any]:
        st = self.status() or {}
        try:
            leaders = self.leaders(FAIL_TOPIC)
        except Exception as e:  # noqa: BLE001 - a diagnosis, best effort
            leaders = {"error": str(e)}
        return {"leaders": leaders, "controller": st.get("controller"), "offline": st.get("offline"),
                "metadata_offset": st.get("metadata_offset")}
