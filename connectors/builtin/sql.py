"""SQL connectors: the shared configuration, the ``Dialect`` interface, and the SQLite dialect.

Why a dialect object: the source's incremental queries and the sink's insert/upsert/delete logic
are the same for every database; what differs is quoting, placeholders, type names, how rows are
streamed (SQLite: a ``LIMIT`` query per batch, so no read lock is held between polls; PostgreSQL:
one server-side cursor per query) and how rows are written fastest (SQLite: ``executemany`` in one
transaction; PostgreSQL: ``COPY``).  ``sql_source.py`` and ``sql_sink.py`` hold the generic tasks;
``postgres.py`` the PostgreSQL dialect.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Iterable, Sequence

from ..api import ConnectError, Field, RetriableError

MODES = ("bulk", "incrementing", "timestamp", "timestamp+incrementing")

SOURCE_CONFIG: dict[str, Field] = {
    "tables": Field("list", doc="tables to copy, one source partition (and at most one task) each"),
    "query": Field("str", doc="instead of tables: a custom SELECT (wrapped as a sub-query)"),
    "mode": Field("str", required=True, choices=MODES),
    "incrementing_column": Field("str", doc="strictly increasing column (modes incrementing, timestamp+incrementing)"),
    "timestamp_column": Field("str", doc="last-modified column (modes timestamp, timestamp+incrementing)"),
    "topic_prefix": Field("str", default="", doc="a table's topic is prefix + table name"),
    "topic": Field("str", doc="the topic of a custom query"),
    "key_column": Field("str", doc="the record key is this column's value (default: no key)"),
    "poll_interval_ms": Field("int", default=1000, min=1, doc="pause after a query returned everything"),
    "batch_size": Field("int", default=10_000, min=1, doc="rows per poll"),
}

SINK_CONFIG: dict[str, Field] = {
    "table": Field("str", default="${topic}", doc="destination table; ${topic} is replaced by the topic"),
    "insert_mode": Field("str", default="insert", choices=("insert", "upsert")),
    "pk_mode": Field("str", default="none", choices=("none", "record_key", "record_value")),
    "pk_fields": Field("list", default=[], doc="primary-key columns (a scalar key fills the first)"),
    "auto_create": Field("bool", default=False, doc="create a missing table from the first record"),
    "delete_enabled": Field("bool", default=False, doc="a tombstone (null value) deletes the row by key"),
    "batch_size": Field("int", default=10_000, min=1, doc="rows per write"),
}


def validate_source(config: dict[str, Any]) -> list[tuple[str, str]]:
    errs = []
    if config.get("tables") is None and config.get("query") is None:
        errs.append(("tables", "required (or query)"))
    if config.get("tables") is not None and config.get("query") is not None:
        errs.append(("query", "give tables or query, not both"))
    if config.get("tables") is not None and (not config["tables"] or
                                             not all(isinstance(t, str) for t in config["tables"])):
        errs.append(("tables", "must be a non-empty list of table names"))
    if config.get("query") is not None and config.get("topic") is None:
        errs.append(("topic", "required with query"))
    mode = config.get("mode")
    if mode in ("incrementing", "timestamp+incrementing") and not config.get("incrementing_column"):
        errs.append(("incrementing_column", f"required for mode {mode}"))
    if mode in ("timestamp", "timestamp+incrementing") and not config.get("timestamp_column"):
        errs.append(("timestamp_column", f"required for mode {mode}"))
    return errs


def validate_sink(config: dict[str, Any]) -> list[tuple[str, str]]:
    errs = []
    if config.get("insert_mode") == "upsert" and config.get("pk_mode") == "none":
        errs.append(("pk_mode", "upsert needs a key: record_key or record_value"))
    if config.get("delete_enabled") and config.get("pk_mode") != "record_key":
        errs.append(("delete_enabled", "deletes need pk_mode: record_key (a tombstone has only its key)"))
    if config.get("pk_mode") != "none" and not config.get("pk_fields"):
        errs.append(("pk_fields", f"required with pk_mode {config.get('pk_mode')}"))
    return errs


def source_task_configs(config: dict[str, Any], tasks_max: int) -> list[dict[str, Any]]:
    """One task per table (tables dealt round-robin to at most ``tasks_max`` tasks)."""
    if config.get("query") is not None:
        return [dict(config)]
    tables = list(config["tables"])
    n = min(tasks_max, len(tables))
    return [{**config, "tables": tables[i::n]} for i in range(n)]


class Dialect:
    """One database connection and its SQL flavour.  Created in the task's thread."""

    placeholder = "?"
    streams = False  # True: one open cursor per query; False: a LIMIT query per batch

    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def connect(self, config: dict[str, Any]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def open_cursor(self, sql: str, params: Sequence[Any]) -> Any:  # pragma: no cover - interface
        """A cursor with ``fetchmany`` and ``description``."""
        raise NotImplementedError

    def table_columns(self, table: str) -> list[str] | None:  # pragma: no cover - interface
        """Column names, or None if the table does not exist."""
        raise NotImplementedError

    def type_for(self, value: Any) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def create_table(self, table: str, columns: list[tuple[str, str]], pk: list[str]) -> None:
        cols = ", ".join(f"{self.quote(c)} {t}" for c, t in columns)
        if pk:
            cols += f", PRIMARY KEY ({', '.join(map(self.quote, pk))})"
        self.execute(f"CREATE TABLE IF NOT EXISTS {self.quote(table)} ({cols})")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def write_rows(self, table: str, columns: list[str], rows: list[tuple], upsert_pk: list[str] | None) -> None:
        """Insert (or upsert on ``upsert_pk``) ``rows``; not committed yet."""
        raise NotImplementedError  # pragma: no cover - interface

    def write_columns(self, table: str, columns: list[str], data: list[list[Any]],
                      upsert_pk: list[str] | None) -> None:
        """As ``write_rows``, with the rows given as columns (``data[i]`` is column ``i``): the
        sink builds them so, and a dialect may write them faster that way (PostgreSQL does)."""
        self.write_rows(table, columns, list(zip(*data)), upsert_pk)

    def delete_keys(self, table: str, pk: list[str], keys: list[tuple]) -> None:  # pragma: no cover
        raise NotImplementedError

    def commit(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def commit_async(self) -> None:
        """Start the commit; ``wait`` returns once it is done, raising its error.  A dialect that
        can overlap the commit with the caller's next batch does so (PostgreSQL); default: now."""
        self.commit()

    def wait(self) -> None:
        """Block until the last ``commit_async`` is done; raise its error if it failed."""

    def done(self) -> bool:
        """Whether ``wait`` would return at once (the last ``commit_async`` has finished)."""
        return True

    def classify(self, exc: BaseException) -> Exception:
        """A database exception as ``RetriableError`` (connection, lock, server gone) or
        ``ConnectError`` (the data or the schema is wrong: retrying will not help)."""
        if isinstance(exc, ConnectError):
            return exc
        return ConnectError(f"{type(exc).__name__}: {exc}")

    def rollback(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class SqliteDialect(Dialect):
    placeholder = "?"
    streams = False

    def connect(self, config: dict[str, Any]) -> None:
        try:
            self.conn = sqlite3.connect(config["database"], timeout=30, isolation_level="DEFERRED")
        except sqlite3.OperationalError as exc:
            raise RetriableError(f"sqlite: {exc}") from exc

    def close(self) -> None:
        if hasattr(self, "conn"):
            self.conn.close()

    def open_cursor(self, sql: str, params: Sequence[Any]) -> Any:
        try:
            return self.conn.execute(sql, tuple(params))
        except sqlite3.OperationalError as exc:
            raise RetriableError(f"sqlite: {exc}") from exc

    def table_columns(self, table: str) -> list[str] | None:
        rows = self.conn.execute(f"PRAGMA table_info({self.quote(table)})").fetchall()
        return [r[1] for r in rows] or None

    def type_for(self, value: Any) -> str:
        if isinstance(value, bool) or isinstance(value, int):
            return "INTEGER"
        if isinstance(value, float):
            return "REAL"
        if isinstance(value, bytes):
            return "BLOB"
        return "TEXT"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(sql, tuple(params))

    def write_rows(self, table: str, columns: list[str], rows: list[tuple], upsert_pk: list[str] | None) -> None:
        q = self.quote
        cols = ", ".join(map(q, columns))
        marks = ", ".join("?" * len(columns))
        sql = f"INSERT INTO {q(table)} ({cols}) VALUES ({marks})"
        if upsert_pk:
            rest = [c for c in columns if c not in upsert_pk]
            action = ("DO UPDATE SET " + ", ".join(f"{q(c)} = excluded.{q(c)}" for c in rest)) if rest else "DO NOTHING"
            sql += f" ON CONFLICT ({', '.join(map(q, upsert_pk))}) {action}"
        self.conn.executemany(sql, rows)

    def delete_keys(self, table: str, pk: list[str], keys: list[tuple]) -> None:
        where = " AND ".join(f"{self.quote(c)} = ?" for c in pk)
        self.conn.executemany(f"DELETE FROM {self.quote(table)} WHERE {where}", keys)

    def commit(self) -> None:
        self.conn.commit()

    def classify(self, exc: BaseException) -> Exception:
        if isinstance(exc, sqlite3.OperationalError):
            return RetriableError(f"sqlite: {exc}")
        return super().classify(exc)

    def rollback(self) -> None:
        self.conn.rollback()


def jsonable(v: Any) -> Any:
    """A column value as it can sit in a JSON source offset."""
    if v is None or isinstance(v, (int, float, str)):
        return v
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


def columns_of(rows: Iterable[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for r in rows:
        for k in r:
            seen.setdefault(k)
    return list(seen)

