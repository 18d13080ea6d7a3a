"""Hostile requests for a broker, reproducible from a seed: the generator behind
``tests/test_fuzz.py`` and ``tools/fuzz.py``.

Strategy.  Every case starts from a valid request of one operation (``templates``: one per
operation the broker serves, groups' included) and then does one of: send it as it is; flip,
truncate or replace its header bytes; replace a field (at any depth) with junk or with a hostile
CBOR item spliced in as raw bytes (tags of every kind, bignums, integers beyond int64, claimed
lengths of 2^64, nesting just under, at and far beyond the limit, invalid UTF-8, simple values);
send the wrong number of payload frames; or produce a batch whose CRC is right but whose header
lies (record count, offset delta, timestamps, attributes, length).  Case ``i`` of seed ``s`` is
drawn from ``random.Random(f"{s}:{i}")`` alone, so any failure replays as ``--seed s --case i``.

Invariants a runner checks (see ``FuzzRun``): every case that expects a reply gets exactly the
error classes the protocol names, never ``UNKNOWN_ERROR``; a batch with a lying record count is
rejected; the log end of the fuzzed partition moves by exactly the records of the batches the
broker acknowledged; the data of ``BASE_TOPIC`` is untouched (no case may address it except to
read it).
"""

from __future__ import annotations

import random
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import cbor2

from ..records.batch import COMPRESSION_NONE, COMPRESSION_ZLIB, CRC_START, HEADER_SIZE, encode_batch

BASE_TOPIC = "base"  # written before fuzzing; the runner checks it afterwards, byte for byte
FUZZ_TOPIC = "fuzzed"  # the only topic fuzz cases produce to


class Raw(bytes):
    """Already-encoded CBOR, spliced into a header as it is."""


def encode(value: Any) -> bytes:
    """CBOR of ``value`` with ``Raw`` parts spliced in (cbor2 cannot write invalid items)."""
    if isinstance(value, Raw):
        return bytes(value)
    if isinstance(value, dict):
        return _head(5, len(value)) + b"".join(encode(k) + encode(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return _head(4, len(value)) + b"".join(encode(v) for v in value)
    return cbor2.dumps(value)


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            return bytes([major << 5 | info]) + n.to_bytes(width, "big")
    raise ValueError(n)


def templates() -> dict[str, tuple[dict[str, Any], list[bytes]]]:
    """A valid request per operation: (header without cid, payload frames)."""
    batch = encode_batch([1, 2], [b"k", None], [b"v1", b"v2"])
    part = {"topic": BASE_TOPIC, "partition": 0}
    return {
        "api_versions": ({"op": "api_versions", "v": 1, "client": "fuzz"}, []),
        "metadata": ({"op": "metadata", "v": 1, "topics": [BASE_TOPIC, FUZZ_TOPIC]}, []),
        "create_topics": ({"op": "create_topics", "v": 1, "topics": [{"name": "made", "partitions": 2}],
                           "validate_only": False}, []),
        "delete_topics": ({"op": "delete_topics", "v": 1, "topics": ["made"]}, []),
        "list_topics": ({"op": "list_topics", "v": 1, "internal": True}, []),
        "describe_topics": ({"op": "describe_topics", "v": 1, "topics": [BASE_TOPIC]}, []),
        "alter_topic_configs": ({"op": "alter_topic_configs", "v": 1, "topic": FUZZ_TOPIC,
                                 "set": {"max_batch_bytes": 1 << 20}, "delete": ["segment_ms"]}, []),
        "create_partitions": ({"op": "create_partitions", "v": 1, "topic": "made", "count": 3}, []),
        "produce": ({"op": "produce", "v": 1, "acks": 1, "timeout_ms": 1000,
                     "batches": [{"topic": FUZZ_TOPIC, "partition": 0}]}, [batch]),
        "fetch": ({"op": "fetch", "v": 1, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 20,
                   "partitions": [dict(part, offset=0, max_bytes=65536)]}, []),
        "list_offsets": ({"op": "list_offsets", "v": 1, "partitions": [dict(part, at="latest"),
                                                                       dict(part, at=0)]}, []),
        "broker_stats": ({"op": "broker_stats", "v": 1}, []),
        "stats": ({"op": "stats", "v": 1, "topics": [FUZZ_TOPIC], "partitions": True, "groups": True,
                   "histograms": True}, []),
        "find_coordinator": ({"op": "find_coordinator", "v": 1, "group_id": "g"}, []),
        "join_group": ({"op": "join_group", "v": 1, "group_id": "g", "member_id": "", "session_timeout_ms": 1000,
                        "rebalance_timeout_ms": 1000, "topics": [BASE_TOPIC], "assignors": ["range"]}, []),
        "sync_group": ({"op": "sync_group", "v": 1, "group_id": "g", "member_id": "m", "generation": 1}, []),
        "heartbeat": ({"op": "heartbeat", "v": 1, "group_id": "g", "member_id": "m", "generation": 1}, []),
        "leave_group": ({"op": "leave_group", "v": 1, "group_id": "g", "member_id": "m"}, []),
        "offset_commit": ({"op": "offset_commit", "v": 1, "group_id": "g",
                           "offsets": [dict(part, offset=3, metadata="")]}, []),
        "offset_fetch": ({"op": "offset_fetch", "v": 1, "group_id": "g", "topics": [{"topic": BASE_TOPIC}]}, []),
        "list_groups": ({"op": "list_groups", "v": 1}, []),
        "describe_groups": ({"op": "describe_groups", "v": 1, "group_ids": ["g"]}, []),
        "delete_groups": ({"op": "delete_groups", "v": 1, "group_ids": ["nobody"]}, []),
        # cluster, brokers only (SPEC 13.3): a broker that is not clustered refuses them
        "replica_fetch": ({"op": "replica_fetch", "v": 1, "type": "replica_fetch", "topic_id": "0" * 32,
                           "partition": 0, "replica": 2, "leader_epoch": 0, "fetch_offset": 0,
                           "last_fetched_epoch": -1, "max_bytes": 1 << 20, "incarnation": 1}, []),
        "replica_ack": ({"op": "replica_ack", "v": 1, "type": "replica_ack", "topic_id": "0" * 32, "partition": 0,
                         "replica": 2, "leader_epoch": 0, "log_end": 1, "incarnation": 1}, []),
        # cluster administration (SPEC 13.7): refused as "not clustered" too
        "alter_partition_reassignments": ({"op": "alter_partition_reassignments", "v": 1, "reassignments": [
            {"topic": BASE_TOPIC, "partition": 0, "replicas": [1, 2]}]}, []),
        "list_partition_reassignments": ({"op": "list_partition_reassignments", "v": 1}, []),
        "decommission_broker": ({"op": "decommission_broker", "v": 1, "broker_id": 1}, []),
        "elect_leaders": ({"op": "elect_leaders", "v": 1, "topics": [BASE_TOPIC]}, []),
        # the idempotent producer (SPEC 14.2): a new id, and an epoch bump of an id
        "init_producer_id": ({"op": "init_producer_id", "v": 1, "producer_id": -1, "producer_epoch": -1}, []),
    }


# ------------------------------------------------------------------ hostile CBOR items
def _deep(rng: random.Random) -> Raw:
    depth = rng.choice([398, 399, 400, 401, 2000, 100_000])
    opener = rng.choice([b"\x81", b"\x9f", b"\xa1\x61k"])
    return Raw(opener * depth + b"\x01")


def _bignum(rng: random.Random) -> Raw:
    size = rng.choice([1, 8, 9, 64, 2000, 3000])
    body = bytes([0xFF]) * size if rng.random() < 0.5 else rng.randbytes(size)
    return Raw(rng.choice([b"\xc2", b"\xc3"]) + _head(2, size) + body)


def _tagged(rng: random.Random) -> Raw:
    return Raw(rng.choice([
        b"\xc0\x74" + b"2026-01-01T00:00:00Z",  # 0: date-time text
        b"\xc1\xfb\x7f\xef\xff\xff\xff\xff\xff\xff",  # 1: epoch time, huge float
        b"\xc4\x82\x1b\x7f\xff\xff\xff\xff\xff\xff\xff\x01",  # 4: decimal fraction, huge exponent
        b"\xc5\x82\x3b\x7f\xff\xff\xff\xff\xff\xff\xff\x01",  # 5: bigfloat
        b"\xd8\x1c\x82\x01\xd8\x1d\x00",  # 28/29: an array holding itself
        b"\xd8\x1d\x05",  # 29: a reference to nothing
        b"\xd8\x1e\x82\xc2\x59\x03\xe8" + b"\xff" * 1000 + b"\xc2\x59\x03\xe8" + b"\xfd" * 1000,  # 30
        b"\xd8\x23\x66(a+)+$",  # 35: regex
        b"\xd8\x24\x62hi",  # 36: MIME
        b"\xd8\x25\x50" + bytes(16),  # 37: UUID
        b"\xd9\x01\x02\x83\x01\x02\x03",  # 258: set
        b"\xd9\x01\x00\x82\x63abc\xd8\x19\x00",  # 256/25: string references
        b"\xd9\x01\x04\x44\x7f\x00\x00\x01",  # 260: IP address
        b"\xd9\xd9\xf7\xa0",  # 55799 nested (only the frame's prefix is accepted)
        b"\xd9\x27\x0f\x01",  # 9999: unassigned
        b"\xdb\xff\xff\xff\xff\xff\xff\xff\xff\x00",  # the largest tag number
    ]))


def _wide(rng: random.Random) -> Raw:
    return Raw(rng.choice([
        b"\x1b\xff\xff\xff\xff\xff\xff\xff\xff", b"\x3b\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x1b\x80\x00\x00\x00\x00\x00\x00\x00", b"\x3b\x80\x00\x00\x00\x00\x00\x00\x00",
        b"\x3b\x7f\xff\xff\xff\xff\xff\xff\xff",  # -2^63: the smallest valid one
        b"\xfb\x43\xe0\x00\x00\x00\x00\x00\x00", b"\xf9\x7e\x00", b"\xfa\x7f\x80\x00\x00",  # 2^63.0, NaN, inf
    ]))


def _claimed(rng: random.Random) -> Raw:
    major = rng.choice([0x40, 0x60, 0x80, 0xA0])
    arg = rng.choice([b"\x1b\xff\xff\xff\xff\xff\xff\xff\xff", b"\x1a\x7f\xff\xff\xff", b"\x19\xff\xff"])
    return Raw(bytes([major | arg[0]]) + arg[1:] + rng.randbytes(rng.randrange(0, 8)))


def _odd(rng: random.Random) -> Raw:
    return Raw(rng.choice([
        b"\xf7", b"\xf8\x20", b"\xe0", b"\xff", b"\x1c", b"\x5f\x61a\xff", b"\x62\xff\xfe",
        b"\x9f\x01\x02", b"\xa1\x01\x02", b"\xa1\x81\x01\x02", b"\xa1\xa0\x01",
        b"\xb9\x00\x03" + b"".join(_head(0, k * (2**61 - 1)) + b"\x00" for k in range(1, 4)),
        b"\x9a\x00\x01\x86\xa0" + b"\xf6" * 100_000, b"\x79\x40\x00" + b"a" * 16384,
    ]))


HOSTILE: tuple[Callable[[random.Random], Raw], ...] = (_deep, _bignum, _tagged, _wide, _claimed, _odd)
JUNK: tuple[Any, ...] = (None, True, False, -1, 0, 1, 2**31, 2**63 - 1, -(2**63), 1.5, 3.0, float("nan"),
                         float("inf"), "", "x" * 300, "made", b"\x00", [], {}, [1, [2]], {"a": {"b": 1}})


# ------------------------------------------------------------------ batches with lying headers
_FIELDS = struct.Struct(">hiqqqhii")  # attributes .. record_count, at byte 21


def lying_batch(rng: random.Random) -> tuple[bytes, bool]:
    """A batch whose CRC matches its bytes but whose header may lie; and whether the broker must
    refuse it (a record count its uncompressed records cannot hold)."""
    n = rng.randint(1, 6)
    compression = rng.choice([COMPRESSION_NONE, COMPRESSION_ZLIB])
    raw = bytearray(encode_batch(list(range(1000, 1000 + n)), [None] * n, [b"v%d" % i for i in range(n)],
                                 compression=compression))
    attrs, delta, base_ts, max_ts, pid, pepoch, bseq, count = _FIELDS.unpack_from(raw, 21)
    must_refuse = False
    lie = rng.randrange(7)
    if lie == 0:  # the record count, and the offset delta with it (the case of the issue)
        count = rng.choice([0, n + 1, n * 3, 1_000_000, 2**31 - 1, -1])
        delta = count - 1 if rng.random() < 0.8 else rng.choice([0, 2**31 - 1, -(2**31)])
        # refused for sure: a wrong delta, a count out of range, any lie in plain records (their
        # first column's length is read), a count zlib's bytes cannot inflate to
        must_refuse = (delta != count - 1 or count < 1 or compression == COMPRESSION_NONE
                       or count > 100_000)
    elif lie == 1:
        delta = rng.choice([n, -1, 2**31 - 1])
        must_refuse = True
    elif lie == 2:
        base_ts, max_ts = rng.choice([(-1, 5), (10, 5), (0, 2**63 - 1), (2**62, 2**62 + 1), (-(2**63), 0)])
        must_refuse = True
    elif lie == 3:
        attrs = rng.randrange(-(2**15), 2**15)
    elif lie == 4:
        pid, pepoch, bseq = rng.randrange(-(2**63), 2**63), rng.randrange(-(2**15), 2**15), rng.randrange(-(2**31), 2**31)
    elif lie == 5:  # a records section cut short or padded, the length and CRC made to agree
        cut = rng.randrange(0, len(raw) - HEADER_SIZE + 1)
        raw = raw[:len(raw) - cut] if rng.random() < 0.5 else raw + rng.randbytes(cut)
    if len(raw) >= HEADER_SIZE:
        _FIELDS.pack_into(raw, 21, attrs, delta, base_ts, max_ts, pid, pepoch, bseq, count)
    struct.pack_into(">i", raw, 8, len(raw) - 12)
    if lie == 6:  # a batch_length that disagrees with the frame
        struct.pack_into(">i", raw, 8, rng.choice([0, len(raw) - 11, len(raw) - 13, -1, 2**31 - 1]))
        must_refuse = True
    struct.pack_into(">I", raw, 17, zlib.crc32(raw[CRC_START:]))
    return bytes(raw), must_refuse


# ------------------------------------------------------------------ cases
@dataclass
class Case:
    frames: list[bytes]
    kind: str
    op: str | None = None
    must_refuse: list[bool] = field(default_factory=list)  # per payload frame: a lie the broker must catch
    record_counts: list[int] = field(default_factory=list)  # per payload frame, as its header says


class Fuzzer:
    """``case(i)``: the ``i``-th case of this seed (independent of every other case)."""

    KINDS = ("valid", "random", "flip", "truncate", "junk", "hostile", "hostile-header", "frames", "batch")

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.templates = templates()

    def case(self, i: int) -> Case:
        rng = random.Random(f"{self.seed}:{i}")
        op = rng.choice(sorted(self.templates))
        header, frames = self.templates[op]
        header = {**header, "cid": i + 1}
        frames = list(frames)
        kind = rng.choice(self.KINDS)
        if kind == "random":
            return Case([rng.randbytes(rng.randrange(0, 300))], kind)
        if kind == "hostile-header":
            item = rng.choice(HOSTILE)(rng)
            return Case([bytes(item) if rng.random() < 0.5 else b"\xd9\xd9\xf7" + item, *frames], kind, op)
        if kind == "batch":
            op, (header, _) = "produce", self.templates["produce"]
            header = {**header, "cid": i + 1}
            frames, refuse = [], []
            for _ in range(rng.randint(1, 3)):
                batch, must = lying_batch(rng)
                frames.append(batch)
                refuse.append(must)
            header["batches"] = [{"topic": FUZZ_TOPIC, "partition": 0}] * len(frames)
            return self._finish(Case([encode(_tame(header)), *frames], kind, op, must_refuse=refuse))
        if kind == "frames":
            extra = [rng.randbytes(rng.randrange(0, 80)) for _ in range(rng.randint(1, 3))]
            return self._finish(Case([encode(_tame(header)), *frames, *extra], kind, op))
        if kind in ("junk", "hostile"):
            for _ in range(rng.randint(1, 2)):
                header = _replace_somewhere(rng, header, kind)
        raw = encode(_tame(header))
        if kind == "flip":
            raw = bytearray(raw)
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            raw = bytes(raw)
        elif kind == "truncate":
            raw = raw[:rng.randrange(len(raw))]
        return self._finish(Case([raw, *frames], kind, op))

    @staticmethod
    def _finish(case: Case) -> Case:
        if case.op == "produce":
            case.record_counts = [struct.unpack_from(">i", f, 57)[0] if len(f) >= HEADER_SIZE else 0
                                  for f in case.frames[1:]]
        return case


def _replace_somewhere(rng: random.Random, value: Any, kind: str) -> Any:
    """``value`` with one part, at any depth, replaced (or a key added or removed)."""
    if isinstance(value, dict) and value and rng.random() < 0.7:
        out = dict(value)
        key = rng.choice(list(out) + ["extra"])
        if key in out and rng.random() < 0.15:
            del out[key]
        else:
            out[key] = _replace_somewhere(rng, out.get(key), kind)
        if rng.random() < 0.05:
            out[Raw(_odd(rng))] = 1  # a key that is not text
        return out
    if isinstance(value, list) and value and rng.random() < 0.7:
        out_list = list(value)
        j = rng.randrange(len(out_list))
        out_list[j] = _replace_somewhere(rng, out_list[j], kind)
        return out_list
    if kind == "hostile":
        return rng.choice(HOSTILE)(rng)
    return rng.choice(JUNK)


def _tame(header: Any) -> Any:
    """Keep a mutated request answerable at once: a produce always acknowledged, fetches and
    group joins never waiting long (a case that parks would be reported as unanswered).  Only
    plain values are adjusted: hostile ones are rejected before any of this matters."""
    if not isinstance(header, dict):
        return header
    if header.get("op") == "produce" and header.get("acks") == 0:
        header["acks"] = 1
    if header.get("op") == "fetch":
        header["max_wait_ms"] = 0
        header.pop("answers", None)
    if header.get("op") == "join_group":
        header["rebalance_timeout_ms"] = 1000
        header["group_id"] = f"fz-{header.get('cid')}"  # a group of one: its join completes at once
    if header.get("op") in ("delete_topics", "alter_topic_configs", "create_partitions") and \
            BASE_TOPIC in repr(header.get("topics", header.get("topic"))):
        header["op"] = "list_topics"  # the base topic's data is what the runner checks
    return header
