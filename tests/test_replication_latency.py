"""Latency rules of replication in the sans-I/O classes: an ``acks=all`` produce is released by the
very ack that commits it (no timer in between), waiters leave in O(released), a follower's acks
of one turn are coalesced, and consumers are woken only when the high watermark moves.

Why these exist: at 10,000 records/s with ``acks=all`` the end-to-end latency was seconds.  The
leader scanned every waiting batch on every follower ack (quadratic once requests bunched up),
followers acked every push of a burst one by one, and every ack re-read the log for every parked
consumer although the high watermark had not moved."""

from __future__ import annotations

import pytest

from fabric.broker.acks_all import AcksAllReplies
from fabric.broker.replicas import ReplicaManager
from fabric.log import LogConfig
from fabric.log.memory import MemoryLog
from fabric.records.batch import encode_batch
from fabric.replication import PartitionState
from fabric.replication.config import ReplicationConfig
from fabric.replication.follower import FollowerReplica
from fabric.replication.leader import LeaderReplica
from fabric.replication.messages import ReplicaAck, ReplicaFetch

pytestmark = pytest.mark.unit

CONFIG = ReplicationConfig()
NOW = 1_000  # one instant: nothing below may depend on time passing


def batch(n: int = 1) -> bytearray:
    return bytearray(encode_batch([0] * n, [None] * n, [b"v%d" % i for i in range(n)]))


def trio() -> tuple[LeaderReplica, dict[int, FollowerReplica]]:
    """A leader (1) and two followers (2, 3) of epoch 1, the followers validated at offset 0."""
    lead = LeaderReplica(MemoryLog(LogConfig()), PartitionState(1), "t", 0, leader_epoch=1, replicas=(1, 2, 3),
                         isr=(1, 2, 3), now_ms=NOW, min_insync_replicas=2, config=CONFIG)
    followers = {}
    for r in (2, 3):
        f = FollowerReplica(MemoryLog(LogConfig()), PartitionState(r), "t", 0, leader=1, leader_epoch=1,
                            replicas=(1, 2, 3), now_ms=NOW, config=CONFIG)
        [fetch] = f.tick(NOW)
        assert f.on_fetch_reply(lead.on_fetch(fetch, NOW), NOW) == []
        assert f.validated
        followers[r] = f
    return lead, followers


def test_acks_all_is_released_by_the_ack_that_commits_it_with_no_timer_in_between():
    """Push -> follower append and ack (returned by ``on_push`` itself) -> leader ``on_ack`` ->
    ``hw_moved`` -> the reply: all at one instant, no ``tick`` anywhere."""
    lead, followers = trio()
    acks = AcksAllReplies(10)
    [token] = acks.hold(b"peer", "produce", 7, [{"topic": "t", "partition": 0, "base_offset": 0}],
                        [(0, "t", 0)], NOW + 30_000)
    data = batch(3)
    base, last = lead.append(data, NOW)
    lead.wait(token, last)
    push = lead.push(base, data)
    assert acks.committed(lead.hw_moved()) == []
    [ack2] = followers[2].on_push(push, NOW)
    [ack3] = followers[3].on_push(push, NOW)
    assert isinstance(ack2, ReplicaAck) and ack2.log_end == 3
    lead.on_ack(ack2, NOW)
    assert acks.committed(lead.hw_moved()) == []  # the HW is over the whole ISR: 3 has not acked
    lead.on_ack(ack3, NOW)
    assert lead.high_watermark == 3
    [(peer, reply)] = acks.committed(lead.hw_moved())
    assert peer == b"peer" and reply.header["cid"] == 7 and reply.header["results"][0]["base_offset"] == 0


def test_waiters_leave_in_offset_order_exactly_as_the_hw_passes_them():
    lead, _ = trio()
    ends = []
    for i in range(2_000):  # one request of many single-record batches, as a backed-up producer sends
        _, last = lead.append(batch(), NOW)
        lead.wait(("r", i), last)
        ends.append(last + 1)
    released = []
    for end in (1, 1, 500, 1_999, 2_000):
        lead.on_ack(ReplicaAck("t", 0, 2, 1, end), NOW)
        lead.on_ack(ReplicaAck("t", 0, 3, 1, end), NOW)
        got = lead.hw_moved()
        assert got == [("r", i) for i in range(len(released), end)]
        released += got
    assert lead.waiting == 0 and lead.close() == []


def test_a_waiter_for_an_older_batch_added_late_still_leaves_in_order():
    lead, _ = trio()
    for _ in range(4):
        lead.append(batch(), NOW)
    lead.wait("late", 3)
    lead.wait("early", 0)  # out of offset order: inserted where it belongs
    with pytest.raises(ValueError):
        lead.wait("early", 1)
    for r in (2, 3):
        lead.on_ack(ReplicaAck("t", 0, r, 1, 1), NOW)
    assert lead.hw_moved() == ["early"]
    assert lead.close() == ["late"]


def test_the_high_watermark_change_is_reported_once_per_move():
    lead, _ = trio()
    assert lead.take_hw_change()  # the first call reports the HW as it is
    assert not lead.take_hw_change()
    lead.append(batch(), NOW)
    lead.on_ack(ReplicaAck("t", 0, 2, 1, 1), NOW)
    assert not lead.take_hw_change()  # one follower's ack does not move the HW of a 3-member ISR
    lead.on_ack(ReplicaAck("t", 0, 3, 1, 1), NOW)
    assert lead.take_hw_change() and not lead.take_hw_change()


def test_a_turns_acks_of_one_partition_are_coalesced_into_the_last():
    reps = ReplicaManager(2, CONFIG)
    fetch = ReplicaFetch("u", 0, 2, 1, 5, 1, 1 << 20)
    reps.send(1, [ReplicaAck("t", 0, 2, 1, 1)])
    reps.send(1, [ReplicaAck("t", 1, 2, 1, 10), fetch])
    reps.send(1, [ReplicaAck("t", 0, 2, 1, 2)])
    reps.send(4, [ReplicaAck("t", 0, 2, 1, 7)])  # another leader's partition: its own
    reps.send(1, [ReplicaAck("t", 0, 2, 1, 3)])
    assert reps.take_outgoing() == {1: [ReplicaAck("t", 1, 2, 1, 10), fetch, ReplicaAck("t", 0, 2, 1, 3)],
                                    4: [ReplicaAck("t", 0, 2, 1, 7)]}
    assert reps.take_outgoing() == {}
    reps.send(1, [ReplicaAck("t", 0, 2, 1, 4)])  # a new turn starts afresh
    assert reps.take_outgoing() == {1: [ReplicaAck("t", 0, 2, 1, 4)]}
