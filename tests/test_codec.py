"""CBOR header decoding: other languages' encodings decode alike; bad input is a clean error."""

from __future__ import annotations

import re

import cbor2
import pytest

from fabric.protocol import codec
from fabric.protocol.errors import FabricError
from fabric.protocol.limits import DEFAULT_LIMITS
from fabric.protocol.messages import parse_request
from fabric.protocol.schema import as_int

from .conftest import DATA

EXPECTED = {"op": "produce", "v": 1, "cid": 7, "topic": "orders", "partition": 2, "acks": 1, "timeout_ms": 30000,
            "big": 4294967296, "neg": -5, "list": ["a", "b"], "flag": True, "none": None}


def _variants() -> dict[str, bytes]:
    out = {}
    for line in (DATA / "cbor-variants.md").read_text().splitlines():
        m = re.match(r"^\| (.+?) \| `([0-9a-f]+)` \|", line)
        if m:
            out[m.group(1)] = bytes.fromhex(m.group(2))
    return out


def test_all_encoder_variants_decode_to_the_same_map():
    variants = _variants()
    assert len(variants) == 5
    for name, raw in variants.items():
        value = codec.decode_map(raw, 1 << 20)
        if "non-minimal" in name:
            assert value == {"op": "produce", "v": 1, "cid": 7}
            continue
        big = value.pop("big")
        assert as_int(big, "big") == 2**32, name  # JS float64 accepted as an exact integer
        expected = dict(EXPECTED)
        del expected["big"]
        assert value == expected, name


def test_variants_parse_as_requests():
    for raw in _variants().values():
        header = codec.decode_map(raw, 1 << 20)
        header["batches"] = []
        env, req = parse_request(header)
        assert env.cid == 7 and req.acks in (1,)


def test_integer_rule_for_floats():
    assert as_int(2.0**53, "x") == 2**53
    for bad in (2.0**53 + 2, 1.5, float("inf"), float("nan"), True):
        with pytest.raises(FabricError) as exc:
            as_int(bad, "offset")
        assert exc.value.name == "INVALID_FIELD" and "offset" in exc.value.message


@pytest.mark.parametrize("raw,fragment", [
    (b"", "empty"),
    (b"\xff", "not valid CBOR"),
    (cbor2.dumps([1, 2]), "must be a CBOR map"),
    (cbor2.dumps({1: "x"}), "keys must be text"),
    (cbor2.dumps({"op": "x"}) + b"\x00", "bytes after"),
    (b"\x81" * 100_000, "nested too deeply"),
    (b"\x5b\xff\xff\xff\xff\xff\xff\xff\x00", "not valid CBOR"),
    (b"\xa1\x61\x61\x7f\x61\x62", "not valid CBOR"),  # unterminated indefinite string
])
def test_malformed_headers(raw, fragment):
    with pytest.raises(FabricError) as exc:
        codec.decode_map(raw, 1 << 20)
    assert exc.value.name in ("MALFORMED_REQUEST",) and fragment in exc.value.message


def test_frame_limits():
    with pytest.raises(FabricError, match="FRAME_TOO_LARGE"):
        codec.decode_map(b"\xa0" * 10, 5)
    with pytest.raises(FabricError, match="TOO_MANY_FRAMES"):
        codec.check_frames([b"x"] * (DEFAULT_LIMITS.request_frames_max + 1), DEFAULT_LIMITS)
    with pytest.raises(FabricError, match="FRAME_TOO_LARGE"):
        codec.check_frames([b"x", b"y" * (DEFAULT_LIMITS.batch_bytes_max + 1)], DEFAULT_LIMITS)
    with pytest.raises(FabricError, match="MALFORMED_REQUEST"):
        codec.check_frames([], DEFAULT_LIMITS)


@pytest.mark.parametrize("header,name,fragment", [
    ({"v": 1, "cid": 1}, "INVALID_FIELD", "op: required"),
    ({"op": "nope", "v": 1, "cid": 1}, "UNKNOWN_OPERATION", "nope"),
    ({"op": "fetch", "v": 99, "cid": 1, "partitions": []}, "UNSUPPORTED_VERSION", "99"),
    ({"op": "fetch", "v": 1, "cid": -1, "partitions": []}, "INVALID_FIELD", "cid"),
    ({"op": "fetch", "v": 1, "cid": True, "partitions": []}, "INVALID_FIELD", "cid: expected integer, got bool"),
    ({"op": "fetch", "v": 1, "cid": 1, "partitions": [{"topic": "a", "partition": 0, "offset": "x"}]},
     "INVALID_FIELD", "partitions[0].offset: expected integer, got text"),
    ({"op": "fetch", "v": 1, "cid": 1, "partitions": [{"topic": 5, "partition": 0, "offset": 0}]},
     "INVALID_FIELD", "partitions[0].topic: expected text"),
    ({"op": "fetch", "v": 1, "cid": 1, "max_wait_ms": 10**9, "partitions": []}, "INVALID_FIELD", "max_wait_ms"),
    ({"op": "fetch", "v": 1, "cid": 1, "partitions": [{"topic": "a", "partition": 0, "offset": 0},
                                                      {"topic": "a", "partition": 1, "offset": -5}]},
     "INVALID_FIELD", "partitions[1].offset: -5 is out of range"),
    ({"op": "fetch", "v": 1, "cid": 1, "partitions": [{"topic": "a", "partition": 0}]},
     "INVALID_FIELD", "partitions[0].offset: required field is missing"),
    ({"op": "fetch", "v": 1, "cid": 1, "partitions": [{"topic": "a" * 257, "partition": 0, "offset": 0}]},
     "INVALID_FIELD", "partitions[0].topic: length 257 exceeds 256"),
    ({"op": "fetch", "v": 1, "cid": 1, "partitions": {"topic": "a"}}, "INVALID_FIELD",
     "partitions: expected array, got map"),
    ({"op": "fetch", "v": 1, "cid": 1, "partitions": [7]}, "INVALID_FIELD", "partitions[0]: expected map"),
    ({"op": "fetch", "v": 1, "cid": 1, "follows": 1.5, "partitions": []}, "INVALID_FIELD", "follows: expected integer"),
    ({"op": "produce", "v": 1, "cid": 1, "acks": True, "batches": []}, "INVALID_FIELD", "acks"),
    ({"op": "produce", "v": 1, "cid": 1, "acks": 2, "batches": []}, "INVALID_FIELD", "acks"),
    ({"op": "produce", "v": 1, "cid": 1, "batches": [{"topic": "a", "partition": -1}]}, "INVALID_FIELD",
     "batches[0].partition"),
    ({"op": "list_offsets", "v": 1, "cid": 1, "partitions": [{"topic": "a", "partition": 0, "at": "soon"}]},
     "INVALID_FIELD", "at"),
    ({"op": "create_topics", "v": 1, "cid": 1, "topics": [{"name": "a", "partitions": 0}]}, "INVALID_FIELD",
     "topics[0].partitions"),
])
def test_request_field_errors_name_the_field(header, name, fragment):
    with pytest.raises(FabricError) as exc:
        parse_request(header)
    assert exc.value.name == name
    assert fragment in exc.value.message


def test_parsed_requests_take_defaults_and_integral_floats():
    """The compiled per-class parsers keep the generic rules: defaults for absent optional
    fields, integral floats (JavaScript clients) as integers, unknown keys ignored."""
    env, req = parse_request({"op": "fetch", "v": 1.0, "cid": 2.0**40, "future_field": [1],
                              "partitions": [{"topic": "a", "partition": 0.0, "offset": 1e15}]})
    assert (env.v, env.cid) == (1, 2**40) and type(env.cid) is int
    assert (req.max_wait_ms, req.min_bytes, req.follows) == (500, 1, -1)
    part = req.partitions[0]
    assert (part.partition, part.offset, part.max_bytes) == (0, 10**15, 1 << 20)
    assert type(part.offset) is int and isinstance(req.partitions, tuple)
    with pytest.raises(AttributeError):
        part.offset = 3  # still a frozen dataclass


@pytest.mark.parametrize("fields", [
    {"acks": 1, "timeout_ms": 30_000, "batches": [{"topic": "t", "partition": 0}]},
    {"acks": -1, "timeout_ms": 0, "batches": [{"topic": "ü" * 30, "partition": 7}, {"topic": "b", "partition": 1}]},
    {},
])
def test_a_header_template_encodes_exactly_like_the_map(fields):
    template = codec.HeaderTemplate("produce", 1, fields)
    for cid in (0, 1, 23, 24, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**63 - 1):
        wire = template.with_cid(cid)
        assert wire == cbor2.dumps({"op": "produce", "v": 1, "cid": cid, **fields})
        assert codec.decode_map(wire, 1 << 20) == {"op": "produce", "v": 1, "cid": cid, **fields}


def test_a_header_template_refuses_a_cid_field():
    with pytest.raises(ValueError):
        codec.HeaderTemplate("produce", 1, {"cid": 5})
