"""ControllerLogic (fabric/controller/logic.py): decisions as records, applied to the state as if
committed; sessions and elections on a manual clock (``now`` is a plain int)."""

from __future__ import annotations

import itertools
import logging

import pytest

from fabric.controller.logic import OFFSETS_TOPIC, ControllerLogic, LogicConfig
from fabric.controller.metadata import MetadataState
from fabric.protocol.errors import FabricError

TIMEOUT = LogicConfig().session_timeout_ms


class Harness:
    """A controller whose records commit at once, in order."""

    def __init__(self, brokers: int = 3, racks: bool = False) -> None:
        self.state = MetadataState()
        ids = itertools.count(1)
        self.logic = ControllerLogic(self.state, LogicConfig(), new_topic_id=lambda: f"id{next(ids)}")
        self.now = 0
        self.incarnation = {}
        for b in range(1, brokers + 1):
            self.register(b, rack=f"r{b % 2}" if racks else None)

    def do(self, decision):
        records, error, reply = decision
        for r in records:
            self.state.apply(r)
        return records, error, reply

    def register(self, b, incarnation=None, unclean=False, **kw):
        """Register ``b`` (again): by default after a clean end of its previous incarnation."""
        kw.setdefault("intact_since", None if unclean else self.incarnation.get(b))
        self.incarnation[b] = incarnation if incarnation is not None else self.incarnation.get(b, 0) + 1
        return self.do(self.logic.register(broker_id=b, incarnation=self.incarnation[b], host="127.0.0.1",
                                           port=9000 + b, pub_port=9100 + b, now_ms=self.now, **kw))

    def beat(self, *brokers, **kw):
        return [self.do(self.logic.heartbeat(broker_id=b, incarnation=self.incarnation[b],
                                             metadata_offset=self.state.offset, now_ms=self.now, **kw))
                for b in brokers]

    def tick(self, advance=0):
        self.now += advance
        return self.do(self.logic.tick(self.now))

    def part(self, name="orders", p=0):
        return self.state.topics[name].partitions[p]


@pytest.fixture
def h() -> Harness:
    h = Harness()
    _, error, reply = h.do(h.logic.create_topic(name="orders", partitions=3, replication_factor=3,
                                                configs={"min_insync_replicas": 2}, now_ms=0))
    assert error is None and reply["topic_id"] == "id1"
    return h


def test_create_topic_spreads_leaders(h):
    assert sorted(h.part(p=p).leader for p in range(3)) == [1, 2, 3]
    assert all(h.part(p=p).isr == h.part(p=p).replicas for p in range(3))
    assert h.state.topics["orders"].configs == {"min_insync_replicas": 2}
    assert h.logic.create_topic(name="orders", now_ms=0)[1] == "TOPIC_ALREADY_EXISTS"
    assert h.logic.create_topic(name="big", replication_factor=4, now_ms=0)[1] == "INVALID_REPLICATION_FACTOR"
    with pytest.raises(FabricError, match="INVALID_CONFIG"):
        h.logic.create_topic(name="x", replication_factor=2, configs={"min_insync_replicas": 3}, now_ms=0)
    with pytest.raises(FabricError, match="INVALID_CONFIG"):
        h.logic.create_topic(name="x", configs={"retention_ms": "soon"}, now_ms=0)
    with pytest.raises(FabricError, match="INVALID_TOPIC_NAME"):
        h.logic.create_topic(name="__mine", now_ms=0)


def test_a_pending_create_is_not_decided_twice():
    h = Harness()
    records, error, _ = h.logic.create_topic(name="t", now_ms=0)  # not applied yet
    assert records and error is None
    assert h.logic.create_topic(name="t", now_ms=0)[1] == "TOPIC_ALREADY_EXISTS"


def test_default_replication_factor_is_capped_at_live_brokers():
    h = Harness(brokers=2)
    _, error, reply = h.do(h.logic.create_topic(name="t", now_ms=0))
    assert error is None and reply["replication_factor"] == 2
    assert h.state.topics["t"].configs["min_insync_replicas"] == 1


def test_session_expiry_fences_and_moves_leadership(h):
    led = [p for p in range(3) if h.part(p=p).leader == 1]
    h.tick(TIMEOUT)
    h.beat(2, 3)
    records, _, _ = h.tick(1)
    assert [r["type"] for r in records][-1] == "fence_broker" and records[-1]["id"] == 1
    assert h.state.brokers[1].fenced
    for p in range(3):
        part = h.part(p=p)
        assert part.leader in (2, 3) and 1 not in part.isr  # it also left the ISRs it followed in
    for p in led:
        assert h.part(p=p).leader_epoch == 1 and h.part(p=p).partition_epoch == 1
        assert h.part(p=p).leader == [r for r in h.part(p=p).replicas if r != 1][0]  # first live, replica order
    assert h.tick(1)[0] == []  # decided once


def test_the_last_isr_member_dying_takes_the_partition_offline_until_it_returns(h):
    h.tick(TIMEOUT)
    h.beat(3)
    h.tick(1)  # 1 and 2 fenced
    part = h.part()
    assert part.leader == 3 and part.isr == [3]
    h.tick(TIMEOUT + 1)  # 3 fenced too
    part = h.part()
    assert part.leader == -1 and part.isr == [3]
    epoch = part.leader_epoch
    _, error, reply = h.beat(2)[0]  # 2 comes back: not in the ISR, so not elected (clean)
    assert error is None and reply["fenced"] is False and h.part().leader == -1
    h.beat(3)  # 3 comes back: leads again
    assert h.part().leader == 3 and h.part().leader_epoch == epoch + 1 and h.part().isr == [3]


def test_unclean_election_only_when_configured(caplog):
    h = Harness(brokers=2)
    h.do(h.logic.create_topic(name="u", replication_factor=2, configs={"unclean_leader_election": True},
                              now_ms=0))
    h.do(h.logic.create_topic(name="c", replication_factor=2, now_ms=0))
    for name in ("u", "c"):  # both ISRs shrink to broker 1 by the leader's own choice
        part = h.part(name)
        if part.leader != 1:
            h.beat(part.leader, wants_shutdown=False)
        part = h.part(name)
        h.do(h.logic.alter_partition(broker_id=part.leader, topic=name, partition=0, leader_epoch=part.leader_epoch,
                                     partition_epoch=part.partition_epoch, isr=[part.leader], now_ms=h.now))
    lone = {name: h.part(name).isr[0] for name in ("u", "c")}
    with caplog.at_level(logging.WARNING, logger="fabric.controller.logic"):
        h.tick(TIMEOUT)
        for b in (1, 2):
            if b != lone["u"]:
                h.beat(b)
        h.tick(1)
    assert h.part("u").leader not in (-1, lone["u"]) and h.part("u").isr == [h.part("u").leader]
    assert "UNCLEAN" in caplog.text
    if lone["c"] == lone["u"]:
        assert h.part("c").leader == -1 and h.part("c").isr == [lone["c"]]


def test_heartbeat_errors_and_reregistration(h):
    assert h.logic.heartbeat(broker_id=9, incarnation=1, now_ms=0)[1] == "UNKNOWN_BROKER"
    led = [p for p in range(3) if h.part(p=p).leader == 2]
    old = h.incarnation[2]
    h.register(2)  # restarted: a new incarnation
    assert h.logic.heartbeat(broker_id=2, incarnation=old, now_ms=0)[1] == "STALE_BROKER_EPOCH"
    assert h.logic.register(broker_id=2, incarnation=old, host="h", port=1, now_ms=0)[1] == "STALE_BROKER_EPOCH"
    for p in led:  # its old leaderships moved (its unflushed tail may be gone)
        assert h.part(p=p).leader != 2 and h.part(p=p).leader_epoch == 1
    assert h.beat(2)[0][2] == {"fenced": False, "metadata_offset": h.state.offset, "shutdown_ready": False}
    assert h.register(2, incarnation=h.incarnation[2])[0] == []  # a retry: nothing to do


def test_fenced_broker_is_unfenced_by_a_caught_up_heartbeat(h):
    h.tick(TIMEOUT)
    h.beat(1, 3)
    h.tick(1)
    assert h.state.brokers[2].fenced
    _, _, reply = h.do(h.logic.heartbeat(broker_id=2, incarnation=h.incarnation[2], metadata_offset=0,
                                         now_ms=h.now))
    assert reply["fenced"] is True  # not caught up with its own registration yet
    _, _, reply = h.beat(2)[0]
    assert reply["fenced"] is False and not h.state.brokers[2].fenced


def test_alter_partition_checks_epochs_and_isr(h):
    part = h.part()
    leader = part.leader
    follower = [r for r in part.replicas if r != leader][0]
    ask = dict(broker_id=leader, topic_id="id1", partition=0, leader_epoch=part.leader_epoch,
               partition_epoch=part.partition_epoch, now_ms=0)
    shrunk = [r for r in part.isr if r != follower]
    records, error, reply = h.do(h.logic.alter_partition(isr=shrunk, **ask))
    assert error is None and reply["partition_epoch"] == 1 and reply["isr"] == shrunk and h.part().isr == shrunk
    assert h.logic.alter_partition(isr=part.isr, **ask)[1] == "INVALID_UPDATE_VERSION"
    assert h.logic.alter_partition(isr=part.isr, **{**ask, "leader_epoch": 7})[1] == "FENCED_LEADER_EPOCH"
    assert h.logic.alter_partition(isr=part.isr, **{**ask, "broker_id": follower})[1] == "FENCED_LEADER_EPOCH"
    ask["partition_epoch"] = 1
    with pytest.raises(FabricError, match="INVALID_FIELD"):
        h.logic.alter_partition(isr=[follower], **ask)  # without the leader
    with pytest.raises(FabricError, match="INVALID_FIELD"):
        h.logic.alter_partition(isr=[leader, 42], **ask)
    _, error, reply = h.do(h.logic.alter_partition(isr=part.isr, **ask))  # the follower caught up
    assert error is None and sorted(h.part().isr) == sorted(part.isr) and h.part().leader_epoch == 0


def test_a_fenced_broker_does_not_rejoin_an_isr(h):
    part = h.part()
    follower = [r for r in part.replicas if r != part.leader][0]
    others = [b for b in (1, 2, 3) if b != follower]
    h.tick(TIMEOUT)
    h.beat(*others)
    h.tick(1)
    part = h.part()
    _, error, reply = h.do(h.logic.alter_partition(broker_id=part.leader, topic="orders", partition=0,
                                                   leader_epoch=part.leader_epoch, partition_epoch=part.partition_epoch,
                                                   isr=part.isr + [follower], now_ms=h.now))
    assert error is None and follower not in reply["isr"] and follower not in h.part().isr


def test_controlled_shutdown_moves_leaderships_then_fences(h):
    records, error, reply = h.beat(1, wants_shutdown=True)[0]
    assert error is None and reply["shutdown_ready"] is True and h.state.brokers[1].fenced
    assert records[-1]["type"] == "fence_broker"
    for p in range(3):
        assert h.part(p=p).leader in (2, 3) and 1 not in h.part(p=p).isr
    assert h.logic.create_topic(name="more", replication_factor=3, now_ms=0)[1] == "INVALID_REPLICATION_FACTOR"
    h.register(1)  # back after a restart: unfenced, and offline partitions (none here) led again
    assert not h.state.brokers[1].fenced


def test_controlled_shutdown_of_the_only_replica_takes_it_offline():
    h = Harness(brokers=1)
    h.do(h.logic.create_topic(name="one", now_ms=0))
    _, _, reply = h.do(h.logic.controlled_shutdown(broker_id=1, incarnation=1, now_ms=0))
    assert reply["shutdown_ready"] and h.part("one").leader == -1 and h.part("one").isr == [1]
    h.register(1)
    assert h.part("one").leader == 1 and h.part("one").leader_epoch == 2


def test_new_leader_starts_sessions_afresh(h):
    h.now = 10_000
    h.logic.on_became_leader(h.now)
    assert h.tick(TIMEOUT)[0] == []  # nobody is fenced for the previous controller's silence
    status = {s["id"]: s for s in h.logic.broker_status(h.now)}
    assert status[1]["since_heartbeat_ms"] == TIMEOUT and status[1]["fenced"] is False


def test_internal_offsets_topic():
    h = Harness(brokers=2)
    _, error, reply = h.do(h.logic.ensure_internal_topic(now_ms=0))
    t = h.state.topics[OFFSETS_TOPIC]
    assert error is None and t.internal and len(t.partitions) == 16 and len(t.partitions[0].replicas) == 2
    assert t.configs["min_insync_replicas"] == 2 and t.configs["cleanup_policy"] == "compact"
    assert h.do(h.logic.ensure_internal_topic(now_ms=0))[0] == []
    assert h.logic.delete_topic(name=OFFSETS_TOPIC, now_ms=0)[1] == "POLICY_VIOLATION"


def test_delete_topic(h):
    records, error, _ = h.do(h.logic.delete_topic(name="orders", now_ms=0))
    assert error is None and "orders" not in h.state.topics
    assert h.logic.delete_topic(name="orders", now_ms=0)[1] == "UNKNOWN_TOPIC_OR_PARTITION"


def test_rack_aware_creation():
    h = Harness(brokers=4, racks=True)
    h.do(h.logic.create_topic(name="r", partitions=4, replication_factor=2, now_ms=0))
    for part in h.state.topics["r"].partitions:
        assert len({h.state.brokers[b].rack for b in part.replicas}) == 2


def test_malformed_fields_raise_invalid_field(h):
    with pytest.raises(FabricError, match="INVALID_FIELD"):
        h.logic.heartbeat(broker_id="1", incarnation=1, now_ms=0)
    with pytest.raises(FabricError, match="INVALID_FIELD"):
        h.logic.register(broker_id=1, incarnation=1, host="", port=1, now_ms=0)


def test_uncommitted_decisions_are_not_taken_twice(h):
    h.tick(TIMEOUT)
    h.beat(2, 3)
    records, _, _ = h.logic.tick(h.now + 1)  # proposed, not committed yet
    assert records and records[-1] == {"type": "fence_broker", "id": 1, "incarnation": 1}
    assert h.logic.tick(h.now + 300)[0] == []  # the next ticks see them as pending
    status = {s["id"]: s for s in h.logic.broker_status(h.now)}
    assert status[1]["fenced"] is True and not h.state.brokers[1].fenced
    for r in records:
        h.state.apply(r)
    assert h.logic.tick(h.now + 600)[0] == []  # and once applied, nothing is left to do
    assert h.state.brokers[1].fenced


def test_controlled_shutdown_without_incarnation_and_unknown_broker(h):
    assert h.logic.controlled_shutdown(broker_id=9, now_ms=0)[1] == "UNKNOWN_BROKER"
    _, error, reply = h.do(h.logic.controlled_shutdown(broker_id=3, now_ms=0))
    assert error is None and reply["shutdown_ready"]


def test_a_late_commit_is_not_decided_again(h):
    """Regression (sim seed 12): pending records used to expire after a session timeout, and a
    commit later than that got decided a second time with the same epochs (refused at apply)."""
    h.tick(TIMEOUT)
    h.beat(2, 3)
    first, _, _ = h.logic.tick(h.now + 1)
    h.now += 3 * TIMEOUT
    h.beat(2, 3)
    assert h.logic.tick(h.now)[0] == []
    for r in first:
        h.state.apply(r)  # no RecordError: every change applies


def test_shutdown_moves_the_leaderships_of_a_topic_not_yet_committed():
    """Regression (sim seed 14): a create still pending was not seen by the shutdown, which fenced
    the broker that the create then made a leader."""
    h = Harness()
    created, _, _ = h.logic.create_topic(name="late", partitions=3, replication_factor=2, now_ms=0)
    leaders = {p["leader"] for p in created[0]["partitions"]}
    b = sorted(leaders)[0]
    moved, _, reply = h.logic.heartbeat(broker_id=b, incarnation=1, wants_shutdown=True, now_ms=0)
    assert reply["shutdown_ready"]
    for r in created + moved:
        h.state.apply(r)
    assert h.state.brokers[b].fenced
    assert all(p.leader != b for p in h.state.topics["late"].partitions)
