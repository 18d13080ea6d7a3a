"""The broker-to-broker operations of a replicated cluster (SPEC.md section 13), as request classes.

Why a module of its own: clients never send these ("brokers only"), and half of them travel on the
controller port, not the broker port, so they must not crowd ``messages.py``.  Importing this module
registers the broker-port operations (``replica_fetch``, ``replica_ack``, ``metadata_fetch``) with
``messages.OPERATIONS`` so a broker parses them; ``parse_controller_request`` parses what arrives
on the controller port.  Every field is type- and range-checked by ``schema.parse`` and an error
names the field, as for the client operations.

Raft messages travel inside a ``raft`` request as ``kind`` + ``message``; ``raft_message`` checks
``message`` against the class of its ``kind`` (the schema has no unions, so it is two steps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import FabricError
from .limits import DEFAULT_LIMITS, INT64_MAX
from .messages import (AlterTopicConfigsRequest, CreatePartitionsRequest, CreateTopicsRequest,
                       DeleteTopicsRequest, Envelope, register_operation)
from .schema import parse, wire

_L = DEFAULT_LIMITS
NODE_ID_MAX = 2**31 - 1  # node ids are non-negative int32 (Kafka's broker.id range)
EPOCH_MAX = 2**31 - 1  # leader and partition epochs
TOPIC_ID_CHARS = 32  # 32 lowercase hex digits
REPLICAS_MAX = 16  # replication factor ceiling (NewTopic.replication_factor)


def _node(default: Any = None, lo: int = 0) -> Any:
    return wire("int", min=lo, max=NODE_ID_MAX) if default is None else wire("int", default, min=lo, max=NODE_ID_MAX)


def _topic_id() -> Any:
    return wire("text", max_len=TOPIC_ID_CHARS)


def _check_topic_id(value: str, path: str) -> None:
    if len(value) != TOPIC_ID_CHARS or any(c not in "0123456789abcdef" for c in value):
        raise FabricError("INVALID_FIELD", f"{path}: expected 32 lowercase hex digits, got {value[:40]!r}")


# ================================================================ broker port (brokers only)

@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaFetchPartition:
    topic_id: str = _topic_id()
    partition: int = wire("int", min=0, max=_L.partitions_per_topic_max - 1)
    leader_epoch: int = wire("int", min=0, max=EPOCH_MAX)  # the epoch the follower follows
    fetch_offset: int = wire("int", min=0)  # the follower's log end
    # epoch of the follower's last batch (-1: empty log); the leader answers `diverging` when its
    # log has no such epoch ending at or after fetch_offset (KIP-320: truncate, then fetch again)
    last_fetched_epoch: int = wire("int", -1, min=-1, max=EPOCH_MAX)
    max_bytes: int = wire("int", 1 << 20, min=1, max=_L.fetch_bytes_max)

    def validate(self) -> None:
        _check_topic_id(self.topic_id, "topic_id")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaFetchRequest:
    replica_id: int = _node()
    broker_epoch: int = wire("int", min=0, max=INT64_MAX)
    max_wait_ms: int = wire("int", 0, min=0, max=_L.fetch_wait_ms_max)
    max_bytes: int = wire("int", 8 << 20, min=1, max=_L.fetch_bytes_max)
    partitions: tuple[ReplicaFetchPartition, ...] = wire("list", items=ReplicaFetchPartition,
                                                         max_len=_L.request_frames_max - 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaAck:
    topic_id: str = _topic_id()
    partition: int = wire("int", min=0, max=_L.partitions_per_topic_max - 1)
    leader_epoch: int = wire("int", min=0, max=EPOCH_MAX)
    log_end: int = wire("int", min=0)  # the follower's log end after its append (and fsync, if the topic says so)

    def validate(self) -> None:
        _check_topic_id(self.topic_id, "topic_id")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaAckRequest:
    replica_id: int = _node()
    broker_epoch: int = wire("int", min=0, max=INT64_MAX)
    partitions: tuple[ReplicaAck, ...] = wire("list", items=ReplicaAck, max_len=_L.list_items_max)


@dataclass(frozen=True, slots=True, kw_only=True)
class MetadataFetchRequest:
    broker_id: int = _node()
    broker_epoch: int = wire("int", -1, min=-1, max=INT64_MAX)  # -1: not registered yet
    offset: int = wire("int", min=1)  # the first metadata log index wanted (last applied + 1)
    max_records: int = wire("int", 1000, min=1, max=_L.metadata_fetch_records_max)
    max_wait_ms: int = wire("int", 0, min=0, max=_L.fetch_wait_ms_max)


# ================================================================ controller port (brokers only)

@dataclass(frozen=True, slots=True, kw_only=True)
class RaftEntry:
    term: int = wire("int", min=0, max=INT64_MAX)
    index: int = wire("int", min=1, max=INT64_MAX)
    data: bytes = wire("bytes", max_len=_L.raft_entry_bytes_max)


@dataclass(frozen=True, slots=True, kw_only=True)
class VoteRequestWire:
    term: int = wire("int", min=0, max=INT64_MAX)
    candidate: int = _node()
    last_index: int = wire("int", min=0, max=INT64_MAX)
    last_term: int = wire("int", min=0, max=INT64_MAX)
    pre_vote: bool = wire("bool", False)


@dataclass(frozen=True, slots=True, kw_only=True)
class VoteResponseWire:
    term: int = wire("int", min=0, max=INT64_MAX)
    granted: bool = wire("bool")
    pre_vote: bool = wire("bool", False)


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendRequestWire:
    term: int = wire("int", min=0, max=INT64_MAX)
    leader: int = _node()
    prev_index: int = wire("int", min=0, max=INT64_MAX)
    prev_term: int = wire("int", min=0, max=INT64_MAX)
    entries: tuple[RaftEntry, ...] = wire("list", items=RaftEntry, max_len=_L.raft_append_entries_max)
    commit: int = wire("int", min=0, max=INT64_MAX)


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendResponseWire:
    term: int = wire("int", min=0, max=INT64_MAX)
    success: bool = wire("bool")
    match_index: int = wire("int", min=0, max=INT64_MAX)
    hint_index: int = wire("int", min=0, max=INT64_MAX)  # on failure: where the leader should retry from


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotRequestWire:
    term: int = wire("int", min=0, max=INT64_MAX)
    leader: int = _node()
    last_index: int = wire("int", min=0, max=INT64_MAX)
    last_term: int = wire("int", min=0, max=INT64_MAX)
    data: bytes = wire("bytes", max_len=_L.metadata_snapshot_bytes_max)


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotResponseWire:
    term: int = wire("int", min=0, max=INT64_MAX)
    last_index: int = wire("int", min=0, max=INT64_MAX)


RAFT_KINDS: dict[str, type] = {
    "vote_request": VoteRequestWire, "vote_response": VoteResponseWire,
    "append_request": AppendRequestWire, "append_response": AppendResponseWire,
    "snapshot_request": SnapshotRequestWire, "snapshot_response": SnapshotResponseWire,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RaftRequest:
    cluster_id: str = wire("text", max_len=64)  # a message for another cluster is refused
    src: int = _node()
    dst: int = _node()
    kind: str = wire("text", choices=tuple(RAFT_KINDS))
    message: dict[str, Any] = wire("map", max_len=16)

    def validate(self) -> None:
        raft_message(self)


def raft_message(req: RaftRequest) -> Any:
    """The typed Raft message a ``raft`` request carries (``VoteRequestWire`` …), checked."""
    return parse(RAFT_KINDS[req.kind], req.message, "message")


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerRegisterRequest:
    cluster_id: str = wire("text", max_len=64)
    broker_id: int = _node()
    incarnation: int = wire("int", min=0, max=INT64_MAX)  # random per process start
    host: str = wire("text", max_len=255)  # advertised host
    port: int = wire("int", min=1, max=65535)
    pub_port: int = wire("int", min=1, max=65535)
    controller_port: int = wire("int", 0, min=0, max=65535)  # 0: not a voter
    rack: str | None = wire("text", None, nullable=True, max_len=64)


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerHeartbeatRequest:
    broker_id: int = _node()
    broker_epoch: int = wire("int", min=0, max=INT64_MAX)
    metadata_offset: int = wire("int", min=0, max=INT64_MAX)  # last metadata index the broker applied
    want_shutdown: bool = wire("bool", False)


@dataclass(frozen=True, slots=True, kw_only=True)
class IsrProposal:
    topic_id: str = _topic_id()
    partition: int = wire("int", min=0, max=_L.partitions_per_topic_max - 1)
    leader_epoch: int = wire("int", min=0, max=EPOCH_MAX)
    partition_epoch: int = wire("int", min=0, max=EPOCH_MAX)
    isr: tuple[int, ...] = wire("list", items=wire("int", min=0, max=NODE_ID_MAX), max_len=REPLICAS_MAX)

    def validate(self) -> None:
        _check_topic_id(self.topic_id, "topic_id")
        if not self.isr:
            raise FabricError("INVALID_FIELD", "isr: must name at least the leader")
        if len(set(self.isr)) != len(self.isr):
            raise FabricError("INVALID_FIELD", f"isr: {list(self.isr)} names a broker twice")


@dataclass(frozen=True, slots=True, kw_only=True)
class AlterPartitionRequest:
    broker_id: int = _node()
    broker_epoch: int = wire("int", min=0, max=INT64_MAX)
    partitions: tuple[IsrProposal, ...] = wire("list", items=IsrProposal, max_len=_L.list_items_max)


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlledShutdownRequest:
    broker_id: int = _node()
    broker_epoch: int = wire("int", min=0, max=INT64_MAX)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterStatusRequest:
    partitions: bool = wire("bool", False)  # add every partition's leader/epoch/isr


# Broker port: a broker parses these with the client operations (messages.parse_request).
BROKER_OPERATIONS: dict[str, type] = {
    "replica_fetch": ReplicaFetchRequest,
    "replica_ack": ReplicaAckRequest,
    "metadata_fetch": MetadataFetchRequest,
}

# Controller port: parsed by parse_controller_request.  The topic operations are the section-5
# requests a broker forwards to the active controller unchanged.
CONTROLLER_OPERATIONS: dict[str, type] = {
    "raft": RaftRequest,
    "broker_register": BrokerRegisterRequest,
    "broker_heartbeat": BrokerHeartbeatRequest,
    "alter_partition": AlterPartitionRequest,
    "controlled_shutdown": ControlledShutdownRequest,
    "cluster_status": ClusterStatusRequest,
    "metadata_fetch": MetadataFetchRequest,
    "create_topics": CreateTopicsRequest,
    "delete_topics": DeleteTopicsRequest,
    "create_partitions": CreatePartitionsRequest,
    "alter_topic_configs": AlterTopicConfigsRequest,
}

for _name, _cls in BROKER_OPERATIONS.items():
    register_operation(_name, _cls)


def parse_controller_request(header: dict[str, Any]) -> tuple[Envelope, Any]:
    """Check the envelope, then the fields of a controller-port operation (every one at v1)."""
    env = parse(Envelope, header)
    cls = CONTROLLER_OPERATIONS.get(env.op)
    if cls is None:
        raise FabricError("UNKNOWN_OPERATION", f"operation {env.op!r} is not served on the controller port")
    if env.v != 1:
        raise FabricError("UNSUPPORTED_VERSION", f"{env.op} supports versions 1-1, not {env.v}")
    return env, parse(cls, header)
