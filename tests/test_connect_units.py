"""Connect's pure parts: every converter and transform, predicates, env interpolation, backoff."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest

from connectors.api import RetriableError, SinkRecord, SourceRecord
from connectors.config import ErrorPolicy, interpolate
from connectors.converters import CONVERTERS, ConversionError, make_converter
from connectors.tolerance import ErrorHandler, backoff_ms
from connectors.transforms import TransformError, apply_chain, build_chain


def rec(value, key=None, topic="orders", ts=1_767_225_600_000, headers=None) -> SinkRecord:
    return SinkRecord(topic, 2, 41, ts, key, value, list(headers or []))


def run(specs, r):
    return apply_chain(build_chain(specs), r)


# ---------------------------------------------------------------------------------- converters

@pytest.mark.parametrize("name, value, data", [
    ("json", {"a": 1, "b": [True, None, "é"]}, '{"a":1,"b":[true,null,"é"]}'.encode()),
    ("json", "text", b'"text"'),
    ("string", "héllo", "héllo".encode()),
    ("bytes", b"\x00\xff", b"\x00\xff"),
])
def test_converter_round_trip(name, value, data):
    c = make_converter(name)
    assert c.to_bytes(value) == data
    assert c.from_bytes(data) == value


@pytest.mark.parametrize("name", list(CONVERTERS))
def test_none_stays_none(name):
    c = make_converter(name)
    assert c.to_bytes(None) is None and c.from_bytes(None) is None


def test_json_types_a_database_returns():
    c = make_converter("json")
    row = {"at": dt.datetime(2026, 12, 5, 9, 30, tzinfo=dt.timezone.utc), "day": dt.date(2026, 12, 5),
           "price": decimal.Decimal("12.50"), "n": decimal.Decimal("7"), "blob": b"\x01\x02"}
    assert c.from_bytes(c.to_bytes(row)) == {"at": "2026-12-05T09:30:00+00:00", "day": "2026-12-05",
                                             "price": 12.5, "n": 7, "blob": "AQI="}


def test_cbor_keeps_types():
    c = make_converter("cbor")
    v = {"b": b"\x00", "t": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), "d": decimal.Decimal("1.25")}
    assert c.from_bytes(c.to_bytes(v)) == v


def test_string_converter_objects_and_numbers():
    c = make_converter("string")
    assert c.to_bytes({"a": 1}) == b'{"a":1}' and c.to_bytes(42) == b"42" and c.to_bytes(b"raw") == b"raw"


@pytest.mark.parametrize("name, data, message", [
    ("json", b"{not json", "json: not valid JSON"),
    ("string", b"\xff\xfe", "string: not UTF-8"),
    ("cbor", b"\xff\xff\xff", "cbor: not valid CBOR"),
])
def test_bad_bytes(name, data, message):
    with pytest.raises(ConversionError, match=message):
        make_converter(name).from_bytes(data)


def test_unconvertible_values():
    with pytest.raises(ConversionError, match="bytes: cannot convert dict"):
        make_converter("bytes").to_bytes({"a": 1})
    with pytest.raises(ConversionError, match="json: .*object is not JSON serializable"):
        make_converter("json").to_bytes({"a": object()})


# ---------------------------------------------------------------------------------- transforms

def test_insert_field_constant_and_from_record():
    r = run([{"type": "insert_field", "field": "src", "value": "web"},
             {"type": "insert_field", "field": "t", "from": "topic"},
             {"type": "insert_field", "field": "ts", "from": "timestamp"},
             {"type": "insert_field", "field": "p", "from": "partition"},
             {"type": "insert_field", "field": "o", "from": "offset"}], rec({"a": 1}))
    assert r.value == {"a": 1, "src": "web", "t": "orders", "ts": 1_767_225_600_000, "p": 2, "o": 41}


def test_transform_does_not_change_the_callers_dict():
    original = {"a": 1}
    run([{"type": "exclude", "fields": ["a"]}], rec(original))
    assert original == {"a": 1}


def test_rename_include_exclude():
    assert run([{"type": "rename", "renames": {"a": "x"}}], rec({"a": 1, "b": 2})).value == {"x": 1, "b": 2}
    assert run([{"type": "include", "fields": ["b", "zz"]}], rec({"a": 1, "b": 2})).value == {"b": 2}
    assert run([{"type": "exclude", "fields": ["a", "zz"]}], rec({"a": 1, "b": 2})).value == {"b": 2}


def test_mask_blanks_by_type_or_replacement():
    r = run([{"type": "mask", "fields": ["card", "n", "f", "ok", "l"]}],
            rec({"card": "4111", "n": 7, "f": 1.5, "ok": True, "l": [1], "keep": "x"}))
    assert r.value == {"card": "", "n": 0, "f": 0.0, "ok": False, "l": [], "keep": "x"}
    r = run([{"type": "mask", "fields": ["card"], "replacement": "****"}], rec({"card": "4111"}))
    assert r.value == {"card": "****"}


def test_filter_with_predicates_and_negate():
    drop_test = [{"type": "filter", "predicate": {"type": "field_equals", "field": "status", "value": "test"}}]
    assert run(drop_test, rec({"status": "test"})) is None
    assert run(drop_test, rec({"status": "paid"})).value == {"status": "paid"}
    keep_orders_only = [{"type": "filter", "negate": True,
                         "predicate": {"type": "topic_matches", "pattern": "orders"}}]
    assert run(keep_orders_only, rec({}, topic="orders")) is not None
    assert run(keep_orders_only, rec({}, topic="orders-x")) is None
    tomb = [{"type": "filter", "predicate": {"type": "is_tombstone"}}]
    assert run(tomb, rec(None)) is None and run(tomb, rec({})) is not None
    hdr = [{"type": "filter", "predicate": {"type": "has_header", "name": "skip"}}]
    assert run(hdr, rec({}, headers=[("skip", b"1")])) is None and run(hdr, rec({})) is not None
    rx = [{"type": "filter", "predicate": {"type": "field_matches", "field": "email", "pattern": ".*@test\\..*"}}]
    assert run(rx, rec({"email": "a@test.org"})) is None and run(rx, rec({"email": "a@b.org"})) is not None


def test_predicate_limits_a_transform():
    mask_pay = [{"type": "mask", "fields": ["card"], "predicate": {"type": "topic_matches", "pattern": "pay.*"}}]
    assert run(mask_pay, rec({"card": "1"}, topic="payments")).value == {"card": ""}
    assert run(mask_pay, rec({"card": "1"}, topic="orders")).value == {"card": "1"}


def test_value_to_key_and_extract_field():
    r = run([{"type": "value_to_key", "fields": ["id", "region"]}], rec({"id": 7, "region": "eu", "x": 1}))
    assert r.key == {"id": 7, "region": "eu"}
    r = run([{"type": "value_to_key", "fields": ["id"], "single": True}], rec({"id": 7}))
    assert r.key == 7
    r = run([{"type": "value_to_key", "fields": ["id"]}, {"type": "extract_field", "field": "id", "on": "key"},
             {"type": "extract_field", "field": "x"}], rec({"id": 7, "x": {"deep": 1}}))
    assert (r.key, r.value) == (7, {"deep": 1})
    with pytest.raises(TransformError, match="value_to_key: value has no field 'id'"):
        run([{"type": "value_to_key", "fields": ["id"]}], rec({"x": 1}))


def test_add_header():
    r = run([{"type": "add_header", "name": "origin", "value": "eu-1"}], rec({}, headers=[("a", b"1")]))
    assert r.headers == [("a", b"1"), ("origin", b"eu-1")]


def test_route_by_regex_and_timestamp():
    r = run([{"type": "route_regex", "regex": "db\\.(.*)", "replacement": "copy-$1"}], rec({}, topic="db.orders"))
    assert r.topic == "copy-orders"
    assert run([{"type": "route_regex", "regex": "db\\.(.*)", "replacement": "x"}], rec({}, topic="o")).topic == "o"
    r = run([{"type": "route_timestamp"}], rec({}, ts=1_767_225_600_000))
    assert r.topic == "orders-20260101"
    r = run([{"type": "route_timestamp", "topic_format": "${topic}.${timestamp}", "timestamp_format": "%Y-%m"}],
            rec({}, ts=1_767_225_600_000))
    assert r.topic == "orders.2026-01"


def test_field_transforms_need_objects_but_pass_tombstones():
    with pytest.raises(TransformError, match="insert_field: value is str, not an object"):
        run([{"type": "insert_field", "field": "a", "value": 1}], rec("text"))
    assert run([{"type": "mask", "fields": ["a"]}], rec(None)).value is None


def test_transforms_work_on_source_records():
    r = SourceRecord({"file": "f"}, {"position": 3}, "lines", {"a": 1})
    r = run([{"type": "insert_field", "field": "b", "value": 2}, {"type": "route_regex", "regex": "lines",
                                                                   "replacement": "l2"}], r)
    assert (r.topic, r.value, r.source_offset) == ("l2", {"a": 1, "b": 2}, {"position": 3})


# ---------------------------------------------------------------------------------- the rest

def test_env_interpolation():
    env = {"PORT": "9000"}
    assert interpolate("a: ${PORT}\nb: ${MISSING:-x y}\nc: ${topic}\nd: ${NONE}", env) == \
        "a: 9000\nb: x y\nc: ${topic}\nd: "


def test_backoff_doubles_to_a_cap():
    assert [backoff_ms(i, 100, 1000) for i in range(6)] == [100, 200, 400, 800, 1000, 1000]


def test_retry_until_success_with_backoff_then_give_up():
    waits: list[float] = []
    h = ErrorHandler(ErrorPolicy(retry_timeout_ms=60_000, retry_backoff_max_ms=300), "c", None, lambda: False,
                     sleep=waits.append)
    calls = iter([RetriableError("down"), RetriableError("down"), RetriableError("down"), "ok"])

    def flaky():
        v = next(calls)
        if isinstance(v, Exception):
            raise v
        return v

    assert h.retry(flaky) == "ok"
    assert waits == [0.1, 0.2, 0.3]
    h0 = ErrorHandler(ErrorPolicy(retry_timeout_ms=0), "c", None, lambda: False, sleep=waits.append)
    with pytest.raises(RetriableError):
        h0.retry(lambda: (_ for _ in ()).throw(RetriableError("still down")))


def test_tolerance_none_raises_all_skips():
    exc = ValueError("bad")
    with pytest.raises(ValueError):
        ErrorHandler(ErrorPolicy(tolerance="none"), "c", None, lambda: False).bad_record("convert", exc, None, b"x")
    h = ErrorHandler(ErrorPolicy(tolerance="all"), "c", None, lambda: False)
    h.bad_record("convert", exc, None, b"x")
    assert h.skipped == 1


def test_source_batch_expands_to_records_with_the_batch_offset():
    from connectors.api import SourceBatch
    b = SourceBatch({"file": "f"}, {"position": 9}, "t", ["a", "b"], keys=[1, 2])
    assert [(r.key, r.value, r.source_offset, r.topic) for r in b.records()] == \
        [(1, "a", {"position": 9}, "t"), (2, "b", {"position": 9}, "t")]
    assert [r.key for r in SourceBatch({}, {}, "t", ["x"]).records()] == [None]
    assert make_converter("string").to_bytes_many(["é", 3, None]) == ["é".encode(), b"3", None]
