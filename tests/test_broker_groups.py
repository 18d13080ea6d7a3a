"""Groups through BrokerCore (no sockets): deferred joins, commits stored in __consumer_offsets,
offsets surviving a restart, internal topic protected."""

from __future__ import annotations

import cbor2

from fabric.broker.config import BrokerConfig
from fabric.broker.core import BrokerCore
from fabric.records.batch import encode_batch


def call(core, peer, header, now, frames=()):
    return core.handle(peer, [cbor2.dumps(header), *frames], now)


def make(tmp_path, now=1000):
    return BrokerCore(BrokerConfig(data_dir=str(tmp_path / "d"), group_initial_rebalance_delay_ms=100), now)


def join(core, peer, cid, member_id, now):
    return call(core, peer, {"op": "join_group", "v": 1, "cid": cid, "group_id": "g", "member_id": member_id,
                             "session_timeout_ms": 10_000, "rebalance_timeout_ms": 5_000, "topics": ["t"],
                             "assignors": ["range"]}, now)


def test_join_sync_commit_and_restart(tmp_path):
    core = make(tmp_path)
    call(core, b"a", {"op": "create_topics", "v": 1, "cid": 1, "topics": [{"name": "t", "partitions": 2}]}, 1000)
    rep = call(core, b"a", {"op": "find_coordinator", "v": 1, "cid": 2, "group_id": "g"}, 1000)[0][1].header
    assert rep["node_id"] == 0 and "port" in rep
    first = join(core, b"a", 3, "", 1000)[0][1].header
    assert first["error"]["name"] == "MEMBER_ID_REQUIRED" and first["member_id"]
    mid = first["member_id"]
    assert join(core, b"a", 4, mid, 1000) == []  # parked: the initial rebalance delay
    assert core.tick(1050) == []
    done = core.tick(1200)
    assert [(p, r.header["cid"]) for p, r in done] == [(b"a", 4)]
    gen = done[0][1].header["generation"]
    sync = call(core, b"a", {"op": "sync_group", "v": 1, "cid": 5, "group_id": "g", "member_id": mid,
                             "generation": gen}, 1200)[0][1].header
    assert sync["assignment"] == [{"topic": "t", "partitions": [0, 1]}]
    out = call(core, b"a", {"op": "offset_commit", "v": 1, "cid": 6, "group_id": "g", "member_id": mid,
                            "generation": gen, "offsets": [{"topic": "t", "partition": 1, "offset": 42,
                                                            "metadata": "m"}]}, 1300)
    reply = out[0][1]
    assert "error" not in reply.header and reply.flush  # fsynced before the ack
    stale = call(core, b"a", {"op": "offset_commit", "v": 1, "cid": 7, "group_id": "g", "member_id": mid,
                              "generation": gen + 5, "offsets": [{"topic": "t", "partition": 0, "offset": 1}]},
                 1300)[0][1].header
    assert stale["error"]["name"] == "ILLEGAL_GENERATION"
    core.close()
    core2 = make(tmp_path, 5000)
    try:
        rep = call(core2, b"b", {"op": "offset_fetch", "v": 1, "cid": 1, "group_id": "g"}, 5000)[0][1].header
        assert [(o["topic"], o["partition"], o["offset"], o["metadata"]) for o in rep["offsets"]] == [
            ("t", 1, 42, "m")]
    finally:
        core2.close()


def test_internal_offsets_topic_is_protected(tmp_path):
    core = make(tmp_path)
    try:
        rep = call(core, b"x", {"op": "produce", "v": 1, "cid": 1,
                                "batches": [{"topic": "__consumer_offsets", "partition": 0}]}, 1000,
                   [encode_batch([1], [b"k"], [b"v"])])[0][1].header
        assert rep["results"][0]["error"]["name"] == "POLICY_VIOLATION"
        rep = call(core, b"x", {"op": "delete_topics", "v": 1, "cid": 2, "topics": ["__consumer_offsets"]},
                   1000)[0][1].header
        assert rep["topics"][0]["error"]["name"] == "POLICY_VIOLATION"
        listed = call(core, b"x", {"op": "list_topics", "v": 1, "cid": 3}, 1000)[0][1].header["topics"]
        assert listed == []
    finally:
        core.close()


def test_session_timeout_evicts_and_parked_join_is_answered(tmp_path):
    core = make(tmp_path)
    try:
        call(core, b"a", {"op": "create_topics", "v": 1, "cid": 1, "topics": [{"name": "t", "partitions": 2}]}, 1000)
        mid = join(core, b"a", 2, "", 1000)[0][1].header["member_id"]
        join(core, b"a", 3, mid, 1000)
        gen = core.tick(1200)[0][1].header["generation"]
        call(core, b"a", {"op": "sync_group", "v": 1, "cid": 4, "group_id": "g", "member_id": mid,
                          "generation": gen}, 1200)
        core.tick(1200 + 10_001)  # no heartbeat for the session timeout
        hb = call(core, b"a", {"op": "heartbeat", "v": 1, "cid": 5, "group_id": "g", "member_id": mid,
                               "generation": gen}, 11_300)[0][1].header
        assert hb["error"]["name"] == "UNKNOWN_MEMBER_ID"
    finally:
        core.close()
