"""The generic SQL sink task: insert or upsert rows by key, delete on tombstones, batched.

``put`` only buffers; the buffer is written when it reaches ``batch_size`` rows and on ``flush``
(which the worker calls before committing offsets), each write in one transaction.  Records are
written in order as runs of the same (table, operation): an upsert run keeps the last row of each
key (a later record of a key wins, as it would row by row, and PostgreSQL's ``ON CONFLICT`` refuses
two rows of one key in one statement), then a delete run, and so on.

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
from typing import Any, Mapping

from ..api import ConnectError, SinkRecord, SinkTask
from .sql import Dialect, columns_of

log = logging.getLogger("fabric.connect.sql")


def _sample(rows: list[dict[str, Any]], col: str) -> Any:
    for row in rows:
        v = row.get(col)
        if v is not None:
            return v
    return None


def _json(v: Any) -> Any:
    return json.dumps(v, separators=(",", ":"), default=str) if isinstance(v, (dict, list)) else v


class SqlSinkTask(SinkTask):
    dialect_class: type[Dialect]

    def start(self, config: dict[str, Any]) -> None:
        self.config = config
        self.pk = list(config["pk_fields"])
        self.pk_mode = config["pk_mode"]
        self.upsert = config["insert_mode"] == "upsert"
        self.batch = config["batch_size"]
        self.buffer: list[SinkRecord] = []
        self.known: dict[str, list[str]] = {}
        self.db = self.dialect_class()
        self.db.connect(config)

    def put(self, records: list[SinkRecord]) -> None:
        for r in records:
            if r.value is not None and not isinstance(r.value, dict):
                raise ConnectError(f"{r.topic}/{r.partition}@{r.offset}: value is {type(r.value).__name__}, "
                                   "not an object (use a JSON converter, or transforms to shape it)")
            if self.pk_mode == "record_key" and (r.value is not None or self.config["delete_enabled"]):
                self._key_fields(r)  # a record without its key fails here, alone, not the whole write
        self.buffer.extend(records)
        if len(self.buffer) >= self.batch:
            self._write()

    def flush(self, offsets: Mapping[tuple[str, int], int]) -> None:
        self._write()

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
        runs: list[tuple[str, str, list[SinkRecord]]] = []
        for r in self.buffer:
            table = self.config["table"].replace("${topic}", r.topic)
            op = "delete" if r.value is None else "write"
            if op == "delete" and not self.config["delete_enabled"]:
                continue
            if runs and runs[-1][0] == table and runs[-1][1] == op:
                runs[-1][2].append(r)
            else:
                runs.append((table, op, [r]))
        try:
            for table, op, recs in runs:
                if op == "delete":
                    keys = {tuple(self._key_fields(r)[f] for f in self.pk): None for r in recs}
                    if self._ensure_table(table, None):
                        self.db.delete_keys(table, self.pk, list(keys))
                else:
                    self._write_run(table, recs)
            self.db.commit()
        except ConnectError:
            self.db.rollback()
            raise
        except Exception as exc:
            self._rollback_quietly()
            raise self.db.classify(exc) from exc
        self.buffer = []

    def _rollback_quietly(self) -> None:
        try:
            self.db.rollback()
        except Exception:  # noqa: BLE001 - the connection may be gone; the original error matters
            log.debug("rollback failed", exc_info=True)

    def _write_run(self, table: str, recs: list[SinkRecord]) -> None:
        if self.pk_mode == "record_key" and len(self.pk) == 1:
            f = self.pk[0]  # the common case, without a dict per row for the key
            rows = [{**r.value, f: r.key[f] if isinstance(r.key, dict) else r.key} for r in recs]
        elif self.pk_mode == "record_key":
            rows = [{**r.value, **self._key_fields(r)} for r in recs]
        else:
            rows = [r.value for r in recs]
        if self.upsert:
            last: dict[tuple, dict[str, Any]] = {}
            for row in rows:
                last[tuple(row.get(f) for f in self.pk)] = row
            rows = list(last.values())
        cols = columns_of(rows)
        existing = self._ensure_table(table, rows)
        if existing is None:
            raise ConnectError(f"table {table!r} does not exist (set auto_create: true to create it)")
        unknown = [c for c in cols if c not in existing]
        if unknown:
            raise ConnectError(f"table {table!r} has no column {unknown[0]!r}")
        tuples = [tuple(map(row.get, cols)) for row in rows]
        nested = [i for i, c in enumerate(cols) if isinstance(_sample(rows, c), (dict, list))]
        if nested:  # objects and lists are stored as JSON text (a column's type comes from its first value)
            tuples = [tuple(_json(v) if i in nested else v for i, v in enumerate(t)) for t in tuples]
        self.db.write_rows(table, cols, tuples, self.pk if self.upsert else None)

    def _ensure_table(self, table: str, rows: list[dict[str, Any]] | None) -> list[str] | None:
        cols = self.known.get(table)
        if cols is None:
            cols = self.db.table_columns(table)
            if cols is None and rows and self.config["auto_create"]:
                types: dict[str, str] = {}
                for row in rows:
                    for k, v in row.items():
                        if v is not None and k not in types:
                            types[k] = self.db.type_for(v)
                spec = [(c, types.get(c, self.db.type_for(""))) for c in columns_of(rows)]
                self.db.create_table(table, spec, self.pk)
                log.info("created table %s (%s)", table, ", ".join(f"{c} {t}" for c, t in spec))
                cols = [c for c, _ in spec]
            if cols is not None:
                self.known[table] = cols
        return cols

    def close(self) -> None:
        if hasattr(self, "db"):
            self.db.close()
