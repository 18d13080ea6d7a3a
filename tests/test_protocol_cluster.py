"""The cluster operations' request classes (SPEC.md section 13): every field is checked and an
error names it, on the broker port and on the controller port."""

import pytest

from fabric.protocol.cluster import (BROKER_OPERATIONS, CONTROLLER_OPERATIONS, VoteRequestWire,
                                     parse_controller_request, raft_message)
from fabric.protocol.errors import FabricError
from fabric.protocol.messages import OPERATIONS, parse_request

pytestmark = pytest.mark.unit
TID = "0123456789abcdef0123456789abcdef"


def _fetch(**part):
    p = {"topic_id": TID, "partition": 0, "leader_epoch": 1, "fetch_offset": 0, **part}
    return {"op": "replica_fetch", "v": 1, "cid": 1, "replica_id": 2, "broker_epoch": 5, "partitions": [p]}


def test_broker_port_operations_are_registered_with_the_broker_parser():
    assert set(BROKER_OPERATIONS) <= set(OPERATIONS)
    _, req = parse_request(_fetch())
    assert req.partitions[0].last_fetched_epoch == -1 and req.max_wait_ms == 0


@pytest.mark.parametrize("part, words", [
    ({"topic_id": "XYZ"}, "partitions[0].topic_id: expected 32 lowercase hex digits"),
    ({"topic_id": TID.upper()}, "partitions[0].topic_id: expected 32 lowercase hex digits"),
    ({"leader_epoch": -1}, "partitions[0].leader_epoch: -1 is out of range"),
    ({"fetch_offset": "0"}, "partitions[0].fetch_offset: expected integer, got text"),
    ({"last_fetched_epoch": -2}, "partitions[0].last_fetched_epoch: -2 is out of range"),
])
def test_replica_fetch_errors_name_the_field(part, words):
    with pytest.raises(FabricError) as exc:
        parse_request(_fetch(**part))
    assert exc.value.name == "INVALID_FIELD" and words in exc.value.message


def test_controller_port_parses_raft_messages_by_kind():
    header = {"op": "raft", "v": 1, "cid": 3, "cluster_id": "c", "src": 1, "dst": 2, "kind": "vote_request",
              "message": {"term": 4, "candidate": 1, "last_index": 9, "last_term": 3, "pre_vote": True}}
    _, req = parse_controller_request(header)
    assert raft_message(req) == VoteRequestWire(term=4, candidate=1, last_index=9, last_term=3, pre_vote=True)
    bad = dict(header, message={"term": 4, "candidate": 1, "last_index": 9})
    with pytest.raises(FabricError, match="message.last_term: required field is missing"):
        parse_controller_request(bad)
    with pytest.raises(FabricError, match="kind: 'nope' is not one of"):
        parse_controller_request(dict(header, kind="nope"))


def test_controller_port_refuses_unknown_ops_and_versions():
    with pytest.raises(FabricError) as exc:
        parse_controller_request({"op": "produce", "v": 1, "cid": 1})
    assert exc.value.name == "UNKNOWN_OPERATION"
    with pytest.raises(FabricError) as exc:
        parse_controller_request({"op": "cluster_status", "v": 2, "cid": 1})
    assert exc.value.name == "UNSUPPORTED_VERSION"
    assert "metadata_fetch" in CONTROLLER_OPERATIONS and "create_topics" in CONTROLLER_OPERATIONS


def test_alter_partition_isr_must_be_distinct_and_not_empty():
    base = {"op": "alter_partition", "v": 1, "cid": 1, "broker_id": 1, "broker_epoch": 2}
    part = {"topic_id": TID, "partition": 0, "leader_epoch": 1, "partition_epoch": 1}
    with pytest.raises(FabricError, match=r"partitions\[0\].isr: \[1, 1\] names a broker twice"):
        parse_controller_request({**base, "partitions": [{**part, "isr": [1, 1]}]})
    with pytest.raises(FabricError, match=r"partitions\[0\].isr: must name at least the leader"):
        parse_controller_request({**base, "partitions": [{**part, "isr": []}]})


def test_broker_register_rack_is_optional_and_bounded():
    base = {"op": "broker_register", "v": 1, "cid": 1, "cluster_id": "c", "broker_id": 1, "incarnation": 7,
            "host": "127.0.0.1", "port": 9092, "pub_port": 9192}
    _, req = parse_controller_request(base)
    assert req.rack is None and req.controller_port == 0
    with pytest.raises(FabricError, match="rack: length 65 exceeds 64"):
        parse_controller_request({**base, "rack": "r" * 65})
    with pytest.raises(FabricError, match=r"pub_port: 0 is out of range \[1, 65535\]"):
        parse_controller_request({**base, "pub_port": 0})
