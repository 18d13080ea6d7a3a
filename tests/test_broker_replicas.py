"""ReplicaManager's produce decisions (fabric/broker/replicas.py rule 4), pulled out of the
cluster produce handler so the cluster simulation runs the same code: who may append, and when
acks=all is refused before anything is written."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from fabric.broker.replicas import ReplicaManager
from fabric.log import LogConfig
from fabric.log.memory import MemoryLog
from fabric.protocol.errors import FabricError
from fabric.records.batch import encode_batch
from fabric.replication import PartitionState
from fabric.replication.config import ReplicationConfig
from fabric.replication.image import PartitionAssignment, TopicImage


def batch() -> bytearray:
    return bytearray(encode_batch([0, 0], [None, None], [b"a", b"b"]))


def manager(leader: int = 1, isr=(1, 2, 3), min_isr: int = 2) -> tuple[ReplicaManager, MemoryLog]:
    reps = ReplicaManager(1, ReplicationConfig(), default_min_isr=1)
    a = PartitionAssignment(leader, 3, (1, 2, 3), tuple(isr), 5)
    topic = TopicImage("orders", "tid", MappingProxyType({"min_insync_replicas": min_isr}), False, (a,))
    log = MemoryLog(LogConfig())
    reps.assign("orders", 0, topic, a, log, PartitionState(1), 0)
    return reps, log


def test_only_an_open_leader_with_a_valid_lease_may_append():
    reps, _ = manager()
    leader = reps.produce_leader(("orders", 0), lease_valid=True)
    assert leader is reps.leaders[("orders", 0)]
    assert reps.produce_leader(("orders", 1), lease_valid=True) is None  # not held here
    with pytest.raises(FabricError) as info:
        reps.produce_leader(("orders", 0), lease_valid=False)
    assert info.value.name == "NOT_LEADER" and "lost contact with the controller" in info.value.message
    leader.close()
    assert reps.produce_leader(("orders", 0), lease_valid=True) is None  # its leadership ended
    follower, _ = manager(leader=2)
    assert follower.produce_leader(("orders", 0), lease_valid=True) is None


def test_acks_all_below_min_isr_is_refused_before_appending_and_acks_1_is_not():
    reps, log = manager(isr=(1,), min_isr=2)
    leader = reps.leaders[("orders", 0)]
    with pytest.raises(FabricError) as info:
        reps.append_produced(leader, batch(), 0, acks_all=True)
    assert info.value.name == "NOT_ENOUGH_REPLICAS" and "orders-0" in info.value.message
    assert log.end_offset == 0 and reps.pushes == []
    assert reps.append_produced(leader, batch(), 0, acks_all=False) == (0, 1)
    assert [(p.base_offset, p.leader_epoch) for p in reps.pushes] == [(0, 3)]


def test_acks_all_appends_and_queues_the_push_when_the_isr_is_large_enough():
    reps, log = manager()
    leader = reps.leaders[("orders", 0)]
    assert reps.append_produced(leader, batch(), 0, acks_all=True) == (0, 1)
    assert reps.append_produced(leader, batch(), 0, acks_all=True) == (2, 3)
    assert log.end_offset == 4 and [p.base_offset for p in reps.pushes] == [0, 2]


def test_a_new_leader_answers_fetches_leader_not_available_until_its_hw_reaches_its_epoch_start():
    """Leadership rule 4 (found by the cluster simulation, seed 0): a follower elected leader
    starts with the HW it had as a follower, below the one its predecessor showed consumers; a
    consumer must not see the HW go back, so fetches wait until it reaches the epoch's start."""
    from fabric.broker.leadership import Leadership
    from fabric.replication.image import BrokerInfo, MetadataImage
    from fabric.replication.messages import ReplicaFetch

    log = MemoryLog(LogConfig())
    log.append(batch(), 0, leader_epoch=0)
    log.append(batch(), 0, leader_epoch=0)

    class Logs:  # what Leadership reads of a cluster broker's TopicManager
        topics: dict = {}

        def local(self, name, p):
            return log

    lead = Leadership(Logs(), lambda: BrokerInfo(1, "h", 1), 0)  # type: ignore[arg-type]
    lead.replicas = ReplicaManager(1, ReplicationConfig())
    a = PartitionAssignment(1, 1, (1, 2), (1, 2), 1)
    brokers = {1: BrokerInfo(1, "h", 1), 2: BrokerInfo(2, "h", 2)}
    lead.apply(MetadataImage(brokers, {"t": TopicImage("t", "tid", MappingProxyType({}), False, (a,))}), 0)
    assert lead.leading("t", 0).high_watermark == 0  # (its HW as a follower; its epoch began at 4)
    with pytest.raises(FabricError) as info:
        lead.readable("t", 0)
    assert info.value.name == "LEADER_NOT_AVAILABLE" and info.value.retriable
    lead.replicas.leaders[("t", 0)].on_fetch(ReplicaFetch("tid", 0, 2, 1, 4, 0, 1 << 20), 10)
    assert lead.readable("t", 0).high_watermark == 4


def test_a_leader_whose_partition_goes_offline_is_offline_not_leader():
    """Rule 5 (cluster simulation seed 545): the leader was cut off, every ISR member got fenced
    and the partition went offline; its old leader dropped the replica but its state stayed
    LEADER, so fetches were still served there with a stale high watermark."""
    from fabric.replication.state import Role

    reps = ReplicaManager(1, ReplicationConfig(), default_min_isr=1)
    a = PartitionAssignment(1, 3, (1, 2, 3), (1, 2, 3), 5)
    topic = TopicImage("orders", "tid", MappingProxyType({}), False, (a,))
    log, state = MemoryLog(LogConfig()), PartitionState(1)
    reps.assign("orders", 0, topic, a, log, state, 0)
    assert state.role is Role.LEADER
    offline = PartitionAssignment(-1, 4, (1, 2, 3), (1,), 6)
    reps.assign("orders", 0, topic, offline, log, state, 10)
    assert state.role is Role.OFFLINE and state.leader is None
    assert reps.leaders == {} and reps.followers == {}


def test_incarnations_from_the_image_reach_leaders_and_stamp_follower_messages():
    """Rule 7 (KIP-903): each image's registered incarnations go to the leader (its followers'
    known incarnations) and on every message a follower here sends."""
    from fabric.replication.image import BrokerInfo, MetadataImage

    brokers = {b: BrokerInfo(b, "h", 9000 + b, incarnation=100 + b) for b in (1, 2, 3)}
    reps = ReplicaManager(1, ReplicationConfig(), default_min_isr=1)
    lead = PartitionAssignment(1, 3, (1, 2, 3), (1, 2, 3), 5)
    follow = PartitionAssignment(2, 3, (2, 1, 3), (2, 1, 3), 5)
    topic = TopicImage("orders", "tid", MappingProxyType({}), False, (lead, follow))
    reps.note_brokers(MetadataImage(brokers, {"orders": topic}))
    reps.assign("orders", 0, topic, lead, MemoryLog(LogConfig()), PartitionState(1), 0)
    reps.assign("orders", 1, topic, follow, MemoryLog(LogConfig()), PartitionState(1), 0)
    assert {r: p.incarnation for r, p in reps.leaders[("orders", 0)].state.followers.items()} == {2: 102, 3: 103}
    reps.tick(0)
    sent = reps.take_outgoing()[2]
    assert sent and all(m.incarnation == 101 for m in sent)
