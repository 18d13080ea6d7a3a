"""Scale-out (issue 16): the same produce workload against 1, 2 and 3 brokers, each broker held to
the same CPU share by a cgroup, so "more brokers carry more load" means something on a 2-core box.

    python tools/bench_cluster.py --scale-out [--cpu 0.2] [--records N] [--scale-partitions 6] [--scale-clients 3]

For each broker count n in 1, 2, 3 and each replication factor (1, and min(3, n): RF 3 at three
brokers, as many copies as there are brokers below that), a fresh cluster of n real brokers
(``cluster_fabric.FabricCluster``), each moved into its own cgroup limited to ``--cpu`` CPUs
(cgroup v2 ``cpu.max`` where the cpu controller is on the unified hierarchy; the v1 ``cpu``
controller's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` where it is not, as on these machines),
then one client (not limited) runs ``fabric perf produce --acks all --batch 1000`` of N × 100 B
into a topic of ``--scale-partitions`` partitions spread over the brokers.  Reported: records/s per
broker count and the ratio to one broker.  The goal (issue 16): 3 brokers ≥ 2.5× one at RF 1.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from concurrent.futures import ThreadPoolExecutor

from tools.bench.cluster_fabric import TOPIC, FabricCluster
from tools.bench.core import ProduceResult

log = logging.getLogger("bench.scale_out")

PERIOD_US = 100_000
V2_ROOT = Path("/sys/fs/cgroup")
V1_CPU = Path("/sys/fs/cgroup/cpu")


class CpuLimit:
    """One cgroup holding one process to ``cpus`` CPUs; ``close`` moves it out and removes it."""

    def __init__(self, name: str, cpus: float) -> None:
        quota = max(1000, int(cpus * PERIOD_US))
        if (V2_ROOT / "cgroup.controllers").exists() and "cpu" in (V2_ROOT / "cgroup.controllers").read_text().split():
            subtree = V2_ROOT / "cgroup.subtree_control"
            if "cpu" not in subtree.read_text().split():
                subtree.write_text("+cpu")
            self.path, self.kind = V2_ROOT / name, "cgroup v2 cpu.max"
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        elif (V1_CPU / "cpu.cfs_quota_us").exists():
            self.path, self.kind = V1_CPU / name, "cgroup v1 cpu.cfs_quota_us"
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            raise RuntimeError("no writable cgroup cpu controller (need root and cgroup v1 cpu or v2 cpu.max)")

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def throttled_s(self) -> float:
        """Seconds the group's processes waited for quota (cpu.stat), to see the limit bite."""
        try:
            stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        except OSError:
            return 0.0
        if "throttled_usec" in stat:
            return int(stat["throttled_usec"]) / 1e6
        return int(stat.get("throttled_time", 0)) / 1e9

    def close(self) -> None:
        try:
            self.path.rmdir()  # (empty once its process exited)
        except OSError as e:
            log.warning("cgroup %s not removed: %s", self.path, e)


def measure(workroot: str | None, brokers: int, rf: int, args: Any) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"fabric-bench-scale-{brokers}-rf{rf}-", dir=workroot))
    cluster = FabricCluster(workdir, brokers=brokers, partitions=args.scale_partitions, replication=rf)
    limits: list[CpuLimit] = []
    row: dict[str, Any] = {"brokers": brokers, "replication_factor": rf, "cpu_per_broker": args.cpu}
    try:
        for n in cluster.nodes:
            server = cluster.start_node(n)
            limit = CpuLimit(f"fabric-bench-{os.getpid()}-{n}", args.cpu)
            limit.add(server.pid)
            limits.append(limit)
        row["cgroup"] = limits[0].kind
        cluster.wait(lambda: cluster.registered(brokers), "every broker registered")
        cluster.create_topic(TOPIC, args.scale_partitions)
        leaders = cluster.leaders(TOPIC)
        row["leaders_per_broker"] = {str(n): sum(1 for l in leaders.values() if l == n) for n in cluster.nodes}
        before = [lim.throttled_s() for lim in limits]
        result = _produce(cluster, args.records, args.value_bytes, args.scale_clients)
        row["produce"] = result.to_json()
        row["clients"] = args.scale_clients
        row["throttled_s"] = [round(lim.throttled_s() - b, 2) for lim, b in zip(limits, before)]
        log.warning("scale-out: %d broker(s), RF %d: %.0f rec/s", brokers, rf, result.records_per_sec)
    except Exception as e:  # noqa: BLE001 - a failed point is a row with its error
        log.exception("scale-out %d brokers RF %d failed", brokers, rf)
        row["error"] = f"{type(e).__name__}: {e}"
    finally:
        cluster.stop()
        for lim in limits:
            lim.close()
        if os.environ.get("FABRIC_BENCH_KEEP") == "1":
            log.warning("kept %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return row


def _produce(cluster: FabricCluster, records: int, value_bytes: int, clients: int) -> ProduceResult:
    """``clients`` producer processes at once, ``records / clients`` each: the rate is all records
    over the slowest client's time (one Python client cannot keep even one broker busy)."""
    if clients <= 1:
        return cluster.produce(records, value_bytes)
    each = records // clients
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda _: cluster.produce(each, value_bytes), range(clients)))
    return ProduceResult(each * clients, value_bytes, max(r.seconds for r in results),
                         max((r.latency_ms for r in results), key=lambda lat: lat["p99"]))


def run(args: Any) -> dict[str, Any]:
    rows = []
    for rf_kind in ("1", "n"):
        for brokers in (1, 2, 3):
            rf = 1 if rf_kind == "1" else min(3, brokers)
            if rf_kind == "n" and brokers == 1:
                continue  # the same as RF 1
            rows.append(measure(args.workdir, brokers, rf, args))
            time.sleep(1)  # let the stopped brokers' page cache writeback settle a moment
    base = next((r["produce"]["records_per_sec"] for r in rows
                 if r["brokers"] == 1 and "produce" in r), None)
    for r in rows:
        if base and "produce" in r:
            r["vs_one_broker"] = r["produce"]["records_per_sec"] / base
    _render(rows, args)
    return {"scale_out": rows, "args": {"cpu": args.cpu, "records": args.records, "clients": args.scale_clients,
                                        "partitions": args.scale_partitions, "value_bytes": args.value_bytes}}


def _render(rows: list[dict[str, Any]], args: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Scale-out: {args.records:,} × {args.value_bytes} B, acks=all, send_batch(1000), "
                    f"{args.scale_partitions} partitions, {args.scale_clients} client(s), each broker limited to "
                    f"{args.cpu:g} CPU")
    for col in ("brokers", "RF", "produce rec/s", "× one broker", "leaders per broker", "throttled s", "error"):
        t.add_column(col, justify="right" if col not in ("error", "leaders per broker") else "left")
    for r in rows:
        p = r.get("produce") or {}
        t.add_row(str(r["brokers"]), str(r["replication_factor"]),
                  f"{p['records_per_sec']:,.0f}" if p else "—",
                  f"{r['vs_one_broker']:.2f}×" if "vs_one_broker" in r else "—",
                  str(r.get("leaders_per_broker", "")), str(r.get("throttled_s", "")), r.get("error", ""))
    Console(highlight=False, width=180).print(t)
