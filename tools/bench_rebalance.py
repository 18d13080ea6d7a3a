"""How long a consumer group takes to rebalance: a member joins, leaves gracefully, crashes.

    python tools/bench_rebalance.py [--consumers 3] [--partitions 6] [--session-timeout-ms 6000]
                                    [--heartbeat-interval-ms 500] [--rounds 3]

Starts a broker (``fabric.testing.BrokerProcess``) in a temporary directory, a topic, a producer
thread writing ``--rate`` records/s round-robin over the partitions, and N group members as
processes (``fabric.testing.group_worker``, cooperative-sticky).  For each event it measures, from
the event:

* owned:   until ``describe_groups`` shows the group STABLE with the expected members and every
           partition assigned (polled every 10 ms);
* resumed: until every partition has a record consumed after the event by the member that now
           owns it (from the members' own timestamped output): the moved partitions are being
           consumed again by their new owners.

Events: a new member subscribes (its "subscribed" line), SIGTERM of a member (it commits and
leaves), SIGKILL of a member (found by session expiry).  Goals: graceful leave < 1 s, crash <
session timeout + 1 s.  Every process is killed and reaped on exit.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fabric.client import Admin, Producer
from fabric.errors import FabricError
from fabric.testing import BrokerProcess
from fabric.testing.group_worker import GroupWorkerProcess

GROUP, TOPIC = "bench-rebalance", "bench-rebalance"
POLL_S = 0.01
EVENT_TIMEOUT_S = 60.0


class Bench:
    def __init__(self, args: argparse.Namespace, broker: BrokerProcess) -> None:
        self.args = args
        self.broker = broker
        self.admin = Admin(broker.bootstrap, timeout_ms=5000)
        self.workers: list[GroupWorkerProcess] = []  # members now
        self.started: list[GroupWorkerProcess] = []  # every process, for cleanup
        self.stop = threading.Event()

    def worker_args(self) -> list[str]:
        a = self.args
        return ["--session-timeout-ms", str(a.session_timeout_ms), "--heartbeat-interval-ms",
                str(a.heartbeat_interval_ms), "--commit", "auto", "--offset-reset", "latest"]

    def add_worker(self) -> GroupWorkerProcess:
        w = GroupWorkerProcess(self.broker.bootstrap, GROUP, [TOPIC], *self.worker_args(),
                               name=f"c{len(self.workers)}").start()
        self.workers.append(w)
        self.started.append(w)
        return w

    def produce(self) -> None:
        interval = 1.0 / self.args.rate
        with Producer(self.broker.bootstrap, linger_ms=1) as p:
            i = 0
            while not self.stop.is_set():
                p.send(TOPIC, b"x", partition=i % self.args.partitions)
                i += 1
                time.sleep(interval)

    def owned(self, members: int) -> bool:
        try:
            g = self.admin.describe_group(GROUP)
        except FabricError:
            return False
        assigned = [p for m in g["members"] for e in m["assignment"] for p in e["partitions"]]
        return (g["state"] == "STABLE" and len(g["members"]) == members
                and sorted(assigned) == list(range(self.args.partitions)))

    def resumed_at(self, since: float) -> float | None:
        """When every partition had a record consumed after ``since`` by the member that owns it
        now (None: not yet)."""
        first: dict[int, float] = {}
        for w in self.workers:
            mine = {p for _, p in w.assignment()}
            for e in w.snapshot():
                if e["event"] == "records" and e["t"] > since:
                    for _, p, _, _ in e["records"]:
                        if p in mine:
                            first[p] = min(first.get(p, e["t"]), e["t"])
        return max(first.values()) if len(first) == self.args.partitions else None

    def measure(self, since: float, members: int) -> tuple[float, float]:
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        owned = None
        while True:
            now = time.time()
            if owned is None and self.owned(members):
                owned = now - since
            resumed = self.resumed_at(since)
            if owned is not None and resumed is not None:
                return owned, resumed - since
            if time.monotonic() > deadline:
                raise RuntimeError(f"no rebalance within {EVENT_TIMEOUT_S} s (owned={owned})")
            time.sleep(POLL_S)

    def settle(self, members: int) -> None:
        """Wait until the group is stable, consuming everything, and stays so for two heartbeats."""
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        quiet_since = None
        while quiet_since is None or time.monotonic() - quiet_since < 2 * self.args.heartbeat_interval_ms / 1000:
            if time.monotonic() > deadline:
                raise RuntimeError("the group did not settle")
            ok = self.owned(members) and self.resumed_at(time.time() - 0.5) is not None
            quiet_since = (quiet_since or time.monotonic()) if ok else None
            time.sleep(0.05)

    def run(self) -> dict[str, list[tuple[float, float]]]:
        a = self.args
        self.admin.create_topic(TOPIC, partitions=a.partitions)
        producer = threading.Thread(target=self.produce, daemon=True)
        producer.start()
        for _ in range(a.consumers):
            self.add_worker()
        self.settle(a.consumers)
        results: dict[str, list[tuple[float, float]]] = {"member joins": [], "graceful leave (SIGTERM)": [],
                                                         "crash (SIGKILL)": []}
        for _ in range(a.rounds):
            w = self.add_worker()
            w.wait_for(lambda ev: any(e["event"] == "subscribed" for e in ev), 30, "subscribed")
            since = next(e["t"] for e in w.snapshot() if e["event"] == "subscribed")
            results["member joins"].append(self.measure(since, a.consumers + 1))
            self.settle(a.consumers + 1)

            w = self.workers.pop(0)
            since = time.time()
            assert w.proc is not None
            w.proc.send_signal(signal.SIGTERM)  # the member commits and leaves; reaped below
            results["graceful leave (SIGTERM)"].append(self.measure(since, a.consumers))
            w.stop()
            self.settle(a.consumers)

            self.add_worker()
            self.settle(a.consumers + 1)
            w = self.workers.pop(0)
            since = time.time()
            w.kill()
            results["crash (SIGKILL)"].append(self.measure(since, a.consumers))
            self.settle(a.consumers)
        self.stop.set()
        producer.join(10)
        return results

    def close(self) -> None:
        self.stop.set()
        for w in self.started:
            w.kill()
        self.admin.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--consumers", type=int, default=3)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--session-timeout-ms", type=int, default=6000)
    p.add_argument("--heartbeat-interval-ms", type=int, default=500)
    p.add_argument("--initial-rebalance-delay-ms", type=int, default=200)
    p.add_argument("--rate", type=int, default=500, help="records/s produced while measuring")
    p.add_argument("--rounds", type=int, default=3, help="each event is measured this many times")
    args = p.parse_args(argv)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="fabric-bench-rebalance-") as tmp:
        broker = BrokerProcess(Path(tmp) / "data", extra_args=[
            "--group-initial-rebalance-delay-ms", str(args.initial_rebalance_delay_ms)])
        bench: Bench | None = None
        try:
            broker.start()
            bench = Bench(args, broker)
            results = bench.run()
        finally:
            if bench is not None:
                bench.close()
            broker.kill()
    session_s = args.session_timeout_ms / 1000
    goals = {"member joins": None, "graceful leave (SIGTERM)": 1.0, "crash (SIGKILL)": session_s + 1.0}
    table = Table(title=f"rebalance time: {args.consumers} consumers, {args.partitions} partitions, session "
                        f"{args.session_timeout_ms} ms, heartbeat {args.heartbeat_interval_ms} ms, "
                        f"{args.rounds} rounds (median / max, seconds)")
    for col in ("event", "all partitions owned", "consumption resumed", "goal", "met"):
        table.add_column(col)
    ok = True
    for event, runs in results.items():
        owned, resumed = [r[0] for r in runs], [r[1] for r in runs]
        goal = goals[event]
        met = goal is None or max(resumed) < goal
        ok = ok and met
        table.add_row(event, f"{statistics.median(owned):.3f} / {max(owned):.3f}",
                      f"{statistics.median(resumed):.3f} / {max(resumed):.3f}",
                      "-" if goal is None else f"< {goal:.1f}", "-" if goal is None else ("yes" if met else "NO"))
    console.print(table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
