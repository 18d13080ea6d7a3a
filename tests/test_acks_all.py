"""AcksAllReplies: produce replies waiting for the high watermark, in request order per peer."""

from __future__ import annotations

import pytest

from fabric.broker.acks_all import AcksAllReplies
from fabric.protocol.errors import FabricError

pytestmark = pytest.mark.unit


def rows(*parts):
    return [{"topic": "t", "partition": p, "base_offset": 10 * p} for p in parts]


def cids(outbox):
    return [(peer, reply.header["cid"]) for peer, reply in outbox]


def test_a_reply_leaves_when_its_last_partition_commits():
    acks = AcksAllReplies(10)
    t0, t1 = acks.hold(b"a", "produce", 1, rows(0, 1), [(0, "t", 0), (1, "t", 1)], 1000)
    assert acks.committed([t0]) == []
    assert cids(acks.committed([t1])) == [(b"a", 1)]
    assert len(acks) == 0


def test_a_later_reply_to_the_same_peer_waits_behind_an_earlier_one():
    """The regression: a one-partition request committed at once overtook a two-partition request
    still waiting for its slower partition, so the producer saw a key's later record acknowledged
    first."""
    acks = AcksAllReplies(10)
    slow0, slow1 = acks.hold(b"a", "produce", 1, rows(0, 1), [(0, "t", 0), (1, "t", 1)], 1000)
    (fast,) = acks.hold(b"a", "produce", 2, rows(1), [(0, "t", 1)], 1000)
    assert acks.committed([slow1, fast]) == []  # request 2 is done but request 1 is not
    assert acks.answer(b"a", "produce", 3, rows(2)) == []  # an acks=1 reply queues too
    assert acks.answer(b"b", "produce", 9, rows(2)) != []  # another connection is not held up
    assert cids(acks.committed([slow0])) == [(b"a", 1), (b"a", 2), (b"a", 3)]


def test_expiry_and_failure_keep_the_order_and_say_why():
    acks = AcksAllReplies(10)
    (t0,) = acks.hold(b"a", "produce", 1, rows(0), [(0, "t", 0)], 100)
    (t1,) = acks.hold(b"a", "produce", 2, rows(1), [(0, "t", 1)], 5000)
    assert acks.failed([t1], FabricError("NOT_LEADER", "moved")) == []
    out = acks.expire(100)
    assert cids(out) == [(b"a", 1), (b"a", 2)]
    assert out[0][1].header["results"][0]["error"]["name"] == "REQUEST_TIMED_OUT"
    assert out[1][1].header["results"][0]["error"]["name"] == "NOT_LEADER"
    assert out[0][1].header["results"][0]["base_offset"] == -1


def test_a_gone_peer_is_forgotten():
    acks = AcksAllReplies(2)
    (t0,) = acks.hold(b"a", "produce", 1, rows(0), [(0, "t", 0)], 100)
    acks.forget(b"a")
    assert len(acks) == 0 and acks.committed([t0]) == [] and acks.expire(10_000) == []
