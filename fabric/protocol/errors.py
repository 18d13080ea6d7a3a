"""Error codes of the Fabric wire protocol, and the exceptions that carry them.

Why one table: every reply error on the wire is ``{code, name, message}``; clients in any language
switch on ``code`` (stable forever) and show ``name``/``message`` to people.  The ``retriable``
flag tells a client whether the same request may succeed later without the user changing
anything (after a metadata refresh, a back-off, or a leader move).  SPEC.md reproduces this table;
``tests/test_spec.py`` checks that the two agree.

Whose fault it was (h11's LocalProtocolError / RemoteProtocolError idea): a ``FabricError`` raised
inside the broker becomes an error reply to the client that caused it; it never stops the broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class ErrorCode:
    code: int
    name: str
    retriable: bool
    meaning: str


_TABLE: tuple[ErrorCode, ...] = (
    ErrorCode(1, "UNKNOWN_ERROR", False, "An unexpected server error; the message says more."),
    ErrorCode(2, "MALFORMED_REQUEST", False,
              "The frames are not a request: no header frame, invalid CBOR, or the header is not a map."),
    ErrorCode(3, "UNKNOWN_OPERATION", False, "The header's `op` names no operation this broker knows."),
    ErrorCode(4, "UNSUPPORTED_VERSION", False, "The operation exists but not at the requested `v`."),
    ErrorCode(5, "INVALID_FIELD", False,
              "A header field is missing, has the wrong CBOR type, or is out of range; the message names it."),
    ErrorCode(6, "FRAME_TOO_LARGE", False, "A frame is larger than the broker's limit for that frame."),
    ErrorCode(7, "TOO_MANY_FRAMES", False, "The request has more frames than the limit."),
    ErrorCode(8, "CORRUPT_BATCH", False, "A record batch failed its CRC or length check."),
    ErrorCode(9, "INVALID_BATCH", False,
              "A record batch is well-formed but breaks a rule (magic, record count, attributes, timestamps)."),
    ErrorCode(10, "BATCH_TOO_LARGE", False, "A record batch is larger than the topic's `max_batch_bytes`."),
    ErrorCode(11, "UNKNOWN_TOPIC_OR_PARTITION", True,
              "The topic or partition does not exist (it may be being created)."),
    ErrorCode(12, "TOPIC_ALREADY_EXISTS", False, "A topic with that name exists."),
    ErrorCode(13, "INVALID_TOPIC_NAME", False,
              "Topic names are 1-200 characters of [A-Za-z0-9._-], not '.' or '..', and do not start with '__' unless internal."),
    ErrorCode(14, "INVALID_PARTITIONS", False, "The partition count is out of range."),
    ErrorCode(15, "INVALID_REPLICATION_FACTOR", False, "The replication factor exceeds the live brokers."),
    ErrorCode(16, "INVALID_CONFIG", False, "A topic or request config key is unknown or its value is invalid."),
    ErrorCode(17, "OFFSET_OUT_OF_RANGE", False,
              "The requested offset is below the log start or above the log end."),
    ErrorCode(18, "NOT_LEADER", True, "This broker does not lead that partition; refresh metadata."),
    ErrorCode(19, "REQUEST_TIMED_OUT", True, "The request did not complete within its `timeout_ms`."),
    ErrorCode(20, "LIMIT_EXCEEDED", False,
              "A broker-wide limit (topics, partitions, group members) would be exceeded."),
    ErrorCode(21, "STORAGE_ERROR", True, "The broker could not read or write its disk for that partition."),
    ErrorCode(22, "NOT_ENOUGH_REPLICAS", True, "Fewer in-sync replicas than `min_insync_replicas`."),
    ErrorCode(23, "BROKER_SHUTTING_DOWN", True, "The broker is stopping; retry against another or later."),
    ErrorCode(24, "TOPIC_AUTHORIZATION_FAILED", False, "The principal may not use that topic."),
    ErrorCode(25, "POLICY_VIOLATION", False, "The request breaks a broker policy (e.g. deleting an internal topic)."),
    # Flow control (SPEC.md "Flow control").
    ErrorCode(26, "THROTTLED", True,
              "Too many reply bytes wait unread for this connection (or for all): read replies, back off, retry."),
    ErrorCode(27, "TOO_MANY_CONNECTIONS", True,
              "The broker is at its connection limit and closes this connection: back off exponentially, reconnect."),
    # Idempotent producer (SPEC.md "Idempotent producer": the client's reaction to each).
    ErrorCode(30, "OUT_OF_ORDER_SEQUENCE", False,
              "The batch's sequence does not continue the producer's on that partition: an earlier batch is missing."),
    ErrorCode(31, "DUPLICATE_SEQUENCE", False, "The batch was already written; the reply carries its offset."),
    ErrorCode(32, "INVALID_PRODUCER_EPOCH", False, "A newer producer with the same id has fenced this one."),
    # Consumer groups.
    ErrorCode(40, "COORDINATOR_NOT_AVAILABLE", True, "The group coordinator is loading or moving."),
    ErrorCode(41, "NOT_COORDINATOR", True, "This broker is not the group's coordinator; look it up again."),
    ErrorCode(42, "ILLEGAL_GENERATION", False, "The member's generation is stale: rejoin the group."),
    ErrorCode(43, "UNKNOWN_MEMBER_ID", False, "The coordinator does not know this member id: rejoin."),
    ErrorCode(44, "REBALANCE_IN_PROGRESS", False, "The group is rebalancing: rejoin."),
    ErrorCode(45, "INCONSISTENT_GROUP_PROTOCOL", False, "The member's assignors share none with the group's."),
    ErrorCode(46, "INVALID_GROUP_ID", False, "The group id is empty or too long."),
    ErrorCode(47, "GROUP_NOT_EMPTY", False, "The operation needs a group without active members."),
    ErrorCode(48, "GROUP_ID_NOT_FOUND", False, "No such group."),
    ErrorCode(49, "FENCED_INSTANCE_ID", False, "Another member now uses this static instance id."),
    ErrorCode(50, "INVALID_SESSION_TIMEOUT", False, "The session timeout is outside the broker's range."),
    ErrorCode(51, "MEMBER_ID_REQUIRED", False, "First join: rejoin with the member id the reply carries."),
    ErrorCode(52, "OFFSET_METADATA_TOO_LARGE", False, "Commit metadata exceeds the limit."),
    # Cluster (SPEC.md "Cluster").
    ErrorCode(60, "FENCED_LEADER_EPOCH", True, "The request's leader epoch is older than the partition's: refresh metadata, retry."),
    ErrorCode(61, "UNKNOWN_LEADER_EPOCH", True, "The request's leader epoch is newer than this broker knows: its metadata lags; retry."),
    ErrorCode(62, "LEADER_NOT_AVAILABLE", True, "The partition has no leader right now (election or topic creation under way): refresh metadata, retry."),
    ErrorCode(63, "NOT_CONTROLLER", True, "This controller voter does not lead the quorum; the reply's `leader_id` names the one that does."),
    ErrorCode(64, "BROKER_FENCED", True, "The controller has fenced this broker (missed heartbeats): it serves no leadership until it heartbeats again."),
    ErrorCode(65, "STALE_BROKER_EPOCH", False, "A request from an older incarnation of a broker: register again."),
    ErrorCode(66, "REPLICA_NOT_AVAILABLE", True, "The replica is not (yet) assigned or in sync where the request expects it; retry."),
    ErrorCode(67, "UNKNOWN_BROKER", False, "The controller has no registration for this broker id: register first."),
    ErrorCode(68, "INVALID_UPDATE_VERSION", False, "A partition change names an old partition epoch: refresh the partition's state and decide again."),
    ErrorCode(69, "UNKNOWN_PRODUCER_ID", False,
              "The partition has no state for the batch's producer id (expired or never written) and the batch does not start at sequence 0: use a new producer id."),
    # Cluster administration (SPEC.md 13.7).
    ErrorCode(75, "INVALID_REPLICA_ASSIGNMENT", False, "A reassignment's target replicas are not 1-16 distinct registered brokers."),
    ErrorCode(76, "NO_REASSIGNMENT_IN_PROGRESS", False, "A cancel names a partition that is not being reassigned."),
)

BY_CODE: dict[int, ErrorCode] = {e.code: e for e in _TABLE}
BY_NAME: dict[str, ErrorCode] = {e.name: e for e in _TABLE}
ALL_ERRORS: tuple[ErrorCode, ...] = _TABLE


class FabricError(Exception):
    """An error with a wire code.  Raised by the core, turned into an error reply by the broker,
    and raised again by clients from an error reply."""

    error_name: ClassVar[str] = ""  # the table name a typed subclass stands for (below)

    def __init__(self, name: str, message: str = "", **details: Any) -> None:
        if name not in BY_NAME:
            raise ValueError(f"unknown error name {name!r}")
        self.error = BY_NAME[name]
        self.message = message or self.error.meaning
        self.details = details
        self.reply: dict[str, Any] | None = None  # the whole reply header, when raised by a client
        super().__init__(f"{name}: {self.message}")

    @property
    def code(self) -> int:
        return self.error.code

    @property
    def name(self) -> str:
        return self.error.name

    @property
    def retriable(self) -> bool:
        return self.error.retriable

    def to_wire(self) -> dict[str, Any]:
        return error_map(self.name, self.message)

    @classmethod
    def from_wire(cls, err: Any) -> "FabricError":
        """Build from a reply's ``error`` map; unknown codes still make a clear exception."""
        if not isinstance(err, dict):
            return cls("UNKNOWN_ERROR", f"malformed error in reply: {err!r}")
        code = err.get("code")
        known = BY_CODE.get(code) if isinstance(code, int) else None
        name = known.name if known else "UNKNOWN_ERROR"
        message = str(err.get("message") or err.get("name") or "")
        if known is None:
            message = f"code {code!r} {err.get('name')!r}: {message}"
        return cls(name, message)


def error_map(name: str, message: str = "") -> dict[str, Any]:
    e = BY_NAME[name]
    return {"code": e.code, "name": e.name, "message": message or e.meaning}


def _class_name(name: str) -> str:
    """``UNKNOWN_TOPIC_OR_PARTITION`` -> ``UnknownTopicOrPartitionError``: the rule every class below follows."""
    return "".join(part.capitalize() for part in name.split("_")) + "Error"


# ================================================================================ typed exceptions
# One exception class per error code (``UnknownTopicOrPartitionError`` …), so users can ``except``
# exactly what they handle.  All subclass FabricError; the broker raises the base class.  Written
# out (not made in a loop) so that readers and type checkers see them; the name is
# ``_class_name(error_name)`` and the docstring the table's meaning.  A new row in ``_TABLE``
# needs its class here and in ``_CLASSES``: tests/test_errors.py names any that is missing.

class UnknownErrorError(FabricError):
    """An unexpected server error; the message says more."""
    error_name = "UNKNOWN_ERROR"


class MalformedRequestError(FabricError):
    """The frames are not a request: no header frame, invalid CBOR, or the header is not a map."""
    error_name = "MALFORMED_REQUEST"


class UnknownOperationError(FabricError):
    """The header's `op` names no operation this broker knows."""
    error_name = "UNKNOWN_OPERATION"


class UnsupportedVersionError(FabricError):
    """The operation exists but not at the requested `v`."""
    error_name = "UNSUPPORTED_VERSION"


class InvalidFieldError(FabricError):
    """A header field is missing, has the wrong CBOR type, or is out of range; the message names it."""
    error_name = "INVALID_FIELD"


class FrameTooLargeError(FabricError):
    """A frame is larger than the broker's limit for that frame."""
    error_name = "FRAME_TOO_LARGE"


class TooManyFramesError(FabricError):
    """The request has more frames than the limit."""
    error_name = "TOO_MANY_FRAMES"


class CorruptBatchError(FabricError):
    """A record batch failed its CRC or length check."""
    error_name = "CORRUPT_BATCH"


class InvalidBatchError(FabricError):
    """A record batch is well-formed but breaks a rule (magic, record count, attributes, timestamps)."""
    error_name = "INVALID_BATCH"


class BatchTooLargeError(FabricError):
    """A record batch is larger than the topic's `max_batch_bytes`."""
    error_name = "BATCH_TOO_LARGE"


class UnknownTopicOrPartitionError(FabricError):
    """The topic or partition does not exist (it may be being created)."""
    error_name = "UNKNOWN_TOPIC_OR_PARTITION"


class TopicAlreadyExistsError(FabricError):
    """A topic with that name exists."""
    error_name = "TOPIC_ALREADY_EXISTS"


class InvalidTopicNameError(FabricError):
    """Topic names are 1-200 characters of [A-Za-z0-9._-], not '.' or '..', and do not start with '__'
    unless internal."""
    error_name = "INVALID_TOPIC_NAME"


class InvalidPartitionsError(FabricError):
    """The partition count is out of range."""
    error_name = "INVALID_PARTITIONS"


class InvalidReplicationFactorError(FabricError):
    """The replication factor exceeds the live brokers."""
    error_name = "INVALID_REPLICATION_FACTOR"


class InvalidConfigError(FabricError):
    """A topic or request config key is unknown or its value is invalid."""
    error_name = "INVALID_CONFIG"


class OffsetOutOfRangeError(FabricError):
    """The requested offset is below the log start or above the log end."""
    error_name = "OFFSET_OUT_OF_RANGE"


class NotLeaderError(FabricError):
    """This broker does not lead that partition; refresh metadata."""
    error_name = "NOT_LEADER"


class RequestTimedOutError(FabricError):
    """The request did not complete within its `timeout_ms`."""
    error_name = "REQUEST_TIMED_OUT"


class LimitExceededError(FabricError):
    """A broker-wide limit (topics, partitions, group members) would be exceeded."""
    error_name = "LIMIT_EXCEEDED"


class StorageErrorError(FabricError):
    """The broker could not read or write its disk for that partition."""
    error_name = "STORAGE_ERROR"


class NotEnoughReplicasError(FabricError):
    """Fewer in-sync replicas than `min_insync_replicas`."""
    error_name = "NOT_ENOUGH_REPLICAS"


class BrokerShuttingDownError(FabricError):
    """The broker is stopping; retry against another or later."""
    error_name = "BROKER_SHUTTING_DOWN"


class TopicAuthorizationFailedError(FabricError):
    """The principal may not use that topic."""
    error_name = "TOPIC_AUTHORIZATION_FAILED"


class PolicyViolationError(FabricError):
    """The request breaks a broker policy (e.g. deleting an internal topic)."""
    error_name = "POLICY_VIOLATION"


class ThrottledError(FabricError):
    """Too many reply bytes wait unread for this connection (or for all): read replies, back off, retry."""
    error_name = "THROTTLED"


class TooManyConnectionsError(FabricError):
    """The broker is at its connection limit and closes this connection: back off exponentially, reconnect."""
    error_name = "TOO_MANY_CONNECTIONS"


class OutOfOrderSequenceError(FabricError):
    """The batch's sequence does not continue the producer's on that partition: an earlier batch is missing."""
    error_name = "OUT_OF_ORDER_SEQUENCE"


class DuplicateSequenceError(FabricError):
    """The batch was already written; the reply carries its offset."""
    error_name = "DUPLICATE_SEQUENCE"


class InvalidProducerEpochError(FabricError):
    """A newer producer with the same id has fenced this one."""
    error_name = "INVALID_PRODUCER_EPOCH"


class CoordinatorNotAvailableError(FabricError):
    """The group coordinator is loading or moving."""
    error_name = "COORDINATOR_NOT_AVAILABLE"


class NotCoordinatorError(FabricError):
    """This broker is not the group's coordinator; look it up again."""
    error_name = "NOT_COORDINATOR"


class IllegalGenerationError(FabricError):
    """The member's generation is stale: rejoin the group."""
    error_name = "ILLEGAL_GENERATION"


class UnknownMemberIdError(FabricError):
    """The coordinator does not know this member id: rejoin."""
    error_name = "UNKNOWN_MEMBER_ID"


class RebalanceInProgressError(FabricError):
    """The group is rebalancing: rejoin."""
    error_name = "REBALANCE_IN_PROGRESS"


class InconsistentGroupProtocolError(FabricError):
    """The member's assignors share none with the group's."""
    error_name = "INCONSISTENT_GROUP_PROTOCOL"


class InvalidGroupIdError(FabricError):
    """The group id is empty or too long."""
    error_name = "INVALID_GROUP_ID"


class GroupNotEmptyError(FabricError):
    """The operation needs a group without active members."""
    error_name = "GROUP_NOT_EMPTY"


class GroupIdNotFoundError(FabricError):
    """No such group."""
    error_name = "GROUP_ID_NOT_FOUND"


class FencedInstanceIdError(FabricError):
    """Another member now uses this static instance id."""
    error_name = "FENCED_INSTANCE_ID"


class InvalidSessionTimeoutError(FabricError):
    """The session timeout is outside the broker's range."""
    error_name = "INVALID_SESSION_TIMEOUT"


class MemberIdRequiredError(FabricError):
    """First join: rejoin with the member id the reply carries."""
    error_name = "MEMBER_ID_REQUIRED"


class OffsetMetadataTooLargeError(FabricError):
    """Commit metadata exceeds the limit."""
    error_name = "OFFSET_METADATA_TOO_LARGE"


class FencedLeaderEpochError(FabricError):
    """The request's leader epoch is older than the partition's: refresh metadata, retry."""
    error_name = "FENCED_LEADER_EPOCH"


class UnknownLeaderEpochError(FabricError):
    """The request's leader epoch is newer than this broker knows: its metadata lags; retry."""
    error_name = "UNKNOWN_LEADER_EPOCH"


class LeaderNotAvailableError(FabricError):
    """The partition has no leader right now (election or topic creation under way): refresh metadata, retry."""
    error_name = "LEADER_NOT_AVAILABLE"


class NotControllerError(FabricError):
    """This controller voter does not lead the quorum; the reply's `leader_id` names the one that does."""
    error_name = "NOT_CONTROLLER"


class BrokerFencedError(FabricError):
    """The controller has fenced this broker (missed heartbeats): it serves no leadership until it heartbeats again."""
    error_name = "BROKER_FENCED"


class StaleBrokerEpochError(FabricError):
    """A request from an older incarnation of a broker: register again."""
    error_name = "STALE_BROKER_EPOCH"


class ReplicaNotAvailableError(FabricError):
    """The replica is not (yet) assigned or in sync where the request expects it; retry."""
    error_name = "REPLICA_NOT_AVAILABLE"


class UnknownBrokerError(FabricError):
    """The controller has no registration for this broker id: register first."""
    error_name = "UNKNOWN_BROKER"


class InvalidUpdateVersionError(FabricError):
    """A partition change names an old partition epoch: refresh the partition's state and decide again."""
    error_name = "INVALID_UPDATE_VERSION"


class UnknownProducerIdError(FabricError):
    """The partition has no state for the batch's producer id (expired or never written) and the batch does not start at sequence 0: use a new producer id."""
    error_name = "UNKNOWN_PRODUCER_ID"


class InvalidReplicaAssignmentError(FabricError):
    """A reassignment's target replicas are not 1-16 distinct registered brokers."""
    error_name = "INVALID_REPLICA_ASSIGNMENT"


class NoReassignmentInProgressError(FabricError):
    """A cancel names a partition that is not being reassigned."""
    error_name = "NO_REASSIGNMENT_IN_PROGRESS"


_CLASSES: tuple[type[FabricError], ...] = (
    UnknownErrorError, MalformedRequestError, UnknownOperationError, UnsupportedVersionError,
    InvalidFieldError, FrameTooLargeError, TooManyFramesError, CorruptBatchError,
    InvalidBatchError, BatchTooLargeError, UnknownTopicOrPartitionError, TopicAlreadyExistsError,
    InvalidTopicNameError, InvalidPartitionsError, InvalidReplicationFactorError, InvalidConfigError,
    OffsetOutOfRangeError, NotLeaderError, RequestTimedOutError, LimitExceededError,
    StorageErrorError, NotEnoughReplicasError, BrokerShuttingDownError, TopicAuthorizationFailedError,
    PolicyViolationError, ThrottledError, TooManyConnectionsError, OutOfOrderSequenceError,
    DuplicateSequenceError, InvalidProducerEpochError,
    CoordinatorNotAvailableError, NotCoordinatorError, IllegalGenerationError, UnknownMemberIdError,
    RebalanceInProgressError, InconsistentGroupProtocolError, InvalidGroupIdError, GroupNotEmptyError,
    GroupIdNotFoundError, FencedInstanceIdError, InvalidSessionTimeoutError, MemberIdRequiredError,
    OffsetMetadataTooLargeError,
    FencedLeaderEpochError, UnknownLeaderEpochError, LeaderNotAvailableError, NotControllerError,
    BrokerFencedError, StaleBrokerEpochError, ReplicaNotAvailableError, UnknownBrokerError, InvalidUpdateVersionError,
    UnknownProducerIdError, InvalidReplicaAssignmentError, NoReassignmentInProgressError,
)

EXCEPTIONS: dict[str, type[FabricError]] = {cls.error_name: cls for cls in _CLASSES}


def exception_for(err: Any) -> FabricError:
    """A reply's ``error`` map as the matching typed exception."""
    base = FabricError.from_wire(err)
    return EXCEPTIONS.get(base.name, FabricError)(base.name, base.message)
