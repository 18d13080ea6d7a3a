"""Replies that wait for an fsync (fabric/broker/durability.py) and the high watermark that
follows the fsync (BrokerCore.synced), without sockets or threads: the test plays the flusher."""

from __future__ import annotations

import cbor2
import pytest

from fabric.broker.config import BrokerConfig
from fabric.broker.core import BrokerCore
from fabric.broker.durability import DurableReplies
from fabric.broker.purgatory import WaitFor, WaitKey
from fabric.broker.replies import Reply
from fabric.log.config import LogConfig
from fabric.records.batch import encode_batch


class FakeLog:
    def __init__(self, end: int) -> None:
        self.end_offset = end


def reply(cid, *logs):
    return Reply({"op": "produce", "cid": cid}, flush=tuple(logs))


def cids(outbox):
    return [(peer, r.header["cid"]) for peer, r in outbox]


def never(r):
    raise AssertionError("synced on the spot")


def test_held_replies_leave_after_their_fsync_in_order_per_connection():
    d = DurableReplies(10)
    log_a = FakeLog(5)
    out = d.route([(b"x", reply(1, ("t", 0, log_a))), (b"y", reply(2)), (b"x", reply(3))], never)
    assert cids(out) == [(b"y", 2)]  # y is not held up by x; x's second reply queues behind its first
    job = d.handoff()
    assert job.ticket == 1 and job.logs == {WaitKey(WaitFor.DURABLE, "t", 0): (log_a, 5)}
    assert d.handoff() is None  # nothing new to sync
    later = d.route([(b"x", reply(4, ("t", 0, log_a)))], never)  # the next turn: the next ticket
    assert later == []
    job2 = d.handoff()
    assert cids(d.flushed(job, {})) == [(b"x", 1), (b"x", 3)]  # not 4: it waits for ticket 2
    assert cids(d.flushed(job2, {})) == [(b"x", 4)]
    assert len(d) == 0 and d.route([(b"x", reply(5))], never) != []  # nothing held: straight out
    assert d.purgatory.next_deadline_ms() is None and not d.purgatory._deadlines  # nothing kept


def test_a_long_run_keeps_nothing_behind():
    d = DurableReplies(4)
    plog = FakeLog(0)
    for i in range(1000):
        plog.end_offset = i + 1
        assert d.route([(b"x", reply(i, ("t", 0, plog)))], never) == []
        assert cids(d.flushed(d.handoff(), {})) == [(b"x", i)]
    assert len(d) == 0 and len(d.purgatory._deadlines) <= 1 and not d._queues


def test_a_failed_fsync_answers_storage_error_not_an_acknowledgement():
    d = DurableReplies(10)
    d.route([(b"x", reply(1, ("t", 0, FakeLog(1)), ("t", 1, FakeLog(1)))), (b"z", reply(2, ("t", 0, FakeLog(1))))],
            never)
    job = d.handoff()
    out = d.flushed(job, {WaitKey(WaitFor.DURABLE, "t", 1): "EIO"})
    assert cids(out) == [(b"x", 1), (b"z", 2)]
    assert out[0][1].header["error"]["name"] == "STORAGE_ERROR" and "error" not in out[1][1].header


def test_when_full_the_reply_is_synced_on_the_spot_keeping_the_order():
    d = DurableReplies(1)
    synced = []

    def flush_now(r):
        synced.append(r.header["cid"])
        return r
    out = d.route([(b"x", reply(1, ("t", 0, FakeLog(1)))), (b"x", reply(2, ("t", 1, FakeLog(1)))),
                   (b"y", reply(3, ("t", 1, FakeLog(1))))], flush_now)
    assert synced == [2, 3] and cids(out) == [(b"y", 3)]  # x's 2 still waits behind x's 1
    assert cids(d.flushed(d.handoff(), {})) == [(b"x", 1), (b"x", 2)]
    d.route([(b"x", reply(4, ("t", 0, FakeLog(2))))], never)
    assert cids(d.drain(flush_now)) == [(b"x", 4)] and synced[-1] == 4 and len(d) == 0


@pytest.fixture
def core(tmp_path):
    c = BrokerCore(BrokerConfig(data_dir=str(tmp_path / "d"), topic_defaults=LogConfig(flush_interval_ms=0)), 1000)
    c.handle(b"p", [cbor2.dumps({"op": "create_topics", "v": 1, "cid": 1,
                                 "topics": [{"name": "d", "configs": {"flush_every_batch": True}}]})], 1000)
    yield c
    c.close()


def test_the_high_watermark_of_a_flush_every_batch_partition_follows_the_fsync(core):
    fetch = {"op": "fetch", "v": 1, "cid": 2, "max_wait_ms": 1000, "min_bytes": 1,
             "partitions": [{"topic": "d", "partition": 0, "offset": 0}]}
    assert core.handle(b"c", [cbor2.dumps(fetch)], 1000) == []  # parked
    out = core.handle(b"p", [cbor2.dumps({"op": "produce", "v": 1, "cid": 3, "acks": 1,
                                          "batches": [{"topic": "d", "partition": 0}]}),
                             encode_batch([1], [None], [b"v"])], 1000)
    assert cids(out) == [(b"p", 3)]  # the consumer is not woken: the batch is not durable yet
    (topic, p, plog), = out[0][1].flush
    assert core.leadership.high_watermark("d", 0) == 0
    woken = core.synced([(topic, p, plog, plog.end_offset)], 1001)  # what the shell does once synced
    assert core.leadership.high_watermark("d", 0) == 1
    assert cids(woken) == [(b"c", 2)] and len(woken[0][1].frames[0]) > 0


def test_acks_0_needs_no_fsync_to_be_visible(core):
    out = core.handle(b"p", [cbor2.dumps({"op": "produce", "v": 1, "cid": 3, "acks": 0,
                                          "batches": [{"topic": "d", "partition": 0}]}),
                             encode_batch([1], [None], [b"v"])], 1000)
    assert out == [] and core.leadership.high_watermark("d", 0) == 1
