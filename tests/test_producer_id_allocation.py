"""Producer ids allocated through the controller (KIP-730; fabric/controller/logic_producer_ids.py,
fabric/broker/producer_id_blocks.py): blocks never overlap, not before they commit, not across a
controller failover, not after the state is rebuilt from a snapshot and the log after it; the
broker prefetches the next block and parks ``init_producer_id`` while it has none."""

from __future__ import annotations

import pytest

from fabric.broker.producer_id_blocks import ClusterProducerIds, ProducerIdBlocks
from fabric.clock import as_now
from fabric.controller.logic import ControllerLogic, LogicConfig
from fabric.controller.logic_producer_ids import BLOCK
from fabric.controller.metadata import MetadataState
from fabric.controller.records import RecordError, decode_record, encode_record
from fabric.protocol.errors import FabricError

from tests.test_controller_logic import Harness


def blocks(records):
    return [(r["start"], r["start"] + r["size"]) for r in records if r["type"] == "producer_ids"]


def disjoint(ranges) -> bool:
    ranges = sorted(ranges)
    return all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))


def allocate(h: Harness, broker: int = 1):
    return h.logic.allocate_producer_ids(broker_id=broker, incarnation=h.incarnation[broker], now_ms=h.now)


# ---------------------------------------------------------------- the controller's decision (rule 13)
def test_blocks_follow_each_other_and_start_above_the_old_per_broker_ids():
    h = Harness(brokers=3)
    got = []
    for b in (1, 2, 3, 1):
        records, error, reply = h.do(allocate(h, b))
        assert error is None and reply["size"] == BLOCK
        assert records == [{"type": "producer_ids", "broker_id": b, "incarnation": h.incarnation[b],
                            "start": reply["start"], "size": BLOCK}]
        got.append(reply["start"])
    assert got[0] == 4 << 32  # rule 14: above node id 3's (node id << 32 | counter) ids
    assert got == [got[0] + i * BLOCK for i in range(4)]
    assert h.state.next_producer_id_block_start == got[-1] + BLOCK


def test_two_requests_before_either_commits_get_different_blocks():
    h = Harness(brokers=2)
    first, _, _ = allocate(h, 1)
    second, _, _ = allocate(h, 2)
    assert disjoint(blocks(first) + blocks(second))
    for r in first + second:  # both commit, in order: both apply
        h.state.apply(r)
    third, _, _ = allocate(h, 1)  # the pending view dropped once the state caught up
    assert blocks(third)[0][0] == blocks(second)[0][1]


def test_unknown_and_stale_brokers_get_no_block():
    h = Harness(brokers=2)
    assert h.logic.allocate_producer_ids(broker_id=9, incarnation=1, now_ms=0)[1] == "UNKNOWN_BROKER"
    h.register(1)  # incarnation 2
    records, error, reply = h.logic.allocate_producer_ids(broker_id=1, incarnation=1, now_ms=0)
    assert (records, error, reply) == ([], "STALE_BROKER_EPOCH", {"incarnation": 2})
    with pytest.raises(FabricError):
        h.logic.allocate_producer_ids(broker_id=1, incarnation=True, now_ms=0)


def test_the_state_refuses_a_block_below_one_given_out_and_ids_past_int64():
    state = MetadataState()
    state.apply({"type": "producer_ids", "broker_id": 1, "incarnation": 1, "start": 5000, "size": 1000})
    for start in (4999, 5500, 0):
        with pytest.raises(RecordError):
            state.apply({"type": "producer_ids", "broker_id": 2, "incarnation": 1, "start": start, "size": 1000})
    assert state.next_producer_id_block_start == 6000
    with pytest.raises(RecordError):
        state.apply({"type": "producer_ids", "broker_id": 2, "incarnation": 1, "start": 2**63 - 10, "size": 1000})
    with pytest.raises(RecordError):  # (the schema: size 1..1000000)
        encode_record({"type": "producer_ids", "broker_id": 2, "incarnation": 1, "start": 7000, "size": 0})
    assert decode_record(encode_record({"type": "producer_ids", "broker_id": 2, "incarnation": 1, "start": 7000,
                                        "size": 10}))["start"] == 7000


# ---------------------------------------------------------------- failover and snapshots
def test_a_new_controller_leader_on_a_snapshot_plus_log_continues_past_every_block():
    """Voter A leads and grants blocks; the state is snapshotted mid-way and the rest of the log
    is replayed on voter B's copy; B, elected, never grants a block A granted (committed), and an
    uncommitted decision of A's (never answered) may be reused but is not held by anybody."""
    a = Harness(brokers=3)
    log: list[dict] = []
    for b in (1, 2, 3):
        records, _, _ = a.do(allocate(a, b))
        log += records
    snapshot = a.state.to_snapshot()
    at = a.state.offset
    records, _, _ = a.do(allocate(a, 1))
    tail = records
    granted = blocks(log + tail)
    unanswered, _, _ = allocate(a, 2)  # decided, never committed: A lost the lead before it did

    b_state = MetadataState.from_snapshot(snapshot)
    assert b_state.offset == at and b_state.next_producer_id_block_start == granted[2][1]
    for i, r in enumerate(tail, at + 1):
        b_state.apply(r, i)
    assert b_state == a.state  # the same bytes as the voter that applied everything
    b = ControllerLogic(b_state, LogicConfig())
    b.on_became_leader(a.now)
    mine = []
    for broker in (2, 3, 2):
        records, error, reply = b.allocate_producer_ids(broker_id=broker, incarnation=1, now_ms=a.now)
        assert error is None
        for r in records:
            b_state.apply(r)
        mine += blocks(records)
    assert disjoint(granted + mine)
    assert mine[0] == blocks(unanswered)[0]  # (the unanswered block: reused, harmlessly)


def test_snapshots_of_a_cluster_that_never_allocated_are_unchanged():
    """The new fields are absent while unset: an older release reads the snapshot, and the
    snapshot vector of SPEC 13.6 stays as it was."""
    h = Harness(brokers=2)
    body = h.state.to_snapshot()
    assert b"next_producer_id_block_start" not in body and b"decommissioned" not in body
    h.do(allocate(h, 1))
    body = h.state.to_snapshot()
    assert b"next_producer_id_block_start" in body
    again = MetadataState.from_snapshot(body)
    assert again.next_producer_id_block_start == h.state.next_producer_id_block_start and again == h.state


# ---------------------------------------------------------------- the broker's blocks
def test_the_broker_hands_out_each_id_once_and_prefetches_before_running_out():
    blocks_ = ProducerIdBlocks(prefetch_below=3, park_ms=100, retry_ms=50)
    assert blocks_.wants_block(0)  # nothing held: ask at once
    blocks_.asking()
    assert not blocks_.wants_block(0)  # one request at a time
    assert blocks_.on_block(100, 5) == []
    assert not blocks_.wants_block(0)
    assert [blocks_.take() for _ in range(2)] == [100, 101]
    assert not blocks_.wants_block(0)  # 3 left: not below prefetch_below
    assert blocks_.take() == 102
    assert blocks_.wants_block(0)  # 2 left: the next block is asked for before they run out
    blocks_.asking()
    blocks_.on_block(500, 5)
    assert [blocks_.take() for _ in range(5)] == [103, 104, 500, 501, 502]
    assert blocks_.available == 2


def test_a_request_without_an_id_is_parked_until_a_block_arrives_or_times_out():
    blocks_ = ProducerIdBlocks(park_ms=100, retry_ms=50)
    blocks_.park("a", 0)
    blocks_.park("b", 10)
    blocks_.asking()
    blocks_.on_failure()
    assert not blocks_.wants_block(20)  # a failure waits retry_ms from the next look
    assert blocks_.wants_block(70)
    assert blocks_.expire(105) == ["a"]
    blocks_.asking()
    assert blocks_.on_block(7, 1) == [("b", 7)]
    assert blocks_.parked == 0 and blocks_.take() is None


class FakeLink:
    registered = True
    incarnation = 5


class FakeNode:
    """What ``ClusterProducerIds`` uses of ``ClusterNode``: its id, link and ``forward``."""

    node_id = 2

    def __init__(self) -> None:
        self.link = FakeLink()
        self.forwarded: list[tuple[dict, object]] = []

    def forward(self, header, done, now_ms):
        self.forwarded.append((header, done))


def test_the_cluster_broker_parks_init_producer_id_and_answers_it_with_the_block():
    node = FakeNode()
    ids = ClusterProducerIds(node)
    assert ids.new_id(b"peer", 7, as_now(0)) == []  # parked; the block is asked for at once
    (header, done), = node.forwarded
    assert header == {"op": "allocate_producer_ids", "broker_id": 2, "incarnation": 5}
    (peer, reply), = done({"op": "allocate_producer_ids", "cid": -1, "start": 4000, "size": 1000,
                           "metadata_offset": 9})
    assert peer == b"peer" and reply.header == {"op": "init_producer_id", "cid": 7, "producer_id": 4000,
                                                "producer_epoch": 0}
    (_, reply), = ids.new_id(b"other", 8, as_now(1))
    assert reply.header["producer_id"] == 4001
    assert ids.tick(as_now(2)) == [] and len(node.forwarded) == 1  # 998 left: no prefetch yet


def test_a_parked_init_producer_id_times_out_retriably_when_the_controller_does_not_answer():
    node = FakeNode()
    ids = ClusterProducerIds(node)
    ids.new_id(b"peer", 7, as_now(0))
    _, done = node.forwarded[0]
    assert done({"error": FabricError("NOT_CONTROLLER", "x").to_wire()}) == []
    (peer, reply), = ids.tick(as_now(1000))
    assert reply.header["error"]["name"] == "REQUEST_TIMED_OUT"
    assert len(node.forwarded) == 1 and ids.tick(as_now(1100)) == [] and len(node.forwarded) == 1  # back-off
    ids.tick(as_now(1200))
    assert len(node.forwarded) == 2  # asked again
