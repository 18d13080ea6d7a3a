"""The generic SQL source task: incremental queries over tables (or one custom query).

Modes (Kafka's JDBC source, same names):

* ``incrementing``: ``WHERE inc > last ORDER BY inc`` — new rows only (an id sequence).
* ``timestamp``: ``WHERE ts > last ORDER BY ts`` — new and updated rows.  Rows sharing the last
  timestamp of a full batch are held back to the next query, so a batch boundary never splits them.
* ``timestamp+incrementing``: ``WHERE ts > last_ts OR (ts = last_ts AND inc > last_inc)
  ORDER BY ts, inc`` — updates without ambiguity; the most robust.
* ``bulk``: the whole table (or query) every ``poll_interval_ms``.

The source partition is ``{"table": name}`` (or ``{"query": topic}``); each fetched batch of rows
is one ``SourceBatch`` whose source offset is ``{"incrementing": ..., "timestamp": ...}`` of its
last row.  A query that returned less than a batch has
caught up: the table waits ``poll_interval_ms`` before the next one.  Database errors are
``RetriableError``s: the worker retries, then restarts the task, which resumes from the committed
offsets.
"""

from __future__ import annotations

import time
from typing import Any

from ..api import SourceBatch, SourceTask
from .sql import Dialect, jsonable

IDLE_SLEEP_S = 0.05


class _Table:
    def __init__(self, name: str | None, topic: str, partition: dict[str, Any]) -> None:
        self.name = name
        self.topic = topic
        self.partition = partition
        self.inc: Any = None
        self.ts: Any = None
        self.cursor: Any = None
        self.columns: list[str] = []
        self.next_query_at = 0.0


class SqlSourceTask(SourceTask):
    dialect_class: type[Dialect]

    def start(self, config: dict[str, Any]) -> None:
        self.config = config
        self.mode = config["mode"]
        self.inc_col = config.get("incrementing_column")
        self.ts_col = config.get("timestamp_column")
        self.key_col = config.get("key_column")
        self.batch = config["batch_size"]
        self.interval = config["poll_interval_ms"] / 1000
        self.db = self.dialect_class()
        self.db.connect(config)
        if config.get("query") is not None:
            self.tables = [_Table(None, config["topic"], {"query": config["topic"]})]
        else:
            self.tables = [_Table(t, config["topic_prefix"] + t, {"table": t}) for t in config["tables"]]
        for t in self.tables:
            off = self.context.offset(t.partition) or {}
            t.inc, t.ts = off.get("incrementing"), off.get("timestamp")
        self.turn = 0

    def _query(self, t: _Table) -> tuple[str, list[Any]]:
        q = self.db.quote
        ph = self.db.placeholder
        src = q(t.name) if t.name is not None else f"({self.config['query']}) AS fabric_q"
        sql = f"SELECT * FROM {src}"
        params: list[Any] = []
        inc, ts = (q(self.inc_col) if self.inc_col else None), (q(self.ts_col) if self.ts_col else None)
        if self.mode == "incrementing":
            if t.inc is not None:
                sql += f" WHERE {inc} > {ph}"
                params = [t.inc]
            sql += f" ORDER BY {inc}"
        elif self.mode == "timestamp":
            if t.ts is not None:
                sql += f" WHERE {ts} > {ph}"
                params = [t.ts]
            sql += f" ORDER BY {ts}"
        elif self.mode == "timestamp+incrementing":
            if t.ts is not None:
                sql += f" WHERE {ts} > {ph} OR ({ts} = {ph} AND {inc} > {ph})"
                params = [t.ts, t.ts, t.inc if t.inc is not None else -1]
            sql += f" ORDER BY {ts}, {inc}"
        if not self.db.streams:
            sql += f" LIMIT {self.batch + (1 if self.mode == 'timestamp' else 0)}"
        return sql, params

    def poll(self) -> list[SourceBatch]:
        now = time.monotonic()
        for _ in range(len(self.tables)):
            t = self.tables[self.turn]
            self.turn = (self.turn + 1) % len(self.tables)
            if t.cursor is None and now < t.next_query_at:
                continue
            out = self._poll_table(t)
            if out:
                return out
        wake = min(t.next_query_at for t in self.tables)
        time.sleep(max(IDLE_SLEEP_S, min(1.0, wake - time.monotonic())))
        return []

    def _poll_table(self, t: _Table) -> list[SourceBatch]:
        if t.cursor is None:
            sql, params = self._query(t)
            t.cursor = self.db.open_cursor(sql, params)  # raises RetriableError if the database is away
            t.columns = [d[0] for d in t.cursor.description]
        limit = self.batch + (1 if self.mode == "timestamp" and not self.db.streams else 0)
        try:
            rows = t.cursor.fetchmany(limit)
        except Exception as exc:
            t.cursor = None  # the next poll runs the query again from the last offset
            raise self.db.classify(exc) from exc
        done = len(rows) < limit
        if done or not self.db.streams:
            t.cursor.close()
            t.cursor = None
        if done:
            t.next_query_at = time.monotonic() + self.interval
        if self.mode == "timestamp" and not self.db.streams and not done:
            rows = self._hold_back_last_timestamp(rows, t.columns)
        return self._records(t, rows)

    def _hold_back_last_timestamp(self, rows: list, cols: list[str]) -> list:
        i = cols.index(self.ts_col)
        last = rows[-1][i]
        cut = len(rows)
        while cut > 0 and rows[cut - 1][i] == last:
            cut -= 1
        return rows[:cut] if cut > 0 else rows  # all equal: take them (a full batch of one instant)

    def _records(self, t: _Table, rows: list) -> list[SourceBatch]:
        if not rows:
            return []
        cols = t.columns
        ii = cols.index(self.inc_col) if self.inc_col in cols else None
        ti = cols.index(self.ts_col) if self.ts_col in cols else None
        ki = cols.index(self.key_col) if self.key_col in cols else None
        last = rows[-1]
        if ii is not None:
            t.inc = last[ii]
        if ti is not None:
            t.ts = jsonable(last[ti])
        off = {"polled": int(time.time() * 1000)} if self.mode == "bulk" else {"incrementing": t.inc, "timestamp": t.ts}
        keys = None if ki is None else [row[ki] for row in rows]
        return [SourceBatch(t.partition, off, t.topic, rows, keys, columns=cols)]

    def close(self) -> None:
        for t in getattr(self, "tables", []):
            if t.cursor is not None:
                t.cursor.close()
        if hasattr(self, "db"):
            self.db.close()
