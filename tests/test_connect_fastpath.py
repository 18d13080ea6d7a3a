"""Connect's column-at-a-time fast paths give exactly what the value-at-a-time paths give.

The fast paths (``connectors/json_columns.py``, ``connectors/builtin/pg_copy.py``, the SQL sink's
column building) exist for speed only, so each test here compares them with the plain path on
the same input: seeded random rows of every type a database or a JSON decoder hands over, and
the edge cases where the fast path must step aside (NaN, huge numbers, repeated column names).
"""

from __future__ import annotations

import datetime as dt
import decimal
import random
import sqlite3
import uuid
import zoneinfo

import pytest

from connectors.api import SinkRecord, SourceBatch, TaskContext
from connectors.builtin.pg_copy import encode_copy_text
from connectors.builtin.sqlite import SqliteSinkTask
from connectors.converters import ConversionError, make_converter

D = decimal.Decimal
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def _value(rng: random.Random, kind: str):
    if rng.random() < 0.15:
        return None
    return {
        "int": lambda: rng.randint(-2**70, 2**70) if rng.random() < 0.1 else rng.randint(-1000, 1000),
        "float": lambda: rng.choice([0.1, -2.5, 1e-7, 3e22, 12.0, rng.uniform(-1e6, 1e6)]),
        "decimal": lambda: rng.choice([D("12.50"), D("7"), D("7.00"), D("-0"), D("1E+3"), D("0.00001"),
                                       D("123456789012345678.5"), D(rng.randint(0, 10**6)) / 100]),
        "text": lambda: rng.choice(["plain", "", "é ü 中", 'quote " back \\ slash', "tab\tnew\nline", "%s %d",
                                    "\u2028", "\x01"]),
        "bool": lambda: rng.random() < 0.5,
        "ts": lambda: dt.datetime(2026, 3, 29, 0, 30, tzinfo=rng.choice([dt.timezone.utc, BERLIN]))
        + dt.timedelta(minutes=rng.randint(0, 300), microseconds=rng.choice([0, 5])),
        "naive": lambda: dt.datetime(2026, 1, 1) + dt.timedelta(seconds=rng.randint(0, 10**8)),
        "date": lambda: dt.date(2026, 1, 1) + dt.timedelta(days=rng.randint(0, 999)),
        "time": lambda: dt.time(rng.randint(0, 23), rng.randint(0, 59), tzinfo=rng.choice([None, dt.timezone.utc])),
        "json": lambda: rng.choice([{"a": [1, 2.5, None]}, [], {"x": {"y": "z"}}]),
        "bytes": lambda: b"\x00\xff",
        "mixed": lambda: rng.choice([1, 2.5, "three", True, D("4.5")]),
    }[kind]()


KINDS = ["int", "float", "decimal", "text", "bool", "ts", "naive", "date", "time", "json", "bytes", "mixed"]


@pytest.mark.parametrize("seed", range(5))
def test_json_rows_byte_identical_to_one_dict_at_a_time(seed):
    rng = random.Random(seed)
    cols = [f"c_{k}" for k in KINDS] + ['odd "name" 100%']
    rows = [tuple(_value(rng, k) for k in KINDS + ["text"]) for _ in range(300)]
    c = make_converter("json")
    fast = c.to_bytes_rows(cols, rows)
    assert fast == [c.to_bytes(dict(zip(cols, r))) for r in rows], f"seed {seed}"
    for i, kind in enumerate(KINDS):  # each column alone, as a key column would be
        column = [r[i] for r in rows]
        assert c.to_bytes_many(column) == [c.to_bytes(v) for v in column], f"seed {seed}, {kind}"


@pytest.mark.parametrize("cols, rows", [
    (["a", "a"], [(1, 2)]),  # a dict keeps the last value of a repeated name
    (["n"], [(D("NaN"),), (1.5,)]),
    (["n"], [(float("inf"),)]),
    (["n"], [(D("1E+400"),)]),
    ([], [(), ()]),
])
def test_json_rows_edge_cases_match(cols, rows):
    c = make_converter("json")
    assert c.to_bytes_rows(cols, rows) == [c.to_bytes(dict(zip(cols, r))) for r in rows]


def test_json_rows_unconvertible_value_is_a_conversion_error():
    with pytest.raises(ConversionError, match="UUID is not JSON serializable"):
        make_converter("json").to_bytes_rows(["id"], [(1,), (uuid.UUID(int=5),)])


def test_source_batch_with_columns_expands_to_objects():
    b = SourceBatch({"table": "t"}, {"incrementing": 2}, "t", [(1, "a"), (2, None)], keys=[1, 2], columns=["id", "v"])
    assert [(r.key, r.value) for r in b.records()] == [(1, {"id": 1, "v": "a"}), (2, {"id": 2, "v": None})]
    assert make_converter("cbor").to_bytes_rows(b.columns, b.values)[1] == make_converter("cbor").to_bytes(
        {"id": 2, "v": None})


def test_json_from_bytes_many_matches_one_at_a_time():
    c = make_converter("json")
    data = [b'{"a":1,"b":[2.5,null]}', b"7", b'"x"', b" 1 ", b"true\n", "\"é\"".encode()]
    assert c.from_bytes_many(data) == [c.from_bytes(d) for d in data]
    assert c.from_bytes_many([b"1", None]) == [1, None]
    assert c.from_bytes_many([]) == []
    # Values that are not one JSON value each but would make a valid array once joined: the
    # column decoder must see it (its separators are swallowed) and leave the verdict to the
    # value-by-value path, which names the bad value.
    for bad in ([b"1", b"1 2"], [b"{", b"2"], [b"1", b"\xff"], [b"[1", b"2]", b"3,0,4"], [b'"a', b'b"'],
                [b"1,2", b"3"], [b"", b"1"], [b"1", b"]"]):
        with pytest.raises(ConversionError):
            c.from_bytes_many(bad)


def test_copy_text_escapes_as_psycopg_and_steps_aside_for_other_types():
    data = [[1, None, -5], ["tab\tnl\nback\\", "\\N", ""], [1.5, 2, None], [True, False, None]]
    assert b"".join(encode_copy_text(data, "utf-8", chunk_rows=2)) == (
        b"1\ttab\\tnl\\nback\\\\\t1.5\tt\n\\N\t\\\\N\t2\tf\n-5\t\t\\N\t\\N\n")
    for column in ([D("1.5")], [float("nan")], [1, "a"], [dt.date(2026, 1, 1)], [2**2000]):
        assert encode_copy_text([column], "utf-8") is None, column


def _sqlite_sink(path, **config):
    task = SqliteSinkTask()
    task.initialize(TaskContext("t", 0, lambda p: None, lambda: False))
    task.start({"database": str(path), "table": "${topic}", "insert_mode": "upsert", "pk_mode": "record_key",
                "pk_fields": ["id"], "auto_create": True, "delete_enabled": True, "batch_size": 1000, **config})
    return task


def test_sql_sink_columns_keep_the_row_semantics(tmp_path):
    """Scalar keys fill the key column (over the value's own field), the last row of a key wins,
    missing fields are NULL, objects are JSON text, a tombstone deletes, object keys by name."""
    db = tmp_path / "s.db"
    task = _sqlite_sink(db)
    recs = [SinkRecord("t", 0, i, 0, k, v) for i, (k, v) in enumerate([
        (1, {"name": "a", "tags": {"x": 1}}),
        (2, {"id": 99, "name": "b"}),
        (1, {"name": "a2", "score": 1.5}),
        (3, {"score": 2}),
        (3, None),
        (4, {"name": "d", "tags": [1, "two"]}),
    ])]
    task.put(recs)
    task.flush({})
    task.close()
    with sqlite3.connect(db) as c:
        assert [r[1] for r in c.execute("PRAGMA table_info(t)")] == ["name", "tags", "id", "score"]
        assert c.execute("SELECT id, name, tags, score FROM t ORDER BY id").fetchall() == [
            (1, "a2", None, 1.5), (2, "b", None, None), (4, "d", '[1,"two"]', None)]
    task = _sqlite_sink(db, pk_fields=["id"], table="u")
    task.put([SinkRecord("t", 0, 0, 0, {"id": 5}, {"name": "e"}), SinkRecord("t", 0, 1, 0, {"id": 5}, {"name": "f"})])
    task.flush({})
    task.close()
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT id, name FROM u").fetchall() == [(5, "f")]
