"""The cluster messages' classes (SPEC.md section 13) are the real messages: what the reference
follower, broker and controller send parses with them, and an error names the field."""

import pytest

from fabric.broker.controller_link import ControllerLink
from fabric.controller.raft_messages import AppendRequest, Entry, VoteRequest
from fabric.protocol.cluster import (BROKER_OPERATIONS, CONTROLLER_OPERATIONS, AppendRequestWire, VoteRequestWire,
                                     parse_controller_request, raft_message)
from fabric.protocol.errors import FabricError
from fabric.protocol.messages import OPERATIONS, parse_request
from fabric.replication.messages import ReplicaAck, ReplicaFetch

pytestmark = pytest.mark.unit
TID = "0123456789abcdef0123456789abcdef"


def _fetch(**fields):
    return {"op": "replica_fetch", "v": 1, "cid": 1, **ReplicaFetch(TID, 0, 2, 1, 0, -1, 1 << 20).to_wire(), **fields}


def test_what_a_follower_sends_parses_on_the_broker_port():
    assert set(BROKER_OPERATIONS) <= set(OPERATIONS)
    _, req = parse_request(_fetch())
    assert (req.topic_id, req.replica, req.last_fetched_epoch, req.max_bytes) == (TID, 2, -1, 1 << 20)
    _, ack = parse_request({"op": "replica_ack", "v": 1, "cid": 0, **ReplicaAck(TID, 0, 2, 1, 7).to_wire()})
    assert ack.log_end == 7


@pytest.mark.parametrize("fields, words", [
    ({"topic_id": ""}, "topic_id: must not be empty"),
    ({"leader_epoch": -1}, "leader_epoch: -1 is out of range"),
    ({"fetch_offset": "0"}, "fetch_offset: expected integer, got text"),
    ({"last_fetched_epoch": -2}, "last_fetched_epoch: -2 is out of range"),
])
def test_replica_fetch_errors_name_the_field(fields, words):
    with pytest.raises(FabricError) as exc:
        parse_request(_fetch(**fields))
    assert exc.value.name == "INVALID_FIELD" and words in exc.value.message


def test_what_a_broker_link_sends_parses_on_the_controller_port():
    link = ControllerLink(2, [1, 2, 3], {"host": "h", "port": 9093, "pub_port": 9193, "rack": None}, incarnation=5)
    _, register = link.poll(0)
    env, req = parse_controller_request(register)
    assert env.op == "register" and (req.broker_id, req.incarnation, req.pub_port) == (2, 5, 9193)
    link.on_reply({"cid": register["cid"], "metadata_offset": 0}, 0)
    _, heartbeat = link.poll(1)
    _, hb = parse_controller_request(heartbeat)
    assert (hb.incarnation, hb.wants_shutdown) == (5, False)
    assert link.hellos(0)[0][1] == {"op": "hello", "broker_id": 2}


def test_raft_messages_parse_by_kind():
    vote = VoteRequest(term=4, candidate=1, last_index=9, last_term=3, pre_vote=True).to_wire()
    assert raft_message(vote) == VoteRequestWire(term=4, candidate=1, last_index=9, last_term=3, pre_vote=True)
    append = AppendRequest(term=2, leader=1, prev_index=0, prev_term=0, entries=(Entry(2, 1, b"x"),), commit=0)
    assert raft_message(append.to_wire()) == AppendRequestWire(term=2, leader=1, prev_index=0, prev_term=0,
                                                               entries=((2, 1, b"x"),), commit=0)
    with pytest.raises(FabricError, match="msg.last_term: required field is missing"):
        raft_message({k: v for k, v in vote.items() if k != "last_term"})
    with pytest.raises(FabricError, match="msg.kind: 'nope' is not one of"):
        raft_message({**vote, "kind": "nope"})


def test_controller_port_refuses_unknown_ops_and_needs_no_version():
    with pytest.raises(FabricError) as exc:
        parse_controller_request({"op": "produce", "cid": 1})
    assert exc.value.name == "UNKNOWN_OPERATION"
    env, _ = parse_controller_request({"op": "cluster_status", "cid": -4})
    assert env.cid == -4
    assert "metadata_fetch" in CONTROLLER_OPERATIONS and "raft" not in CONTROLLER_OPERATIONS


def test_alter_partition_isr_must_not_be_empty():
    base = {"op": "alter_partition", "cid": -1, "broker_id": 1, "topic_id": TID, "partition": 0,
            "leader_epoch": 1, "partition_epoch": 1}
    _, req = parse_controller_request({**base, "isr": [1, 3]})
    assert req.isr == (1, 3) and req.topic is None
    with pytest.raises(FabricError, match="isr: must name at least the leader"):
        parse_controller_request({**base, "isr": []})
