"""Check a consumed log against the producer's ordering promise, and a crash test that uses it.

The producer's promise (``fabric.client.ordering``): per partition, the first copy of every
record is in send order; a record may appear again later only as part of a re-sent run.  The
workload makes that checkable per key: record ``g`` (a generation number, increasing in send
order) has key ``k{g % keys}`` and value ``str(g)``; one key lives on one partition.

``check_order`` counts, per key, *inversions* (a record whose first copy comes after the first
copy of a record sent later: what the promise excludes), *duplicates* (further copies of a
record), *raw inversions* (any copy, duplicates included, below the largest generation seen
before it: what a checker that ignores duplicates would see), and records missing.

``run_crash_test`` is the whole experiment with real processes: a broker, a default ``Producer``
streaming the workload, several SIGKILL + restarts of the broker mid-stream (same port, same data
directory), then a consumer reading everything back.  ``tests/test_producer_order.py`` runs a
short version, ``tools/producer_crash_order.py`` the long one.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..client.admin import Admin
from ..client.consumer import Consumer
from ..client.producer import Producer
from .processes import BrokerProcess

log = logging.getLogger("fabric.testing.order")


@dataclass
class OrderReport:
    records: int = 0  # copies read
    distinct: int = 0
    duplicates: int = 0
    inversions: int = 0  # first copies out of send order: the promise says 0
    raw_inversions: int = 0  # copies below a generation seen earlier, duplicates included
    missing: list[int] = field(default_factory=list)  # generations sent and acknowledged, not read
    examples: list[str] = field(default_factory=list)  # the first few inversions, for the message

    def summary(self) -> str:
        return (f"{self.records} records read, {self.distinct} distinct, {self.duplicates} duplicates, "
                f"{self.inversions} inversions, {self.raw_inversions} raw inversions (duplicates included), "
                f"{len(self.missing)} missing")


def check_order(records: Iterable[tuple[bytes | None, int, int, int]], expected: Iterable[int] = ()) -> OrderReport:
    """``records``: ``(key, generation, partition, offset)`` in log order per partition.
    ``expected``: generations that must be there (the acknowledged ones)."""
    rep = OrderReport()
    seen: set[int] = set()
    first_max: dict[bytes | None, int] = {}  # per key: largest generation among first copies
    any_max: dict[bytes | None, int] = {}  # per key: largest generation among all copies
    for key, g, partition, offset in records:
        rep.records += 1
        if g < any_max.get(key, -1):
            rep.raw_inversions += 1
        else:
            any_max[key] = g
        if g in seen:
            rep.duplicates += 1
            continue
        seen.add(g)
        top = first_max.get(key, -1)
        if g < top:
            rep.inversions += 1
            if len(rep.examples) < 5:
                rep.examples.append(f"key {key!r}: g={g} at partition {partition} offset {offset} "
                                    f"after g={top}")
        else:
            first_max[key] = g
    rep.distinct = len(seen)
    rep.missing = sorted(set(expected) - seen)
    return rep


def read_all(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[tuple[bytes | None, int, int, int]]:
    """Every record of ``topic`` from the beginning to the end offsets of now, in log order."""
    with Admin(bootstrap) as admin:
        n = admin.partitions_for(topic)
        ends = {p: e["offset"] for p, e in enumerate(admin.list_offsets([(topic, p, "latest") for p in range(n)]))}
    out: list[tuple[bytes | None, int, int, int]] = []
    deadline = time.monotonic() + timeout_s
    with Consumer(bootstrap, auto_offset_reset="earliest") as c:
        c.assign([(topic, p) for p in range(n) if ends[p] > 0])
        left = {p for p in range(n) if ends[p] > 0}
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(f"read {len(out)} records of {topic}; partitions {sorted(left)} not read to the end")
            for r in c.poll(timeout_ms=500):
                out.append((r.key, int(r.value), r.partition, r.offset))
                if r.offset >= ends[r.partition] - 1:
                    left.discard(r.partition)
    return out


@dataclass
class CrashResult:
    report: OrderReport
    sent: int
    failed: int
    kills: int
    seconds: float
    resent_requests: int  # requests the producer re-sent after a lost connection or a timeout


class _ResendCounter(logging.Handler):
    """Counts the requests the producer reports re-sending (its warning on a lost connection)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.requests = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "re-sending" in str(record.msg) and isinstance(record.args, tuple) and len(record.args) == 2:
            self.requests += int(record.args[1])


def run_crash_test(workdir: Path, records: int, kills: int, keys: int = 1000, partitions: int = 4,
                   window: int = 20_000, log_every: float = 0.0,
                   producer_config: dict[str, Any] | None = None, broker_args: Sequence[str] = (),
                   faults: Sequence[str] = ("kill",), stall_s: float = 0.0) -> CrashResult:
    """Stream ``records`` keyed records with a default ``Producer`` while the broker is SIGKILLed
    and restarted ``kills`` times, spread evenly over the stream; then read them back and check.
    ``producer_config``: ``Producer`` settings other than the defaults (e.g. small batches and no
    linger, for many requests in flight at each kill); ``broker_args``: extra ``fabric broker``
    arguments (``--flush-every-batch`` slows each reply down to an fsync: more requests in flight).
    ``faults``: what each of the ``kills`` does, in turn: ``"kill"`` (SIGKILL, restart), ``"term"``
    (SIGTERM: the broker answers ``BROKER_SHUTTING_DOWN`` while it stops; restart) or ``"stop"``
    (SIGSTOP for ``stall_s`` seconds, then SIGCONT: requests time out, and the broker executes
    them after the producer re-sent them on a new connection).

    The producer thread keeps at most ``window`` records unacknowledged (it waits for the
    future of record ``g - window`` before sending ``g``): enough to keep requests in flight at
    every kill, without letting the stream run ahead of the kills."""
    start = time.monotonic()
    resent = _ResendCounter()
    logging.getLogger("fabric.producer").addHandler(resent)
    broker = BrokerProcess(workdir / "data", extra_args=broker_args, log_path=workdir / "broker.log").start()
    failed = 0
    progress = [0]  # generations sent so far (read by the killer)
    futs: list = []  # the records' futures, by generation (read by the killer too)
    # Fault k is injected as soon as record targets[k] is sent.  A little before each target the
    # producer waits until the previous fault is over (the broker restarted): so every fault hits
    # a stream in full flow, never one that paused or already ended.
    step = records // (kills + 1)
    targets = [step * k for k in range(1, kills + 1)]
    gates = [t - step // 4 for t in targets[1:]]
    faults_done = threading.Semaphore(0)
    try:
        with Admin(broker.bootstrap) as admin:
            admin.create_topic("order", partitions=partitions)
        errors: list[BaseException] = []

        def produce() -> None:
            nonlocal failed
            try:
                with Producer(broker.bootstrap, **(producer_config or {})) as p:
                    gate = 0
                    for g in range(records):
                        if gate < len(gates) and g == gates[gate]:
                            faults_done.acquire()
                            gate += 1
                        if g >= window:
                            if futs[g - window].exception(timeout=300) is not None:
                                failed += 1
                        futs.append(p.send("order", str(g).encode(), key=f"k{g % keys}".encode()))
                        progress[0] = g + 1
                    p.flush(timeout=300)
                failed += sum(1 for f in futs[max(0, records - window):] if f.exception(0) is not None)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        t = threading.Thread(target=produce, name="order-producer", daemon=True)
        t.start()
        probe = 0  # a record sent after the last fault: once acknowledged, the producer is connected again
        for k, target in enumerate(targets, 1):
            while (progress[0] < target or not futs[probe].done()) and t.is_alive():
                time.sleep(0.001)  # polling a condition: the stream reached the next kill point
            pending_by = time.monotonic() + 2  # prefer a moment with records pending (in flight), but
            while futs[progress[0] - 1].done() and time.monotonic() < pending_by:  # the producer may wait
                time.sleep(0.001)  # at its next gate with everything acknowledged: then do not wait
            fault = faults[(k - 1) % len(faults)]
            if fault == "stop":
                assert broker.pid is not None
                os.kill(broker.pid, signal.SIGSTOP)
                time.sleep(stall_s)  # the fault's length, not a wait for a condition
                os.kill(broker.pid, signal.SIGCONT)
            else:
                broker.kill() if fault == "kill" else broker.stop()
                broker.start()
            probe = min(progress[0] + 100, records - 1)
            faults_done.release()
            if log_every:
                log.info("%s %d/%d at g=%d (%.1f s)", fault, k, kills, progress[0], time.monotonic() - start)
        t.join(timeout=600)
        if t.is_alive() or errors:
            raise RuntimeError(f"producer did not finish: {errors or 'still running'}")
        rows = read_all(broker.bootstrap, "order")
    finally:
        broker.kill()
        logging.getLogger("fabric.producer").removeHandler(resent)
    report = check_order(rows, range(records))
    return CrashResult(report, records, failed, kills, time.monotonic() - start, resent.requests)
