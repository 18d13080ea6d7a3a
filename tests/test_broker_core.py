"""BrokerCore without sockets: requests as frames in, replies out (manual clock)."""

from __future__ import annotations

import cbor2
import pytest

from fabric.broker.config import BrokerConfig
from fabric.broker.core import BrokerCore
from fabric.log.config import LogConfig
from fabric.records.batch import encode_batch, records_in

PEER = b"peer-1"


@pytest.fixture
def core(tmp_path):
    c = BrokerCore(BrokerConfig(data_dir=str(tmp_path / "d"), topic_defaults=LogConfig(flush_interval_ms=0)), 1000)
    yield c
    c.close()


def call(core, header, frames=(), now=1000, peer=PEER):
    return core.handle(peer, [cbor2.dumps(header), *frames], now)


def one(core, header, frames=(), now=1000):
    out = call(core, header, frames, now)
    assert len(out) == 1, out
    return out[0][1]


def test_create_produce_fetch_round_trip(core):
    rep = one(core, {"op": "create_topics", "v": 1, "cid": 1, "topics": [{"name": "t", "partitions": 3}]})
    assert rep.header == {"op": "create_topics", "cid": 1, "topics": [{"name": "t", "partitions": 3,
                                                                        "replication_factor": 1}]}
    b1 = encode_batch([1, 2], [b"a", b"b"], [b"x", b"y"])
    b2 = encode_batch([3], [None], [b"z"])
    rep = one(core, {"op": "produce", "v": 1, "cid": 2, "acks": 1,
                     "batches": [{"topic": "t", "partition": 1}, {"topic": "t", "partition": 1}]}, [b1, b2])
    assert [r["base_offset"] for r in rep.header["results"]] == [0, 2]
    rep = one(core, {"op": "fetch", "v": 1, "cid": 3, "max_wait_ms": 0,
                     "partitions": [{"topic": "t", "partition": 1, "offset": 1}]})
    meta = rep.header["partitions"][0]
    assert meta["high_watermark"] == 3 and meta["log_start_offset"] == 0
    assert [(r.offset, r.value) for r in records_in("t", 1, rep.frames[0], 1)] == [(1, b"y"), (2, b"z")]


def test_bad_batch_fails_only_its_partition(core):
    good = encode_batch([1], [None], [b"ok"])
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    rep = one(core, {"op": "produce", "v": 1, "cid": 1,
                     "batches": [{"topic": "u", "partition": 0}, {"topic": "u", "partition": 0}]}, [bytes(bad), good])
    r0, r1 = rep.header["results"]
    assert r0["error"]["name"] == "CORRUPT_BATCH" and r1["base_offset"] == 0
    assert core.topics.partition("u", 0).end_offset == 1


def test_long_poll_parks_and_wakes_on_append(core):
    one(core, {"op": "create_topics", "v": 1, "cid": 1, "topics": [{"name": "t"}]})
    assert call(core, {"op": "fetch", "v": 1, "cid": 9, "max_wait_ms": 5000, "min_bytes": 1,
                       "partitions": [{"topic": "t", "partition": 0, "offset": 0}]}, peer=b"waiter") == []
    assert core.next_deadline_ms() == 6000
    out = call(core, {"op": "produce", "v": 1, "cid": 2, "batches": [{"topic": "t", "partition": 0}]},
               [encode_batch([1], [None], [b"v"])])
    peers = [p for p, _ in out]
    assert peers == [b"waiter", PEER]  # the waiting consumer's data leaves before the producer's ack
    woke = out[0][1]
    assert woke.header["cid"] == 9 and len(woke.frames[0]) > 0


def test_long_poll_expires_with_empty_reply(core):
    one(core, {"op": "create_topics", "v": 1, "cid": 1, "topics": [{"name": "t"}]})
    call(core, {"op": "fetch", "v": 1, "cid": 9, "max_wait_ms": 100, "partitions": [{"topic": "t", "partition": 0,
                                                                                       "offset": 0}]})
    assert core.expire(1050) == []
    out = core.expire(1100)
    assert len(out) == 1 and out[0][1].header["cid"] == 9 and out[0][1].frames == [b""]


def test_acks_zero_sends_no_reply(core):
    out = call(core, {"op": "produce", "v": 1, "cid": 1, "acks": 0, "batches": [{"topic": "t0", "partition": 0}]},
               [encode_batch([1], [None], [b"v"])])
    assert out == []
    assert core.topics.partition("t0", 0).end_offset == 1


@pytest.mark.parametrize("frames,name", [
    ([b"\xff"], "MALFORMED_REQUEST"),
    ([cbor2.dumps({"op": "metadata", "v": 1, "cid": 1}), b"extra"], "MALFORMED_REQUEST"),
    ([cbor2.dumps({"op": "produce", "v": 1, "cid": 1, "batches": [{"topic": "t", "partition": 0}]})],
     "INVALID_FIELD"),
    ([cbor2.dumps({"op": "teleport", "v": 1, "cid": 1})], "UNKNOWN_OPERATION"),
    ([cbor2.dumps({"op": "create_topics", "v": 1, "cid": 1, "topics": [{"name": "bad/name"}]})], None),
])
def test_errors_are_replies(core, frames, name):
    out = core.handle(PEER, frames, 1000)
    assert len(out) == 1
    header = out[0][1].header
    if name is None:
        assert header["topics"][0]["error"]["name"] == "INVALID_TOPIC_NAME"
    else:
        assert header["error"]["name"] == name and header["error"]["code"] > 0 and header["error"]["message"]


def test_offsets_and_unknown_partitions(core):
    one(core, {"op": "create_topics", "v": 1, "cid": 1, "topics": [{"name": "t", "partitions": 1}]})
    one(core, {"op": "produce", "v": 1, "cid": 2, "batches": [{"topic": "t", "partition": 0}]},
        [encode_batch([100, 200, 300], [None] * 3, [b"a", b"b", b"c"])])
    rep = one(core, {"op": "list_offsets", "v": 1, "cid": 3, "partitions": [
        {"topic": "t", "partition": 0, "at": "earliest"}, {"topic": "t", "partition": 0, "at": "latest"},
        {"topic": "t", "partition": 0, "at": 150}, {"topic": "t", "partition": 0, "at": 999},
        {"topic": "t", "partition": 7, "at": "latest"}]})
    got = rep.header["partitions"]
    assert [g.get("offset") for g in got[:4]] == [0, 3, 1, -1]
    assert got[2]["timestamp"] == 200
    assert got[4]["error"]["name"] == "UNKNOWN_TOPIC_OR_PARTITION"
    rep = one(core, {"op": "fetch", "v": 1, "cid": 4, "max_wait_ms": 0,
                     "partitions": [{"topic": "t", "partition": 0, "offset": 10}]})
    assert rep.header["partitions"][0]["error"]["name"] == "OFFSET_OUT_OF_RANGE"


def test_restart_reloads_topics(tmp_path):
    cfg = BrokerConfig(data_dir=str(tmp_path / "d"))
    c = BrokerCore(cfg, 1)
    call(c, {"op": "create_topics", "v": 1, "cid": 1, "topics": [{"name": "keep", "partitions": 2,
                                                                   "configs": {"retention_ms": 5000}}]})
    call(c, {"op": "produce", "v": 1, "cid": 2, "batches": [{"topic": "keep", "partition": 1}]},
         [encode_batch([1], [None], [b"v"])])
    c.close()
    c2 = BrokerCore(cfg, 2)
    try:
        t = c2.topics.get("keep")
        assert len(t.partitions) == 2 and t.config.retention_ms == 5000 and t.partitions[1].end_offset == 1
        assert c2.cluster_id == c.cluster_id
    finally:
        c2.close()
