"""ControllerLogic's operator decisions (fabric/controller/logic_admin.py): topic growth and
configs, reassignment state transitions, decommission and preferred-leader election, sans-I/O on
a manual clock, records applied as if committed."""

from __future__ import annotations

import pytest

from fabric.controller.logic import ControllerLogic, LogicConfig
from fabric.controller.metadata import MetadataState
from fabric.controller.records import RecordError
from fabric.protocol.errors import FabricError

from tests.test_controller_logic import Harness

TIMEOUT = LogicConfig().session_timeout_ms


def make(brokers: int = 4, partitions: int = 2, rf: int = 3) -> Harness:
    h = Harness(brokers)
    _, error, _ = h.do(h.logic.create_topic(name="orders", partitions=partitions, replication_factor=rf,
                                            configs={"min_insync_replicas": 2}, now_ms=0))
    assert error is None
    return h


def alter_isr(h: Harness, isr, p: int = 0):
    cur = h.part(p=p)
    return h.do(h.logic.alter_partition(broker_id=cur.leader, partition=p, leader_epoch=cur.leader_epoch,
                                        partition_epoch=cur.partition_epoch, isr=list(isr), now_ms=h.now,
                                        topic="orders"))


def reassign(h: Harness, replicas, p: int = 0):
    records, error, reply = h.do(h.logic.alter_partition_reassignments(
        reassignments=[{"topic": "orders", "partition": p, "replicas": replicas}], now_ms=h.now))
    assert error is None
    return records, reply["results"][0]


# ---------------------------------------------------------------- growth and configs
def test_create_partitions_places_new_partitions_across_brokers_and_only_grows():
    h = make(brokers=4, partitions=2, rf=2)
    records, error, reply = h.do(h.logic.create_partitions(topic="orders", count=6, now_ms=0))
    assert error is None and reply == {"name": "orders", "partitions": 6}
    assert [r["type"] for r in records] == ["create_partitions"]
    parts = h.state.topics["orders"].partitions
    assert len(parts) == 6 and all(len(p.replicas) == 2 and p.isr == p.replicas for p in parts)
    leaders = [p.leader for p in parts]
    assert sorted(set(leaders)) == [1, 2, 3, 4]  # spread: every broker leads some
    with pytest.raises(FabricError) as e:
        h.logic.create_partitions(topic="orders", count=6, now_ms=0)
    assert e.value.name == "INVALID_PARTITIONS"
    assert h.logic.create_partitions(topic="nope", count=3, now_ms=0)[1] == "UNKNOWN_TOPIC_OR_PARTITION"


def test_two_growths_before_either_commits_do_not_add_twice():
    h = make(brokers=3, partitions=1)
    first, _, _ = h.logic.create_partitions(topic="orders", count=3, now_ms=0)
    with pytest.raises(FabricError):  # the pending view already has 3
        h.logic.create_partitions(topic="orders", count=3, now_ms=0)
    second, _, _ = h.logic.create_partitions(topic="orders", count=4, now_ms=0)
    for r in first + second:
        h.state.apply(r)
    assert len(h.state.topics["orders"].partitions) == 4


def test_alter_topic_configs_writes_the_whole_map_and_validates():
    h = make()
    _, error, reply = h.do(h.logic.alter_topic_configs(topic="orders", set={"retention_ms": 60_000,
                                                                          "replication_throttle_bytes": 1000},
                                                       now_ms=0))
    assert error is None
    configs = h.state.topics["orders"].configs
    assert configs["retention_ms"] == 60_000 and configs["min_insync_replicas"] == 2
    assert configs["replication_throttle_bytes"] == 1000
    h.do(h.logic.alter_topic_configs(topic="orders", delete=["retention_ms"], now_ms=0))
    assert "retention_ms" not in h.state.topics["orders"].configs
    with pytest.raises(FabricError) as e:
        h.logic.alter_topic_configs(topic="orders", set={"min_insync_replicas": 4}, now_ms=0)
    assert e.value.name == "INVALID_CONFIG"
    with pytest.raises(FabricError):
        h.logic.alter_topic_configs(topic="orders", set={"no_such_key": 1}, now_ms=0)


# ---------------------------------------------------------------- reassignment (rules 8-10)
def test_reassignment_adds_then_completes_when_every_target_replica_is_in_sync():
    h = make()
    cur = h.part()
    old = list(cur.replicas)
    target = [2, 3, 4] if old != [2, 3, 4] else [1, 2, 3]
    adding = [b for b in target if b not in old]
    removing = [b for b in old if b not in target]
    records, row = reassign(h, target)
    assert "error" not in row and len(records) == 1
    cur = h.part()
    assert cur.replicas == target + removing and cur.adding == adding and cur.removing == removing
    assert cur.isr == old and cur.leader == old[0]  # untouched: the new replicas must catch up first
    assert h.logic.list_partition_reassignments(now_ms=0)[2]["reassignments"][0]["adding"] == adding
    # The leader proposes the caught-up newcomer: the same decision completes the move (rule 9).
    records, error, _ = alter_isr(h, old + adding)
    assert error is None and len(records) == 2
    cur = h.part()
    assert cur.replicas == target and cur.adding == [] and cur.removing == []
    assert sorted(cur.isr) == sorted(target) and cur.leader == target[0]  # the preferred replica leads
    assert h.logic.list_partition_reassignments(now_ms=0)[2]["reassignments"] == []


def test_reassignment_to_a_subset_in_sync_completes_at_once():
    h = make(brokers=3)
    old = list(h.part().replicas)
    records, row = reassign(h, old[1:])
    assert len(records) == 2
    cur = h.part()
    assert cur.replicas == old[1:] and cur.leader == old[1] and old[0] not in cur.isr


def test_a_reorder_of_the_same_replicas_moves_leadership_to_the_new_first():
    h = make(brokers=3)
    old = list(h.part().replicas)
    records, row = reassign(h, old[1:] + old[:1])
    assert "error" not in row and len(records) == 2
    cur = h.part()
    assert cur.replicas == old[1:] + old[:1] and cur.leader == old[1] and cur.adding == cur.removing == []


def test_cancel_restores_the_original_replicas_and_cancel_without_one_is_an_error():
    h = make()
    old = list(h.part().replicas)
    spare = next(b for b in [1, 2, 3, 4] if b not in old)
    reassign(h, [spare] + old[1:])
    assert h.part().adding == [spare]
    records, row = reassign(h, None)
    assert "error" not in row
    cur = h.part()  # (the original set; its order is the target's, then the replicas that were leaving)
    assert sorted(cur.replicas) == sorted(old) and cur.adding == [] and cur.removing == [] and cur.leader == old[0]
    _, row = reassign(h, None)
    assert row["error"]["name"] == "NO_REASSIGNMENT_IN_PROGRESS"


def test_a_new_target_replaces_one_in_progress_from_the_original_set():
    h = make(brokers=5)
    old = list(h.part().replicas)
    spares = [b for b in range(1, 6) if b not in old]
    reassign(h, [spares[0]] + old[1:])
    reassign(h, [spares[1]] + old[1:])
    cur = h.part()
    assert cur.adding == [spares[1]] and spares[0] not in cur.replicas and cur.removing == [old[0]]


def test_invalid_targets_are_refused_per_entry():
    h = make()
    _, row = reassign(h, [1, 1])
    assert row["error"]["name"] == "INVALID_REPLICA_ASSIGNMENT"
    _, row = reassign(h, [1, 99])
    assert row["error"]["name"] == "INVALID_REPLICA_ASSIGNMENT"
    _, row = reassign(h, [1, 2], p=7)
    assert row["error"]["name"] == "UNKNOWN_TOPIC_OR_PARTITION"


def test_a_leader_failure_during_a_reassignment_keeps_it_in_progress():
    h = make()
    old = list(h.part().replicas)
    spare = next(b for b in [1, 2, 3, 4] if b not in old)
    reassign(h, [spare] + old[1:])
    h.now += TIMEOUT + 1
    h.beat(*[b for b in [1, 2, 3, 4] if b != old[0]])
    h.tick()
    cur = h.part()
    assert cur.leader == old[1] and cur.adding == [spare] and cur.removing == [old[0]]
    alter_isr(h, list(cur.isr) + [spare])
    cur = h.part()
    assert cur.replicas == [spare] + old[1:] and cur.adding == [] and cur.leader == spare


def test_records_with_moving_sets_survive_a_snapshot_and_are_checked():
    h = make()
    old = list(h.part().replicas)
    spare = next(b for b in [1, 2, 3, 4] if b not in old)
    reassign(h, [spare] + old[1:])
    again = MetadataState.from_snapshot(h.state.to_snapshot())
    assert again == h.state and again.topics["orders"].partitions[0].adding == [spare]
    bad = {"type": "partition_change", "topic_id": h.state.topics["orders"].topic_id, "partition": 0,
           "leader_epoch": 9, "partition_epoch": 99, "adding": [77]}
    with pytest.raises(RecordError):
        h.state.apply(bad)


# ---------------------------------------------------------------- decommission (rule 11)
def test_decommission_moves_every_replica_off_a_broker_and_new_topics_avoid_it():
    h = make(brokers=4, partitions=4)
    _, error, reply = h.do(h.logic.decommission_broker(broker_id=1, now_ms=0))
    assert error is None and reply["moving"] == sum(1 in p.replicas for p in h.state.topics["orders"].partitions)
    for p, part in enumerate(h.state.topics["orders"].partitions):
        if part.adding:
            alter_isr(h, list(part.isr) + part.adding, p=p)
    assert all(1 not in p.replicas for p in h.state.topics["orders"].partitions)
    _, error, _ = h.do(h.logic.create_topic(name="later", partitions=3, replication_factor=3, now_ms=0))
    assert error is None and all(1 not in p.replicas for p in h.state.topics["later"].partitions)
    assert h.logic.decommission_broker(broker_id=42, now_ms=0)[1] == "UNKNOWN_BROKER"


def test_decommission_survives_a_controller_change_and_a_restart_of_the_broker():
    """The mark is a committed record: a controller elected afterwards (a new ``ControllerLogic``
    on the state, rebuilt from a snapshot) still keeps new partitions off the broker, the broker
    re-registering keeps it, and only a cancel clears it."""
    h = make(brokers=4, partitions=2)
    records, error, _ = h.do(h.logic.decommission_broker(broker_id=1, now_ms=0))
    assert error is None and records[0] == {"type": "decommission_broker", "id": 1, "decommissioned": True}
    assert h.state.brokers[1].decommissioned and h.state.image().brokers[1].decommissioned
    state = MetadataState.from_snapshot(h.state.to_snapshot())
    assert state.brokers[1].decommissioned and state == h.state
    h.state = state
    ids = iter(f"after{i}" for i in range(10))
    h.logic = ControllerLogic(state, LogicConfig(), new_topic_id=lambda: next(ids))
    h.logic.on_became_leader(h.now)
    h.register(1)  # (a restart: a new incarnation)
    assert h.state.brokers[1].decommissioned
    assert [b["decommissioned"] for b in h.logic.broker_status(h.now)] == [True, False, False, False]
    _, error, _ = h.do(h.logic.create_topic(name="later", partitions=6, replication_factor=3, now_ms=h.now))
    assert error is None and all(1 not in p.replicas for p in h.state.topics["later"].partitions)
    _, error, _ = h.do(h.logic.create_partitions(topic="later", count=9, now_ms=h.now))
    assert error is None and all(1 not in p.replicas for p in h.state.topics["later"].partitions)
    records, _, _ = h.do(h.logic.decommission_broker(broker_id=1, now_ms=h.now))
    assert not any(r["type"] == "decommission_broker" for r in records)  # (asked again: no second record)
    records, error, reply = h.do(h.logic.decommission_broker(broker_id=1, now_ms=h.now, cancel=True))
    assert records == [{"type": "decommission_broker", "id": 1, "decommissioned": False}] and reply == {"moving": 0}
    assert not h.state.brokers[1].decommissioned
    assert h.logic.decommission_broker(broker_id=1, now_ms=h.now, cancel=True)[0] == []
    _, error, _ = h.do(h.logic.create_topic(name="again", partitions=8, replication_factor=3, now_ms=h.now))
    assert any(1 in p.replicas for p in h.state.topics["again"].partitions)


def test_a_pending_decommission_already_excludes_the_broker():
    h = make(brokers=4, partitions=1)
    decided, _, _ = h.logic.decommission_broker(broker_id=2, now_ms=0)  # not committed yet
    assert 2 in h.logic._retiring
    _, _, reply = h.logic.create_topic(name="x", partitions=4, replication_factor=3, now_ms=0)
    records, _, _ = h.logic.create_topic(name="y", partitions=4, replication_factor=3, now_ms=0)
    assert all(2 not in p["replicas"] for p in records[0]["partitions"])
    for r in decided:
        h.state.apply(r)
    assert 2 in h.logic._retiring and not h.logic._decommissioning  # (applied: the pending entry is gone)


# ---------------------------------------------------------------- preferred leaders (rule 12)
def _fail_and_return(h: Harness, b: int) -> None:
    h.now += TIMEOUT + 1
    h.beat(*[x for x in h.incarnation if x != b])
    h.tick()
    h.register(b)
    h.beat(b)
    for p, part in enumerate(h.state.topics["orders"].partitions):  # its followers catch up again
        if b in part.replicas and b not in part.isr:
            alter_isr(h, list(part.isr) + [b], p=p)


def test_elect_leaders_moves_leadership_back_to_the_preferred_replica():
    h = make(brokers=3, partitions=3)
    _fail_and_return(h, 1)
    parts = h.state.topics["orders"].partitions
    assert any(p.replicas[0] == 1 and p.leader != 1 for p in parts)
    _, error, reply = h.do(h.logic.elect_leaders(now_ms=h.now))
    assert error is None and reply["elected"] >= 1
    assert all(p.leader == p.replicas[0] for p in parts)
    assert h.logic.elect_leaders(now_ms=h.now)[2]["elected"] == 0


def test_automatic_preferred_leader_election_after_a_broker_returns():
    h = make(brokers=3, partitions=3)
    _fail_and_return(h, 1)
    parts = h.state.topics["orders"].partitions
    assert any(p.leader != p.replicas[0] for p in parts)
    while h.now + 500 < LogicConfig().leader_imbalance_check_ms:
        h.now += 500
        h.beat(1, 2, 3)
        h.tick()
        assert any(p.leader != p.replicas[0] for p in parts)  # (not before the check is due)
    h.now += 500
    h.beat(1, 2, 3)
    h.tick()
    assert all(p.leader == p.replicas[0] for p in parts)
