"""Hostile requests on the controller port get a clear error and change nothing.

An outside fuzz of the controller port (any process can connect to it) found `metadata_fetch`
with a non-integer offset raising in the controller thread (no reply, a traceback per request),
and logic handlers' ValueErrors escaping the same way.  Raft messages past the limits are
refused as malformed before they reach the Raft node."""

import random

import pytest

from fabric.controller.logic import ControllerLogic, LogicConfig
from fabric.controller.metadata import MetadataState
from fabric.controller.raft import RaftConfig, RaftNode
from fabric.controller.raft_messages import message_from_wire
from fabric.controller.raft_storage import MemoryRaftStorage
from fabric.controller.service import ControllerService
from fabric.protocol.limits import DEFAULT_LIMITS

pytestmark = pytest.mark.unit


def _leader() -> ControllerService:
    raft = RaftNode(1, [1], MemoryRaftStorage(), RaftConfig(), random.Random(1))
    state = MetadataState()
    service = ControllerService(raft, state, ControllerLogic(state, LogicConfig()))
    now = 0
    while not service.is_leader:
        now += 50
        service.tick(now)
    return service


@pytest.mark.parametrize("offset", ["x", 1.5, -1, 2**64, None, [1], {"a": 1}])
def test_metadata_fetch_with_a_bad_offset_is_invalid_field(offset):
    service = _leader()
    fx = service.request("t", "metadata_fetch", {"offset": offset}, 1000)
    assert fx.replies[0][1]["error"]["name"] == "INVALID_FIELD"


@pytest.mark.parametrize("fields", [
    {"broker_id": "x", "incarnation": 1, "host": "h", "port": 1},
    {"broker_id": 1, "incarnation": 1.5, "host": "h", "port": 1},
    {"broker_id": 1, "incarnation": 1, "host": {"a": 1}, "port": 1},
    {"broker_id": 1, "incarnation": 1, "host": "h", "port": 1, "unknown": 1},
    {},
])
def test_register_with_hostile_fields_is_refused_and_proposes_nothing(fields):
    service = _leader()
    before = service.raft.last_index
    fx = service.request("t", "register", fields, 1000)
    assert fx.replies[0][1]["error"]["name"] == "INVALID_FIELD"
    assert service.raft.last_index == before


def test_raft_messages_past_the_limits_are_malformed():
    entry = [1, 1, b""]
    too_many = {"kind": "append", "term": 1, "leader": 1, "prev_index": 0, "prev_term": 0, "commit": 0,
                "entries": [entry] * (DEFAULT_LIMITS.raft_append_entries_max + 1)}
    with pytest.raises(ValueError, match="entries"):
        message_from_wire(too_many)
    too_big = dict(too_many, entries=[[1, 1, b"x" * (DEFAULT_LIMITS.raft_entry_bytes_max + 1)]])
    with pytest.raises(ValueError, match="entry larger"):
        message_from_wire(too_big)
    snapshot = {"kind": "snapshot", "term": 1, "leader": 1, "last_index": 1, "last_term": 1,
                "data": b"x" * (DEFAULT_LIMITS.metadata_snapshot_bytes_max + 1)}
    with pytest.raises(ValueError, match="snapshot larger"):
        message_from_wire(snapshot)
    assert message_from_wire(dict(too_many, entries=[entry])).entries[0].index == 1
