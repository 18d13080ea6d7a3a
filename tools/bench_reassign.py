"""Reassignment benchmark: how fast a partition's log is copied to a new replica, with and without
a replication throttle, and what a producer writing to that partition meanwhile sees (p99).

    python tools/bench_reassign.py                     # 64 MB log, throttle 10 MB/s
    python tools/bench_reassign.py --mb 128 --throttle-mb 20 --json

What it does, on a real 3-broker cluster of local processes (RF 1 topic ``moved`` led by broker
1, ``--mb`` MB of 1 KiB records written first):
1. baseline: the live producer alone (``--rate`` acks=all records/s to the same partition) for
   ``--seconds``;
2. unthrottled: ``replicas [1] -> [1, 2]``; the copy runs as fast as the follower fetches, while
   the live producer runs; MB/s = log size / time until the reassignment completed;
3. throttled: ``[1, 2] -> [1, 3]`` with ``replication_throttle_bytes`` = ``--throttle-mb``.
Each phase reports the MB/s moved and the live producer's p50/p99/max latency (send to ack).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fabric.client import Admin  # noqa: E402
from fabric.client import reassign as ra  # noqa: E402
from fabric.client.producer import Producer  # noqa: E402
from fabric.testing.cluster import ClusterProcesses, wait_until  # noqa: E402

TOPIC = "moved"
RECORD = 1024


class LiveProducer:
    """``rate`` acks=all records/s to the moved partition; latency of each (send to ack)."""

    def __init__(self, bootstrap: str, rate: int) -> None:
        self.producer = Producer(bootstrap, acks="all", linger_ms=0)
        self.rate = rate
        self.latencies: list[float] = []
        self.failed = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        period = 1.0 / self.rate
        nxt = time.monotonic()
        value = b"x" * RECORD
        while not self.stop.is_set():
            sent = time.monotonic()

            def done(fut, sent=sent) -> None:
                try:
                    fut.result()
                except Exception:
                    with self.lock:
                        self.failed += 1
                    return
                with self.lock:
                    self.latencies.append((time.monotonic() - sent) * 1000)
            self.producer.send(TOPIC, value, partition=0).add_done_callback(done)
            nxt += period
            time.sleep(max(0.0, nxt - time.monotonic()))

    def measure(self) -> None:
        with self.lock:
            self.latencies, self.failed = [], 0

    def summary(self) -> dict:
        with self.lock:
            lat = sorted(self.latencies)
        if not lat:
            return {"records": 0}
        pick = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 1)  # noqa: E731
        return {"records": len(lat), "failed": self.failed, "p50_ms": pick(0.5), "p99_ms": pick(0.99),
                "max_ms": round(lat[-1], 1)}

    def start(self) -> "LiveProducer":
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.producer.flush(30)
        self.producer.close()


def fill(bootstrap: str, mb: int) -> None:
    producer = Producer(bootstrap, acks=1, linger_ms=20, batch_bytes=1 << 20)
    value = b"f" * RECORD
    for _ in range(mb * 1024):
        producer.send(TOPIC, value, partition=0)
    producer.flush(300)
    producer.close()


def move(admin: Admin, replicas: list[int]) -> float:
    started = time.monotonic()
    [row] = ra.reassign(admin, {(TOPIC, 0): replicas})
    if row.get("error"):
        raise SystemExit(f"reassignment refused: {row['error']}")
    wait_until(lambda: not ra.reassignments(admin), 600, "the reassignment", every=0.05)
    return time.monotonic() - started


def log_bytes(cluster: ClusterProcesses, node: int) -> int:
    return sum(f.stat().st_size for f in cluster.specs[node].data_dir.glob(f"{TOPIC}-0/*.log"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=64, help="log size to move (MB, default 64)")
    ap.add_argument("--throttle-mb", type=float, default=10.0, help="throttle of the third phase (MB/s)")
    ap.add_argument("--rate", type=int, default=200, help="live producer: acks=all records/s (default 200)")
    ap.add_argument("--seconds", type=float, default=5.0, help="baseline phase length (default 5)")
    ap.add_argument("--json", action="store_true", help="one JSON document")
    args = ap.parse_args()
    results: dict = {"log_mb": args.mb, "rate": args.rate}
    with tempfile.TemporaryDirectory(prefix="bench-reassign-") as tmp, \
            ClusterProcesses(Path(tmp), 3, config={"broker_session_timeout_ms": 3000,
                                                   "leader_imbalance_check_ms": 0}) as cluster:
        cluster.start()
        wait_until(lambda: cluster.registered(3), 60, "three brokers")
        with Admin(cluster.bootstrap, timeout_ms=30_000) as admin:
            admin.create_topic(TOPIC, partitions=1, replication_factor=1)
            move(admin, [1])
            fill(cluster.bootstrap, args.mb)
            size = log_bytes(cluster, 1)
            results["log_bytes"] = size
            live = LiveProducer(cluster.bootstrap, args.rate).start()
            try:
                time.sleep(1.0)  # (the live producer's connections and metadata warm up)
                live.measure()
                time.sleep(args.seconds)
                results["baseline"] = live.summary()
                live.measure()
                took = move(admin, [1, 2])
                results["unthrottled"] = {"seconds": round(took, 2), "mb_per_s": round(size / took / 1e6, 1),
                                          **live.summary()}
                admin.alter_topic_configs(TOPIC, set={"replication_throttle_bytes": int(args.throttle_mb * 1e6)})
                live.measure()
                took = move(admin, [1, 3])
                results["throttled"] = {"throttle_mb_per_s": args.throttle_mb, "seconds": round(took, 2),
                                        "mb_per_s": round(size / took / 1e6, 1), **live.summary()}
            finally:
                live.close()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"log moved: {results['log_bytes'] / 1e6:.1f} MB; live producer {args.rate} acks=all records/s "
              f"of {RECORD} B to the moved partition")
        for phase in ("baseline", "unthrottled", "throttled"):
            r = results[phase]
            moved = f"{r['mb_per_s']:>6} MB/s in {r['seconds']:>5} s" if "mb_per_s" in r else " " * 21
            print(f"{phase:<12} {moved}   live p50 {r.get('p50_ms')} ms  p99 {r.get('p99_ms')} ms  "
                  f"max {r.get('max_ms')} ms  ({r.get('records')} acks, {r.get('failed', 0)} failed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
