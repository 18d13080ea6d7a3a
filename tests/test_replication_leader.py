"""LeaderReplica (fabric/replication/leader.py): each rule of its header, and the replication
messages' wire form (fabric/replication/messages.py)."""

from __future__ import annotations

import cbor2
import pytest

from fabric.log import LogConfig
from fabric.log.memory import MemoryLog
from fabric.protocol.errors import FabricError
from fabric.records.batch import encode_batch
from fabric.replication import PartitionState
from fabric.replication.config import ReplicationConfig
from fabric.replication.leader import IsrChange, LeaderReplica
from fabric.replication.messages import Push, ReplicaAck, ReplicaFetch, ReplicaFetchReply, from_wire

CONFIG = ReplicationConfig(replica_lag_ms=1_000, replica_fetch_idle_ms=100, isr_retry_ms=300)


def batch(n: int = 2, tag: bytes = b"v") -> bytearray:
    return bytearray(encode_batch([0] * n, [None] * n, [tag + b"%d" % i for i in range(n)]))


def make_leader(isr=(1, 2, 3), min_isr=2, epoch=1, log=None, now=0) -> LeaderReplica:
    return LeaderReplica(log or MemoryLog(LogConfig()), PartitionState(1), "t", 0, leader_epoch=epoch,
                         replicas=(1, 2, 3), isr=isr, now_ms=now, min_insync_replicas=min_isr, config=CONFIG)


def fetch(replica=2, offset=0, last_epoch=-1, epoch=1) -> ReplicaFetch:
    return ReplicaFetch("t", 0, replica, epoch, offset, last_epoch, 1 << 20)


def ack(replica, log_end, epoch=1) -> ReplicaAck:
    return ReplicaAck("t", 0, replica, epoch, log_end)


def test_a_new_leader_assigns_its_epoch_at_the_log_end_before_appending():
    log = MemoryLog(LogConfig())
    log.append(batch(3), 0, leader_epoch=1)
    lead = make_leader(log=log, epoch=4)
    assert log.leader_epochs()[-1] == (4, 3)  # before any batch of epoch 4 exists
    assert lead.append(batch(2), 0) == (3, 4)
    assert log.end_offset_for_epoch(1) == (1, 3)


def test_acks_all_is_refused_before_appending_when_the_isr_is_too_small():
    lead = make_leader(isr=(1,), min_isr=2)
    with pytest.raises(FabricError) as info:
        lead.append(batch(), 0, token="p1")
    assert info.value.name == "NOT_ENOUGH_REPLICAS"
    assert lead.log.end_offset == 0 and lead.waiting == 0
    assert lead.append(batch(), 0) == (0, 1)  # acks=1 still goes


def test_acks_all_is_answered_once_the_hw_passes_the_batch():
    lead = make_leader()
    assert lead.append(batch(2), 0, token="a") == (0, 1)
    assert lead.append(batch(2), 0, token="b") == (2, 3)
    assert lead.hw_moved() == []
    lead.on_ack(ack(2, 4), 1)
    assert lead.hw_moved() == [] and lead.high_watermark == 0  # 3 has not reported since the election
    lead.on_ack(ack(3, 2), 1)
    assert lead.high_watermark == 2 and lead.hw_moved() == ["a"]
    lead.on_fetch(fetch(3, 4, last_epoch=1), 2)
    assert lead.hw_moved() == ["b"] and lead.hw_moved() == [] and lead.waiting == 0


def test_a_waiter_stays_parked_while_the_isr_is_below_min_isr():
    """Rule 2: the HW of a lone leader passes the batch at once, but one copy is not an answer."""
    lead = make_leader()
    lead.append(batch(2), 0, token="a")
    lead.set_isr({1})
    assert lead.high_watermark == 2 and lead.hw_moved() == []
    lead.on_ack(ack(2, 2), 1)
    lead.set_isr({1, 2})  # 2 joined holding the batch: two copies now
    assert lead.hw_moved() == ["a"]


def test_the_hw_waits_for_a_replica_proposed_to_join_the_isr():
    """Regression (simulation seed 198): a lone leader proposed 2 for the ISR, kept appending and
    committing alone while the controller's answer travelled, and then counted 2 in the ISR though
    2 lacked the newest records: an acks=all batch was answered with one copy."""
    lead = make_leader(isr=(1,), min_isr=2)
    lead.append(batch(2), 0)
    lead.on_fetch(fetch(2, 0), 10)
    lead.on_ack(ack(2, 2), 10)
    change = lead.tick(20)
    assert change == IsrChange("t", 0, 1, 0, frozenset({1, 2}))
    assert lead.isr == {1}  # only the controller's answer changes it
    lead.append(batch(2), 30)  # while the answer travels
    assert lead.high_watermark == 2  # not 4: 2 is counted from the proposal on
    lead.set_isr(change.isr, partition_epoch=1)
    lead.append(batch(1), 40, token="x")
    assert lead.hw_moved() == [] and lead.high_watermark == 2
    lead.on_ack(ack(2, 5), 50)
    assert lead.high_watermark == 5 and lead.hw_moved() == ["x"]


def test_isr_proposals_shrink_laggards_and_expand_the_caught_up():
    lead = make_leader()
    lead.append(batch(4), 0)
    lead.on_fetch(fetch(2, 4, last_epoch=1), 500)
    assert lead.tick(900) is None
    change = lead.tick(1_001)  # 3 never caught up since the election at 0
    assert change is not None and change.isr == {1, 2} and change.leader_epoch == 1
    assert lead.tick(1_100) is None  # one outstanding proposal ...
    assert lead.tick(1_301) == change  # ... made again after isr_retry_ms
    assert lead.isr == {1, 2, 3}
    lead.set_isr(change.isr, partition_epoch=7)
    assert lead.isr == {1, 2} and lead.partition_epoch == 7 and lead.high_watermark == 4
    lead.on_fetch(fetch(3, 4, last_epoch=1), 1_400)
    grow = lead.tick(1_400)
    assert grow == IsrChange("t", 0, 1, 7, frozenset({1, 2, 3}))
    lead.set_isr(grow.isr, 8)
    assert lead.tick(1_500) is None  # the joiner counts as caught up when it last reported


def test_a_fetch_from_a_diverged_log_gets_the_divergence_point_and_counts_for_nothing():
    log = MemoryLog(LogConfig())
    log.append(batch(3), 0, leader_epoch=1)  # epoch 1: [0, 3)
    lead = make_leader(log=log, epoch=3)  # epoch 3 from 3
    lead.append(batch(2), 0)
    reply = lead.on_fetch(fetch(2, 5, last_epoch=2, epoch=3), 1)  # the follower wrote 3..5 in epoch 2
    assert reply.diverging_epoch == (1, 3) and reply.batches == b"" and reply.error is None
    assert lead.state.followers[2].log_end == -1
    reply = lead.on_fetch(fetch(2, 3, last_epoch=1, epoch=3), 1)  # after truncating to 3: agrees
    assert reply.diverging_epoch is None and reply.batches and lead.state.followers[2].log_end == 3
    assert (reply.fetch_offset, reply.log_end, reply.leader_epoch) == (3, 5, 3)
    reply = lead.on_fetch(fetch(3, 9, last_epoch=3, epoch=3), 1)  # past this epoch's end
    assert reply.diverging_epoch == (3, 5)
    reply = lead.on_fetch(fetch(3, 1, last_epoch=0, epoch=3), 1)  # older than the table: ends where it starts
    assert reply.diverging_epoch == (0, 0)
    reply = lead.on_fetch(fetch(3, 1, last_epoch=9, epoch=3), 1)  # one this leader never had
    assert reply.diverging_epoch == (-1, -1)


def test_fetches_and_acks_of_another_epoch_are_refused_or_ignored():
    lead = make_leader(epoch=5)
    lead.append(batch(2), 0)
    assert lead.on_fetch(fetch(epoch=4), 0).error == "FENCED_LEADER_EPOCH"
    assert lead.on_fetch(fetch(epoch=6), 0).error == "UNKNOWN_LEADER_EPOCH"
    assert lead.on_fetch(fetch(replica=9, epoch=5), 0).error == "REPLICA_NOT_AVAILABLE"
    lead.log.advance_start_offset(1)
    assert lead.on_fetch(fetch(offset=0, epoch=5), 0).error == "OFFSET_OUT_OF_RANGE"
    lead.on_ack(ack(2, 2, epoch=4), 0)  # stale: ignored
    assert lead.state.followers[2].log_end == -1
    lead.on_ack(ack(2, 2, epoch=5), 0)
    lead.on_ack(ack(2, 1, epoch=5), 0)  # a reordered older ack does not lower it
    lead.on_ack(ack(2, 7, epoch=5), 0)  # beyond the leader: ignored
    assert lead.state.followers[2].log_end == 2


def test_visible_hw_waits_for_the_epoch_start():
    """Rule 6: a new leader's HW may be below what its predecessor showed consumers."""
    log = MemoryLog(LogConfig())
    log.append(batch(4), 0, leader_epoch=1)
    lead = make_leader(log=log, epoch=2)
    assert lead.high_watermark == 0 and lead.visible_high_watermark is None
    lead.on_ack(ack(2, 4, epoch=2), 1)
    lead.on_ack(ack(3, 3, epoch=2), 1)
    assert lead.high_watermark == 3 and lead.visible_high_watermark is None
    lead.on_ack(ack(3, 4, epoch=2), 1)
    assert lead.visible_high_watermark == 4


def test_push_and_close():
    lead = make_leader()
    data = batch(2)
    base, _ = lead.append(data, 0, token="w")
    push = lead.push(base, data)
    assert (push.leader_epoch, push.base_offset, push.high_watermark, push.batch) == (1, 0, 0, bytes(data))
    assert lead.close() == ["w"]
    with pytest.raises(FabricError) as info:
        lead.append(batch(), 0)
    assert info.value.name == "NOT_LEADER"
    assert lead.on_fetch(fetch(), 0).error == "NOT_LEADER" and lead.tick(10_000) is None


def test_a_restarted_follower_is_forgotten_until_it_fetches():
    lead = make_leader(isr=(1, 2), min_isr=1)
    lead.append(batch(3), 0)
    lead.on_ack(ack(3, 3), 1)
    lead.forget_follower(3)  # it restarted and may have lost its tail
    assert lead.tick(2) is None  # 3 is not proposed on stale news
    lead.on_fetch(fetch(3, 3, last_epoch=1), 3)
    assert lead.tick(4).isr == {1, 2, 3}


@pytest.mark.parametrize("message", [
    Push("t", 1, 2, 3, 4, b"batch"),
    ReplicaFetch("t", 1, 2, 3, 4, -1, 100),
    ReplicaFetchReply("t", 1, 2, 3, None, 4, 0, 9, b"xy", None),
    ReplicaFetchReply("t", 1, 2, 3, "NOT_LEADER", 4, 0, 9, b"", (2, 7)),
    ReplicaAck("t", 1, 2, 3, 4),
])
def test_messages_round_trip_through_cbor(message):
    wire = cbor2.loads(cbor2.dumps(message.to_wire()))
    assert from_wire(wire) == message and type(message).from_wire(wire) == message


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("leader_epoch"),
    lambda d: d.update(leader_epoch=True),
    lambda d: d.update(leader_epoch=-1),
    lambda d: d.update(leader_epoch=1 << 40),
    lambda d: d.update(topic_id=""),
    lambda d: d.update(batches="text"),
    lambda d: d.update(error=3),
    lambda d: d.update(diverging_epoch=[1]),
    lambda d: d.update(diverging_epoch=[1, "x"]),
    lambda d: d.update(type="push"),
])
def test_malformed_messages_raise_value_error(mutate):
    d = ReplicaFetchReply("t", 1, 2, 3, None, 4, 0, 9, b"", (1, 2)).to_wire()
    mutate(d)
    with pytest.raises(ValueError):
        ReplicaFetchReply.from_wire(d)


@pytest.mark.parametrize("bad", [None, [], {"type": "nope"}, {"type": "replica_ack"}, "push"])
def test_from_wire_rejects_what_is_not_a_message(bad):
    with pytest.raises(ValueError):
        from_wire(bad)


def test_a_follower_dropped_for_lag_is_not_proposed_back_until_it_catches_up_again():
    """Regression (cluster simulation, the seed 545 scenario): the leader's followers stopped
    fetching at the HW; each tick the leader removed the one that lagged longest and proposed the
    other back (its last reported log end still equalled the HW), so the ISR flapped between two
    silent followers, a partition-epoch bump every retry, and acks=all was accepted but never
    committed."""
    lead = make_leader()
    lead.append(batch(4), 0)
    lead.on_fetch(fetch(2, 4, last_epoch=1), 100)
    lead.on_fetch(fetch(3, 4, last_epoch=1), 200)  # both caught up; then both go silent
    change = lead.tick(1_150)
    assert change is not None and change.isr == {1, 3}  # 2 lagged more than replica_lag_ms
    lead.set_isr(change.isr, partition_epoch=1)
    change = lead.tick(1_250)
    assert change is not None and change.isr == {1}  # 3 too, and 2 is not proposed back
    lead.set_isr(change.isr, partition_epoch=2)
    assert lead.tick(2_000) is None
    lead.on_fetch(fetch(2, 4, last_epoch=1), 2_100)  # 2 fetches again, caught up: back it comes
    assert lead.tick(2_100) == IsrChange("t", 0, 1, 2, frozenset({1, 2}))


# ---------------------------------------------------------------------- rule 7: incarnations (KIP-903)


def test_a_delayed_ack_of_a_previous_incarnation_does_not_count_toward_the_high_watermark():
    """Follower 3 acked log end 3 as incarnation 5, lost power and came back as incarnation 6 with
    nothing: the old ack, delivered late, must not commit what only the old process held."""
    lead = make_leader(isr=(1, 2, 3), min_isr=2)
    lead.set_incarnations({2: 7, 3: 5})
    lead.append(batch(3), 0, token="a")
    lead.on_fetch(ReplicaFetch("t", 0, 2, 1, 3, 1, 1 << 20, 7), 1)
    lead.on_fetch(ReplicaFetch("t", 0, 3, 1, 0, -1, 1 << 20, 6), 1)  # the new process: nothing held
    lead.on_ack(ReplicaAck("t", 0, 3, 1, 3, 5), 2)  # the old process's ack, late
    assert lead.high_watermark == 0 and lead.hw_moved() == []
    reply = lead.on_fetch(ReplicaFetch("t", 0, 3, 1, 3, 1, 1 << 20, 5), 3)  # and a late fetch of it
    assert reply.error == "STALE_BROKER_EPOCH" and lead.high_watermark == 0
    lead.on_ack(ReplicaAck("t", 0, 3, 1, 3, 6), 4)  # the new process caught up
    assert lead.high_watermark == 3 and lead.hw_moved() == ["a"]


def test_a_newer_registered_incarnation_forgets_the_followers_progress():
    lead = make_leader(isr=(1, 2), min_isr=1)
    lead.set_incarnations({2: 1, 3: 1})
    lead.append(batch(3), 0)
    lead.on_fetch(ReplicaFetch("t", 0, 3, 1, 3, 1, 1 << 20, 1), 1)
    lead.set_incarnations({2: 1, 3: 2})  # the metadata shows 3 restarted
    assert lead.tick(2) is None  # not proposed for the ISR on what its old process reported
    assert lead.on_fetch(ReplicaFetch("t", 0, 3, 1, 3, 1, 1 << 20, 1), 3).error == "STALE_BROKER_EPOCH"
    lead.on_fetch(ReplicaFetch("t", 0, 3, 1, 3, 1, 1 << 20, 2), 4)
    change = lead.tick(5)
    assert change.isr == {1, 2, 3} and change.incarnations == {2: 1, 3: 2}  # (the controller checks them)


def test_an_older_registered_incarnation_changes_nothing():
    lead = make_leader(isr=(1, 2), min_isr=1)
    lead.append(batch(2), 0)
    lead.on_fetch(ReplicaFetch("t", 0, 2, 1, 2, 1, 1 << 20, 9), 1)  # newer than the leader's metadata
    lead.set_incarnations({2: 8})  # the metadata catches up later, with an older registration
    assert lead.high_watermark == 2 and lead.state.followers[2].incarnation == 9
