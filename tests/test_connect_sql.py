"""SQL connectors against real databases: SQLite files and a private PostgreSQL server.

The PostgreSQL server is Debian's (``.ci/run`` installs it), started on a free loopback port with
its own data directory by ``connectors.testing.PostgresServer`` and destroyed afterwards.
"""

from __future__ import annotations

import decimal
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from connectors.testing import PostgresServer, read_topic, running_worker, wait_until
from fabric.client import Producer
from fabric.testing import free_port

ROOT = Path(__file__).resolve().parent.parent
N = 100_000
@pytest.fixture
def broker(brokers, tmp_path):
    """A broker whose empty groups start their first rebalance after 100 ms, not 3 s: every sink
    task (and distributed worker) joins a group, and the tests start many."""
    cfg = tmp_path / "broker.yaml"
    cfg.write_text("group_initial_rebalance_delay_ms: 100\n")
    return brokers(extra_args=["--config", str(cfg)])


ORDERS_DDL = """CREATE TABLE {name} (id BIGINT PRIMARY KEY, customer_id INT NOT NULL, product TEXT NOT NULL,
  quantity INT NOT NULL, amount NUMERIC(10,2) NOT NULL, created_at TIMESTAMPTZ NOT NULL, note TEXT)"""


@pytest.fixture(scope="module")
def pg():
    server = PostgresServer()
    try:
        server.start()
        with psycopg.connect(server.dsn, autocommit=True) as c:
            c.execute(ORDERS_DDL.format(name="orders"))
            c.execute(f"""INSERT INTO orders SELECT i, 1 + i % 997, 'product-' || (i % 50), 1 + i % 5,
                          round((i % 10000) * 1.37, 2), timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second',
                          CASE WHEN i % 10 = 0 THEN NULL ELSE 'note ' || i END FROM generate_series(1, {N}) i""")
        yield server
    finally:
        server.destroy()


def pg_rows(dsn: str, table: str) -> list[tuple]:
    with psycopg.connect(dsn) as c:
        return c.execute(f"SELECT id, customer_id, product, quantity, amount, created_at, note FROM {table} "
                         "ORDER BY id").fetchall()


def pg_count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as c:
        try:
            return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        except psycopg.errors.UndefinedTable:
            return -1


def sqlite_count(db: Path, table: str) -> int:
    if not db.exists():
        return -1
    with sqlite3.connect(db) as c:
        try:
            return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        except sqlite3.OperationalError:
            return -1


def test_sqlite_source_modes_and_sink_upsert_delete(broker, tmp_path):
    src, dst = tmp_path / "shop.db", tmp_path / "copy.db"
    with sqlite3.connect(src) as c:
        c.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, updated TEXT)")
        c.executemany("INSERT INTO items VALUES (?, ?, ?)", [(i, f"n{i}", f"2026-01-01T00:00:{i % 60:02d}")
                                                             for i in range(1, 251)])
    yaml_text = f"""
worker: {{bootstrap: "{broker.bootstrap}", rest_port: 0, offset_flush_interval_ms: 100}}
connectors:
  - name: inc
    class: sqlite-source
    key_converter: json
    config: {{database: "{src}", tables: [items], mode: incrementing, incrementing_column: id, key_column: id,
              topic_prefix: "inc.", batch_size: 100, poll_interval_ms: 50}}
  - name: tsi
    class: sqlite-source
    config: {{database: "{src}", tables: [items], mode: timestamp+incrementing, timestamp_column: updated,
              incrementing_column: id, topic_prefix: "tsi.", batch_size: 64, poll_interval_ms: 50}}
  - name: ts
    class: sqlite-source
    config: {{database: "{src}", tables: [items], mode: timestamp, timestamp_column: updated,
              topic_prefix: "ts.", batch_size: 7, poll_interval_ms: 50}}
  - name: q
    class: sqlite-source
    config: {{database: "{src}", query: "SELECT id, upper(name) AS name FROM items WHERE id % 2 = 0",
              mode: incrementing, incrementing_column: id, topic: evens, poll_interval_ms: 50}}
  - name: out
    class: sqlite-sink
    topics: [inc.items]
    key_converter: json
    config: {{database: "{dst}", table: items, insert_mode: upsert, pk_mode: record_key, pk_fields: [id],
              auto_create: true, delete_enabled: true, batch_size: 100}}
"""
    with running_worker(yaml_text):
        wait_until(lambda: sqlite_count(dst, "items") == 250, 30, "250 rows copied")
        assert len(read_topic(broker.bootstrap, "tsi.items", 250)) == 250
        assert len(read_topic(broker.bootstrap, "ts.items", 250)) == 250
        evens = read_topic(broker.bootstrap, "evens", 125)
        assert json.loads(evens[0].value) == {"id": 2, "name": "N2"}
        with sqlite3.connect(src) as c:  # an update: seen by the timestamp modes, not by incrementing
            c.execute("UPDATE items SET name = 'changed', updated = '2026-02-01T00:00:00' WHERE id = 7")
            c.execute("INSERT INTO items VALUES (251, 'new', '2026-02-01T00:00:01')")
        tsi = read_topic(broker.bootstrap, "tsi.items", 252)
        assert [json.loads(r.value)["id"] for r in tsi[250:]] == [7, 251]
        ts = read_topic(broker.bootstrap, "ts.items", 252)
        assert sorted(json.loads(r.value)["id"] for r in ts) == sorted([*range(1, 252), 7])
        wait_until(lambda: sqlite_count(dst, "items") == 251, 30, "the new row")
        with Producer(broker.bootstrap) as p:  # a tombstone deletes; a newer value of a key replaces the row
            p.send("inc.items", None, key=b"3")
            p.send("inc.items", json.dumps({"id": 4, "name": "upserted", "updated": "x"}).encode(), key=b"4")
            p.flush()

        def applied() -> bool:
            with sqlite3.connect(dst) as c:
                return c.execute("SELECT name FROM items WHERE id IN (3, 4)").fetchall() == [("upserted",)]
        wait_until(applied, 30, "delete and upsert")
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        want = [r for r in a.execute("SELECT * FROM items WHERE id NOT IN (3, 4, 7) ORDER BY id")]
        got = [r for r in b.execute("SELECT * FROM items WHERE id NOT IN (3, 4, 7) ORDER BY id")]
    assert got == want and len(got) == 248


def test_postgres_table_to_topic_to_sqlite_and_postgres_identical(broker, pg, tmp_path):
    """100,000 rows: PostgreSQL -> topic -> SQLite and -> PostgreSQL (COPY upserts), compared row by row."""
    db = tmp_path / "copy.db"
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute(ORDERS_DDL.format(name="orders_copy"))
    yaml_text = f"""
worker: {{bootstrap: "{broker.bootstrap}", rest_port: 0, offset_flush_interval_ms: 500}}
connectors:
  - name: pg-in
    class: postgres-source
    key_converter: json
    config: {{dsn: "{pg.dsn}", tables: [orders], mode: incrementing, incrementing_column: id, key_column: id,
              topic_prefix: "pg.", batch_size: 10000}}
  - name: to-sqlite
    class: sqlite-sink
    topics: [pg.orders]
    key_converter: json
    config: {{database: "{db}", table: orders, insert_mode: upsert, pk_mode: record_key, pk_fields: [id],
              auto_create: true, batch_size: 20000}}
  - name: to-pg
    class: postgres-sink
    topics: [pg.orders]
    key_converter: json
    config: {{dsn: "{pg.dsn}", table: orders_copy, insert_mode: upsert, pk_mode: record_key, pk_fields: [id],
              batch_size: 20000}}
"""
    with running_worker(yaml_text):
        wait_until(lambda: pg_count(pg.dsn, "orders_copy") == N and sqlite_count(db, "orders") == N, 90,
                   "100,000 rows in both copies")
    want = pg_rows(pg.dsn, "orders")
    assert pg_rows(pg.dsn, "orders_copy") == want
    with sqlite3.connect(db) as c:
        got = c.execute("SELECT id, customer_id, product, quantity, amount, created_at, note FROM orders "
                        "ORDER BY id").fetchall()
    assert got == [(i, cu, p, q, float(a), t.isoformat(), n) for i, cu, p, q, a, t, n in want]


def _start_worker_process(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fabric", "connect", "run", str(config)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=open(log, "ab"), stdin=subprocess.DEVNULL)


def test_sigkill_mid_copy_then_restart_ends_identical(broker, pg, tmp_path):
    """The shipped postgres-source.yaml and postgres-sink.yaml in one worker process each: the sink
    worker is SIGKILLed mid-copy, then the source worker; both restart and the copy ends identical
    (replays inside the uncommitted window are absorbed by the upsert)."""
    n = 40_000
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute(f"CREATE TABLE orders_k AS SELECT * FROM orders WHERE id <= {n}")
    env = {**os.environ, "FABRIC_BOOTSTRAP": broker.bootstrap, "FABRIC_PG_DSN": pg.dsn,
           "FABRIC_PG_SOURCE_TABLE": "orders_k", "FABRIC_PG_TABLE": "orders_killed"}
    src_env = {**env, "FABRIC_CONNECT_PORT": str(free_port())}
    sink_env = {**env, "FABRIC_CONNECT_PORT": str(free_port())}
    src_cfg, sink_cfg = ROOT / "configs/connect/postgres-source.yaml", ROOT / "configs/connect/postgres-sink.yaml"
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_start_worker_process(src_cfg, src_env, tmp_path / "src.log"))
        procs.append(_start_worker_process(sink_cfg, sink_env, tmp_path / "sink.log"))
        wait_until(lambda: pg_count(pg.dsn, "orders_killed") > 2000, 60, "the copy under way")
        procs[1].send_signal(signal.SIGKILL)
        procs[0].send_signal(signal.SIGKILL)
        procs[1].wait()
        procs[0].wait()
        partial = pg_count(pg.dsn, "orders_killed")
        assert 0 < partial < n
        procs.append(_start_worker_process(src_cfg, src_env, tmp_path / "src.log"))
        procs.append(_start_worker_process(sink_cfg, sink_env, tmp_path / "sink.log"))
        wait_until(lambda: pg_count(pg.dsn, "orders_killed") == n, 90, "the whole copy after the restart")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    with psycopg.connect(pg.dsn) as c:
        diff = c.execute("SELECT count(*) FROM (SELECT id, customer_id, product, quantity, amount::float8, "
                         "created_at::text, note FROM orders_k EXCEPT SELECT id::bigint, customer_id::int, product, "
                         "quantity::int, amount::float8, created_at::timestamptz::text, note "
                         "FROM orders_killed) d").fetchone()[0]
    assert diff == 0, (tmp_path / "sink.log").read_text()[-3000:]


def test_source_task_fails_while_postgres_is_down_and_recovers_by_itself(broker, pg):
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute("CREATE TABLE events (id BIGINT PRIMARY KEY, v TEXT)")
        c.execute("INSERT INTO events SELECT i, 'v' || i FROM generate_series(1, 500) i")
    yaml_text = f"""
worker: {{bootstrap: "{broker.bootstrap}", rest_port: 0, offset_flush_interval_ms: 100}}
connectors:
  - name: ev
    class: postgres-source
    errors: {{retry_timeout_ms: 200, retry_backoff_max_ms: 100}}
    restart: {{max_tries: 100, backoff_initial_ms: 100, backoff_max_ms: 300}}
    config: {{dsn: "{pg.dsn}", tables: [events], mode: incrementing, incrementing_column: id,
              poll_interval_ms: 50}}
"""
    with running_worker(yaml_text) as w:
        read_topic(broker.bootstrap, "events", 500)
        pg.stop()
        try:
            st = wait_until(lambda: (t := w.connector_status("ev")["tasks"][0])["restarts"] >= 1 and t, 30,
                            "the task to fail")
            assert st["state"] in ("FAILED", "RESTARTING") and "postgres" in st["trace"]
        finally:
            pg.start()
        with psycopg.connect(pg.dsn, autocommit=True) as c:
            c.execute("INSERT INTO events SELECT i, 'v' || i FROM generate_series(501, 800) i")
        recs = read_topic(broker.bootstrap, "events", 800)
        wait_until(lambda: w.connector_status("ev")["tasks"][0]["state"] == "RUNNING", 30, "RUNNING again")
    assert sorted(json.loads(r.value)["id"] for r in recs) == list(range(1, 801))


def test_sink_task_fails_while_postgres_is_down_and_recovers_by_itself(broker, pg):
    """Topic -> PostgreSQL while the database goes away: the sink task fails, restarts by itself
    with backoff, and once the server is back the table ends with every row, each exactly once
    (what was written before the failure but not committed as offsets is replayed and upserted)."""
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute("CREATE TABLE sunk (id BIGINT PRIMARY KEY, v TEXT)")

    def produce(ids: range) -> None:
        with Producer(broker.bootstrap) as p:
            for i in ids:
                p.send("sunk", json.dumps({"id": i, "v": f"v{i}"}).encode(), key=str(i).encode())
            p.flush()

    yaml_text = f"""
worker: {{bootstrap: "{broker.bootstrap}", rest_port: 0, offset_flush_interval_ms: 100}}
connectors:
  - name: sunk
    class: postgres-sink
    topics: [sunk]
    key_converter: json
    errors: {{retry_timeout_ms: 200, retry_backoff_max_ms: 100}}
    restart: {{max_tries: 100, backoff_initial_ms: 100, backoff_max_ms: 300}}
    config: {{dsn: "{pg.dsn}", table: sunk, insert_mode: upsert, pk_mode: record_key, pk_fields: [id],
              batch_size: 500}}
"""
    produce(range(1, 2001))
    with running_worker(yaml_text) as w:
        wait_until(lambda: pg_count(pg.dsn, "sunk") == 2000, 60, "the first 2,000 rows")
        pg.stop()
        try:
            produce(range(2001, 4001))
            st = wait_until(lambda: (t := w.connector_status("sunk")["tasks"][0])["restarts"] >= 1 and t, 30,
                            "the sink task to fail")
            assert st["state"] in ("FAILED", "RESTARTING") and "postgres" in st["trace"]
        finally:
            pg.start()
        wait_until(lambda: pg_count(pg.dsn, "sunk") == 4000, 60, "every row after the restart")
        wait_until(lambda: w.connector_status("sunk")["tasks"][0]["state"] == "RUNNING", 30, "RUNNING again")
    with psycopg.connect(pg.dsn) as c:
        assert c.execute("SELECT id, v FROM sunk ORDER BY id").fetchall() == [(i, f"v{i}") for i in range(1, 4001)]


def test_postgres_copy_from_columns_equals_psycopg_write_row(pg):
    """The column-at-a-time COPY text (pg_copy.py) stores exactly what psycopg's ``write_row``
    stores, escapes and NULLs included, in insert and upsert mode; types it does not format
    (a Decimal here) go through psycopg."""
    from connectors.builtin.postgres import PostgresDialect
    texts = ["plain", "", "tab\there", "new\nline\r", "back\\slash", "\\N", "é 中 \u2028", "\b\f\v"]
    rows = [(i, texts[i % len(texts)] if i % 7 else None, i * 0.5 if i % 3 else i, i % 2 == 0, (i % 5) * 1.25)
            for i in range(1, 2001)]
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        for t in ("cols_fast", "cols_plain"):
            c.execute(f"CREATE TABLE {t} (id BIGINT PRIMARY KEY, t TEXT, x NUMERIC, b BOOLEAN, f FLOAT8)")
    cols = ["id", "t", "x", "b", "f"]
    db = PostgresDialect()
    db.connect({"dsn": pg.dsn})
    try:
        db.write_columns("cols_fast", cols, [list(c) for c in zip(*rows)], None)
        db.write_rows("cols_plain", cols, rows, None)
        changed = [(i, "v2", 1, False, 0.0) for i in range(1, 2001, 2)]
        db.write_columns("cols_fast", cols, [list(c) for c in zip(*changed)], ["id"])
        db.write_rows("cols_plain", cols, changed, ["id"])
        with_decimal = [(5000, "d", decimal.Decimal("1.10"), True, 1.0)]
        db.write_columns("cols_fast", cols, [list(c) for c in zip(*with_decimal)], ["id"])
        db.write_rows("cols_plain", cols, with_decimal, ["id"])
        db.commit()
    finally:
        db.close()
    with psycopg.connect(pg.dsn) as c:
        fast = c.execute("SELECT * FROM cols_fast ORDER BY id").fetchall()
        assert fast == c.execute("SELECT * FROM cols_plain ORDER BY id").fetchall()
    assert len(fast) == 2001 and fast[1][1] == "tab\there" and fast[0][1:] == ("v2", 1, False, 0.0)


def test_postgres_sink_background_commit_failure_loses_nothing(pg):
    """The upsert's commit runs in the background while the next batch is prepared: when it fails,
    the next put or flush raises, no row of the failed write is committed, and its records are
    written again by the next write (here after the cause is removed): none is lost."""
    from connectors.api import SinkRecord, TaskContext
    from connectors.builtin.postgres import PostgresSinkTask
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute("CREATE TABLE guarded (id BIGINT PRIMARY KEY, v TEXT CONSTRAINT not_bad CHECK (v <> 'bad'))")
    task = PostgresSinkTask()
    task.initialize(TaskContext("g", 0, lambda p: None, lambda: False))
    task.start({"dsn": pg.dsn, "table": "guarded", "insert_mode": "upsert", "pk_mode": "record_key",
                "pk_fields": ["id"], "auto_create": False, "delete_enabled": False, "batch_size": 2})
    recs = [SinkRecord("t", 0, i, 0, i, {"v": "bad" if i == 2 else f"v{i}"}) for i in range(1, 5)]
    try:
        task.put(recs[:2])  # written; its commit (which will fail) runs in the background
        with pytest.raises(Exception, match="not_bad"):
            task.put(recs[2:])  # waits for that commit first
        assert pg_count(pg.dsn, "guarded") == 0
        with psycopg.connect(pg.dsn, autocommit=True) as c:
            c.execute("ALTER TABLE guarded DROP CONSTRAINT not_bad")
        task.put(recs[2:])  # the worker retries the put that failed
        task.flush({})
    finally:
        task.close()
    with psycopg.connect(pg.dsn) as c:
        assert c.execute("SELECT id, v FROM guarded ORDER BY id").fetchall() == [
            (1, "v1"), (2, "bad"), (3, "v3"), (4, "v4")]


def test_postgres_upsert_copies_straight_in_and_falls_back_on_existing_keys(pg):
    """An upsert first COPYs straight into the table (inside a savepoint); a batch holding a key
    that exists already rolls back to the savepoint and goes through the staging table, and the
    next write skips the straight attempt.  Whatever the path, the table ends as upserts row by
    row would leave it, and nothing is lost in a transaction that mixes both paths."""
    from connectors.builtin.postgres import PostgresDialect
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute("CREATE TABLE up (id BIGINT PRIMARY KEY, v TEXT)")
    db = PostgresDialect()
    db.connect({"dsn": pg.dsn})

    def write(ids: range, v: str) -> None:
        db.write_columns("up", ["id", "v"], [list(ids), [f"{v}{i}" for i in ids]], ["id"])

    try:
        write(range(0, 100), "a")  # new keys: straight in
        db.commit()
        assert db.direct_backoff.get("up", 0) == 0
        write(range(50, 150), "b")  # 50..99 exist: staged upsert
        write(range(150, 200), "c")  # skipped straight attempt (backoff 1), staged, same transaction
        db.commit_async()
        db.wait()
        assert db.direct_backoff["up"] == 1 and db.direct_skip["up"] == 0
        write(range(200, 250), "d")  # straight in again, succeeds: backoff reset
        db.commit()
        assert db.direct_backoff["up"] == 0
    finally:
        db.close()
    want = [(i, f"a{i}") for i in range(50)] + [(i, f"b{i}") for i in range(50, 150)] + \
        [(i, f"c{i}") for i in range(150, 200)] + [(i, f"d{i}") for i in range(200, 250)]
    with psycopg.connect(pg.dsn) as c:
        assert c.execute("SELECT id, v FROM up ORDER BY id").fetchall() == want


def test_postgres_sink_pre_commit_returns_only_committed_offsets_without_waiting(pg):
    """The worker's periodic offset commit asks ``pre_commit``: while a write is held up in the
    database (here by a lock another session holds) it answers at once, with the offsets of the
    earlier writes only; once the write committed it answers its offsets and starts writing the
    buffered rest, whose offsets come with a later call; when nothing is left it answers all."""
    import threading
    import time
    from connectors.api import SinkRecord, TaskContext
    from connectors.builtin.postgres import PostgresSinkTask
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute("CREATE TABLE gated (id BIGINT PRIMARY KEY, v TEXT)")
    task = PostgresSinkTask()
    task.initialize(TaskContext("g", 0, lambda p: None, lambda: False))
    task.start({"dsn": pg.dsn, "table": "gated", "insert_mode": "upsert", "pk_mode": "record_key",
                "pk_fields": ["id"], "auto_create": False, "delete_enabled": False, "batch_size": 3})
    recs = [SinkRecord("t", 0, i, 0, i, {"v": f"v{i}"}) for i in range(5)]
    tp, everything = ("t", 0), {("t", 0): 5}
    locker = psycopg.connect(pg.dsn)
    safety = threading.Timer(10, locker.rollback)  # were pre_commit to wait for the lock: fail, not hang
    try:
        task.put(recs[:1])
        task.flush({tp: 1})
        locker.execute("LOCK TABLE gated IN ACCESS EXCLUSIVE MODE")
        safety.start()
        task.put(recs[1:4])  # a full batch: written in the background, where it waits for the lock
        task.put(recs[4:])
        t0 = time.monotonic()
        for _ in range(3):
            assert task.pre_commit(everything) == {tp: 1}
        assert time.monotonic() - t0 < 5
        locker.rollback()  # the lock goes: the write commits
        answers: list[dict] = []
        wait_until(lambda: answers.append(dict(task.pre_commit(everything))) or answers[-1] == everything,
                   timeout=10, what="pre_commit to report every offset")
        assert [a for a in answers if a != {tp: 1}][0] == {tp: 4}  # that write's offsets, the last row in flight
    finally:
        safety.cancel()
        locker.close()
        task.close()
    assert pg_count(pg.dsn, "gated") == 5
