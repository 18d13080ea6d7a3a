"""Protocol fuzzing against a real broker: thousands of random and mutated requests, then the
broker must still answer and the stored data must be intact."""

from __future__ import annotations

import random

import cbor2
import zmq

from fabric.client import Admin, Consumer, Producer
from fabric.records.batch import encode_batch

SEED = 20261125


def _valid_requests(rng: random.Random) -> list[tuple[dict, list[bytes]]]:
    batch = encode_batch([1, 2], [b"k", None], [b"v1", b"v2"])
    return [
        ({"op": "api_versions", "v": 1, "cid": 1}, []),
        ({"op": "metadata", "v": 1, "cid": 1, "topics": ["base"]}, []),
        ({"op": "list_topics", "v": 1, "cid": 1}, []),
        ({"op": "describe_topics", "v": 1, "cid": 1, "topics": ["base"]}, []),
        ({"op": "fetch", "v": 1, "cid": 1, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 20,
          "partitions": [{"topic": "base", "partition": 0, "offset": 0, "max_bytes": 65536}]}, []),
        ({"op": "list_offsets", "v": 1, "cid": 1, "partitions": [{"topic": "base", "partition": 0, "at": "latest"}]},
         []),
        ({"op": "produce", "v": 1, "cid": 1, "acks": 1, "timeout_ms": 1000,
          "batches": [{"topic": "fuzzed", "partition": 0}]}, [batch]),
        ({"op": "create_topics", "v": 1, "cid": 1, "topics": [{"name": "made", "partitions": 1}]}, []),
    ]


_JUNK = [None, True, False, -1, 0, 2**64 - 1, -(2**63), 1.5, float("nan"), 2.0**60, "", "x" * 300, b"\x00",
         [], {}, [1, [2, [3]]], {"a": {"b": 1}}, cbor2.CBORTag(1, 0), cbor2.CBORTag(9999, b"x")]


def _mutate_value(rng: random.Random, value):
    if isinstance(value, dict) and value and rng.random() < 0.5:
        k = rng.choice(list(value))
        out = dict(value)
        if rng.random() < 0.2:
            del out[k]
        else:
            out[k] = _mutate_value(rng, value[k])
        return out
    if isinstance(value, list) and value and rng.random() < 0.5:
        out = list(value)
        i = rng.randrange(len(out))
        out[i] = _mutate_value(rng, out[i])
        return out
    return rng.choice(_JUNK)


def _fuzz_case(rng: random.Random) -> list[bytes]:
    header, frames = rng.choice(_valid_requests(rng))
    kind = rng.randrange(8)
    if kind == 0:
        return [rng.randbytes(rng.randrange(0, 200))]
    if kind == 1:  # flip bytes of an encoded header
        raw = bytearray(cbor2.dumps(header))
        for _ in range(rng.randrange(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return [bytes(raw), *frames]
    if kind == 2:  # truncate the header
        raw = cbor2.dumps(header)
        return [raw[: rng.randrange(len(raw))], *frames]
    if kind == 3:  # corrupt the batch
        if frames:
            b = bytearray(frames[0])
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            return [cbor2.dumps(header), bytes(b)]
        return [cbor2.dumps(header), rng.randbytes(100)]
    if kind == 4:  # wrong number of payload frames
        return [cbor2.dumps(header), *frames, *([rng.randbytes(70)] * rng.randrange(1, 4))]
    # mutate fields
    h = dict(header)
    for _ in range(rng.randrange(1, 3)):
        key = rng.choice(list(h) + ["extra"])
        h[key] = _mutate_value(rng, h.get(key))
    if h.get("op") == "produce" and h.get("acks") == 0:
        h["acks"] = 1  # acks=0 legitimately gets no reply; keep every case answerable
    try:
        return [cbor2.dumps(h), *frames]
    except Exception:
        return [rng.randbytes(50)]


def test_fuzzed_requests_get_error_replies_and_data_survives(brokers):
    b = brokers(["--no-auto-create"])
    with Admin(b.bootstrap) as admin:
        admin.create_topic("base", partitions=1)
        admin.create_topic("fuzzed", partitions=1)
    with Producer(b.bootstrap) as p:
        for i in range(300):
            p.send("base", f"record-{i}".encode(), key=str(i).encode())
    rng = random.Random(SEED)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://{b.bootstrap}")
    special = [
        [cbor2.dumps({"op": "api_versions", "v": 1, "cid": 1})] + [b"x"] * 1100,  # too many frames
        [cbor2.dumps({"op": "produce", "v": 1, "cid": 1, "batches": [{"topic": "fuzzed", "partition": 0}]}),
         b"\x00" * (17 << 20)],  # oversized batch frame
        [b"\xa1\x61a" + b"\x81" * 100_000 + b"\x01"],  # nesting bomb
        [cbor2.dumps({"op": "fetch", "v": 1, "cid": 1, "partitions": [{"topic": "base", "partition": 0,
                                                                         "offset": 2**62}]})],
        [b""],
    ]
    errors_seen: dict[str, int] = {}
    try:
        cases = special + [_fuzz_case(rng) for _ in range(3000)]
        for i, frames in enumerate(cases):
            sock.send_multipart(frames)
            assert sock.poll(5000), f"no reply to case {i} (seed {SEED}): {frames[0][:80]!r}"
            reply = cbor2.loads(sock.recv_multipart()[0])
            err = reply.get("error")
            if err:
                errors_seen[err["name"]] = errors_seen.get(err["name"], 0) + 1
                assert err["name"] != "UNKNOWN_ERROR", (i, frames[0][:200], err)
                assert isinstance(err["code"], int) and err["message"]
    finally:
        sock.close(linger=0)
    for name in ("MALFORMED_REQUEST", "INVALID_FIELD", "TOO_MANY_FRAMES", "FRAME_TOO_LARGE"):
        assert errors_seen.get(name), (name, errors_seen)
    # still serving, data intact
    with Admin(b.bootstrap) as admin:
        assert admin.api_versions()["broker"]["node_id"] == 0
    with Consumer(b.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([("base", 0)])
        got = []
        while len(got) < 300:
            batch = c.poll(2000)
            assert batch, "base topic stopped at %d records" % len(got)
            got.extend(batch)
    assert [r.value for r in got[:300]] == [f"record-{i}".encode() for i in range(300)]
    assert b.proc is not None and b.proc.poll() is None
