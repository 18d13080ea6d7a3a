"""The failover measurement shared by Fabric and NATS in ``tools/bench_cluster.py``.

One run: a load child (``failover_load`` for Fabric, ``cluster_nats load`` for NATS) sends keyed
``acks=all`` records at a steady rate and logs every acknowledgement; the system's driver picks a
victim (``KillPlan``), SIGKILLs it and calls ``measure``, which tails the ack log until, for every
partition the victim led, a record *sent after the kill* is acknowledged (only the new leader can
have acknowledged it).  That time, kill to acknowledgement, is the kill's failover time; the
largest over the victim's partitions is the figure.  Then the driver restarts the victim and
waits until it is back in sync before the next kill.  A kill after which no such record is
acknowledged within ``stall_s`` is a **stall**: recorded with a diagnosis of the cluster, and the
run goes on (the restart usually unblocks it).
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from tools.bench.failover_load import AckTail
from tools.bench.procs import ServerProcess, client_argv

log = logging.getLogger("bench.failover")

POLL_S = 0.005  # ack-log tail period: the resolution of the measurement
FLOWING_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class KillPlan:
    index: int
    victim: int  # node id
    partitions: list[int]  # the partitions the victim led when it was killed
    controller_leader: bool = False  # the victim was also the controller's (metadata) Raft leader


@dataclass
class Failover:
    workdir: Path
    kills: int = 20
    rate: int = 2000  # records per second of the steady load
    stall_s: float = 60.0
    restart_delay_s: float | None = None  # restart the victim this long after the kill (None: once measured)
    ack_log: Path = field(init=False)
    stop_file: Path = field(init=False)
    tail: AckTail = field(init=False)
    load: ServerProcess | None = None
    results: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ack_log = self.workdir / "acks.jsonl"
        self.stop_file = self.workdir / "stop"
        self.tail = AckTail(self.ack_log)

    # ------------------------------------------------------------------ the load child
    def start_load(self, target_and_args: list[str]) -> None:
        target, *args = target_and_args
        self.load = ServerProcess("failover load", client_argv(
            target, *args, "--rate", self.rate, "--ack-log", self.ack_log, "--stop-file", self.stop_file),
            self.workdir / "load.log")

    def stop_load(self) -> dict[str, Any]:
        """Ask the load to stop, wait for its summary; return it with the per-kill figures."""
        self.stop_file.touch()
        summary: dict[str, Any] = {}
        if self.load is not None:
            try:
                self.load.proc.wait(STOP_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - stop() below kills it
                log.warning("the load did not stop within %.0fs", STOP_TIMEOUT_S)
            self.load.stop()
            for line in reversed(self.load.log_tail().splitlines()):
                if line.startswith("{"):
                    summary = json.loads(line)
                    break
        return {"load": summary, "rate": self.rate, "kills": self.results, **self.figures()}

    # ------------------------------------------------------------------ the measurement
    def wait_flowing(self, partitions: Iterable[int]) -> None:
        """Until every partition has a record sent from now on acknowledged."""
        since = time.monotonic()
        wanted = list(partitions)
        deadline = since + FLOWING_TIMEOUT_S
        while True:
            self._check_load()
            self.tail.poll()
            if all(self.tail.first_ack_sent_after(p, since) is not None for p in wanted):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the load is not acknowledged on partitions {wanted} "
                                   f"after {FLOWING_TIMEOUT_S:.0f}s")
            time.sleep(0.02)

    def measure(self, plan: KillPlan, t_kill: float, diagnose: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        per: dict[int, float | None] = {p: None for p in plan.partitions}
        deadline = t_kill + self.stall_s
        while any(v is None for v in per.values()) and time.monotonic() < deadline:
            self._check_load()
            self.tail.poll()
            for p in per:
                if per[p] is None and (acked := self.tail.first_ack_sent_after(p, t_kill)) is not None:
                    per[p] = acked - t_kill
            time.sleep(POLL_S)
        stalled = any(v is None for v in per.values())
        row: dict[str, Any] = {"kill": plan.index + 1, "victim": plan.victim, "controller_leader": plan.controller_leader,
                               "partitions": {str(p): v for p, v in per.items()},
                               "failover_s": None if stalled else max(per.values(), default=0.0)}
        if stalled:
            row["stall"] = diagnose()
            log.warning("kill %d (node %d): no acknowledgement on %s within %.0fs: %s", plan.index + 1,
                        plan.victim, [p for p, v in per.items() if v is None], self.stall_s, row["stall"])
        self.results.append(row)
        log.info("kill %d: node %d%s, partitions %s -> %s", plan.index + 1, plan.victim,
                 " (controller leader)" if plan.controller_leader else "", plan.partitions,
                 "STALL" if stalled else f"{row['failover_s']:.3f}s")
        return row

    def record_in_sync(self, seconds: float, plan: KillPlan) -> None:
        self.results[-1]["restart_to_in_sync_s"] = round(seconds, 3)

    def _check_load(self) -> None:
        if self.load is not None:
            self.load.check_alive()

    def figures(self) -> dict[str, Any]:
        times = [r["failover_s"] for r in self.results if r["failover_s"] is not None]
        return {"failover_p50_s": statistics.median(times) if times else None,
                "failover_max_s": max(times) if times else None,
                "stalls": sum(r["failover_s"] is None for r in self.results),
                "kills_done": len(self.results)}
