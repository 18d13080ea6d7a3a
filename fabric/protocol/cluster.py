"""The broker-to-broker messages of a replicated cluster (SPEC.md section 13), as request classes
that mirror exactly what the reference broker and controller send.

Why a module of its own: clients never send these ("brokers only"), and most of them travel on the
controller port, not the broker port, so they must not crowd ``messages.py``.  The classes here are
the *specification* of those messages (``tests/test_spec.py`` checks SPEC.md's field tables against
them, and section 13.6's vectors parse with them); the running code builds and checks the same maps
with its own dataclasses (``fabric.replication.messages``, ``fabric.controller.raft_messages``,
``fabric.controller.logic``), which is why every range here is theirs, not a guess.

Importing this module registers the broker-port operations (``replica_fetch``, ``replica_ack``)
with ``messages.OPERATIONS``, so a broker that is *not* clustered parses them and refuses them with
UNKNOWN_OPERATION ("not clustered"); a clustered broker hands them to its ``ClusterNode`` before
``parse_request``.  ``parse_controller_request`` parses what arrives on the controller port (no
``v`` there: the controller ignores it).  Raft messages (``{"op": "raft", "from", "msg"}``) and
``hello`` are one-way and have no ``cid``; ``raft_message`` checks a ``msg`` by its ``kind``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import FabricError
from .limits import DEFAULT_LIMITS, INT64_MAX
from .cluster_admin import ADMIN_OPERATIONS
from .messages import AlterTopicConfigsRequest, CreatePartitionsRequest, register_operation
from .schema import parse, wire

_L = DEFAULT_LIMITS
INT32_MAX = 2**31 - 1  # node ids, partitions and leader epochs of the replication messages

__all__ = ["BROKER_OPERATIONS", "CONTROLLER_OPERATIONS", "ONE_WAY_OPERATIONS", "RAFT_KINDS",
           "parse_controller_request", "raft_message"]


def _nonempty(value: str, path: str) -> None:
    if not value:
        raise FabricError("INVALID_FIELD", f"{path}: must not be empty")


# ================================================================ broker port (brokers only)
# One partition per message, flat, exactly ``fabric.replication.messages.ReplicaFetch/ReplicaAck``'s
# ``to_wire()`` (whose ``type`` key the sender includes and the receiver ignores).

@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaFetchRequest:
    type: str = wire("text", "replica_fetch", choices=("replica_fetch",))
    topic_id: str = wire("text")
    partition: int = wire("int", min=0, max=INT32_MAX)
    replica: int = wire("int", min=0, max=INT32_MAX)  # the follower's node id
    leader_epoch: int = wire("int", min=0, max=INT32_MAX)  # the epoch the follower believes the leader has
    fetch_offset: int = wire("int", min=0, max=INT64_MAX)  # the follower's log end
    last_fetched_epoch: int = wire("int", min=-1, max=INT32_MAX)  # epoch of its newest batch (-1: none)
    max_bytes: int = wire("int", min=1, max=INT32_MAX)
    incarnation: int = wire("int", min=0, max=INT64_MAX)  # the follower process's (KIP-903)

    def validate(self) -> None:
        _nonempty(self.topic_id, "topic_id")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaAckRequest:
    type: str = wire("text", "replica_ack", choices=("replica_ack",))
    topic_id: str = wire("text")
    partition: int = wire("int", min=0, max=INT32_MAX)
    replica: int = wire("int", min=0, max=INT32_MAX)
    leader_epoch: int = wire("int", min=0, max=INT32_MAX)
    log_end: int = wire("int", min=0, max=INT64_MAX)  # the follower's log end after its append
    incarnation: int = wire("int", min=0, max=INT64_MAX)  # the follower process's (KIP-903)

    def validate(self) -> None:
        _nonempty(self.topic_id, "topic_id")


# ================================================================ controller port (brokers only)
# The keyword arguments of ``ControllerLogic``'s methods (an unknown field is INVALID_FIELD there).

@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterRequest:
    broker_id: int = wire("int", min=0, max=INT32_MAX)
    incarnation: int = wire("int", min=0, max=INT64_MAX)
    host: str = wire("text", max_len=255)
    port: int = wire("int", min=1, max=65535)
    pub_port: int = wire("int", 0, min=0, max=65535)
    rack: str | None = wire("text", None, nullable=True, max_len=255)
    controller_port: int | None = wire("int", None, nullable=True, min=0, max=65535)
    intact_since: int | None = wire("int", None, nullable=True, min=0, max=INT64_MAX)  # KIP-966

    def validate(self) -> None:
        _nonempty(self.host, "host")


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatRequest:
    broker_id: int = wire("int", min=0, max=INT64_MAX)
    incarnation: int = wire("int", min=0, max=INT64_MAX)
    metadata_offset: int = wire("int", 0, min=0, max=INT64_MAX)
    wants_shutdown: bool = wire("bool", False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlledShutdownRequest:
    broker_id: int = wire("int", min=0, max=INT64_MAX)
    incarnation: int | None = wire("int", None, nullable=True, min=0, max=INT64_MAX)
    metadata_offset: int = wire("int", 0, min=0, max=INT64_MAX)


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateTopicRequest:
    name: str = wire("text")
    partitions: int | None = wire("int", None, nullable=True, min=1, max=_L.partitions_per_topic_max)
    replication_factor: int | None = wire("int", None, nullable=True, min=0, max=16)
    configs: dict[str, Any] = wire("map", {})
    validate_only: bool = wire("bool", False)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteTopicRequest:
    name: str = wire("text")


@dataclass(frozen=True, slots=True, kw_only=True)
class EnsureInternalTopicRequest:
    name: str = wire("text", "__consumer_offsets", choices=("__consumer_offsets",))


@dataclass(frozen=True, slots=True, kw_only=True)
class AlterPartitionRequest:
    broker_id: int = wire("int", min=0, max=INT64_MAX)  # the leader proposing
    topic_id: str | None = wire("text", None, nullable=True)  # the topic, by id (what a broker sends) ...
    topic: str | None = wire("text", None, nullable=True)  # ... or by name (when topic_id is absent)
    partition: int = wire("int", min=0, max=INT64_MAX)
    leader_epoch: int = wire("int", min=0, max=INT64_MAX)
    partition_epoch: int = wire("int", min=0, max=INT64_MAX)
    isr: tuple[int, ...] = wire("list", items=wire("int", min=0, max=INT64_MAX))
    # each member's incarnation as the leader knows it, in ``isr``'s order (KIP-903)
    isr_incarnations: tuple[int, ...] | None = wire("list", None, nullable=True,
                                                    items=wire("int", min=0, max=INT64_MAX))

    def validate(self) -> None:
        if not self.isr:
            raise FabricError("INVALID_FIELD", "isr: must name at least the leader")
        if self.isr_incarnations is not None and len(self.isr_incarnations) != len(self.isr):
            raise FabricError("INVALID_FIELD", "isr_incarnations: must have one entry per isr member")


@dataclass(frozen=True, slots=True, kw_only=True)
class AllocateProducerIdsRequest:
    broker_id: int = wire("int", min=0, max=INT32_MAX)  # the broker asking for a block of producer ids
    incarnation: int = wire("int", min=0, max=INT64_MAX)  # its registered incarnation


@dataclass(frozen=True, slots=True, kw_only=True)
class MetadataFetchRequest:
    offset: int = wire("int", 0, min=0, max=INT64_MAX)  # the last metadata index the broker applied


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterStatusRequest:
    pass


# ================================================================ Raft (voter to voter, one-way)
# ``fabric.controller.raft_messages``: every field required, ints strict (no floats), ``kind`` names
# the class.  An entry is the array ``[term, index, data]`` (``data`` b"": a leader's no-op).

@dataclass(frozen=True, slots=True, kw_only=True)
class VoteRequestWire:
    term: int = wire("int", min=0, max=INT64_MAX)
    candidate: int = wire("int", min=0, max=INT64_MAX)
    last_index: int = wire("int", min=0, max=INT64_MAX)
    last_term: int = wire("int", min=0, max=INT64_MAX)
    pre_vote: bool = wire("bool")


@dataclass(frozen=True, slots=True, kw_only=True)
class VoteResponseWire:
    term: int = wire("int", min=0, max=INT64_MAX)
    granted: bool = wire("bool")
    pre_vote: bool = wire("bool")


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendRequestWire:
    term: int = wire("int", min=0, max=INT64_MAX)
    leader: int = wire("int", min=0, max=INT64_MAX)
    prev_index: int = wire("int", min=0, max=INT64_MAX)
    prev_term: int = wire("int", min=0, max=INT64_MAX)
    entries: tuple[Any, ...] = wire("list", items=wire("list"))  # each [term, index, data]
    commit: int = wire("int", min=0, max=INT64_MAX)


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendResponseWire:
    term: int = wire("int", min=0, max=INT64_MAX)
    success: bool = wire("bool")
    match_index: int = wire("int", min=0, max=INT64_MAX)
    hint_index: int = wire("int", min=0, max=INT64_MAX)


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotRequestWire:
    term: int = wire("int", min=0, max=INT64_MAX)
    leader: int = wire("int", min=0, max=INT64_MAX)
    last_index: int = wire("int", min=0, max=INT64_MAX)
    last_term: int = wire("int", min=0, max=INT64_MAX)
    data: bytes = wire("bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotResponseWire:
    term: int = wire("int", min=0, max=INT64_MAX)
    last_index: int = wire("int", min=0, max=INT64_MAX)


RAFT_KINDS: dict[str, type] = {
    "vote": VoteRequestWire, "vote_resp": VoteResponseWire,
    "append": AppendRequestWire, "append_resp": AppendResponseWire,
    "snapshot": SnapshotRequestWire, "snapshot_resp": SnapshotResponseWire,
}


def raft_message(msg: Any) -> Any:
    """The typed Raft message a ``raft`` message's ``msg`` map carries, checked by its ``kind``."""
    kind = msg.get("kind") if isinstance(msg, dict) else None
    cls = RAFT_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise FabricError("INVALID_FIELD", f"msg.kind: {kind!r:.40} is not one of {sorted(RAFT_KINDS)}")
    return parse(cls, msg, "msg")


# Broker port: a non-clustered broker parses these with the client operations (and refuses them).
BROKER_OPERATIONS: dict[str, type] = {
    "replica_fetch": ReplicaFetchRequest,
    "replica_ack": ReplicaAckRequest,
    **ADMIN_OPERATIONS,  # the operator's (section 13.7): forwarded to the controller
}

# Controller port requests (answered, ``cid`` echoed): ``ControllerService.request``'s operations.
CONTROLLER_OPERATIONS: dict[str, type] = {
    "register": RegisterRequest,
    "heartbeat": HeartbeatRequest,
    "create_topic": CreateTopicRequest,
    "delete_topic": DeleteTopicRequest,
    "alter_partition": AlterPartitionRequest,
    "controlled_shutdown": ControlledShutdownRequest,
    "ensure_internal_topic": EnsureInternalTopicRequest,
    "metadata_fetch": MetadataFetchRequest,
    "cluster_status": ClusterStatusRequest,
    "allocate_producer_ids": AllocateProducerIdsRequest,
    # forwarded as the client sent them (section 5's create_partitions/alter_topic_configs, 13.7's)
    "create_partitions": CreatePartitionsRequest,
    "alter_topic_configs": AlterTopicConfigsRequest,
    **ADMIN_OPERATIONS,
}

# Never answered: the follower does not wait for an acknowledgement of its acknowledgement.
ONE_WAY_OPERATIONS = frozenset({"replica_ack"})

for _name, _cls in BROKER_OPERATIONS.items():
    register_operation(_name, _cls)


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerEnvelope:
    op: str = wire("text", max_len=64)
    cid: int = wire("int")  # any int: the controller echoes it (a broker's forwards use negative ones)


def parse_controller_request(header: dict[str, Any]) -> tuple[ControllerEnvelope, Any]:
    """Check ``op`` and ``cid``, then the fields of a controller-port request (``v`` is ignored)."""
    env = parse(ControllerEnvelope, header)
    cls = CONTROLLER_OPERATIONS.get(env.op)
    if cls is None:
        raise FabricError("UNKNOWN_OPERATION", f"the controller does not serve {env.op!r}")
    return env, parse(cls, header)
