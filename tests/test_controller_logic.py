"""ControllerLogic (fabric/controller/logic.py): sessions and fencing, leader election from the
ISR, offline partitions, unclean election, topic creation and deletion, alter_partition's epoch
checks, controlled shutdown, and a controller failover re-deriving its soft state.

Every test drives the logic the way the controller shell does: a decision's records are applied
to the ``MetadataState`` (as if Raft committed them) before the next call."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from fabric.controller.codes import FENCED_LEADER_EPOCH, INVALID_UPDATE_VERSION, STALE_BROKER_EPOCH, UNKNOWN_BROKER
from fabric.controller.logic import OFFSETS_TOPIC, ControllerLogic, LogicConfig
from fabric.controller.metadata import MetadataState, encode_record, decode_record
from fabric.protocol.errors import FabricError


class Cluster:
    """A state, the logic over it, and a commit step that applies every returned record."""

    def __init__(self, brokers: int = 3, racks: dict[int, str] | None = None) -> None:
        self.state = MetadataState()
        ids = iter(f"topic-{i}" for i in range(1000))
        self.logic = ControllerLogic(self.state, LogicConfig(), new_topic_id=lambda: next(ids))
        self.now = 0
        for b in range(1, brokers + 1):
            self.do(self.logic.register(b, 1, "127.0.0.1", 9000 + b, self.now, pub_port=9100 + b,
                                        rack=(racks or {}).get(b)))

    def do(self, decision: tuple[list[dict[str, Any]], str | None, dict[str, Any]]) -> tuple[str | None, dict]:
        records, error, reply = decision
        for r in records:
            self.state.apply(decode_record(encode_record(r)))  # through the bytes, as Raft carries them
        return error, reply

    def beat(self, *brokers: int) -> None:
        for b in brokers:
            self.do(self.logic.heartbeat(b, self.state.brokers[b].incarnation, self.now, self.state.offset))

    def advance(self, ms: int, alive: tuple[int, ...]) -> None:
        """Move time in heartbeat steps; only ``alive`` brokers heartbeat; tick after each step."""
        end = self.now + ms
        while self.now < end:
            self.now = min(end, self.now + 250)
            self.beat(*alive)
            self.do(self.logic.tick(self.now))

    def part(self, name: str = "orders", p: int = 0):
        return self.state.topics[name].partitions[p]


@pytest.fixture
def c() -> Cluster:
    return Cluster()


def test_registration_and_topic_placement_spread_leaders(c: Cluster) -> None:
    assert c.state.live_brokers() == [1, 2, 3]
    err, reply = c.do(c.logic.create_topic("orders", c.now, partitions=6, replication_factor=3))
    assert err is None and reply["replication_factor"] == 3
    leaders = [p.leader for p in c.state.topics["orders"].partitions]
    assert sorted(leaders) == [1, 1, 2, 2, 3, 3]
    for p in c.state.topics["orders"].partitions:
        assert sorted(p.replicas) == [1, 2, 3] and p.isr == p.replicas and p.leader == p.replicas[0]
    assert c.state.topics["orders"].configs["min_insync_replicas"] == 1


def test_create_topic_errors(c: Cluster) -> None:
    assert c.do(c.logic.create_topic("orders", c.now, partitions=1, replication_factor=4))[0] \
        == "INVALID_REPLICATION_FACTOR"
    assert c.do(c.logic.create_topic("orders", c.now, partitions=1))[0] is None
    assert c.do(c.logic.create_topic("orders", c.now, partitions=1))[0] == "TOPIC_ALREADY_EXISTS"
    with pytest.raises(FabricError) as e:
        c.logic.create_topic("bad name!", c.now)
    assert e.value.name == "INVALID_TOPIC_NAME"
    with pytest.raises(FabricError) as e:
        c.logic.create_topic("zero", c.now, partitions=0)
    assert "partitions" in str(e.value)
    with pytest.raises(FabricError) as e:
        c.logic.create_topic("minisr", c.now, replication_factor=2, configs={"min_insync_replicas": 3})
    assert e.value.name == "INVALID_CONFIG"


def test_default_rf_is_capped_at_live_brokers() -> None:
    c = Cluster(brokers=2)
    err, reply = c.do(c.logic.create_topic("orders", c.now, partitions=2))
    assert err is None and reply["replication_factor"] == 2


def test_rf_counts_only_live_brokers(c: Cluster) -> None:
    c.advance(2000, alive=(1, 2))
    assert c.state.brokers[3].fenced
    assert c.do(c.logic.create_topic("orders", c.now, replication_factor=3))[0] == "INVALID_REPLICATION_FACTOR"


def test_expired_session_fences_and_moves_leadership(c: Cluster) -> None:
    c.do(c.logic.create_topic("orders", c.now, partitions=3, replication_factor=3))
    led_by_1 = [i for i, p in enumerate(c.state.topics["orders"].partitions) if p.leader == 1]
    before = {i: c.part(p=i).leader_epoch for i in range(3)}
    c.advance(1500, alive=(1, 2, 3))
    assert not c.state.brokers[1].fenced  # heartbeats keep the session
    c.advance(1750, alive=(2, 3))
    assert c.state.brokers[1].fenced
    for i in range(3):
        p = c.part(p=i)
        assert 1 not in p.isr and p.leader in (2, 3)
        if i in led_by_1:
            assert p.leader_epoch == before[i] + 1
            assert p.leader == [r for r in p.replicas if r != 1][0]  # first live ISR member in replica order
        else:
            assert p.leader_epoch == before[i]  # only the ISR shrank


def test_last_isr_member_dying_takes_partition_offline_and_back(c: Cluster) -> None:
    c.do(c.logic.create_topic("orders", c.now, partitions=1, replication_factor=2))
    leader, other = c.part().replicas
    alive = tuple(b for b in (1, 2, 3) if b != other)
    c.advance(2000, alive=alive)  # the follower dies: ISR shrinks to the leader
    assert c.part().isr == [leader]
    alive = tuple(b for b in alive if b != leader)
    epoch = c.part().leader_epoch
    c.advance(2000, alive=alive)  # the last ISR member dies: offline, ISR kept
    assert c.part().leader == -1 and c.part().isr == [leader] and c.part().leader_epoch == epoch + 1
    # the follower comes back: it is not in the ISR, so no clean election
    c.beat(other)
    c.advance(500, alive=alive + (other,))
    assert c.part().leader == -1
    # the last ISR member comes back and catches up: it leads again, one epoch later
    c.beat(leader)
    c.advance(500, alive=alive + (other, leader))
    assert not c.state.brokers[leader].fenced
    assert c.part().leader == leader and c.part().leader_epoch == epoch + 2


def test_unclean_election_only_when_configured(c: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    c.do(c.logic.create_topic("orders", c.now, partitions=1, replication_factor=2,
                              configs={"unclean_leader_election": True}))
    leader, other = c.part().replicas
    rest = tuple(b for b in (1, 2, 3) if b not in (leader, other))
    c.advance(2000, alive=rest + (leader,))
    c.advance(2000, alive=rest)
    assert c.part().leader == -1
    with caplog.at_level(logging.WARNING, logger="fabric.controller.logic"):
        c.beat(other)
        c.advance(500, alive=rest + (other,))
    assert c.part().leader == other and c.part().isr == [other]
    assert any("UNCLEAN" in r.getMessage() for r in caplog.records)


def test_unfence_waits_for_metadata_catch_up(c: Cluster) -> None:
    c.advance(2000, alive=(1, 2))
    assert c.state.brokers[3].fenced
    epoch = c.state.brokers[3].epoch
    c.do(c.logic.heartbeat(3, 1, c.now, metadata_offset=epoch - 1))
    assert c.state.brokers[3].fenced
    err, reply = c.do(c.logic.heartbeat(3, 1, c.now, metadata_offset=epoch))
    assert err is None and not c.state.brokers[3].fenced


def test_new_incarnation_replaces_old_and_moves_its_leaderships(c: Cluster) -> None:
    c.do(c.logic.create_topic("orders", c.now, partitions=3, replication_factor=3))
    led = [i for i in range(3) if c.part(p=i).leader == 2]
    assert led
    err, _ = c.do(c.logic.register(2, 2, "127.0.0.1", 9002, c.now, pub_port=9102))
    assert err is None and c.state.brokers[2].incarnation == 2 and not c.state.brokers[2].fenced
    for i in led:
        assert c.part(p=i).leader != 2 and 2 not in c.part(p=i).isr
    assert c.do(c.logic.register(2, 1, "127.0.0.1", 9002, c.now))[0] == STALE_BROKER_EPOCH
    assert c.do(c.logic.heartbeat(2, 1, c.now))[0] == STALE_BROKER_EPOCH
    assert c.do(c.logic.heartbeat(9, 1, c.now))[0] == UNKNOWN_BROKER


def test_alter_partition_checks_epochs_and_membership(c: Cluster) -> None:
    c.do(c.logic.create_topic("orders", c.now, partitions=1, replication_factor=3))
    p = c.part()
    tid = c.state.topics["orders"].topic_id
    leader, f1, f2 = p.replicas
    err, reply = c.do(c.logic.alter_partition(leader, 0, p.leader_epoch, p.partition_epoch, [leader, f1], c.now,
                                              topic_id=tid))
    assert err is None and reply["partition_epoch"] == 1 and c.part().isr == [leader, f1]
    # a stale partition epoch and a stale leader epoch / not the leader are refused, state untouched
    assert c.do(c.logic.alter_partition(leader, 0, 0, 0, [leader], c.now, topic_id=tid))[0] == INVALID_UPDATE_VERSION
    assert c.do(c.logic.alter_partition(f1, 0, 0, 1, [f1], c.now, topic_id=tid))[0] == FENCED_LEADER_EPOCH
    assert c.do(c.logic.alter_partition(leader, 0, 5, 1, [leader], c.now, topic_id=tid))[0] == FENCED_LEADER_EPOCH
    assert c.part().isr == [leader, f1]
    with pytest.raises(FabricError):  # the ISR must hold the leader
        c.logic.alter_partition(leader, 0, 0, 1, [f1], c.now, topic_id=tid)
    with pytest.raises(FabricError):  # and only replicas
        c.logic.alter_partition(leader, 0, 0, 1, [leader, 7], c.now, topic_id=tid)
    assert c.do(c.logic.alter_partition(leader, 0, 0, 1, [leader], c.now, topic="nope"))[0] \
        == "UNKNOWN_TOPIC_OR_PARTITION"
    # expansion back; a fenced broker is not added
    c.advance(2000, alive=(leader, f1))
    p = c.part()
    err, reply = c.do(c.logic.alter_partition(leader, 0, p.leader_epoch, p.partition_epoch, [leader, f1, f2], c.now,
                                              topic_id=tid))
    assert err is None and sorted(c.part().isr) == sorted([leader, f1])


def test_controlled_shutdown_moves_leaderships_then_is_ready(c: Cluster) -> None:
    c.do(c.logic.create_topic("orders", c.now, partitions=3, replication_factor=2))
    assert any(c.part(p=i).leader == 1 for i in range(3))
    err, reply = c.do(c.logic.controlled_shutdown(1, 1, c.now, c.state.offset))
    assert err is None
    assert all(c.part(p=i).leader != 1 for i in range(3))
    err, reply = c.do(c.logic.controlled_shutdown(1, 1, c.now, c.state.offset))
    assert reply["shutdown_ready"] and c.state.brokers[1].fenced
    assert all(1 not in c.part(p=i).isr or c.part(p=i).isr == [1] for i in range(3))


def test_delete_topic_and_internal_topic(c: Cluster) -> None:
    c.do(c.logic.create_topic("orders", c.now))
    assert c.do(c.logic.delete_topic("orders", c.now))[0] is None and "orders" not in c.state.topics
    assert c.do(c.logic.delete_topic("orders", c.now))[0] == "UNKNOWN_TOPIC_OR_PARTITION"
    err, reply = c.do(c.logic.ensure_internal_topic(c.now))
    t = c.state.topics[OFFSETS_TOPIC]
    assert err is None and t.internal and len(t.partitions[0].replicas) == 3
    assert t.configs["min_insync_replicas"] == 2
    assert c.do(c.logic.ensure_internal_topic(c.now)) == (None, {"topic_id": t.topic_id})  # once
    assert c.do(c.logic.delete_topic(OFFSETS_TOPIC, c.now))[0] == "POLICY_VIOLATION"


def test_internal_topic_rf_is_capped_by_live_brokers() -> None:
    c = Cluster(brokers=1)
    c.do(c.logic.ensure_internal_topic(c.now))
    assert c.state.topics[OFFSETS_TOPIC].partitions[0].replicas == [1]


def test_pending_changes_are_not_decided_twice(c: Cluster) -> None:
    """Before the records of a tick commit, the next tick must not propose them again."""
    c.do(c.logic.create_topic("orders", c.now, partitions=3, replication_factor=3))
    c.now += 2000
    c.beat(2, 3)
    records, _, _ = c.logic.tick(c.now)
    assert records
    again, _, _ = c.logic.tick(c.now + 300)  # nothing applied yet
    assert again == []


def test_failover_starts_sessions_fresh(c: Cluster) -> None:
    """A new controller leader knows no heartbeats: every broker gets a full session from now."""
    c.do(c.logic.create_topic("orders", c.now, partitions=1))
    c.now = 10_000  # the old controller died long ago; nobody heartbeated the new one yet
    logic = ControllerLogic(c.state, LogicConfig())
    logic.on_became_leader(c.now)
    assert logic.tick(c.now + 1000)[0] == []
    records, _, _ = logic.tick(c.now + 1600)
    assert {r["id"] for r in records if r["type"] == "fence_broker"} == {1, 2, 3}
