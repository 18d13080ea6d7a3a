#!/usr/bin/env python3
"""What idempotence costs: produce records/s with the idempotent producer (the default) against
the same producer with ``enable_idempotence=False``, in one run, against one real broker.

    python tools/bench_idempotence.py                       # 300,000 records of 100 bytes, 3 rounds
    python tools/bench_idempotence.py --records 1000000 --rounds 5 --cluster

Both sides use ``acks="all"`` (what idempotence requires), so the difference is idempotence
alone: a producer id fetched once, a sequence stamped per batch, one batch per partition per
request, and the leader's duplicate check per batch.  Rounds alternate (on, off, on, off, ...)
so a machine that speeds up or slows down during the run affects both alike; the figure is each
side's median.  ``--cluster``: three brokers, RF 3, instead of one.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from fabric.client.admin import Admin  # noqa: E402
from fabric.client.producer import Producer  # noqa: E402
from fabric.testing.cluster import ClusterProcesses, wait_until  # noqa: E402
from fabric.testing.processes import BrokerProcess  # noqa: E402


def one_round(bootstrap: str, topic: str, records: int, size: int, idempotent: bool) -> float:
    value = b"x" * size
    with Producer(bootstrap, acks="all", enable_idempotence=idempotent, linger_ms=5) as p:
        p.send(topic, value).result(30)  # connected, producer id fetched: not part of the timing
        started = time.perf_counter()
        for _ in range(records):
            p.send(topic, value)
        p.flush(300)
        elapsed = time.perf_counter() - started
        assert p.enable_idempotence == idempotent
    return records / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--size", type=int, default=100, help="value bytes")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side (alternating)")
    parser.add_argument("--cluster", action="store_true", help="three brokers, RF 3")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fabric-bench-idem-") as tmp:
        if args.cluster:
            servers = ClusterProcesses(tmp, 3)
            servers.start()
            wait_until(lambda: servers.registered(3), 30, "three registered brokers")
            bootstrap = servers.bootstrap
        else:
            servers = BrokerProcess(pathlib.Path(tmp) / "data")
            servers.start()
            bootstrap = servers.bootstrap
        try:
            with Admin(bootstrap, timeout_ms=10_000) as admin:
                admin.create_topic("bench-idem", partitions=args.partitions,
                                   replication_factor=3 if args.cluster else None)
            if args.cluster:
                wait_until(lambda: servers.in_sync(), 30, "the topic in sync")
            rates: dict[bool, list[float]] = {True: [], False: []}
            for i in range(args.rounds):
                for idempotent in (True, False) if i % 2 == 0 else (False, True):
                    rate = one_round(bootstrap, "bench-idem", args.records, args.size, idempotent)
                    rates[idempotent].append(rate)
                    print(f"round {i + 1}: idempotence {'on ' if idempotent else 'off'} {rate:,.0f} records/s",
                          flush=True)
        finally:
            servers.close() if args.cluster else servers.kill()
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    where = "3 brokers, RF 3" if args.cluster else "1 broker"
    print(f"{where}, {args.records:,} records of {args.size} B, acks=all, median of {args.rounds}: "
          f"idempotence on {on:,.0f} records/s, off {off:,.0f} records/s: {100 * (off - on) / off:+.1f}% slower on")
    return 0


if __name__ == "__main__":
    sys.exit(main())
