"""SPEC.md against the implementation: every table and every test vector in it.

SPEC.md is what a stranger writes a client from, so it must never drift from the code.  This file
parses its machine-readable parts:

- fenced blocks whose info string is ``hex|diag|json name=... [key=value ...]`` (sections 10 and
  12.5, each between its own BEGIN/END GENERATED markers);
- tables that follow a marker comment: ``<!-- fields: Class -->``, ``<!-- reply: vector -->``,
  ``<!-- operations -->``, ``<!-- errors -->``, ``<!-- limits -->``, ``<!-- topic-configs -->``,
  ``<!-- murmur2 -->``, ``<!-- batch-layout -->``, ``<!-- batch-fields: vector -->``;

and checks them against ``fabric.protocol`` (schemas, errors, limits, codec), ``fabric.records``
(batch format, murmur2) and a real ``BrokerCore`` that replays the request vectors in document
order (temp dir, fixed cluster id and clock, sequential topic ids: the setup SPEC.md states; for the
group vectors of 12.5 also sequential member ids, a topic, and a clock that passes the initial
rebalance delay).
When a reply changes on purpose, regenerate with ``python tools/spec_vectors.py --write``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import struct
import uuid
import zlib
from pathlib import Path
from typing import Any

import cbor2
import pytest

import fabric.groups  # noqa: F401  (registers the group operations with fabric.protocol.messages)
from fabric.groups.messages import GROUP_OPERATIONS
from fabric.protocol.cluster import (BROKER_OPERATIONS, CONTROLLER_OPERATIONS, ONE_WAY_OPERATIONS, RAFT_KINDS,
                                     parse_controller_request)
from fabric.protocol import codec
from fabric.protocol.errors import ALL_ERRORS
from fabric.protocol.limits import Limits
from fabric.protocol.messages import OPERATIONS, parse_request, request_header
from fabric.protocol.schema import Wire, unparse
from fabric.records.batch import (HEADER, HEADER_SIZE, BatchHeader, decode_records, encode_batch, parse_header,
                                  validate_batch)
from fabric.records.partitioner import murmur2, partition_for_key

SPEC_PATH = Path(__file__).resolve().parents[1] / "fabric" / "protocol" / "SPEC.md"
SPEC = SPEC_PATH.read_text(encoding="utf-8")
REGENERATE = ("SPEC.md and the code disagree: if the code changed on purpose, run "
              "`python tools/spec_vectors.py --write` and review the diff; otherwise the code regressed")


# ================================================================== parsing SPEC.md
@dataclasses.dataclass
class Block:
    kind: str
    name: str
    attrs: dict[str, str]
    text: str
    pos: int  # where in SPEC.md: which generated region it belongs to

    @property
    def data(self) -> bytes:
        return bytes.fromhex("".join(self.text.split()))


_FENCE = re.compile(r"^```(\w+)[ \t]+([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)
_ATTR = re.compile(r'([\w-]+)=(?:"([^"]*)"|(\S+))')


def _blocks() -> list[Block]:
    out = []
    for m in _FENCE.finditer(SPEC):
        attrs = {k: (q if q else u) for k, q, u in _ATTR.findall(m.group(2))}
        if "name" in attrs:
            out.append(Block(m.group(1), attrs.pop("name"), attrs, m.group(3), m.start()))
    return out


def _region(begin: str, end: str) -> range:
    start, stop = SPEC.find(begin), SPEC.find(end)
    assert 0 <= start < stop, f"SPEC.md: no {begin} ... {end}"
    return range(start, stop)


CORE_VECTORS = _region("<!-- BEGIN GENERATED VECTORS ", "<!-- END GENERATED VECTORS -->")  # section 10
GROUP_VECTORS = _region("<!-- BEGIN GENERATED GROUP VECTORS ", "<!-- END GENERATED GROUP VECTORS -->")  # 12.5
CLUSTER_VECTORS = _region("<!-- BEGIN GENERATED CLUSTER VECTORS ", "<!-- END GENERATED CLUSTER VECTORS -->")  # 13.6


BLOCKS = _blocks()
HEX = {b.name: b for b in BLOCKS if b.kind == "hex"}
DIAG = {b.name: b for b in BLOCKS if b.kind == "diag"}


def test_vector_names_are_unique():
    for kind in ("hex", "diag", "json"):
        names = [b.name for b in BLOCKS if b.kind == kind]
        assert len(names) == len(set(names)), f"duplicate {kind} vector names"
    assert len(HEX) > 40


class _DiagParser:
    """RFC 8949 diagnostic notation, the subset SPEC.md uses: JSON plus h'..' byte strings."""

    _NUM = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")

    def __init__(self, text: str) -> None:
        self.s, self.i = text, 0

    def parse(self) -> Any:
        v = self._value()
        self._ws()
        assert self.i == len(self.s), f"trailing text at {self.i}: {self.s[self.i:self.i + 20]!r}"
        return v

    def _ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t\r\n":
            self.i += 1

    def _value(self) -> Any:
        self._ws()
        s, c = self.s, self.s[self.i]
        if c == "{":
            return self._items("}", True)
        if c == "[":
            return self._items("]", False)
        if c == '"':
            value, self.i = json.decoder.scanstring(s, self.i + 1)
            return value
        if s.startswith("h'", self.i):
            end = s.index("'", self.i + 2)
            value = bytes.fromhex(s[self.i + 2:end])
            self.i = end + 1
            return value
        for word, value in (("true", True), ("false", False), ("null", None)):
            if s.startswith(word, self.i):
                self.i += len(word)
                return value
        m = self._NUM.match(s, self.i)
        assert m, f"unexpected {s[self.i:self.i + 20]!r}"
        self.i = m.end()
        return float(m.group()) if m.group(1) or m.group(2) else int(m.group())

    def _items(self, close: str, is_map: bool) -> Any:
        self.i += 1
        out: Any = {} if is_map else []
        while True:
            self._ws()
            if self.s[self.i] == close:
                self.i += 1
                return out
            if out:
                assert self.s[self.i] == ",", f"expected ',' at {self.i}"
                self.i += 1
            if is_map:
                key = self._value()
                self._ws()
                assert self.s[self.i] == ":", f"expected ':' at {self.i}"
                self.i += 1
                out[key] = self._value()
            else:
                out.append(self._value())


def diag(text: str) -> Any:
    return _DiagParser(text).parse()


def strict(v: Any) -> Any:
    """A comparable form that keeps CBOR types and map order apart (Python says True == 1 == 1.0)."""
    if v is None:
        return ("null",)
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, int):
        return ("int", v)
    if isinstance(v, float):
        return ("float", v)
    if isinstance(v, str):
        return ("text", v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return ("bytes", bytes(v))
    if isinstance(v, (list, tuple)):
        return ("array", tuple(strict(x) for x in v))
    if isinstance(v, dict):
        return ("map", tuple((strict(k), strict(x)) for k, x in v.items()))
    return ("other", repr(v))


def table(marker: str) -> list[list[str]]:
    """Rows (cells stripped) of the table right after ``<!-- marker -->``, header row dropped."""
    tag = f"<!-- {marker} -->"
    at = SPEC.find(tag)
    assert at >= 0, f"SPEC.md has no {tag}"
    lines = SPEC[at + len(tag):].lstrip("\n").splitlines()
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    assert len(rows) >= 2 and set(rows[1][0]) <= set("-: "), f"{tag} is not followed by a table"
    return rows[2:]


def markers(prefix: str) -> list[str]:
    return re.findall(r"<!-- " + re.escape(prefix) + r" (\S+) -->", SPEC)


def code(cell: str) -> str:
    """`x` -> x"""
    return cell.strip().strip("`")


# ================================================================== the broker the vectors came from
SETUP = json.loads(next(b.text for b in BLOCKS if b.kind == "json" and b.name == "vector-setup"))
GROUP_SETUP = json.loads(next(b.text for b in BLOCKS if b.kind == "json" and b.name == "group-vector-setup"))


def _sequential_uuids() -> type:
    """Stands in for the ``uuid`` module: uuid4() gives 000...001, 000...002, ..."""
    counter = itertools.count(1)

    class _SequentialIds:
        @staticmethod
        def uuid4() -> uuid.UUID:
            return uuid.UUID(int=next(counter))

    return _SequentialIds


def _spec_core(tmp_path, monkeypatch, **config: Any):
    import fabric.broker.topics as topics_mod
    from fabric.broker.config import BrokerConfig
    from fabric.broker.core import BrokerCore

    assert SETUP["topic_ids"] == "sequential"
    monkeypatch.setattr(topics_mod, "uuid", _sequential_uuids())
    cfg = BrokerConfig(data_dir=str(tmp_path / "data"), cluster_id=SETUP["cluster_id"], node_id=SETUP["node_id"],
                       host=SETUP["host"], port=SETUP["port"], **config)
    assert SETUP["latency_clock"] == "frozen"
    assert SETUP["wall_ms"] == SETUP["now_ms"]  # both clocks read the same: one int stands for both
    return BrokerCore(cfg, SETUP["now_ms"], monotonic_ns=lambda: 0)


@pytest.fixture
def spec_core(tmp_path, monkeypatch):
    """A BrokerCore set up as SPEC.md section 10.1 says (topic ids 000...001, 000...002, ...)."""
    core = _spec_core(tmp_path, monkeypatch)
    try:
        yield core
    finally:
        core.close()


@pytest.fixture
def group_core(tmp_path, monkeypatch):
    """A BrokerCore set up as SPEC.md 12.5 says: 10.1's setup plus ``group-vector-setup``."""
    import fabric.groups.coordinator as coordinator_mod

    assert GROUP_SETUP["member_ids"] == "sequential"
    monkeypatch.setattr(coordinator_mod, "uuid", _sequential_uuids())  # member ids: client_id-000...001, ...
    core = _spec_core(tmp_path, monkeypatch,
                      group_initial_rebalance_delay_ms=GROUP_SETUP["group_initial_rebalance_delay_ms"])
    try:
        peer = SETUP["peer"].encode()
        created = core.handle(peer, [codec.encode({"op": "create_topics", "v": 1, "cid": 0,
                                                   "topics": GROUP_SETUP["topics"]})], SETUP["now_ms"])
        assert all("error" not in t for t in created[0][1].header["topics"]), created
        core.peer_hosts[peer] = GROUP_SETUP["peer_host"]
        yield core
    finally:
        core.close()


def frames_of(prefix: str) -> list[bytes]:
    out = []
    for n in itertools.count(1):
        b = HEX.get(f"{prefix}-frame{n}")
        if b is None:
            return out
        out.append(b.data)


def scenario_names(region: range | None = None) -> list[str]:
    """The request vectors' names (minus ``-request``) in document order, of one generated region or all."""
    return [b.name[: -len("-request")] for b in BLOCKS
            if b.kind == "hex" and b.name.endswith("-request") and (region is None or b.pos in region)]


# ================================================================== vectors: encoding
def test_every_diag_vector_is_the_decoded_hex_and_encodes_back_to_it():
    pairs = [n for n in DIAG if n in HEX]
    assert len(pairs) >= 30
    for name in pairs:
        raw, value = HEX[name].data, diag(DIAG[name].text)
        decoded = codec.decode_map(raw, 1 << 26) if raw[0] >> 5 == 5 else cbor2.loads(raw)
        assert strict(decoded) == strict(value), f"{name}: the hex does not decode to the diag value"
        assert codec.encode(value) == raw, f"{name}: encoding the diag value does not give the hex"


def test_request_vectors_are_what_the_python_client_sends_and_parse():
    for name in scenario_names():
        raw = HEX[f"{name}-request"].data
        if name.startswith("error-"):
            continue  # these exist to be refused (10.3.12-15)
        header = codec.decode_map(raw, Limits().header_frame_bytes_max)
        controller_only = HEX[f"{name}-request"].pos in CLUSTER_VECTORS and header["op"] not in BROKER_OPERATIONS
        env, req = (parse_controller_request if controller_only else parse_request)(header)
        assert env.op == header["op"] and env.cid == header["cid"]
        if controller_only:  # (the reference broker sends no ``v`` and puts a forward's cid last)
            assert set(header) <= {"op", "cid", "v"} | {f.name for f in dataclasses.fields(req)}, name
            continue
        # The Python client builds exactly this map: envelope first, then every field of the request.
        assert codec.encode(request_header(env.op, env.cid, req, env.v)) == raw, name


def _ops_with_vectors(region: range) -> set[str]:
    ops = set()
    for name in scenario_names(region):
        if f"{name}-reply" in HEX and not name.startswith("error-"):
            ops.add(codec.decode_map(HEX[f"{name}-request"].data, 1 << 20)["op"])
    return ops


def test_every_operation_has_a_request_and_a_reply_vector():
    assert _ops_with_vectors(CORE_VECTORS) == {code(r[0]) for r in table("operations")}
    assert _ops_with_vectors(GROUP_VECTORS) == set(GROUP_OPERATIONS)  # section 12.5
    assert set(OPERATIONS) == set(_core_operations()) | set(GROUP_OPERATIONS) | set(BROKER_OPERATIONS)
    # section 13.6: every cluster operation of either port (the forwarded topic operations are section 5's)
    assert _ops_with_vectors(CLUSTER_VECTORS) == (set(BROKER_OPERATIONS) | set(CONTROLLER_OPERATIONS)) - set(
        _core_operations()) - ONE_WAY_OPERATIONS


def test_cluster_operation_tables_are_the_registries():
    broker = {code(op): (code(cls), int(lo), int(hi)) for op, lo, hi, cls, _ in table("cluster-operations: broker")}
    assert broker == {op: (cls.__name__, 1, 1) for op, cls in BROKER_OPERATIONS.items()}
    controller = {code(op): code(cls) for op, _, _, cls, _ in table("cluster-operations: controller") if "," not in op}
    forwarded = {code(op.strip()) for row in table("cluster-operations: controller") if "," in row[0]
                 for op in row[0].split(",")}
    assert controller == {op: cls.__name__ for op, cls in CONTROLLER_OPERATIONS.items() if op not in forwarded}
    assert forwarded == set(CONTROLLER_OPERATIONS) & set(_core_operations())


def test_not_clustered_broker_refuses_cluster_operations_clearly(spec_core):
    for name in scenario_names(CLUSTER_VECTORS):
        header = codec.decode_map(HEX[f"{name}-request"].data, 1 << 20)
        if header["op"] not in BROKER_OPERATIONS:
            continue
        out = spec_core.handle(b"peer", [HEX[f"{name}-request"].data], SETUP["now_ms"])
        err = out[0][1].header["error"]
        assert err["name"] == "UNKNOWN_OPERATION" and "not clustered" in err["message"], (name, err)


# ================================================================== vectors: replies from a real broker
def test_reply_vectors_are_what_the_broker_replies(spec_core):
    peer = SETUP["peer"].encode()
    names = scenario_names(CORE_VECTORS)
    assert names[0] == "api-versions" and len(names) >= 15
    for name in names:
        frames = [HEX[f"{name}-request"].data, *frames_of(f"{name}-request")]
        out = spec_core.handle(peer, frames, SETUP["now_ms"])
        if f"{name}-reply" not in HEX:
            assert out == [], f"{name}: SPEC.md shows no reply, the broker sent {out}"
            continue
        vectors = [f"{name}-reply"] + [f"{name}-reply-{k}" for k in range(2, 10) if f"{name}-reply-{k}" in HEX]
        assert len(out) == len(vectors), f"{name}: expected {len(vectors)} replies, got {len(out)}"
        for (to, reply), vec in zip(out, vectors):
            assert to == peer
            header = dict(reply.header)
            documented = diag(DIAG[vec].text)
            if header.get("op") == "api_versions":  # the software version moves; everything else must not
                assert isinstance(header["broker"]["version"], str)
                header["broker"] = dict(header["broker"], version=documented["broker"]["version"])
            assert strict(header) == strict(documented), f"{vec}: {REGENERATE}"
            assert codec.encode(header) == HEX[vec].data, f"{vec}: {REGENERATE}"
            assert [bytes(f) for f in reply.frames] == frames_of(vec), f"{vec} payload: {REGENERATE}"


def test_group_reply_vectors_are_what_the_broker_replies(group_core):
    """Section 12.5: each request at its ``now=`` clock; a reply vector with ``tick=`` is what
    ``tick`` at that clock answers (the request itself gets nothing, nor does a tick 1 ms earlier)."""
    peer = SETUP["peer"].encode()
    names = scenario_names(GROUP_VECTORS)
    assert names[0] == "find-coordinator" and len(names) >= len(GROUP_OPERATIONS)
    ticked = 0
    for name in names:
        request = HEX[f"{name}-request"]
        assert not frames_of(f"{name}-request"), f"{name}: group operations take no payload frames"
        out = group_core.handle(peer, [request.data], int(request.attrs["now"]))
        reply_vector = HEX[f"{name}-reply"]
        if "tick" in reply_vector.attrs:
            tick = int(reply_vector.attrs["tick"])
            assert out == [], f"{name}: SPEC.md shows a deferred reply, the broker answered at once: {out}"
            assert group_core.tick(tick - 1) == [], f"{name}: answered before the tick SPEC.md shows"
            out = group_core.tick(tick)
            ticked += 1
        assert len(out) == 1, f"{name}: expected one reply, got {len(out)}"
        to, reply = out[0]
        assert to == peer
        assert strict(reply.header) == strict(diag(DIAG[f"{name}-reply"].text)), f"{name}: {REGENERATE}"
        assert codec.encode(reply.header) == reply_vector.data, f"{name}: {REGENERATE}"
        assert [bytes(f) for f in reply.frames] == [], f"{name}: group replies have no payload frames"
    assert ticked == 1  # the rejoin of 12.5.3


def test_rejected_requests_get_the_documented_error(spec_core):
    rejects = [b for b in BLOCKS if b.kind == "hex" and "expect" in b.attrs]
    assert len(rejects) >= 6
    for b in rejects:
        out = spec_core.handle(b"peer", [b.data], SETUP["now_ms"])
        assert len(out) == 1, b.name
        err = out[0][1].header["error"]
        assert err["name"] == b.attrs["expect"], (b.name, err)
        assert b.attrs["message"] in err["message"], (b.name, err)


def test_equivalent_encodings_parse_like_the_canonical_request():
    equivs = [b for b in BLOCKS if b.kind == "hex" and "same-as" in b.attrs]
    assert len(equivs) >= 4
    for b in equivs:
        canonical = parse_request(codec.decode_map(HEX[b.attrs["same-as"]].data, 1 << 20))
        assert parse_request(codec.decode_map(b.data, 1 << 20)) == canonical, b.name
        assert b.data != HEX[b.attrs["same-as"]].data


# ================================================================== record batches
def _batch_from_input(name: str) -> tuple[dict[str, Any], bytes]:
    spec = diag(DIAG[f"{name}-input"].text)
    headers = None if spec["headers"] is None else [None if h is None else [tuple(x) for x in h]
                                                    for h in spec["headers"]]
    return spec, encode_batch(spec["timestamps"], spec["keys"], spec["values"], headers,
                              compression=spec["compression"])


def _check_decodes_to(spec: dict[str, Any], batch: bytes) -> None:
    h = validate_batch(batch, len(batch), 1_000_000)
    assert h.attributes & 7 == spec["compression"]
    recs = decode_records("t", 0, batch)
    assert [r.offset for r in recs] == list(range(len(spec["values"])))
    assert [r.timestamp for r in recs] == spec["timestamps"]
    assert [r.key for r in recs] == spec["keys"]
    assert [r.value for r in recs] == spec["values"]
    hdrs = spec["headers"] or [None] * len(recs)
    assert [list(r.headers) for r in recs] == [[] if h is None else [tuple(x) for x in h] for h in hdrs]


@pytest.mark.parametrize("name", ["record-batch", "record-batch-a"])
def test_batch_vector_is_the_encoder_output_and_decodes_back(name):
    spec, built = _batch_from_input(name)
    assert built == HEX[name].data, f"{name}: encode_batch of the documented input differs"
    _check_decodes_to(spec, HEX[name].data)


def test_compressed_batch_vector_decodes():
    spec, _ = _batch_from_input("record-batch-zlib")
    z = HEX["record-batch-zlib"].data
    assert HEX["record-batch-zlib"].attrs.get("check") == "decode"
    _check_decodes_to(spec, z)
    assert z[HEADER_SIZE:HEADER_SIZE + 1] == b"\x78"  # RFC 1950 zlib stream, not raw deflate or gzip
    assert zlib.decompress(z[HEADER_SIZE:]) == HEX["record-batch"].data[HEADER_SIZE:]


def test_records_section_vector():
    batch = HEX["record-batch"].data
    assert HEX["record-batch-records"].data == batch[HEADER_SIZE:]
    cols = diag(DIAG["record-batch-records"].text)
    assert len(cols) == 4 and all(len(c) == parse_header(batch).record_count for c in cols)


def test_batch_field_breakdown_matches_the_vector():
    for name in markers("batch-fields:"):
        batch, h = HEX[name].data, parse_header(HEX[name].data)
        rows = table(f"batch-fields: {name}")
        assert [code(r[2]) for r in rows[:13]] == list(BatchHeader._fields)
        for off, size, field, hexcell, value in rows[:13]:
            off, size, field = int(off), int(size), code(field)
            assert batch[off:off + size].hex() == code(hexcell), field
            assert getattr(h, field) == int(value.split()[0]), field
        assert code(rows[13][2]) == "records" and int(rows[13][0]) == HEADER_SIZE
    assert markers("batch-fields:") == ["record-batch"]


def test_batch_layout_table_is_the_header_struct():
    types = {"q": "int64", "i": "int32", "b": "int8", "I": "uint32", "h": "int16"}
    rows = table("batch-layout")
    fmt = HEADER.format.lstrip(">")
    off = 0
    names = list(BatchHeader._fields)
    assert len(rows) == len(fmt) + 1
    for (o, size, field, typ, *_), ch, name in zip(rows, fmt, names):
        assert (int(o), int(size), code(field), typ) == (off, struct.calcsize(">" + ch), name, types[ch])
        off += struct.calcsize(">" + ch)
    assert off == HEADER_SIZE == int(rows[-1][0]) and code(rows[-1][2]) == "records"


def test_fetched_batch_is_the_produced_batch_with_offset_and_epoch_stamped():
    sent, got = HEX["produce-request-frame1"].data, HEX["fetch-reply-frame1"].data
    assert sent == HEX["record-batch"].data
    h = parse_header(got)
    produce_reply = diag(DIAG["produce-reply"].text)
    assert h.base_offset == produce_reply["results"][0]["base_offset"] and h.leader_epoch == 0
    assert got[8:12] == sent[8:12] and got[16:] == sent[16:]  # CRC untouched: stamping is outside it
    assert zlib.crc32(got[21:]) == h.crc


def test_crc_check_value():
    assert zlib.crc32(b"123456789") == 0xCBF43926  # SPEC.md 6.3: CRC-32/ISO-HDLC


# ================================================================== tables against the code
def test_error_table_is_errors_py():
    rows = table("errors")
    assert [(int(c), code(n), r, m) for c, n, r, m in rows] == [
        (e.code, e.name, "yes" if e.retriable else "no", e.meaning) for e in ALL_ERRORS]


def test_limits_table_is_the_defaults():
    rows = table("limits")
    documented = {code(r[0]): int(r[1].split()[0]) for r in rows}
    assert documented == dataclasses.asdict(Limits())
    assert len(rows) == len(documented)


def _core_operations() -> dict[str, tuple[str, int, int]]:
    """OPERATIONS minus those that feature packages (groups, ...) register and document elsewhere."""
    return {op: (cls.__name__, lo, hi) for op, (cls, lo, hi) in OPERATIONS.items()
            if cls.__module__ == "fabric.protocol.messages"}


def test_operations_table_is_OPERATIONS():
    documented = {code(op): (code(cls), int(lo), int(hi)) for op, lo, hi, cls, _ in table("operations")}
    assert documented == _core_operations()


def test_topic_configs_table_is_LogConfig():
    from fabric.log.config import LogConfig
    from fabric.protocol.errors import FabricError

    rows = {code(r[0]): r for r in table("topic-configs")}
    defaults = LogConfig()
    assert set(rows) == {f.name for f in dataclasses.fields(LogConfig)}

    def accepted(key: str, value: Any) -> bool:
        try:
            LogConfig.from_mapping({key: value})
            return True
        except FabricError as exc:
            assert exc.name == "INVALID_CONFIG" and key in exc.message
            return False

    for key, (_, typ, default, rng, _meaning) in rows.items():
        value = getattr(defaults, key)
        assert strict(diag(code(default))) == strict(value), key
        assert typ == {bool: "bool", int: "int", str: "text"}[type(value)], key
        if isinstance(value, bool):
            assert accepted(key, True) and not accepted(key, 1), key
        elif isinstance(value, int):
            m = re.search(r"(-?\d+)\.\.(\d+)", rng)
            assert m, f"{key}: range missing"
            lo, hi = int(m.group(1)), int(m.group(2))
            minus_one = "or -1" in rng
            assert accepted(key, lo) and accepted(key, hi) and not accepted(key, hi + 1), key
            assert accepted(key, -1) == minus_one, key
            if lo - 1 != -1:
                assert not accepted(key, lo - 1), key
            assert accepted(key, float(lo)) and not accepted(key, float(lo) + 0.5), key  # integer rule
        else:
            choices = re.findall(r"`([^`]+)`", rng)
            assert choices and all(accepted(key, c) for c in choices), key
            assert not accepted(key, "bogus"), key


def test_murmur2_table():
    rows = table("murmur2")
    seen = {}
    for key_hex, _, h, positive, p in rows:
        key = b"" if key_hex == "(empty)" else bytes.fromhex(code(key_hex))
        assert murmur2(key) == int(h), key
        assert murmur2(key) & 0x7FFFFFFF == int(positive), key
        assert partition_for_key(key, 1000) == int(p), key
        seen[key] = int(p)
    required = {b"": 681, b"a": 524, b"ab": 434, b"abc": 107, b"123456789": 566}
    assert {k: seen.get(k) for k in required} == required


# ------------------------------------------------------------------ request and reply field tables
_KIND_WORD = {"int": "int", "text": "text", "bytes": "bytes", "bool": "bool", "list": "array", "map": "map", "record": "map", "any": ""}


def _wire(f: dataclasses.Field) -> Wire | None:
    return f.metadata.get("wire")


def _items(spec: Wire) -> Any:
    item = spec.items
    if isinstance(item, dataclasses.Field):  # ``items=wire(...)``: the Wire is in its metadata
        item = item.metadata.get("wire")
    return item


def _request_classes() -> dict[str, type]:
    from fabric.protocol.messages import Envelope
    out: dict[str, type] = {"Envelope": Envelope}
    todo = [cls for cls, _, _ in OPERATIONS.values()]  # section 5's and section 12's
    todo += [*CONTROLLER_OPERATIONS.values(), *RAFT_KINDS.values()]  # section 13's
    while todo:
        cls = todo.pop()
        out[cls.__name__] = cls
        for f in dataclasses.fields(cls):
            spec = _wire(f)
            if spec is None:
                continue
            for sub in (_items(spec), spec.record):
                if isinstance(sub, type) and dataclasses.is_dataclass(sub):
                    todo.append(sub)
    return out


def test_every_request_type_has_a_field_table():
    assert set(markers("fields:")) == set(_request_classes())


@pytest.mark.parametrize("cls_name", sorted(_request_classes()))
def test_field_table_matches_the_schema(cls_name):
    cls = _request_classes()[cls_name]
    rows = {code(r[0]): r for r in table(f"fields: {cls_name}")}
    fields = {f.name: f for f in dataclasses.fields(cls) if _wire(f) is not None}
    assert set(rows) == set(fields), cls_name
    for name, f in fields.items():
        spec = _wire(f)
        _, typ, default, rng, _meaning = rows[name]
        where = f"{cls_name}.{name}"
        assert typ.startswith(_KIND_WORD[spec.kind]), f"{where}: type {typ!r} for a {spec.kind}"
        assert ("null" in typ) == spec.nullable, f"{where}: nullability"
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required:
            assert default == "required", where
        else:
            value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert strict(diag(code(default))) == strict(unparse(value)), f"{where}: default"
        if spec.choices:
            assert all(str(c) in rng for c in spec.choices), f"{where}: choices"
        if spec.min is not None and spec.max is not None:
            assert f"{spec.min}..{spec.max}" in rng, f"{where}: range {rng!r}"
        elif spec.min is not None:
            assert f"≥ {spec.min}" in rng, f"{where}: range {rng!r}"
        if spec.max_len is not None:
            assert f"≤ {spec.max_len}" in rng, f"{where}: length {rng!r}"
        item = _items(spec)
        if isinstance(item, Wire) and item.max_len is not None:
            assert f"≤ {item.max_len}" in rng, f"{where}: item length {rng!r}"


def _paths(value: dict[str, Any], prefix: str, documented: set[str]):
    for key, x in value.items():
        path = prefix + key
        yield path
        if key == "error":
            continue  # the error map is section 4's
        if isinstance(x, dict) and any(d.startswith(path + ".") for d in documented):
            yield from _paths(x, path + ".", documented)
        elif isinstance(x, list) and any(d.startswith(path + "[].") for d in documented):
            for e in x:
                if isinstance(e, dict):
                    yield from _paths(e, path + "[].", documented)


@pytest.mark.parametrize("vector", markers("reply:"))
def test_reply_table_documents_every_field_of_the_reply_vector(vector):
    documented = {code(r[0]) for r in table(f"reply: {vector}")}
    value = diag(DIAG[vector].text)
    body = {k: v for k, v in value.items() if k not in ("op", "cid")}
    missing = set(_paths(body, "", documented)) - documented
    assert not missing, f"{vector}: fields not in SPEC.md's table: {sorted(missing)}"


def test_every_operation_has_a_reply_table():
    documented_ops = {codec.decode_map(HEX[v.replace("-reply", "-request")].data, 1 << 20)["op"]
                      for v in markers("reply:")}
    cluster = set(CONTROLLER_OPERATIONS) | (set(BROKER_OPERATIONS) - ONE_WAY_OPERATIONS)  # replica_ack: no reply
    assert documented_ops == (set(OPERATIONS) | cluster) - ONE_WAY_OPERATIONS
