"""The generic SQL sink task: insert or upsert rows by key, delete on tombstones, batched.

``put`` only buffers; the buffer is written when it reaches ``batch_size`` rows and on ``flush``
(which the worker calls before committing offsets), each write in one transaction.  Records are
written in order as runs of the same (table, operation): an upsert run keeps the last row of each
key (a later record of a key wins, as it would row by row, and PostgreSQL's ``ON CONFLICT`` refuses
two rows of one key in one statement), then a delete run, and so on.  A write's commit may run in
the background (``Dialect.commit_async``: PostgreSQL's server finishes the upsert while the worker
decodes the next batch); the next write and ``flush`` wait for it, and if it failed its records go
back into the buffer, so ``flush`` returns only when everything put so far is committed.
``pre_commit`` (the worker's periodic offset commit) does not wait: it returns the offsets that
the confirmed writes cover, and when the database is idle it confirms the last write and starts
writing what is buffered, so the worker keeps fetching and decoding meanwhile.

Rows: a record's value must be an object (dict), its fields are the columns.  With
``pk_mode: record_key`` the key fills ``pk_fields`` (a scalar key the first one, an object key by
name); with ``record_value`` the key columns are taken from the value.  ``auto_create`` makes a
missing table from the first run's values (types from Python types) with ``pk_fields`` as its
primary key.  Database errors are ``RetriableError``: the worker retries, then restarts the task;
nothing is committed past a failed write, so the copy resumes exactly there.
"""

from __future__ import annotations

import json
import logging
from itertools import groupby, repeat
from operator import attrgetter
from typing import Any, Mapping

from ..api import ConnectError, SinkRecord, SinkTask
from .sql import Dialect, columns_of

log = logging.getLogger("fabric.connect.sql")

_TP = attrgetter("topic", "partition")
_OFFSET = attrgetter("offset")
_TOPIC = attrgetter("topic")
_VALUE = attrgetter("value")
_KEY = attrgetter("key")


def _json(v: Any) -> Any:
    return json.dumps(v, separators=(",", ":"), default=str) if isinstance(v, (dict, list)) else v


def _first_present(column: list[Any]) -> Any:
    return next((v for v in column if v is not None), None)


class SqlSinkTask(SinkTask):
    dialect_class: type[Dialect]

    def start(self, config: dict[str, Any]) -> None:
        self.config = config
        self.pk = list(config["pk_fields"])
        self.pk_mode = config["pk_mode"]
        self.upsert = config["insert_mode"] == "upsert"
        self.batch = config["batch_size"]
        self.buffer: list[SinkRecord] = []
        self.unconfirmed: list[SinkRecord] = []  # written, commit not yet confirmed (commit_async)
        self.unconfirmed_marks: dict[tuple[str, int], int] = {}  # per partition: next offset after them
        self.durable: dict[tuple[str, int], int] = {}  # per partition: next offset after the confirmed writes
        self.known: dict[str, list[str]] = {}
        self.db = self.dialect_class()
        self.db.connect(config)

    def put(self, records: list[SinkRecord]) -> None:
        need_key = self.pk_mode == "record_key"
        deletes = self.config["delete_enabled"]
        # The common batch, checked at C speed: every value an object, every key a scalar (when
        # keys are needed).  Any other batch is checked record by record.
        plain = set(map(type, map(_VALUE, records))) == {dict} and not (
            need_key and ({type(None), dict} & set(map(type, map(_KEY, records)))))
        for r in () if plain else records:  # each bad record fails here, alone, not the whole write
            v = r.value
            if type(v) is dict:
                if need_key and (r.key is None or type(r.key) is dict):
                    self._key_fields(r)  # raises if the key lacks a field
            elif v is None:
                if need_key and deletes:
                    self._key_fields(r)
            elif not isinstance(v, dict):
                raise ConnectError(f"{r.topic}/{r.partition}@{r.offset}: value is {type(v).__name__}, "
                                   "not an object (use a JSON converter, or transforms to shape it)")
            elif need_key:
                self._key_fields(r)
        self.buffer.extend(records)
        if len(self.buffer) >= self.batch:
            try:
                self._write()
            except Exception:
                del self.buffer[len(self.buffer) - len(records):]  # a retried put adds them again, once
                raise

    def flush(self, offsets: Mapping[tuple[str, int], int]) -> None:
        self._write()
        self._confirm()

    def pre_commit(self, offsets: Mapping[tuple[str, int], int]) -> Mapping[tuple[str, int], int]:
        """What is committed in the database already, without waiting for it (see the module)."""
        if not self.unconfirmed or self.db.done():
            self._confirm()  # finished: returns at once (or raises the write's error, as flush would)
            if not self.buffer:
                return offsets  # everything put is committed, records the worker skipped included
            self._write()  # the rest goes on in the background; its offsets commit next time
        return {tp: o for tp, o in self.durable.items() if tp in offsets}

    def _confirm(self) -> None:
        """Wait for the last write's commit; if it failed, its records go back to the front of the
        buffer (written again by the next write), so none is ever lost or committed past."""
        if not self.unconfirmed:
            return
        try:
            self.db.wait()
        except Exception as exc:
            self.buffer[:0] = self.unconfirmed
            self.unconfirmed = []
            self._rollback_quietly()
            raise self.db.classify(exc) from exc
        self.unconfirmed = []
        self.durable.update(self.unconfirmed_marks)

    def _key_fields(self, r: SinkRecord) -> dict[str, Any]:
        k = r.key
        if isinstance(k, dict):
            missing = [f for f in self.pk if f not in k]
            if missing:
                raise ConnectError(f"{r.topic}/{r.partition}@{r.offset}: key has no field {missing[0]!r}")
            return {f: k[f] for f in self.pk}
        if k is None:
            raise ConnectError(f"{r.topic}/{r.partition}@{r.offset}: pk_mode record_key but the record has no key")
        return {self.pk[0]: k}

    def _write(self) -> None:
        if not self.buffer:
            return
        self._confirm()
        runs: list[tuple[str, str, list[SinkRecord]]] = []
        deletes = self.config["delete_enabled"]
        buf = self.buffer
        topics = set(map(_TOPIC, buf))
        if len(topics) == 1 and None not in map(_VALUE, buf):  # the common case, at C speed: one run
            groups: Any = [((topics.pop(), False), buf)]
        else:
            groups = groupby(buf, lambda r: (r.topic, r.value is None))
        for (topic, tombstone), group in groups:
            if tombstone and not deletes:
                continue
            table = self.config["table"].replace("${topic}", topic)
            op = "delete" if tombstone else "write"
            if runs and runs[-1][0] == table and runs[-1][1] == op:
                runs[-1][2].extend(group)
            else:
                runs.append((table, op, list(group)))
        try:
            for table, op, recs in runs:
                if op == "delete":
                    keys = {tuple(self._key_fields(r)[f] for f in self.pk): None for r in recs}
                    if self._ensure_table(table, None, None):
                        self.db.delete_keys(table, self.pk, list(keys))
                else:
                    self._write_run(table, recs)
            self.db.commit_async()  # confirmed by the next write or by flush (_confirm)
        except ConnectError:
            self.db.rollback()
            raise
        except Exception as exc:
            self._rollback_quietly()
            raise self.db.classify(exc) from exc
        # Records are in offset order within a partition: the last one of each is its highest.
        marks = dict(zip(map(_TP, self.buffer), map(_OFFSET, self.buffer)))
        self.unconfirmed_marks = {tp: o + 1 for tp, o in marks.items()}
        self.unconfirmed, self.buffer = self.buffer, []

    def _rollback_quietly(self) -> None:
        try:
            self.db.rollback()
        except Exception:  # noqa: BLE001 - the connection may be gone; the original error matters
            log.debug("rollback failed", exc_info=True)

    def _write_run(self, table: str, recs: list[SinkRecord]) -> None:
        """The run's rows as columns: one list per column, no dict or tuple per row."""
        values = [r.value for r in recs]
        shapes = list(dict.fromkeys(map(tuple, values)))  # each distinct field order, first seen first
        keys = [r.key for r in recs] if self.pk_mode == "record_key" else None
        if keys is not None:
            if any(type(k) is dict for k in keys):  # object keys: merge them row by row
                return self._write_rows(table, [{**r.value, **self._key_fields(r)} for r in recs])
            f = self.pk[0]  # a scalar key fills the first primary-key field (after the value's fields)
            shapes = [s if f in s else (*s, f) for s in shapes]
        cols = columns_of(shapes)
        data = {c: list(map(dict.get, values, repeat(c))) for c in cols}
        if keys is not None:
            data[self.pk[0]] = keys
        if self.upsert:  # the last row of each key wins, as it would row by row
            pk = data[self.pk[0]] if len(self.pk) == 1 else list(zip(*(data[f] for f in self.pk)))
            last = dict(zip(pk, range(len(pk))))
            if len(last) < len(pk):
                keep = sorted(last.values())
                data = {c: [col[i] for i in keep] for c, col in data.items()}
        self._write_columns(table, cols, data)

    def _write_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        cols = columns_of(rows)
        data = {c: list(map(dict.get, rows, repeat(c))) for c in cols}
        if self.upsert:
            last = dict(zip(zip(*(data[f] for f in self.pk)), range(len(rows))))
            keep = sorted(last.values())
            data = {c: [col[i] for i in keep] for c, col in data.items()}
        self._write_columns(table, cols, data)

    def _write_columns(self, table: str, cols: list[str], data: dict[str, list[Any]]) -> None:
        first = {c: _first_present(data[c]) for c in cols}
        existing = self._ensure_table(table, cols, first)
        if existing is None:
            raise ConnectError(f"table {table!r} does not exist (set auto_create: true to create it)")
        unknown = [c for c in cols if c not in existing]
        if unknown:
            raise ConnectError(f"table {table!r} has no column {unknown[0]!r}")
        for c in cols:  # objects and lists are stored as JSON text (a column's type comes from its first value)
            if isinstance(first[c], (dict, list)):
                data[c] = list(map(_json, data[c]))
        self.db.write_columns(table, cols, [data[c] for c in cols], self.pk if self.upsert else None)

    def _ensure_table(self, table: str, cols: list[str] | None, first: dict[str, Any] | None) -> list[str] | None:
        """The table's columns (None: missing); with ``auto_create``, a missing table is made from
        ``cols`` typed by ``first`` (each column's first non-null value)."""
        known = self.known.get(table)
        if known is None:
            known = self.db.table_columns(table)
            if known is None and cols and first is not None and self.config["auto_create"]:
                spec = [(c, self.db.type_for(first[c] if first[c] is not None else "")) for c in cols]
                self.db.create_table(table, spec, self.pk)
                log.info("created table %s (%s)", table, ", ".join(f"{c} {t}" for c, t in spec))
                known = [c for c, _ in spec]
            if known is not None:
                self.known[table] = known
        return known

    def close(self) -> None:
        if hasattr(self, "db"):
            self.db.close()
