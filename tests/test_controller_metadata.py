"""MetadataState (fabric/controller/metadata.py) and its records: schema checks naming the bad
field, conditional epochs, the image it builds, deterministic snapshots."""

from __future__ import annotations

import pytest

from fabric.controller.metadata import MetadataState, RecordError, decode_record, encode_record, split_configs
from fabric.replication import NO_LEADER, BrokerInfo


def reg(b: int, inc: int = 1, rack: str | None = None) -> dict:
    return {"type": "register_broker", "id": b, "host": "127.0.0.1", "port": 9000 + b, "pub_port": 9100 + b,
            "rack": rack, "incarnation": inc}


def topic(name: str = "orders", tid: str = "t1", parts: int = 2) -> dict:
    return {"type": "create_topic", "name": name, "topic_id": tid, "configs": {"min_insync_replicas": 2},
            "internal": False,
            "partitions": [{"replicas": [1, 2, 3], "leader": 1, "leader_epoch": 0, "partition_epoch": 0,
                            "isr": [1, 2, 3]} for _ in range(parts)]}


def change(**fields) -> dict:
    return {"type": "partition_change", "topic_id": "t1", "partition": 0, **fields}


@pytest.fixture
def state() -> MetadataState:
    s = MetadataState()
    for i, r in enumerate([reg(1), reg(2), reg(3), topic()], start=1):
        s.apply(r, i)
    return s


def test_records_round_trip_as_canonical_bytes():
    r = topic()
    data = encode_record(r)
    assert decode_record(data) == r
    assert encode_record(dict(reversed(list(r.items())))) == data  # key order does not matter


@pytest.mark.parametrize("record, field", [
    ({**reg(1), "port": "9000"}, "'port'"),
    ({**reg(1), "incarnation": True}, "'incarnation'"),
    ({k: v for k, v in reg(1).items() if k != "host"}, "'host'"),
    ({**reg(1), "colour": 1}, "'colour'"),
    ({"type": "fence_broker", "id": -1}, "'id'"),
    (change(leader_epoch=1, partition_epoch=1, isr="1"), "'isr'"),
    ({**topic(), "partitions": [{"replicas": [1], "leader": 2, "leader_epoch": 0, "partition_epoch": 0,
                                 "isr": [1]}]}, "leader 2"),
    ({**topic(), "partitions": [{"replicas": [1], "leader": 1, "leader_epoch": 0, "partition_epoch": 0,
                                 "isr": []}]}, "ISR"),
    ({"type": "nope"}, "'nope'"),
])
def test_a_bad_record_is_refused_naming_the_field(record, field):
    with pytest.raises(RecordError, match=field):
        encode_record(record)


def test_decode_refuses_garbage():
    with pytest.raises(RecordError, match="CBOR"):
        decode_record(b"\xff\x00")
    with pytest.raises(RecordError, match="map"):
        decode_record(b"\x01")


def test_state_and_image(state):
    image = state.image()
    assert image.version == 4 and state.offset == 4
    assert image.brokers[2] == BrokerInfo(2, "127.0.0.1", 9002, None, 9102, False, incarnation=1)
    a = image.partition("orders", 1)
    assert (a.leader, a.leader_epoch, a.replicas, a.isr, a.partition_epoch) == (1, 0, (1, 2, 3), (1, 2, 3), 0)
    assert dict(image.topic("orders").configs) == {"min_insync_replicas": 2}
    state.apply({"type": "fence_broker", "id": 3}, 5)
    assert state.image().brokers[3].fenced and state.live_brokers() == [1, 2]


def test_partition_change_needs_newer_epochs(state):
    state.apply(change(leader=2, leader_epoch=1, partition_epoch=1, isr=[2, 3]), 5)
    p = state.partition_by_id("t1", 0)
    assert (p.leader, p.leader_epoch, p.partition_epoch, p.isr) == (2, 1, 1, [2, 3])
    before = state.to_snapshot()
    bad = [change(leader_epoch=1, partition_epoch=1, isr=[2]),  # partition epoch not above
           change(leader=3, leader_epoch=1, partition_epoch=2),  # leader changed, same leader epoch
           change(leader_epoch=0, partition_epoch=2),  # leader epoch went back
           change(leader=1, leader_epoch=2, partition_epoch=2),  # leader 1 is not in the ISR
           {**change(leader_epoch=1, partition_epoch=2), "topic_id": "zz"}]
    for i, r in enumerate(bad, start=6):
        with pytest.raises(RecordError):
            state.apply(r, i)
        assert state.offset == i  # consumed, nothing else changed (rule 1):
    again = MetadataState.from_snapshot(before)
    again.offset = state.offset
    assert again == state


def test_offline_partition_keeps_its_isr(state):
    state.apply(change(leader=NO_LEADER, leader_epoch=1, partition_epoch=1, isr=[1]), 5)
    assert state.image().leader_of("orders", 0) is None
    assert state.image().partition("orders", 0).isr == (1,)


def test_registration_incarnations(state):
    state.apply({"type": "fence_broker", "id": 2, "incarnation": 1}, 5)
    state.apply(reg(2, inc=2), 6)
    b = state.brokers[2]
    assert (b.incarnation, b.fenced, b.epoch) == (2, False, 6)
    with pytest.raises(RecordError, match="older"):
        state.apply(reg(2, inc=1), 7)
    with pytest.raises(RecordError, match="incarnation"):
        state.apply({"type": "fence_broker", "id": 2, "incarnation": 1}, 8)  # the old one: stale
    assert not state.brokers[2].fenced
    with pytest.raises(RecordError, match="unknown broker"):
        state.apply({"type": "unfence_broker", "id": 9}, 9)


def test_topics_create_delete_config(state):
    with pytest.raises(RecordError, match="exists"):
        state.apply(topic(tid="t2"), 5)
    with pytest.raises(RecordError, match="taken"):
        state.apply(topic(name="other"), 6)
    state.apply({"type": "topic_config", "name": "orders", "configs": {"unclean_leader_election": True}}, 7)
    assert state.topics["orders"].configs == {"unclean_leader_election": True}
    state.apply({"type": "delete_topic", "name": "orders"}, 8)
    assert state.image().topics == {} and state.partition_by_id("t1", 0) is None
    with pytest.raises(RecordError, match="unknown topic"):
        state.apply({"type": "delete_topic", "name": "orders"}, 9)


def test_snapshot_round_trip_is_deterministic(state):
    other = MetadataState()
    for i, r in enumerate([reg(3), reg(1), reg(2)], start=1):  # another order of brokers...
        other.apply(r, i)
    other.apply(topic(), 4)
    for s in (state, other):
        s.brokers[1].epoch = s.brokers[2].epoch = s.brokers[3].epoch = 0
    assert state.to_snapshot() == other.to_snapshot()  # ...the same bytes
    back = MetadataState.from_snapshot(state.to_snapshot())
    assert back == state and back.offset == 4 and back.image() == state.image()
    assert back.to_snapshot() == state.to_snapshot()


@pytest.mark.parametrize("data, message", [
    (b"\xff", "CBOR"), (encode_record(reg(1)), "version"),
])
def test_from_snapshot_refuses_garbage(data, message):
    with pytest.raises(RecordError, match=message):
        MetadataState.from_snapshot(data)


def test_split_configs():
    assert split_configs({"retention_ms": 5, "min_insync_replicas": 2, "unclean_leader_election": False}) == (
        {"retention_ms": 5}, {"min_insync_replicas": 2, "unclean_leader_election": False})


def test_a_record_at_or_below_the_offset_is_refused(state):
    before = state.to_snapshot()
    with pytest.raises(RecordError, match="applied already"):
        state.apply({"type": "fence_broker", "id": 1}, 4)
    assert state.to_snapshot() == before and state.offset == 4
