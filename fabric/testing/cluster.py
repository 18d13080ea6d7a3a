"""N real broker processes configured as one cluster, for process-tier tests and fault drills.

Why a harness of its own: every cluster test needs the same chores (three free ports per node, a
data directory and a YAML config per node naming the same voters, SIGKILL / SIGSTOP / restart of
one node) and every one of them must leave no process behind, pass or fail.  ``ClusterProcesses``
does the chores on top of ``BrokerProcess`` (readiness polled with a real request, never a sleep)
and reaps every process it started in ``close`` -- use it as a context manager or through the
``cluster`` pytest fixture (``tests/conftest.py``), which calls ``close`` in its finally block.

The configs use the cluster keys of ``fabric/broker/config.py`` (``node_id``, ``controller_voters``,
``controller_port``, ``pub_port``, ``rack``).  On loopback by default; with ``network`` (a
``fabric.testing.netns.NetworkLab``) each broker runs in its own namespace, so a real network
partition can be cut between one broker and the rest.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import yaml

from ..client.admin import Admin
from .processes import BrokerProcess, free_port

if TYPE_CHECKING:
    from .netns import NetworkLab

log = logging.getLogger(__name__)

VOTERS_DEFAULT_MAX = 3  # with more nodes, the first three are the voters (KRaft's usual quorum)


@dataclass(frozen=True)
class NodeSpec:
    """Where one node of the cluster lives: its ports, rack and files."""

    node_id: int
    port: int
    pub_port: int
    controller_port: int  # 0 when the node is not a voter
    rack: str | None
    data_dir: Path
    config_path: Path
    host: str = "127.0.0.1"  # the address it binds and advertises (its namespace's, with ``network``)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


def _free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago (free_port may repeat one)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def wait_until(condition: Any, timeout: float, what: str, every: float = 0.1) -> Any:
    """``condition()`` until it is truthy (returned), polling every ``every`` seconds; an
    AssertionError naming ``what`` after ``timeout`` seconds.  (``every`` 0: the condition does
    its own waiting, e.g. a consumer's poll.)"""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        if every:
            time.sleep(every)


class ClusterProcesses:
    """Start, kill, pause, restart and stop the broker processes of one cluster on loopback.

    ``voters``: node ids that run a controller (default: the first ``min(3, nodes)``).
    ``racks``: one rack name per node (default none).  ``config``: extra broker settings written
    into every node's YAML (e.g. ``{"broker_session_timeout_ms": 1000}``).  Node ids are 1..N.
    ``network``: a set-up ``NetworkLab`` with at least N nodes; node ``n`` then runs in the lab's
    namespace ``n`` and binds, advertises and names its controller at the lab's address ``n``, so
    ``network.cut(n)`` is a real partition of that broker (from its peers and from the test process,
    which reaches the nodes over the lab's host link).  The caller owns (and closes) the lab.
    """

    def __init__(self, base_dir: str | Path, nodes: int = 3, *, voters: Sequence[int] | None = None,
                 racks: Sequence[str] | None = None, config: Mapping[str, Any] | None = None,
                 extra_args: Sequence[str] = (), network: "NetworkLab | None" = None) -> None:
        if nodes < 1:
            raise ValueError(f"a cluster needs at least one node, not {nodes}")
        if racks is not None and len(racks) != nodes:
            raise ValueError(f"racks names {len(racks)} racks for {nodes} nodes")
        if network is not None and network.nodes < nodes:
            raise ValueError(f"the network lab has {network.nodes} namespaces for {nodes} nodes")
        self.network = network
        self.base_dir = Path(base_dir)
        ids = list(range(1, nodes + 1))
        self.voters = list(voters) if voters is not None else ids[:VOTERS_DEFAULT_MAX]
        if not set(self.voters) <= set(ids) or not self.voters:
            raise ValueError(f"voters {self.voters} must be a non-empty subset of the node ids {ids}")
        ports = iter(_free_ports(3 * nodes))
        self.specs: dict[int, NodeSpec] = {}
        for i, node in enumerate(ids):
            port, pub, ctl = next(ports), next(ports), next(ports)
            self.specs[node] = NodeSpec(node, port, pub, ctl if node in self.voters else 0,
                                        racks[i] if racks is not None else None,
                                        self.base_dir / f"node{node}" / "data", self.base_dir / f"node{node}" / "broker.yaml",
                                        network.address(node) if network is not None else "127.0.0.1")
        self.extra_config = dict(config or {})
        self.cluster_id = uuid.uuid4().hex  # one id for every node, as `fabric cluster up` writes
        self.extra_args = list(extra_args)
        self.processes: dict[int, BrokerProcess] = {}
        self.paused: set[int] = set()
        for spec in self.specs.values():
            spec.data_dir.parent.mkdir(parents=True, exist_ok=True)
            spec.config_path.write_text(yaml.safe_dump(self.config_for(spec.node_id), sort_keys=False))

    # ------------------------------------------------------------------ configuration
    def config_for(self, node_id: int) -> dict[str, Any]:
        """The broker settings of one node (what its YAML file holds)."""
        spec = self.specs[node_id]
        out: dict[str, Any] = {
            "node_id": node_id, "cluster_id": self.cluster_id, "host": spec.host, "port": spec.port,
            "pub_port": spec.pub_port,
            "data_dir": str(spec.data_dir),
            "controller_voters": {v: f"{self.specs[v].host}:{self.specs[v].controller_port}" for v in self.voters},
        }
        if spec.controller_port:
            out["controller_port"] = spec.controller_port
        if spec.rack is not None:
            out["rack"] = spec.rack
        out.update(self.extra_config)
        return out

    @property
    def node_ids(self) -> list[int]:
        return sorted(self.specs)

    def status(self, skip: Sequence[int] = ()) -> dict[str, Any] | None:
        """``cluster_status`` from the first node that answers (running, not paused, not in
        ``skip``: e.g. nodes cut off by a partition, which would only time out), or None."""
        for node in self.node_ids:
            if node in skip or node in self.paused or not self.running(node):
                continue
            try:
                with Admin(self.specs[node].bootstrap, timeout_ms=1500) as admin:
                    return admin.cluster_status()
            except Exception:  # noqa: BLE001 - any failure: ask the next node
                continue
        return None

    def in_sync(self, brokers: int | None = None) -> bool:
        """Every broker registered and unfenced, and no partition under-replicated or offline."""
        st = self.status()
        want = len(self.node_ids) if brokers is None else brokers
        return bool(st) and sum(not b.get("fenced") for b in st["brokers"]) == want \
            and not st["under_replicated"] and not st["offline"] and st["partitions_total"] > 0

    def registered(self, brokers: int | None = None) -> bool:
        """``brokers`` (default all) registered and unfenced."""
        st = self.status()
        want = len(self.node_ids) if brokers is None else brokers
        return bool(st) and sum(not b.get("fenced") for b in st["brokers"]) == want

    @property
    def bootstrap(self) -> str:
        """Every node's client address, comma-separated (what clients take as bootstrap)."""
        return ",".join(self.specs[n].bootstrap for n in self.node_ids)

    # ------------------------------------------------------------------ lifecycle
    def start(self, nodes: Sequence[int] | None = None, wait: bool = True, timeout: float = 30.0) -> "ClusterProcesses":
        """Start the given nodes (default all) and, with ``wait``, poll each until it answers."""
        chosen = list(nodes) if nodes is not None else self.node_ids
        for node in chosen:
            self._start_one(node)
        if wait:
            for node in chosen:
                self.processes[node].wait_ready(timeout)
        return self

    def _start_one(self, node: int) -> BrokerProcess:
        spec = self.specs[node]
        proc = self.processes.get(node)
        if proc is None:
            proc = BrokerProcess(spec.data_dir, port=spec.port,
                                 extra_args=["--config", str(spec.config_path), *self.extra_args],
                                 log_path=spec.data_dir.parent / "broker.log", host=spec.host,
                                 command_prefix=self.network.exec_prefix(node) if self.network is not None else ())
            self.processes[node] = proc
        elif proc.proc is not None and proc.proc.poll() is None:
            raise RuntimeError(f"node {node} is already running (pid {proc.pid})")
        proc.start(wait=False)
        log.info("started node %d (pid %s, port %d)", node, proc.pid, spec.port)
        return proc

    def process(self, node: int) -> BrokerProcess:
        return self.processes[node]

    def running(self, node: int) -> bool:
        proc = self.processes.get(node)
        return proc is not None and proc.proc is not None and proc.proc.poll() is None

    def kill(self, node: int) -> None:
        """SIGKILL one node and reap it (a crash: no flush, no controlled shutdown)."""
        self.paused.discard(node)
        self.processes[node].kill()

    def stop(self, node: int, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful), SIGKILL after ``timeout``; returns the exit code."""
        if node in self.paused:
            self.resume(node)
        return self.processes[node].stop(timeout)

    def pause(self, node: int) -> None:
        """SIGSTOP: the node keeps its sockets but answers nothing (a GC pause, a hung disk)."""
        pid = self.processes[node].pid
        if pid is None:
            raise RuntimeError(f"node {node} is not running")
        os.kill(pid, signal.SIGSTOP)
        self.paused.add(node)

    def resume(self, node: int) -> None:
        """SIGCONT a paused node."""
        pid = self.processes[node].pid
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        self.paused.discard(node)

    def restart(self, node: int, kill: bool = False, wait: bool = True, timeout: float = 30.0) -> BrokerProcess:
        """Stop (or SIGKILL) one node and start it again on the same ports and data directory."""
        self.kill(node) if kill else self.stop(node)
        proc = self._start_one(node)
        if wait:
            proc.wait_ready(timeout)
        return proc

    def close(self) -> None:
        """SIGKILL and reap every process this harness started (paused ones included: SIGKILL
        ends a stopped process too).  Safe to call twice; never raises for a node already gone."""
        for node, proc in self.processes.items():
            try:
                proc.kill()
            except Exception:  # noqa: BLE001 - teardown must reach every node
                log.exception("could not kill node %d", node)
        self.paused.clear()

    def __enter__(self) -> "ClusterProcesses":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[NodeSpec]:
        return iter(self.specs[n] for n in self.node_ids)
