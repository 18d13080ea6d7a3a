"""Record batch format: round trips (hypothesis), and every corruption is caught."""

from __future__ import annotations

import zlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.protocol.errors import FabricError
from fabric.records.batch import (COMPRESSION_NONE, COMPRESSION_ZLIB, columns_in, HEADER_SIZE, decode_records, encode_batch, iter_headers,
                                  parse_header, records_in, set_log_append_time, stamp, validate_batch)

records_st = st.lists(
    st.tuples(st.integers(0, 2**41), st.one_of(st.none(), st.binary(max_size=40)),
              st.one_of(st.none(), st.binary(max_size=200)),
              st.one_of(st.none(), st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=8)), max_size=3))),
    min_size=1, max_size=50)


@settings(max_examples=200, deadline=None)
@given(records_st, st.sampled_from([0, COMPRESSION_ZLIB]), st.integers(0, 2**40), st.integers(-1, 2**31 - 1))
def test_round_trip(recs, compression, base_offset, epoch):
    ts, keys, values, headers = map(list, zip(*recs))
    raw = bytearray(encode_batch(ts, keys, values, headers, compression=compression))
    h = validate_batch(raw, 1 << 30, 10**6)
    assert h.record_count == len(recs) and h.max_timestamp == max(ts) and h.base_timestamp == ts[0]
    stamp(raw, base_offset, epoch)
    h2 = validate_batch(raw, 1 << 30, 10**6)  # stamping stays outside the CRC
    assert (h2.base_offset, h2.leader_epoch) == (base_offset, epoch)
    out = decode_records("t", 3, bytes(raw))
    assert [r.offset for r in out] == list(range(base_offset, base_offset + len(recs)))
    assert [r.timestamp for r in out] == ts
    assert [r.key for r in out] == keys
    assert [r.value for r in out] == values
    assert [list(r.headers) for r in out] == [[(n, v) for n, v in (hd or [])] for hd in headers]
    skip = len(recs) // 2
    cols = columns_in("t", 3, bytes(raw), base_offset + skip)
    assert len(cols) == 1 and list(cols[0]) == out[skip:]  # the columnar view agrees
    assert cols[0].timestamps == ts[skip:] and cols[0].values == values[skip:]


def test_records_in_skips_records_before_start_offset():
    a = bytearray(encode_batch([1, 2, 3], [None] * 3, [b"a", b"b", b"c"]))
    b = bytearray(encode_batch([4, 5], [None] * 2, [b"d", b"e"]))
    stamp(a, 10, 0)
    stamp(b, 13, 0)
    data = bytes(a + b)
    assert [r.value for r in records_in("t", 0, data, 11)] == [b"b", b"c", b"d", b"e"]
    assert [r.offset for r in records_in("t", 0, data, 14)] == [14]
    assert [pos for pos, _ in iter_headers(data + b"\x00" * 30)] == [0, len(a)]  # truncated tail ignored


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_flipped_byte_is_rejected_or_harmless(data):
    raw = bytearray(encode_batch([1000, 1001], [b"k", None], [b"hello", b"world"]))
    pos = data.draw(st.integers(0, len(raw) - 1))
    bit = data.draw(st.integers(0, 7))
    raw[pos] ^= 1 << bit
    if pos < 17:  # base_offset, batch_length, leader_epoch, magic: outside the CRC
        if 8 <= pos < 12 or pos == 16:
            with pytest.raises(FabricError):
                validate_batch(raw, 1 << 20, 1000)
        else:
            validate_batch(raw, 1 << 20, 1000)
    else:
        with pytest.raises(FabricError) as exc:
            validate_batch(raw, 1 << 20, 1000)
        assert exc.value.name in ("CORRUPT_BATCH", "INVALID_BATCH")


def _rebuild(raw: bytearray) -> bytearray:
    raw[17:21] = zlib.crc32(raw[21:]).to_bytes(4, "big")
    return raw


@pytest.mark.parametrize("mutate,name", [
    (lambda r: r[:HEADER_SIZE - 1], "CORRUPT_BATCH"),
    (lambda r: r[:-1], "CORRUPT_BATCH"),
    (lambda r: r + b"x", "CORRUPT_BATCH"),
    (lambda r: _rebuild(bytearray(r[:57]) + (0).to_bytes(4, "big") + r[61:]), "INVALID_BATCH"),  # count 0
    (lambda r: _rebuild(bytearray(r[:23]) + (5).to_bytes(4, "big") + r[27:]), "INVALID_BATCH"),  # last delta
    (lambda r: _rebuild(bytearray(r[:21]) + (0x40).to_bytes(2, "big") + r[23:]), "INVALID_BATCH"),  # attributes
    (lambda r: _rebuild(bytearray(r[:27]) + (-5).to_bytes(8, "big", signed=True) + r[35:]), "INVALID_BATCH"),
])
def test_specific_rule_violations(mutate, name):
    raw = bytearray(encode_batch([1000, 1001], [b"k", None], [b"hello", b"world"]))
    with pytest.raises(FabricError) as exc:
        validate_batch(bytes(mutate(raw)), 1 << 20, 1000)
    assert exc.value.name == name


def test_limits_are_enforced():
    raw = encode_batch([1] * 10, [None] * 10, [b"x" * 100] * 10)
    with pytest.raises(FabricError, match="BATCH_TOO_LARGE"):
        validate_batch(raw, 100, 1000)
    with pytest.raises(FabricError, match="INVALID_BATCH"):
        validate_batch(raw, 1 << 20, 5)


def test_log_append_time_rewrites_timestamp_and_crc():
    raw = bytearray(encode_batch([5, 6], [None, None], [b"a", b"b"]))
    set_log_append_time(raw, 123456)
    h = validate_batch(raw, 1 << 20, 10)
    assert h.max_timestamp == 123456
    assert [r.timestamp for r in decode_records("t", 0, bytes(raw))] == [123456, 123456]


def test_encode_rejects_bad_columns():
    with pytest.raises(ValueError):
        encode_batch([], [], [])
    with pytest.raises(ValueError):
        encode_batch([1, 2], [None], [b"a", b"b"])
    assert parse_header(encode_batch([1], [None], [b"a"])).magic == 1


# ------------------------------------------------------------------ what the header can prove (SPEC 6.6, 11-15)
def _restamp(raw: bytearray, *, count: int | None = None, max_ts: int | None = None) -> bytes:
    if count is not None:
        raw[23:27] = (count - 1).to_bytes(4, "big", signed=True)
        raw[57:61] = count.to_bytes(4, "big", signed=True)
    if max_ts is not None:
        raw[35:43] = max_ts.to_bytes(8, "big", signed=True)
    raw[8:12] = (len(raw) - 12).to_bytes(4, "big")
    return bytes(_rebuild(raw))


@pytest.mark.parametrize("compression", [COMPRESSION_NONE, COMPRESSION_ZLIB])
def test_a_record_count_the_bytes_cannot_hold_is_refused(compression):
    raw = bytearray(encode_batch([1], [None], [b"v"], compression=compression))
    with pytest.raises(FabricError, match="cannot fit") as exc:
        validate_batch(_restamp(raw, count=1_000_000), 1 << 20, 1_000_000)
    assert exc.value.name == "INVALID_BATCH"


def test_the_first_columns_length_must_be_the_record_count():
    raw = bytearray(encode_batch([1, 2, 3], [None] * 3, [b"a" * 20, b"b", b"c"]))
    for lie in (2, 4):
        with pytest.raises(FabricError, match="first column holds 3") as exc:
            validate_batch(_restamp(bytearray(raw), count=lie), 1 << 20, 1000)
        assert exc.value.name == "INVALID_BATCH"
    # a compressed batch cannot be checked this way: a small lie passes (consumers catch it)
    zipped = bytearray(encode_batch([1, 2, 3], [None] * 3, [b"a", b"b", b"c"], compression=COMPRESSION_ZLIB))
    assert validate_batch(_restamp(zipped, count=4), 1 << 20, 1000).record_count == 4


def test_columns_of_indefinite_length_are_accepted():
    body = b"\x9f" + b"".join(b"\x9f" + b"".join(cbor2.dumps(x) for x in col) + b"\xff"
                              for col in ([0, 1], [None, None], [b"a", b"b"], [None, None])) + b"\xff"
    raw = bytearray(encode_batch([5, 6], [None, None], [b"a", b"b"]))
    raw = raw[:HEADER_SIZE] + body
    h = validate_batch(_restamp(raw), 1 << 20, 10)
    assert [r.value for r in decode_records("t", 0, _restamp(bytearray(raw)), h)] == [b"a", b"b"]


@pytest.mark.parametrize("records,message", [
    (b"\x84\x01\x02\x03\x04\xf6\xf6\xf6\xf6", "must be a CBOR array"),  # the first column is an integer
    (b"\x84\x9c\x00\x00\x00\x00\xf6\xf6\xf6", "must be a CBOR array"),  # reserved additional information 28
])
def test_the_first_column_must_be_an_array(records, message):
    raw = bytearray(encode_batch([1], [None], [b"v"]))[:HEADER_SIZE] + records
    with pytest.raises(FabricError, match=message):
        validate_batch(_restamp(raw), 1 << 20, 10)


def test_a_zlib_section_needs_a_zlib_header():
    raw = bytearray(encode_batch([1], [None], [b"v" * 50], compression=COMPRESSION_ZLIB))
    raw[HEADER_SIZE:HEADER_SIZE + 2] = b"\x1f\x8b"  # gzip's magic, not zlib's
    with pytest.raises(FabricError, match="zlib header"):
        validate_batch(_restamp(raw), 1 << 20, 10)


def test_timestamps_after_the_year_9999_are_refused():
    raw = bytearray(encode_batch([1], [None], [b"v"]))
    validate_batch(_restamp(bytearray(raw), max_ts=253_402_300_799_999), 1 << 20, 10)
    with pytest.raises(FabricError, match="year 9999"):
        validate_batch(_restamp(bytearray(raw), max_ts=253_402_300_800_000), 1 << 20, 10)
