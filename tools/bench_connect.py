"""Connect throughput: PostgreSQL -> topic, topic -> PostgreSQL (rows/s) and file -> topic (lines/s),
beside a plain ``psql \\copy`` of the same table.

Everything runs on this machine: a broker process on a free loopback port, a private PostgreSQL
(``connectors.testing.PostgresServer``: Debian's package, ``apt-get install postgresql``) and an
in-process worker.  The table is a realistic orders table (8 columns: ids, text, numeric,
timestamptz, a nullable note).  Each figure is rows (or lines) divided by the wall time from the
worker's start until the last row is in the destination, so it includes start-up.

    python tools/bench_connect.py                 # 1,000,000 rows and lines
    python tools/bench_connect.py --rows 100000   # quicker
    python tools/bench_connect.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from connectors.testing import PostgresServer, running_worker, wait_until  # noqa: E402
from fabric.client import Admin  # noqa: E402
from fabric.testing import BrokerProcess  # noqa: E402

DDL = """CREATE TABLE {t} (id BIGINT PRIMARY KEY, customer_id INT NOT NULL, product TEXT NOT NULL,
  quantity INT NOT NULL, unit_price NUMERIC(10,2) NOT NULL, amount NUMERIC(12,2) NOT NULL,
  created_at TIMESTAMPTZ NOT NULL, note TEXT)"""
FILL = """INSERT INTO orders SELECT i, 1 + i % 9973, 'product-' || (i % 500), 1 + i % 5, round((i % 10000) * 0.37, 2),
  round((i % 10000) * 0.37 * (1 + i % 5), 2), timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second',
  CASE WHEN i % 10 = 0 THEN NULL ELSE 'deliver to door ' || i END FROM generate_series(1, {n}) i"""


def topic_size(bootstrap: str, topic: str) -> int:
    try:
        with Admin(bootstrap) as a:
            return sum(o["latest"] for o in a.topic_offsets(topic))
    except Exception:  # noqa: BLE001 - not created yet
        return 0


def pg_count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as c:
        return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


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
    results: dict[str, float] = {}
    try:
        with psycopg.connect(pg.dsn, autocommit=True) as c:
            for t in ("orders", "orders_copy", "orders_psql"):
                c.execute(DDL.format(t=t))
            c.execute(FILL.format(n=n))
            c.execute("VACUUM ANALYZE orders")
        out_s, in_s = psql_copy(pg, n, tmp)
        results["psql_copy_out_rows_per_s"] = n / out_s
        results["psql_copy_in_rows_per_s"] = n / in_s
        head = f'worker: {{bootstrap: "{broker.bootstrap}", rest_port: 0}}\nconnectors:\n'
        t0 = time.perf_counter()
        with running_worker(head + f"""
  - {{name: pg-in, class: postgres-source, key_converter: json, value_converter: json,
      config: {{dsn: "{pg.dsn}", tables: [orders], mode: incrementing, incrementing_column: id, key_column: id,
                topic_prefix: "pg.", batch_size: 20000}}}}
"""):
            wait_until(lambda: topic_size(broker.bootstrap, "pg.orders") >= n, 3600, "PostgreSQL -> topic", 0.2)
            results["postgres_to_topic_rows_per_s"] = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        with running_worker(head + f"""
  - {{name: pg-out, class: postgres-sink, topics: [pg.orders], key_converter: json, value_converter: json,
      config: {{dsn: "{pg.dsn}", table: orders_copy, batch_size: 50000}}}}
"""):
            wait_until(lambda: pg_count(pg.dsn, "orders_copy") >= n, 3600, "topic -> PostgreSQL", 0.2)
            results["topic_to_postgres_rows_per_s"] = n / (time.perf_counter() - t0)
        src = tmp / "lines.txt"
        with open(src, "w") as f:
            for i in range(n):
                f.write(f"2026-01-01T00:00:{i % 60:02d}Z INFO request {i} served in {i % 997} ms\n")
        t0 = time.perf_counter()
        with running_worker(head + f"""
  - {{name: file-in, class: file-source, value_converter: string, config: {{file: "{src}", topic: lines}}}}
"""):
            wait_until(lambda: topic_size(broker.bootstrap, "lines") >= n, 3600, "file -> topic", 0.2)
            results["file_to_topic_lines_per_s"] = n / (time.perf_counter() - t0)
    finally:
        pg.destroy()
        broker.kill()
    print(f"{n:,} rows / lines")
    for k, v in results.items():
        print(f"  {k:32} {v:>12,.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": n, **{k: round(v) for k, v in results.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
