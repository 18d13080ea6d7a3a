"""The PostgreSQL source and sink, through psycopg 3 (``pip install 'fabric-streams[connect]'``).

Why these choices: the source streams each query through a *server-side* cursor (``DECLARE ...
CURSOR``), so a table of a billion rows is read ``batch_size`` rows at a time without loading it
into the worker; the sink writes with ``COPY ... FROM STDIN`` (inserts) or ``COPY`` into a temporary
table followed by one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` (upserts), which is an order of
magnitude faster than row-by-row statements.

A lost connection (server restarted, network gone) is a ``RetriableError``; the next call makes a
new connection, so a task rides out a database restart within ``errors.retry_timeout_ms`` and,
past that, the worker's restart backoff.
"""

from __future__ import annotations

import itertools
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence

from ..api import ConnectError, Field, RetriableError, SinkConnector, SourceConnector
from .pg_copy import encode_copy_text
from .sql import SINK_CONFIG, SOURCE_CONFIG, Dialect, source_task_configs, validate_sink, validate_source
from .sql_sink import SqlSinkTask
from .sql_source import SqlSourceTask

_cursor_ids = itertools.count(1)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConnectError("the PostgreSQL connectors need psycopg 3: pip install 'fabric-streams[connect]'") from exc
    return psycopg


class PostgresDialect(Dialect):
    placeholder = "%s"
    streams = True

    def connect(self, config: dict[str, Any]) -> None:
        self.pg = _psycopg()
        self.dsn = config["dsn"]
        self.conn: Any = None
        self.temp_tables: set[str] = set()
        self.deferred: list[Callable[[Any], None]] = []  # queued writes (cursor -> None), run before anything else
        self.direct_skip: dict[str, int] = {}  # per table: upserts left before COPY straight in is tried again
        self.direct_backoff: dict[str, int] = {}
        self.job: Future | None = None  # the commit running in the background (commit_async)
        self.pool: ThreadPoolExecutor | None = None
        self._ensure()

    def _run_deferred(self) -> None:
        jobs, self.deferred = self.deferred, []
        with self.conn.cursor() as cur:
            for job in jobs:
                job(cur)

    def _settle(self) -> None:
        """Wait for the background commit (raising its error); then run what was deferred."""
        job, self.job = self.job, None
        if job is not None:
            job.result()
        if self.deferred:
            self._run_deferred()

    def _ensure(self) -> Any:
        self._settle()
        if self.conn is None or self.conn.closed or self.conn.broken:
            try:
                self.conn = self.pg.connect(self.dsn, connect_timeout=10)
            except self.pg.OperationalError as exc:
                raise RetriableError(f"postgres: cannot connect: {str(exc).strip()}") from exc
            self.temp_tables = set()
        return self.conn

    def close(self) -> None:
        self._abandon()
        if self.pool is not None:
            self.pool.shutdown()
        if getattr(self, "conn", None) is not None:
            self.conn.close()

    def _abandon(self) -> None:
        """Forget deferred statements and wait out a background commit, whatever its outcome."""
        self.deferred = []
        job, self.job = getattr(self, "job", None), None
        if job is not None:
            try:
                job.result()
            except Exception:  # noqa: BLE001 - the caller is already handling a failure, or closing
                pass

    def classify(self, exc: BaseException) -> Exception:
        if isinstance(exc, ConnectError):
            return exc
        if isinstance(exc, (self.pg.OperationalError, self.pg.InterfaceError)):
            return RetriableError(f"postgres: {str(exc).strip()}")
        return ConnectError(f"postgres: {type(exc).__name__}: {str(exc).strip()}")

    def open_cursor(self, sql: str, params: Sequence[Any]) -> Any:
        conn = self._ensure()
        try:
            if conn.info.transaction_status != self.pg.pq.TransactionStatus.IDLE:
                conn.commit()  # the previous query's snapshot ends here
            cur = conn.cursor(name=f"fabric_src_{next(_cursor_ids)}")
            cur.itersize = 10_000
            cur.execute(sql, tuple(params) or None)
            return _Cursor(cur, self)
        except Exception as exc:
            raise self.classify(exc) from exc

    def table_columns(self, table: str) -> list[str] | None:
        conn = self._ensure()
        rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = "
                            "current_schema() AND table_name = %s ORDER BY ordinal_position", (table,)).fetchall()
        return [r[0] for r in rows] or None

    def type_for(self, value: Any) -> str:
        if isinstance(value, bool):
            return "BOOLEAN"
        if isinstance(value, int):
            return "BIGINT"
        if isinstance(value, float):
            return "DOUBLE PRECISION"
        if isinstance(value, bytes):
            return "BYTEA"
        return "TEXT"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._ensure().execute(sql, tuple(params) or None)

    def _copy(self, cur: Any, table: str, columns: list[str], rows: list[tuple]) -> None:
        cols = ", ".join(map(self.quote, columns))
        with cur.copy(f"COPY {self.quote(table)} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def _copy_pieces(self, cur: Any, table: str, columns: list[str], pieces: "_Pieces") -> None:
        cols = ", ".join(map(self.quote, columns))
        with cur.copy(f"COPY {self.quote(table)} ({cols}) FROM STDIN") as copy:
            for piece in pieces:
                copy.write(piece)

    def write_rows(self, table: str, columns: list[str], rows: list[tuple], upsert_pk: list[str] | None) -> None:
        self._write(table, columns, upsert_pk, lambda cur, t: self._copy(cur, t, columns, rows))

    def write_columns(self, table: str, columns: list[str], data: list[list[Any]],
                      upsert_pk: list[str] | None) -> None:
        pieces = encode_copy_text(data, self._ensure().info.encoding)
        if pieces is None:  # a type the column formatter leaves to psycopg
            self.write_rows(table, columns, list(zip(*data)), upsert_pk)
            return
        replay = _Pieces(pieces)
        self._write(table, columns, upsert_pk, lambda cur, t: self._copy_pieces(cur, t, columns, replay))

    def _write(self, table: str, columns: list[str], upsert_pk: list[str] | None,
               copy: Callable[[Any, str], None]) -> None:
        """Queue the write; it runs with the next statement or in ``commit_async``'s background
        thread, so the server ingests one batch while the worker decodes the next."""
        self._ensure()
        self.deferred.append(lambda cur: self._write_now(cur, table, columns, upsert_pk, copy))

    def _write_now(self, cur: Any, table: str, columns: list[str], upsert_pk: list[str] | None,
                   copy: Callable[[Any, str], None]) -> None:
        """COPY straight into ``table``; an upsert first tries that too (inside a savepoint: no
        key of the batch exists yet, the common case, costs half of the staged path), and when a
        key exists already, rolls back to the savepoint and goes through a session-private staging
        table and one ``INSERT ... ON CONFLICT DO UPDATE``.  After a conflict the direct attempt is
        skipped for 1, 2, 4 ... 64 writes of that table (a stream of updates pays little for it)."""
        if not upsert_pk:
            copy(cur, table)
            return
        skip = self.direct_skip.get(table, 0)
        if skip <= 0:
            cur.execute("SAVEPOINT fabric_direct")
            try:
                copy(cur, table)
            except self.pg.errors.UniqueViolation:
                cur.execute("ROLLBACK TO SAVEPOINT fabric_direct")
                self.direct_backoff[table] = min(64, 2 * self.direct_backoff.get(table, 0) or 1)
                self.direct_skip[table] = self.direct_backoff[table]
            else:
                cur.execute("RELEASE SAVEPOINT fabric_direct")
                self.direct_backoff[table] = 0
                return
        else:
            self.direct_skip[table] = skip - 1
        q = self.quote
        tmp = f"fabric_stage_{table}"[:63]
        if tmp not in self.temp_tables:
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {q(tmp)} (LIKE {q(table)}) ON COMMIT DELETE ROWS")
            self.temp_tables.add(tmp)
        copy(cur, tmp)
        cols = ", ".join(map(q, columns))
        rest = [c for c in columns if c not in upsert_pk]
        action = ("DO UPDATE SET " + ", ".join(f"{q(c)} = EXCLUDED.{q(c)}" for c in rest)) if rest else "DO NOTHING"
        cur.execute(f"INSERT INTO {q(table)} ({cols}) SELECT {cols} FROM {q(tmp)} "
                    f"ON CONFLICT ({', '.join(map(q, upsert_pk))}) {action}")
        cur.execute(f"TRUNCATE {q(tmp)}")

    def delete_keys(self, table: str, pk: list[str], keys: list[tuple]) -> None:
        where = " AND ".join(f"{self.quote(c)} = %s" for c in pk)
        with self._ensure().cursor() as cur:
            cur.executemany(f"DELETE FROM {self.quote(table)} WHERE {where}", keys)

    def commit(self) -> None:
        self._ensure().commit()

    def commit_async(self) -> None:
        job, self.job = self.job, None
        if job is not None:
            job.result()
        jobs, self.deferred = self.deferred, []
        if self.pool is None:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="fabric-pg-commit")
        self.job = self.pool.submit(self._commit_in_background, self.conn, jobs)

    def _commit_in_background(self, conn: Any, jobs: list[Callable[[Any], None]]) -> None:
        """Runs in the pool's thread; the task's thread touches the connection again only after
        ``_settle`` has waited for this (psycopg releases the GIL while the server works)."""
        with conn.cursor() as cur:
            for job in jobs:
                job(cur)
        conn.commit()

    def wait(self) -> None:
        self._settle()

    def done(self) -> bool:
        return self.job is None or self.job.done()

    def rollback(self) -> None:
        self._abandon()
        self.temp_tables = set()  # a staging table created in the rolled-back transaction is gone
        if self.conn is not None and not self.conn.closed:
            self.conn.rollback()


class _Pieces:
    """COPY data pieces made on demand and kept, so that a write rolled back to its savepoint
    can send them again (``encode_copy_text`` yields each piece once)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._rest = pieces
        self._made: list[bytes] = []

    def __iter__(self) -> Iterator[bytes]:
        yield from list(self._made)
        for piece in self._rest:
            self._made.append(piece)
            yield piece


class _Cursor:
    """A server-side cursor whose errors come out classified (retriable or not)."""

    def __init__(self, cur: Any, dialect: PostgresDialect) -> None:
        self.cur = cur
        self.dialect = dialect
        self.description = cur.description

    def fetchmany(self, n: int) -> list[tuple]:
        try:
            return self.cur.fetchmany(n)
        except Exception as exc:
            raise self.dialect.classify(exc) from exc

    def close(self) -> None:
        try:
            self.cur.close()
            self.dialect.conn.commit()
        except Exception:  # noqa: BLE001 - a broken connection is replaced on the next query
            pass


DSN = Field("str", required=True, doc="libpq connection string, e.g. 'host=127.0.0.1 port=5432 dbname=shop user=me'")


class PostgresSourceTask(SqlSourceTask):
    dialect_class = PostgresDialect


class PostgresSinkTask(SqlSinkTask):
    dialect_class = PostgresDialect


class PostgresSourceConnector(SourceConnector):
    """Copies PostgreSQL tables (or a query) into topics; see ``sql_source.py`` for the modes."""

    CONFIG = {"dsn": DSN, **SOURCE_CONFIG}
    task_class = PostgresSourceTask

    def validate(self, config: dict[str, Any]) -> list[tuple[str, str]]:
        return validate_source(config)

    def task_configs(self, config: dict[str, Any], tasks_max: int) -> list[dict[str, Any]]:
        return source_task_configs(config, tasks_max)


class PostgresSinkConnector(SinkConnector):
    """Writes topics into PostgreSQL tables; see ``sql_sink.py``."""

    CONFIG = {"dsn": DSN, **SINK_CONFIG}
    task_class = PostgresSinkTask

    def validate(self, config: dict[str, Any]) -> list[tuple[str, str]]:
        return validate_sink(config)
