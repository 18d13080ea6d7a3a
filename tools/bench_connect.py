"""Connect throughput: PostgreSQL -> topic, topic -> PostgreSQL (rows/s) and file -> topic (lines/s),
beside a plain ``psql \\copy`` of the same table.

Everything runs on this machine: a broker process on a free loopback port, a private PostgreSQL
(``connectors.testing.PostgresServer``: Debian's package, ``apt-get install postgresql``) and an
in-process worker.  The table is a realistic orders table (8 columns: ids, text, numeric,
timestamptz, a nullable note).  Two figures per copy:

* ``total``: rows (or lines) divided by the wall time from the worker's start until the last row
  is in the destination, so it includes start-up (the worker is standalone, so its sink reads its
  partitions directly: no consumer-group join, which would wait out the broker's
  ``group_initial_rebalance_delay_ms``, 3 s by default);
* ``steady``: the rows that arrived between the first and the last progress seen, divided by that
  time (progress is polled every 0.1 s): the copy's own rate, without start-up;
* ``cpu_us_per_row``: CPU microseconds per row spent by the worker (this process), the broker and
  PostgreSQL (postmaster and backends) during the copy, and ``cpu_bound_rows_per_s``: the rate
  those would allow on this machine's cores if nothing else ran.  On a machine shared with other
  work the wall-clock rates move with the load; these CPU figures hardly do.

The sink copies with ``insert_mode: upsert`` on the primary key (COPY into a staging table, then one
``INSERT ... ON CONFLICT``): the mode that absorbs replays after a crash, so the realistic one.

    python tools/bench_connect.py                 # 1,000,000 rows and lines
    python tools/bench_connect.py --rows 100000   # quicker
    python tools/bench_connect.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from connectors.testing import PostgresServer, running_worker  # noqa: E402
from fabric.client import Admin  # noqa: E402
from fabric.testing import BrokerProcess  # noqa: E402

DDL = """CREATE TABLE {t} (id BIGINT PRIMARY KEY, customer_id INT NOT NULL, product TEXT NOT NULL,
  quantity INT NOT NULL, unit_price NUMERIC(10,2) NOT NULL, amount NUMERIC(12,2) NOT NULL,
  created_at TIMESTAMPTZ NOT NULL, note TEXT)"""
FILL = """INSERT INTO orders SELECT i, 1 + i % 9973, 'product-' || (i % 500), 1 + i % 5, round((i % 10000) * 0.37, 2),
  round((i % 10000) * 0.37 * (1 + i % 5), 2), timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second',
  CASE WHEN i % 10 = 0 THEN NULL ELSE 'deliver to door ' || i END FROM generate_series(1, {n}) i"""


def measure(progress: Callable[[], int], n: int, what: str) -> tuple[float, float | None]:
    """(total, steady) rows/s: ``progress`` polled until it reaches ``n``; see the docstring.
    Steady is None when the whole copy fell between two polls (too fast to see)."""
    t0 = time.perf_counter()
    first: tuple[float, int] | None = None
    deadline = t0 + 3600
    while True:
        done = progress()
        now = time.perf_counter()
        if done > 0 and first is None:
            first = (now, done)
        if done >= n:
            break
        if now > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    assert first is not None
    steady = (n - first[1]) / (now - first[0]) if now > first[0] and first[1] < n else None
    return n / (now - t0), steady


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) of these processes, their children included (PostgreSQL's
    backends: running ones are counted directly, ended ones are in the postmaster's children)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(d), int(f[1])
        if pid in pids or ppid in pids:
            total += (int(f[11]) + int(f[12])) / tick
        if pid in pids:
            total += (int(f[13]) + int(f[14])) / tick
    return total


class CpuMeter:
    """CPU used by the worker (this process), the broker and PostgreSQL between start and stop."""

    def __init__(self, broker_pid: int, pg_pid: int) -> None:
        self.broker_pid, self.pg_pid = broker_pid, pg_pid

    def start(self) -> None:
        self.t0 = (time.process_time(), cpu_seconds([self.broker_pid]), cpu_seconds([self.pg_pid]))

    def stop(self, n: int, prefix: str, results: dict) -> None:
        t1 = (time.process_time(), cpu_seconds([self.broker_pid]), cpu_seconds([self.pg_pid]))
        used = [b - a for a, b in zip(self.t0, t1)]
        for name, sec in zip(("worker", "broker", "postgres"), used):
            results[f"{prefix}_cpu_us_per_row_{name}"] = sec / n * 1e6
        results[f"{prefix}_cpu_bound_rows_per_s"] = n * (os.cpu_count() or 1) / max(sum(used), 1e-9)


def topic_size(bootstrap: str, topic: str) -> int:
    try:
        with Admin(bootstrap) as a:
            return sum(o["latest"] for o in a.topic_offsets(topic))
    except Exception:  # noqa: BLE001 - not created yet
        return 0


def pg_count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as c:
        return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def pg_progress(conn: psycopg.Connection, table: str) -> int:
    """Rows committed so far in the sink's table, as its highest ``id``: the rows come from one
    partition in ``id`` order and the sink commits its writes in that order, so the two agree,
    and this is one index probe.  (A ``count(*)`` ten times a second scans the growing table
    each time: on two cores it took a quarter of one from the copy it was measuring, and most
    of the CPU charged to PostgreSQL.)  One autocommit connection for all the probes: a new one
    each time forks a PostgreSQL backend and runs psycopg's connect in this process, beside the
    worker's threads.  The copy is checked with a full count and diff after."""
    return conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]


def psql_copy(pg: PostgresServer, n: int, tmp: Path) -> tuple[float, float]:
    """Seconds for ``\\copy orders TO file`` and ``\\copy orders_psql FROM file`` with psql."""
    out = tmp / "orders.copy"
    out.touch()
    out.chmod(0o666)
    psql = str(pg.bin / "psql")
    t0 = time.perf_counter()
    subprocess.run([psql, pg.dsn, "-qc", f"\\copy orders TO '{out}'"], check=True)
    t1 = time.perf_counter()
    subprocess.run([psql, pg.dsn, "-qc", f"\\copy orders_psql FROM '{out}'"], check=True)
    t2 = time.perf_counter()
    assert pg_count(pg.dsn, "orders_psql") == n
    return t1 - t0, t2 - t1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    n = args.rows
    tmp = Path(tempfile.mkdtemp(prefix="fabric-bench-connect-"))
    broker = BrokerProcess(tmp / "data").start()
    pg = PostgresServer().start()
    results: dict[str, float | None] = {}
    try:
        with psycopg.connect(pg.dsn, autocommit=True) as c:
            for t in ("orders", "orders_copy", "orders_psql"):
                c.execute(DDL.format(t=t))
            c.execute(FILL.format(n=n))
            c.execute("VACUUM ANALYZE orders")
        out_s, in_s = psql_copy(pg, n, tmp)
        results["psql_copy_out_rows_per_s"] = n / out_s
        results["psql_copy_in_rows_per_s"] = n / in_s
        cpu = CpuMeter(broker.proc.pid, int((pg.data / "postmaster.pid").read_text().split()[0]))
        head = f'worker: {{bootstrap: "{broker.bootstrap}", rest_port: 0}}\nconnectors:\n'
        cpu.start()
        with running_worker(head + f"""
  - {{name: pg-in, class: postgres-source, key_converter: json, value_converter: json,
      config: {{dsn: "{pg.dsn}", tables: [orders], mode: incrementing, incrementing_column: id, key_column: id,
                topic_prefix: "pg.", batch_size: 20000}}}}
"""):
            total, steady = measure(lambda: topic_size(broker.bootstrap, "pg.orders"), n, "PostgreSQL -> topic")
            results["postgres_to_topic_rows_per_s"], results["postgres_to_topic_steady_rows_per_s"] = total, steady
        cpu.stop(n, "postgres_to_topic", results)
        probe = psycopg.connect(pg.dsn, autocommit=True)
        cpu.start()
        with running_worker(head + f"""
  - {{name: pg-out, class: postgres-sink, topics: [pg.orders], key_converter: json, value_converter: json,
      config: {{dsn: "{pg.dsn}", table: orders_copy, insert_mode: upsert, pk_mode: record_key, pk_fields: [id],
                batch_size: 50000}}}}
"""):
            total, steady = measure(lambda: pg_progress(probe, "orders_copy"), n, "topic -> PostgreSQL")
            results["topic_to_postgres_rows_per_s"], results["topic_to_postgres_steady_rows_per_s"] = total, steady
        cpu.stop(n, "topic_to_postgres", results)
        probe.close()
        assert pg_count(pg.dsn, "orders_copy") == n
        with psycopg.connect(pg.dsn) as c:  # the copy is exact: same rows, same values
            diff = c.execute("SELECT count(*) FROM (SELECT * FROM orders EXCEPT SELECT * FROM orders_copy) d")
            assert diff.fetchone()[0] == 0, "orders_copy differs from orders"
        src = tmp / "lines.txt"
        with open(src, "w") as f:
            for i in range(n):
                f.write(f"2026-01-01T00:00:{i % 60:02d}Z INFO request {i} served in {i % 997} ms\n")
        with running_worker(head + f"""
  - {{name: file-in, class: file-source, value_converter: string, config: {{file: "{src}", topic: lines}}}}
"""):
            total, steady = measure(lambda: topic_size(broker.bootstrap, "lines"), n, "file -> topic")
            results["file_to_topic_lines_per_s"], results["file_to_topic_steady_lines_per_s"] = total, steady
    finally:
        pg.destroy()
        broker.kill()
    print(f"{n:,} rows / lines")
    for k, v in results.items():
        print(f"  {k:44} {'too fast to see' if v is None else format(v, '>12,.0f' if v >= 100 else '>12.2f')}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": n, **{k: v if v is None else round(v, 2) for k, v in results.items()}},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
