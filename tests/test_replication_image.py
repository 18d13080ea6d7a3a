"""MetadataImage (fabric/replication/image.py): built from the broker's local topics, looked up,
changed by making new images."""

from __future__ import annotations

import dataclasses

import pytest

from fabric.broker.topics import TopicManager
from fabric.log import LogConfig
from fabric.protocol.errors import FabricError
from fabric.protocol.limits import Limits
from fabric.replication import NO_LEADER, BrokerInfo, MetadataImage, PartitionAssignment

NODE = BrokerInfo(7, "127.0.0.1", 9092)


@pytest.fixture
def manager(tmp_path):
    m = TopicManager(tmp_path, LogConfig(), Limits(), 0)
    m.create("orders", 3, {"retention_ms": 1000}, 0)
    m.create("clicks", 1, {}, 0)
    yield m
    m.close()


def test_single_node_image_from_the_topic_manager(manager):
    image = MetadataImage.from_local_topics(manager.topics.values(), NODE)
    assert dict(image.brokers) == {7: NODE} and NODE.address == "tcp://127.0.0.1:9092"
    orders = image.topic("orders")
    assert orders.topic_id == manager.get("orders").topic_id and dict(orders.configs) == {"retention_ms": 1000}
    assert len(orders.partitions) == 3 and not orders.internal
    assert image.partition("orders", 2) == PartitionAssignment(7, 0, (7,), (7,))
    assert image.leader_of("clicks", 0) == NODE
    assert image.partitions_led_by(7) == [("clicks", 0), ("orders", 0), ("orders", 1), ("orders", 2)]
    assert image.partitions_led_by(8) == [] and image.partitions_on(7) == image.partitions_led_by(7)
    assert image.topic_by_id(orders.topic_id) is orders
    assert image.check_leader("orders", 1, 7).leader_epoch == 0
    manager.add_partitions("clicks", 2, 0)  # rebuilt after a change, the image follows
    assert len(MetadataImage.from_local_topics(manager.topics.values(), NODE).topic("clicks").partitions) == 2
    assert len(image.topic("clicks").partitions) == 1  # the old image did not change under its readers


def test_unknown_topics_and_partitions(manager):
    image = MetadataImage.from_local_topics(manager.topics.values(), NODE)
    for call in (lambda: image.topic("nope"), lambda: image.partition("orders", 3),
                 lambda: image.partition("orders", -1), lambda: image.topic_by_id("x")):
        with pytest.raises(FabricError) as info:
            call()
        assert info.value.name == "UNKNOWN_TOPIC_OR_PARTITION"


def test_images_are_immutable_and_changes_make_new_ones(manager):
    image = MetadataImage.from_local_topics(manager.topics.values(), NODE, version=4)
    with pytest.raises(TypeError):
        image.topics["x"] = image.topic("orders")  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        image.version = 9  # type: ignore[misc]
    other = BrokerInfo(8, "127.0.0.1", 9093)
    moved = image.with_broker(other).with_partition("orders", 1, PartitionAssignment(8, 1, (7, 8), (8,)))
    assert moved.version == 6 and image.version == 4
    assert moved.leader_of("orders", 1) == other and image.leader_of("orders", 1) == NODE
    assert moved.partitions_led_by(8) == [("orders", 1)] and ("orders", 1) in moved.partitions_on(7)
    with pytest.raises(FabricError) as info:
        moved.check_leader("orders", 1, 7)
    assert info.value.name == "NOT_LEADER"
    offline = moved.with_partition("orders", 0, PartitionAssignment(NO_LEADER, 2, (7,), ()))
    assert offline.leader_of("orders", 0) is None
    gone = offline.without_topic("orders")
    assert "orders" not in gone.topics and gone.partitions_led_by(7) == [("clicks", 0)]
    assert MetadataImage.empty().partitions_led_by(7) == []


@pytest.mark.parametrize("bad", [
    dict(leader=2, leader_epoch=0, replicas=(1, 2), isr=(1,)),  # leader outside the ISR
    dict(leader=1, leader_epoch=0, replicas=(1,), isr=(1, 2)),  # ISR outside the replicas
    dict(leader=1, leader_epoch=0, replicas=(1, 1), isr=(1,)),  # a replica twice
    dict(leader=1, leader_epoch=-1, replicas=(1,), isr=(1,)),
])
def test_assignment_validates_itself(bad):
    with pytest.raises(ValueError):
        PartitionAssignment(**bad)
