"""FollowerReplica (fabric/replication/follower.py): each rule of its header, then a leader and a
follower back to back (h11's ConnectionPair idea), on memory logs and on the broker's EpochLog,
with lost pushes repaired by fetches."""

from __future__ import annotations

import pytest

from fabric.log import LogConfig
from fabric.log.epoch_log import EpochLog
from fabric.log.memory import MemoryLog
from fabric.records.batch import encode_batch, stamp
from fabric.replication import PartitionState
from fabric.replication.config import ReplicationConfig
from fabric.replication.follower import FollowerReplica
from fabric.replication.leader import LeaderReplica
from fabric.replication.messages import Push, ReplicaAck, ReplicaFetch, ReplicaFetchReply

CONFIG = ReplicationConfig(replica_lag_ms=1_000, replica_fetch_idle_ms=100, replica_fetch_timeout_ms=300)


def batch(n: int = 2, tag: bytes = b"v") -> bytearray:
    return bytearray(encode_batch([0] * n, [None] * n, [tag + b"%d" % i for i in range(n)]))


def leader_log(*sizes_and_epochs: tuple[int, int]) -> tuple[MemoryLog, list[bytes]]:
    """A log as a leader wrote it: batches of (record count, epoch); returns it and the batches."""
    log = MemoryLog(LogConfig())
    out = []
    for i, (n, epoch) in enumerate(sizes_and_epochs):
        data = batch(n, b"L%d-" % i)
        log.append(data, 0, leader_epoch=epoch)
        out.append(bytes(data))
    return log, out


def make_follower(log=None, epoch=1, now=0) -> FollowerReplica:
    return FollowerReplica(log or MemoryLog(LogConfig()), PartitionState(2), "t", 0, leader=1, leader_epoch=epoch,
                           replicas=(1, 2, 3), now_ms=now, config=CONFIG)


def reply_to(fetch: ReplicaFetch, batches: bytes = b"", hw: int = 0, log_end: int = 0, diverging=None,
             error=None) -> ReplicaFetchReply:
    return ReplicaFetchReply("t", 0, fetch.leader_epoch, fetch.fetch_offset, error, hw, 0, log_end, batches, diverging)


def validated(f: FollowerReplica, leader_end: int = 0, hw: int = 0) -> None:
    [fetch] = f.tick(0)
    f.on_fetch_reply(reply_to(fetch, hw=hw, log_end=leader_end), 0)
    assert f.validated


def test_a_new_follower_fetches_with_its_last_epoch_before_taking_pushes():
    log, batches = leader_log((2, 1), (3, 2))
    f = make_follower(log=log, epoch=3)
    [fetch] = f.tick(0)
    assert (fetch.fetch_offset, fetch.last_fetched_epoch, fetch.leader_epoch, fetch.replica) == (5, 2, 3, 2)
    assert f.tick(1) == []  # one fetch outstanding
    data = batch()
    stamp(data, 5, 3)
    push = Push("t", 0, 3, 5, 0, bytes(data))
    assert f.on_push(push, 1) == [] and log.end_offset == 5  # not validated yet: no append
    assert f.on_fetch_reply(reply_to(fetch, hw=5, log_end=5), 2) == []
    assert f.validated and f.high_watermark == 5
    [ack] = f.on_push(push, 3)
    assert ack == ReplicaAck("t", 0, 2, 3, 7) and log.end_offset == 7


def test_a_push_whose_batch_says_otherwise_is_not_appended():
    f = make_follower()
    validated(f)
    data = batch()
    stamp(data, 3, 1)  # stamped for offset 3, pushed as offset 0
    [fetch] = f.on_push(Push("t", 0, 1, 0, 0, bytes(data)), 1)
    assert fetch.fetch_offset == 0 and f.log.end_offset == 0
    f.restart_fetch()
    [fetch] = f.on_push(Push("t", 0, 1, 0, 0, b"\x00" * 9), 2)  # not even a header
    assert f.log.end_offset == 0


def test_pushes_append_at_the_log_end_only():
    f = make_follower()
    validated(f)
    _, (b0, b1, b2) = leader_log((2, 1), (2, 1), (2, 1))
    assert f.on_push(Push("t", 0, 1, 0, 0, b0), 1) == [ReplicaAck("t", 0, 2, 1, 2)]
    assert f.on_push(Push("t", 0, 1, 0, 2, b0), 1) == []  # a repeat: only its HW is taken
    assert f.high_watermark == 2
    assert f.on_push(Push("t", 0, 2, 2, 0, b1), 1) == []  # a newer epoch nobody told us of
    [gap] = f.on_push(Push("t", 0, 1, 4, 0, b2), 1)  # 2..4 lost: fetch from the log end
    assert isinstance(gap, ReplicaFetch) and gap.fetch_offset == 2
    assert f.on_push(Push("t", 0, 1, 4, 0, b2), 1) == []  # still one outstanding fetch
    assert f.on_push(Push("t", 0, 1, 2, 0, b1), 2) == [ReplicaAck("t", 0, 2, 1, 4)]  # (reordered) fits now
    # the fetch reply (b1 and b2) arrives: b1 is skipped, b2 appended, and the leader told
    assert f.on_fetch_reply(reply_to(gap, b1 + b2, hw=4, log_end=6), 3) == [ReplicaAck("t", 0, 2, 1, 6)]
    assert f.log.end_offset == 6 and f.high_watermark == 4 and not f.fetch_outstanding


def test_a_fetch_without_reply_is_sent_again_and_a_stale_reply_is_dropped():
    f = make_follower()
    [first] = f.tick(0)
    assert f.tick(299) == []
    [again] = f.tick(300)
    assert again.fetch_offset == first.fetch_offset
    stale = ReplicaFetchReply("t", 0, 1, 7, None, 0, 0, 0, b"", None)  # echoes an offset we did not ask
    assert f.on_fetch_reply(stale, 301) == [] and f.fetch_outstanding
    f.on_fetch_reply(reply_to(again), 302)
    assert f.on_fetch_reply(reply_to(first), 303) == []  # nothing outstanding: a late duplicate


def test_fetched_garbage_is_not_appended():
    _, (b0,) = leader_log((2, 1))
    f = make_follower()
    [fetch] = f.tick(0)
    assert f.on_fetch_reply(reply_to(fetch, b0[:20], hw=0, log_end=2), 1) == []  # a torn batch
    assert f.log.end_offset == 0 and f.validated


def test_a_reply_with_more_fetches_again_at_once():
    _, (b0, b1) = leader_log((2, 1), (2, 1))
    f = make_follower()
    [fetch] = f.tick(0)
    [more] = f.on_fetch_reply(reply_to(fetch, b0, hw=2, log_end=4), 1)
    assert more.fetch_offset == 2 and f.high_watermark == 2
    assert f.on_fetch_reply(reply_to(more, b1, hw=2, log_end=4), 2) == [ReplicaAck("t", 0, 2, 1, 4)]


def test_divergence_truncates_and_fetches_again():
    """The follower wrote [0,2) in epoch 1 and [2,5) in epoch 2 (never committed); the new leader
    of epoch 3 has epoch 1 up to 2 then its own epoch 3."""
    log, _ = leader_log((2, 1), (3, 2))
    f = make_follower(log=log, epoch=3)
    [fetch] = f.tick(0)
    [again] = f.on_fetch_reply(reply_to(fetch, diverging=(1, 2), log_end=4), 1)
    assert log.end_offset == 2 and (again.fetch_offset, again.last_fetched_epoch) == (2, 1)
    assert not f.validated


def test_divergence_from_an_epoch_nobody_knows_truncates_to_the_hw():
    log, _ = leader_log((2, 1), (3, 2))
    f = make_follower(log=log, epoch=3)
    f.state.follower_fetched(5, 2)  # (its HW was 2)
    [fetch] = f.tick(0)
    [again] = f.on_fetch_reply(reply_to(fetch, diverging=(-1, -1)), 1)
    assert log.end_offset == 2 and again.fetch_offset == 2 and f.high_watermark == 2


def test_becoming_follower_drops_an_epoch_it_assigned_as_leader_and_never_used():
    log, _ = leader_log((2, 1))
    log.assign_epoch(2, 2)  # this replica led epoch 2 and appended nothing
    f = make_follower(log=log, epoch=3)
    [fetch] = f.tick(0)
    assert fetch.last_fetched_epoch == 1


def test_a_refused_fetch_is_retried_after_the_idle_interval_not_at_once():
    f = make_follower(epoch=4)
    [fetch] = f.tick(0)
    assert f.on_fetch_reply(reply_to(fetch, error="UNKNOWN_LEADER_EPOCH"), 10) == []
    assert f.tick(11) == [] and f.tick(109) == []
    [again] = f.tick(110)
    assert again.leader_epoch == 4


def test_the_idle_fetch_repairs_a_lost_last_push():
    f = make_follower()
    validated(f)
    assert f.tick(99) == []
    [fetch] = f.tick(100)  # nothing heard for replica_fetch_idle_ms
    assert fetch.fetch_offset == 0


def test_the_follower_hw_never_goes_back():
    _, (b0, b1) = leader_log((2, 1), (2, 1))
    f = make_follower()
    validated(f)
    f.on_push(Push("t", 0, 1, 0, 2, b0), 1)
    f.on_push(Push("t", 0, 1, 2, 4, b1), 1)
    assert f.high_watermark == 4
    f.on_push(Push("t", 0, 1, 0, 1, b0), 2)  # an old repeat with an old HW
    assert f.high_watermark == 4


def test_leader_start_offset_past_the_follower_log():
    f = make_follower()
    [fetch] = f.tick(0)
    r = ReplicaFetchReply("t", 0, 1, 0, "OFFSET_OUT_OF_RANGE", 9, 7, 12, b"", None)
    [again] = f.on_fetch_reply(r, 1)
    assert f.log.start_offset == f.log.end_offset == again.fetch_offset == 7


@pytest.mark.parametrize("backend", ["memory", "files"])
def test_leader_and_follower_back_to_back_with_lost_pushes(backend, tmp_path):
    """The real pair: every other push is lost; acks and fetches carry everything, and acks=all is
    answered once the follower holds the batch.  On memory logs and on the broker's ``EpochLog``
    over segment files."""
    def open_log(name: str):
        if backend == "memory":
            return MemoryLog(LogConfig())
        return EpochLog.open(tmp_path / name, LogConfig(), 0)

    lead = LeaderReplica(open_log("leader"), PartitionState(1), "t", 0, leader_epoch=1, replicas=(1, 2),
                         isr=(1, 2), now_ms=0, min_insync_replicas=2, config=CONFIG)
    f = make_follower(log=open_log("follower"))

    def to_leader(messages, now):
        for m in messages:
            if isinstance(m, ReplicaFetch):
                to_leader(f.on_fetch_reply(lead.on_fetch(m, now), now), now)
            else:
                lead.on_ack(m, now)

    to_leader(f.tick(0), 0)
    answered = []
    for i in range(10):
        now = 10 * i
        data = batch(1 + i % 3, b"%d-" % i)
        base, _ = lead.append(data, now, token=i)
        if i % 2 == 0:
            to_leader(f.on_push(lead.push(base, data), now), now)
        to_leader(f.tick(now), now)
        answered += lead.hw_moved()
    for now in range(100, 400, 50):
        to_leader(f.tick(now), now)
        answered += lead.hw_moved()
    assert sorted(answered) == list(range(10))
    assert f.log.read(0, 1 << 20) == lead.log.read(0, 1 << 20)
    assert lead.high_watermark == f.high_watermark == lead.log.end_offset
    assert f.log.leader_epochs() == lead.log.leader_epochs() == [(1, 0)]
    lead.log.close()
    f.log.close()
