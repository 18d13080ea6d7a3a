"""Wire requests of the consumer-group operations, registered with the protocol at import.

Same rules as ``fabric.protocol.messages``: small frozen dataclasses whose fields carry ``wire``
specs, checked by ``parse``; ``validate`` adds the checks that have their own error codes
(INVALID_GROUP_ID, INVALID_SESSION_TIMEOUT, OFFSET_METADATA_TOO_LARGE).  Replies are plain maps
built by the coordinator (``Reply.result``); SPEC.md section 12 documents both.

Partition sets travel as ``[{topic, partitions: [uint]}]`` (``TopicPartitions``), not as one map
per partition: a member owning 500 partitions of one topic sends one short array.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from typing import Any, Iterable

from ..protocol.errors import FabricError
from ..protocol.limits import DEFAULT_LIMITS
from ..protocol.messages import check_topic_name, register_operation
from ..protocol.schema import Wire, wire

_L = DEFAULT_LIMITS

GROUP_ID_CHARS_MAX = 255
MEMBER_ID_CHARS_MAX = 255
CLIENT_ID_CHARS_MAX = 128
ASSIGNOR_NAME_CHARS_MAX = 64
ASSIGNORS_MAX = 16
SESSION_TIMEOUT_MS_MIN = 1_000
SESSION_TIMEOUT_MS_MAX = 300_000
REBALANCE_TIMEOUT_MS_MIN = 1_000
REBALANCE_TIMEOUT_MS_MAX = 3_600_000
OFFSET_METADATA_CHARS_MAX = 4096
GROUP_IDS_MAX = 1000  # per describe/delete request

_PARTITION = Wire("int", min=0, max=_L.partitions_per_topic_max - 1)  # items of partition lists


def check_group_id(group_id: str, field: str = "group_id") -> None:
    if not 1 <= len(group_id) <= GROUP_ID_CHARS_MAX:
        raise FabricError("INVALID_GROUP_ID",
                          f"{field}: group ids are 1-{GROUP_ID_CHARS_MAX} characters, got {len(group_id)}")


def _check_instance_id(instance_id: str | None) -> None:
    if instance_id is not None and not 1 <= len(instance_id) <= GROUP_ID_CHARS_MAX:
        raise FabricError("INVALID_FIELD",
                          f"group_instance_id: 1-{GROUP_ID_CHARS_MAX} characters, or null for a dynamic member")


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicPartitions:
    topic: str = wire("text", max_len=256)
    partitions: tuple[int, ...] = wire("list", items=_PARTITION, max_len=_L.partitions_per_topic_max)


def flatten(entries: Iterable[TopicPartitions]) -> tuple[tuple[str, int], ...]:
    """``[{topic, partitions}]`` -> sorted, de-duplicated ``(topic, partition)`` pairs."""
    return tuple(sorted({(e.topic, p) for e in entries for p in e.partitions}))


def topic_partitions(tps: Iterable[tuple[str, int]]) -> list[dict[str, Any]]:
    """Sorted ``(topic, partition)`` pairs -> the wire form ``[{topic, partitions}]``."""
    return [{"topic": t, "partitions": [p for _, p in group]}
            for t, group in groupby(sorted(tps), key=lambda tp: tp[0])]


@dataclass(frozen=True, slots=True, kw_only=True)
class FindCoordinatorRequest:
    group_id: str = wire("text")

    def validate(self) -> None:
        check_group_id(self.group_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinGroupRequest:
    group_id: str = wire("text")
    member_id: str = wire("text", "", max_len=MEMBER_ID_CHARS_MAX)  # "" on the first join
    group_instance_id: str | None = wire("text", None, nullable=True)  # static membership
    client_id: str = wire("text", "", max_len=CLIENT_ID_CHARS_MAX)
    session_timeout_ms: int = wire("int", 45_000)
    # How long the coordinator waits for this member to rejoin during a rebalance, and the longest
    # it may go without polling (heartbeat ``ms_since_poll``): Kafka's max.poll.interval.ms.
    rebalance_timeout_ms: int = wire("int", 300_000, min=REBALANCE_TIMEOUT_MS_MIN, max=REBALANCE_TIMEOUT_MS_MAX)
    topics: tuple[str, ...] = wire("list", items=Wire("text", max_len=256), max_len=_L.list_items_max)
    assignors: tuple[str, ...] = wire("list", items=Wire("text", max_len=ASSIGNOR_NAME_CHARS_MAX),
                                      max_len=ASSIGNORS_MAX)  # preference order
    owned: tuple[TopicPartitions, ...] = wire("list", (), items=TopicPartitions, max_len=_L.list_items_max)
    generation: int = wire("int", -1, min=-1)  # the generation in which ``owned`` was assigned

    def validate(self) -> None:
        check_group_id(self.group_id)
        _check_instance_id(self.group_instance_id)
        if not SESSION_TIMEOUT_MS_MIN <= self.session_timeout_ms <= SESSION_TIMEOUT_MS_MAX:
            raise FabricError("INVALID_SESSION_TIMEOUT",
                              f"session_timeout_ms: {self.session_timeout_ms} is outside "
                              f"[{SESSION_TIMEOUT_MS_MIN}, {SESSION_TIMEOUT_MS_MAX}]")
        if not self.assignors:
            raise FabricError("INVALID_FIELD", "assignors: name at least one assignor")
        for t in self.topics:
            check_topic_name(t, allow_internal=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncGroupRequest:
    group_id: str = wire("text")
    member_id: str = wire("text", max_len=MEMBER_ID_CHARS_MAX)
    generation: int = wire("int", min=-1)
    group_instance_id: str | None = wire("text", None, nullable=True)

    def validate(self) -> None:
        check_group_id(self.group_id)
        _check_instance_id(self.group_instance_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatRequest:
    group_id: str = wire("text")
    member_id: str = wire("text", max_len=MEMBER_ID_CHARS_MAX)
    generation: int = wire("int", min=-1)
    group_instance_id: str | None = wire("text", None, nullable=True)
    # Milliseconds since the application last asked the client for records.  The coordinator
    # removes the member once this passes its rebalance_timeout_ms.  0 = polling now.
    ms_since_poll: int = wire("int", 0, min=0, max=2**31 - 1)

    def validate(self) -> None:
        check_group_id(self.group_id)
        _check_instance_id(self.group_instance_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaveGroupRequest:
    """A member leaving, or (``member_id`` "" and ``group_instance_id`` set) a tool removing a
    static member by instance id."""

    group_id: str = wire("text")
    member_id: str = wire("text", "", max_len=MEMBER_ID_CHARS_MAX)
    group_instance_id: str | None = wire("text", None, nullable=True)

    def validate(self) -> None:
        check_group_id(self.group_id)
        _check_instance_id(self.group_instance_id)
        if not self.member_id and self.group_instance_id is None:
            raise FabricError("INVALID_FIELD", "leave_group: give member_id, group_instance_id or both")


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitOffset:
    topic: str = wire("text", max_len=256)
    partition: int = wire("int", min=0, max=_L.partitions_per_topic_max - 1)
    offset: int = wire("int", min=0)
    metadata: str = wire("text", "")
    leader_epoch: int = wire("int", -1, min=-1, max=2**31 - 1)

    def validate(self) -> None:
        if len(self.metadata) > OFFSET_METADATA_CHARS_MAX:
            raise FabricError("OFFSET_METADATA_TOO_LARGE",
                              f"{self.topic}[{self.partition}]: metadata is {len(self.metadata)} characters; "
                              f"the limit is {OFFSET_METADATA_CHARS_MAX}")


@dataclass(frozen=True, slots=True, kw_only=True)
class OffsetCommitRequest:
    """A member commits with its generation and member id; a tool commits to an empty group with
    ``generation`` -1 and ``member_id`` "".  All or nothing."""

    group_id: str = wire("text")
    generation: int = wire("int", -1, min=-1)
    member_id: str = wire("text", "", max_len=MEMBER_ID_CHARS_MAX)
    group_instance_id: str | None = wire("text", None, nullable=True)
    offsets: tuple[CommitOffset, ...] = wire("list", items=CommitOffset, max_len=_L.list_items_max)

    def validate(self) -> None:
        check_group_id(self.group_id)
        _check_instance_id(self.group_instance_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchTopic:
    topic: str = wire("text", max_len=256)
    partitions: tuple[int, ...] | None = wire("list", None, nullable=True, items=_PARTITION,
                                              max_len=_L.partitions_per_topic_max)  # null: all committed


@dataclass(frozen=True, slots=True, kw_only=True)
class OffsetFetchRequest:
    group_id: str = wire("text")
    topics: tuple[FetchTopic, ...] | None = wire("list", None, nullable=True, items=FetchTopic,
                                                 max_len=_L.list_items_max)  # null: all committed

    def validate(self) -> None:
        check_group_id(self.group_id)


GROUP_STATES = ("EMPTY", "PREPARING_REBALANCE", "COMPLETING_REBALANCE", "STABLE", "DEAD")


@dataclass(frozen=True, slots=True, kw_only=True)
class ListGroupsRequest:
    states: tuple[str, ...] | None = wire("list", None, nullable=True,
                                          items=Wire("text", choices=GROUP_STATES), max_len=len(GROUP_STATES))


def _check_group_ids(ids: tuple[str, ...]) -> None:
    if not ids:
        raise FabricError("INVALID_FIELD", "group_ids: name at least one group")
    for i, g in enumerate(ids):
        check_group_id(g, f"group_ids[{i}]")


@dataclass(frozen=True, slots=True, kw_only=True)
class DescribeGroupsRequest:
    group_ids: tuple[str, ...] = wire("list", items=Wire("text"), max_len=GROUP_IDS_MAX)

    def validate(self) -> None:
        _check_group_ids(self.group_ids)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteGroupsRequest:
    group_ids: tuple[str, ...] = wire("list", items=Wire("text"), max_len=GROUP_IDS_MAX)

    def validate(self) -> None:
        _check_group_ids(self.group_ids)


GROUP_OPERATIONS: dict[str, type] = {
    "find_coordinator": FindCoordinatorRequest,  # answered by the broker from metadata, not the coordinator
    "join_group": JoinGroupRequest,
    "sync_group": SyncGroupRequest,
    "heartbeat": HeartbeatRequest,
    "leave_group": LeaveGroupRequest,
    "offset_commit": OffsetCommitRequest,
    "offset_fetch": OffsetFetchRequest,
    "list_groups": ListGroupsRequest,
    "describe_groups": DescribeGroupsRequest,
    "delete_groups": DeleteGroupsRequest,
}

for _name, _cls in GROUP_OPERATIONS.items():
    register_operation(_name, _cls)
