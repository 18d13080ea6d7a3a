"""Pipelined and standing fetches (``follows``, ``answers``, SPEC 5.10) against BrokerCore,
without sockets (manual clock).

Each test is one rule of ``fabric/broker/fetching.py``: a follow-on of a parked fetch waits for it
and continues where its reply ended; of an answered fetch, continues at once; of anything else,
reads the offsets it names; every follow-on reply says where each partition was read from; and a
standing fetch waits again after each reply, from where it ended, until its answers are spent.
"""

from __future__ import annotations

import cbor2
import pytest

from fabric.broker.config import BrokerConfig
from fabric.broker.core import BrokerCore
from fabric.log.config import LogConfig
from fabric.records.batch import encode_batch, records_in

PEER = b"consumer"
PRODUCER = b"producer"


@pytest.fixture
def core(tmp_path):
    c = BrokerCore(BrokerConfig(data_dir=str(tmp_path / "d"), topic_defaults=LogConfig(flush_interval_ms=0)), 1000)
    c.handle(PRODUCER, [cbor2.dumps({"op": "create_topics", "v": 1, "cid": 1,
                                     "topics": [{"name": "t", "partitions": 2}]})], 1000)
    yield c
    c.close()


def fetch(core, cid, offsets, follows=-1, wait=500, now=1000, max_bytes=1 << 20, peer=PEER, answers=1):
    header = {"op": "fetch", "v": 1, "cid": cid, "max_wait_ms": wait, "max_bytes": max_bytes,
              "partitions": [{"topic": "t", "partition": p, "offset": o} for p, o in offsets]}
    if follows >= 0:
        header["follows"] = follows
    if answers != 1:
        header["answers"] = answers
    return core.handle(peer, [cbor2.dumps(header)], now)


def produce(core, partition, *values, now=1000):
    """Append one batch; returns the fetch replies it woke (the producer's own ack left out)."""
    out = core.handle(PRODUCER, [cbor2.dumps({"op": "produce", "v": 1, "cid": 99, "acks": 1,
                                              "batches": [{"topic": "t", "partition": partition}]}),
                                 encode_batch([1] * len(values), [None] * len(values), list(values))], now)
    return [(peer, r) for peer, r in out if peer != PRODUCER]


def values(reply, i=0, start=0):
    return [r.value for r in records_in("t", reply.header["partitions"][i]["partition"], reply.frames[i], start)]


def test_follow_on_of_a_parked_fetch_waits_for_it_then_continues_where_it_ended(core):
    assert fetch(core, 1, [(0, 0)]) == []                   # A parks at the tail
    assert fetch(core, 2, [(0, 0)], follows=1) == []        # B waits behind A (placeholder offset 0)
    woke = produce(core, 0, b"first")
    assert [(p, r.header["cid"]) for p, r in woke] == [(PEER, 1)]   # A answered; B parked, from offset 1
    assert values(woke[0][1]) == [b"first"]
    assert "offset" not in woke[0][1].header["partitions"][0]       # A did not follow anything
    woke = produce(core, 0, b"second")
    assert [(p, r.header["cid"]) for p, r in woke] == [(PEER, 2)]
    b = woke[0][1]
    assert b.header["partitions"][0]["offset"] == 1
    assert values(b) == [b"second"]                         # nothing read twice


def test_follow_on_of_an_answered_fetch_continues_at_once(core):
    produce(core, 0, b"a", b"b")
    (_, a), = fetch(core, 1, [(0, 0)])                      # data there: answered at once
    assert values(a) == [b"a", b"b"]
    assert fetch(core, 2, [(0, 0)], follows=1) == []        # continues at 2 = high watermark: parks
    (_, b), = produce(core, 0, b"c")
    assert b.header["cid"] == 2 and b.header["partitions"][0]["offset"] == 2 and values(b) == [b"c"]


def test_follow_on_of_an_unknown_or_older_fetch_reads_the_offsets_it_names(core):
    produce(core, 0, b"a")
    (_, r), = fetch(core, 5, [(0, 0)], follows=4, wait=0)   # no fetch 4 on this connection
    assert r.header["partitions"][0]["offset"] == 0 and values(r) == [b"a"]
    fetch(core, 6, [(0, 1)], wait=0)                        # the latest fetch is 6 now
    (_, r), = fetch(core, 7, [(0, 0)], follows=5, wait=0)   # 5 is older: offsets as named
    assert r.header["partitions"][0]["offset"] == 0


def test_a_reply_cut_by_max_bytes_gives_no_continuation(core):
    produce(core, 0, b"x" * 300)
    produce(core, 0, b"y" * 300)
    (_, a), = fetch(core, 1, [(0, 0)], max_bytes=100)       # one batch (always at least one), not both
    assert values(a) == [b"x" * 300]
    (_, b), = fetch(core, 2, [(0, 0)], follows=1, wait=0)
    assert b.header["partitions"][0]["offset"] == 0         # no continuation: the offset as named


def test_partitions_continue_independently_and_an_empty_one_stays_put(core):
    produce(core, 1, b"p1")
    (_, a), = fetch(core, 1, [(0, 0), (1, 0)])
    assert [m["high_watermark"] for m in a.header["partitions"]] == [0, 1]
    assert fetch(core, 2, [(0, 0), (1, 0)], follows=1) == []
    (_, b), = produce(core, 0, b"p0")
    assert [m["offset"] for m in b.header["partitions"]] == [0, 1]
    assert values(b, 0) == [b"p0"] and b.frames[1] == b""


def test_expiry_of_the_followed_fetch_starts_the_follow_on_wait(core):
    fetch(core, 1, [(0, 0)], wait=100)
    fetch(core, 2, [(0, 0)], follows=1, wait=100)
    assert core.next_deadline_ms() == 1100                  # only A's deadline: B is not parked yet
    out = core.expire(1100)
    assert [r.header["cid"] for _, r in out] == [1]         # A answered empty; B parks until 1200
    assert core.next_deadline_ms() == 1200
    out = core.expire(1200)
    assert [r.header["cid"] for _, r in out] == [2] and out[0][1].header["partitions"][0]["offset"] == 0


def test_only_one_follow_on_waits_on_a_fetch(core):
    fetch(core, 1, [(0, 0)])
    assert fetch(core, 2, [(0, 0)], follows=1) == []
    (_, third), = fetch(core, 3, [(0, 5)], follows=1, wait=0)   # served as if it followed nothing
    assert third.header["partitions"][0]["offset"] == 5 and third.header["partitions"][0]["error"]["name"] == \
        "OFFSET_OUT_OF_RANGE"


def test_shutdown_answers_a_parked_fetch_and_its_follow_on(core):
    fetch(core, 1, [(0, 0)])
    fetch(core, 2, [(0, 0)], follows=1)
    out = core.drain_waiters()
    assert [(p, r.header["cid"]) for p, r in out] == [(PEER, 1), (PEER, 2)]
    assert out[1][1].header["partitions"][0]["offset"] == 0


def test_connections_do_not_follow_each_other(core):
    fetch(core, 1, [(0, 0)], peer=b"other")
    (_, r), = fetch(core, 2, [(0, 0)], follows=1, wait=0)   # cid 1 was another connection's
    assert r.header["partitions"][0]["offset"] == 0 and core.next_deadline_ms() == 1500


def test_follows_must_be_minus_one_or_a_cid(core):
    (_, r), = fetch(core, 1, [(0, 0)], follows=-1, wait=0)
    assert r.header["partitions"] == [{"topic": "t", "partition": 0, "high_watermark": 0,
                                       "log_start_offset": 0}]  # -1, the default: a plain fetch
    out = core.handle(PEER, [cbor2.dumps({"op": "fetch", "v": 1, "cid": 2, "follows": -2,
                                          "partitions": [{"topic": "t", "partition": 0, "offset": 0}]})], 1000)
    assert out[0][1].header["error"]["name"] == "INVALID_FIELD"


def _answer(reply):
    part = reply.header["partitions"][0]
    return reply.header["cid"], part.get("offset"), reply.header.get("answers_left"), values(reply)


def test_a_standing_fetch_waits_again_after_each_reply_until_its_answers_are_spent(core):
    assert fetch(core, 1, [(0, 0)], answers=3) == []
    (_, r), = produce(core, 0, b"a")
    assert _answer(r) == (1, 0, 2, [b"a"])
    (_, r), = produce(core, 0, b"b", b"c")                   # waits again from 1: nothing read twice
    assert _answer(r) == (1, 1, 1, [b"b", b"c"])
    (_, r), = produce(core, 0, b"d")
    assert _answer(r) == (1, 3, 0, [b"d"])                   # the last answer
    assert produce(core, 0, b"e") == [] and len(core.waiters) == 0
    assert core.metrics.standing_fetch_answers == 2


def test_a_standing_fetch_answers_at_once_what_is_there_then_waits(core):
    produce(core, 0, b"a")
    (_, r), = fetch(core, 1, [(0, 0)], answers=2)
    assert _answer(r) == (1, 0, 1, [b"a"]) and len(core.waiters) == 1
    (_, r), = produce(core, 0, b"b")
    assert _answer(r) == (1, 1, 0, [b"b"])


def test_expiry_spends_an_answer_and_the_fetch_waits_again(core):
    fetch(core, 1, [(0, 0)], answers=2, wait=100)
    (_, r), = core.expire(1100)
    assert _answer(r) == (1, 0, 1, [])
    assert core.next_deadline_ms() == 1200                   # a new wait, from the expiry
    (_, r), = produce(core, 0, b"a", now=1150)
    assert _answer(r) == (1, 0, 0, [b"a"])


def test_a_follow_on_waits_until_the_standing_fetch_is_spent(core):
    fetch(core, 1, [(0, 0)], answers=2)
    assert fetch(core, 2, [(0, 0)], follows=1, answers=2) == []
    (_, r), = produce(core, 0, b"a")
    assert _answer(r) == (1, 0, 1, [b"a"])
    (_, r), = produce(core, 0, b"b")
    assert _answer(r) == (1, 1, 0, [b"b"])                   # 1 is spent: 2 waits from 2 now
    (_, r), = produce(core, 0, b"c")
    assert _answer(r) == (2, 2, 1, [b"c"])


def test_a_newer_fetch_that_does_not_follow_ends_the_standing_fetch(core):
    fetch(core, 1, [(0, 0)], answers=5)
    assert fetch(core, 2, [(0, 0)]) == []                    # e.g. the consumer sought: plain fetch
    woke = sorted((r.header["cid"], r.header.get("answers_left")) for _, r in produce(core, 0, b"a"))
    assert woke == [(1, 0), (2, None)]                       # 1's reply says it was its last
    assert len(core.waiters) == 0


def test_a_standing_fetch_that_cannot_wait_is_answered_once(core):
    produce(core, 0, b"a")
    (_, r), = fetch(core, 1, [(0, 0)], answers=4, wait=0)
    assert _answer(r) == (1, 0, 0, [b"a"]) and len(core.waiters) == 0


def test_a_reply_without_continuation_is_the_standing_fetch_s_last(core):
    produce(core, 0, b"x" * 300)
    produce(core, 0, b"y" * 300)
    (_, r), = fetch(core, 1, [(0, 0)], answers=4, max_bytes=200)   # cut after the first batch
    assert _answer(r) == (1, 0, 0, [b"x" * 300]) and len(core.waiters) == 0


def test_answers_are_limited(core):
    (_, r), = fetch(core, 1, [(0, 0)], answers=65)
    assert r.header["error"]["name"] == "INVALID_FIELD" and "answers" in r.header["error"]["message"]


def test_a_connection_that_ends_gets_its_fetches_answered_as_their_last(core):
    """peer_gone answers rather than drops: the end of a connection comes from the monitor socket,
    which may pin it on a peer still connected (a reused descriptor).  Such a peer must only see
    early answers, then fetch on as usual; one really gone leaves nothing parked."""
    assert fetch(core, 1, [(0, 0)], answers=16) == []
    assert fetch(core, 2, [(0, 0)], follows=1, answers=16) == []
    assert fetch(core, 7, [(1, 0)], peer=b"bystander") == []
    out = core.peer_gone(PEER)
    assert [(p, _answer(r)) for p, r in out] == [(PEER, (1, 0, 0, [])), (PEER, (2, 0, 0, []))]
    assert len(core.waiters) == 1                             # the bystander's fetch stays
    assert produce(core, 0, b"a") == []                       # nothing of PEER's is waiting any more
    (_, r), = fetch(core, 3, [(0, 0)], follows=2, answers=16)  # the peer was there after all
    assert _answer(r) == (3, 0, 15, [b"a"])
    (_, r), = produce(core, 0, b"b")                          # and it stands at the tail again
    assert _answer(r) == (3, 1, 14, [b"b"])
