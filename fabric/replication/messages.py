"""The data-replication messages between a partition's leader and its followers, as small frozen
dataclasses that validate themselves (STYLE rule 3).

Why they live here and not in ``fabric/protocol``: the leader and follower state machines
(``leader.py``, ``follower.py``) take and return these objects, never bytes or sockets; the broker
shell turns them into wire frames with ``to_wire()`` (a CBOR-able dict of ints, strings, bytes,
lists and None) and back with ``from_wire(d)``, which raises ``ValueError`` naming the first bad
field of a malformed dict (a hostile or buggy peer must not crash the core: STYLE rule 11).

The four messages (every one names its partition, so a shell can route it without context):

``Push``              leader -> followers over PUB: one batch the leader appended, at
                      ``base_offset``, in ``leader_epoch``, with the leader's high watermark.
                      PUB may drop it; nothing depends on it arriving (fetch repairs).
``ReplicaFetch``      follower -> leader over DEALER/ROUTER: "send me what you have from
                      ``fetch_offset``; my newest batch is of ``last_fetched_epoch``" (KIP-320: the
                      leader checks the follower's log agrees with its own before serving it).
``ReplicaFetchReply`` leader -> follower: batches from ``fetch_offset`` (whole batches), or
                      ``diverging_epoch = (epoch, end_offset)``: the follower's log stops agreeing
                      with the leader's there, truncate and fetch again; or an ``error``.
                      ``leader_epoch`` and ``fetch_offset`` echo the request, so a follower can
                      drop a reply to a fetch it no longer waits for.
``ReplicaAck``        follower -> leader: "my log ends at ``log_end``" after a pushed batch was
                      appended, so ``acks=all`` is answered without waiting for the next fetch.

Both follower messages carry the follower process's ``incarnation`` (Kafka's broker epoch,
KIP-903): a message delayed from a previous incarnation of a restarted follower (which may have
lost its unflushed tail) must not count toward the ISR or the high watermark.  The leader refuses
(fetch: ``STALE_BROKER_EPOCH``) or ignores (ack) one older than it knows for that follower.

``error`` is an error *name* from ``fabric/protocol/errors.py`` (or one reserved for this issue
there, e.g. ``FENCED_LEADER_EPOCH``), or None; the shell maps names to wire codes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

__all__ = ["Push", "ReplicaAck", "ReplicaFetch", "ReplicaFetchReply", "ReplicationMessage", "from_wire"]

INT32_MAX = (1 << 31) - 1
INT64_MAX = (1 << 63) - 1


def _int(name: str, value: Any, low: int, high: int = INT64_MAX) -> None:
    if type(value) is not int or not low <= value <= high:  # (bool is not an int here)
        raise ValueError(f"{name} must be an int in [{low}, {high}], not {value!r}")


def _check(cls_name: str, obj: Any) -> None:
    """Validate every field by the spec in the class's ``_SPEC`` table."""
    for name, spec in obj._SPEC.items():
        value = getattr(obj, name)
        where = f"{cls_name}.{name}"
        if spec == "str":
            if type(value) is not str or not value:
                raise ValueError(f"{where} must be a non-empty string, not {value!r}")
        elif spec == "bytes":
            if type(value) is not bytes:
                raise ValueError(f"{where} must be bytes, not {type(value).__name__}")
        elif spec == "error":
            if value is not None and (type(value) is not str or not value):
                raise ValueError(f"{where} must be an error name or None, not {value!r}")
        elif spec == "diverging":
            if value is not None:
                if type(value) is not tuple or len(value) != 2:
                    raise ValueError(f"{where} must be (epoch, end_offset) or None, not {value!r}")
                _int(where + "[0]", value[0], -1, INT32_MAX)
                _int(where + "[1]", value[1], -1)
        else:  # an int spec: (low, high)
            _int(where, value, *spec)


class _Message:
    _SPEC: ClassVar[dict[str, Any]]
    TYPE: ClassVar[str]

    def __post_init__(self) -> None:
        _check(type(self).__name__, self)

    def to_wire(self) -> dict[str, Any]:
        """A CBOR-able dict (``type`` names the message; tuples become lists)."""
        d: dict[str, Any] = {"type": self.TYPE}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            d[f.name] = list(value) if isinstance(value, tuple) else value
        return d

    @classmethod
    def from_wire(cls, d: Any) -> Any:
        """The message a dict from ``to_wire`` describes; ``ValueError`` if it is malformed."""
        if not isinstance(d, dict):
            raise ValueError(f"{cls.__name__}: expected a dict, not {type(d).__name__}")
        if d.get("type", cls.TYPE) != cls.TYPE:
            raise ValueError(f"{cls.__name__}: type {d.get('type')!r} is not {cls.TYPE!r}")
        kwargs = {}
        for name, spec in cls._SPEC.items():
            if name not in d:
                raise ValueError(f"{cls.__name__}: field {name!r} is missing")
            value = d[name]
            if spec == "diverging" and isinstance(value, list):
                value = tuple(value)
            elif spec == "bytes" and isinstance(value, (bytearray, memoryview)):
                value = bytes(value)
            kwargs[name] = value
        return cls(**kwargs)


@dataclass(frozen=True, slots=True)
class Push(_Message):
    TYPE: ClassVar[str] = "push"
    _SPEC: ClassVar[dict[str, Any]] = {"topic_id": "str", "partition": (0, INT32_MAX),
                                       "leader_epoch": (0, INT32_MAX), "base_offset": (0, INT64_MAX),
                                       "high_watermark": (0, INT64_MAX), "batch": "bytes"}
    topic_id: str
    partition: int
    leader_epoch: int
    base_offset: int
    high_watermark: int
    batch: bytes


@dataclass(frozen=True, slots=True)
class ReplicaFetch(_Message):
    TYPE: ClassVar[str] = "replica_fetch"
    _SPEC: ClassVar[dict[str, Any]] = {"topic_id": "str", "partition": (0, INT32_MAX), "replica": (0, INT32_MAX),
                                       "leader_epoch": (0, INT32_MAX), "fetch_offset": (0, INT64_MAX),
                                       "last_fetched_epoch": (-1, INT32_MAX), "max_bytes": (1, INT32_MAX),
                                       "incarnation": (0, INT64_MAX)}
    topic_id: str
    partition: int
    replica: int  # the follower's node id
    leader_epoch: int  # the epoch the follower believes the leader has
    fetch_offset: int  # the follower's log end
    last_fetched_epoch: int  # epoch of the follower's newest batch (-1: none)
    max_bytes: int
    incarnation: int = 0  # the follower process's incarnation (KIP-903; 0: older than any registered)


@dataclass(frozen=True, slots=True)
class ReplicaFetchReply(_Message):
    TYPE: ClassVar[str] = "replica_fetch_reply"
    _SPEC: ClassVar[dict[str, Any]] = {"topic_id": "str", "partition": (0, INT32_MAX),
                                       "leader_epoch": (0, INT32_MAX), "fetch_offset": (0, INT64_MAX),
                                       "error": "error", "high_watermark": (0, INT64_MAX),
                                       "log_start": (0, INT64_MAX), "log_end": (0, INT64_MAX),
                                       "batches": "bytes", "diverging_epoch": "diverging"}
    topic_id: str
    partition: int
    leader_epoch: int  # echoed from the request
    fetch_offset: int  # echoed from the request
    error: str | None
    high_watermark: int
    log_start: int
    log_end: int
    batches: bytes
    diverging_epoch: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class ReplicaAck(_Message):
    TYPE: ClassVar[str] = "replica_ack"
    _SPEC: ClassVar[dict[str, Any]] = {"topic_id": "str", "partition": (0, INT32_MAX), "replica": (0, INT32_MAX),
                                       "leader_epoch": (0, INT32_MAX), "log_end": (0, INT64_MAX),
                                       "incarnation": (0, INT64_MAX)}
    topic_id: str
    partition: int
    replica: int
    leader_epoch: int
    log_end: int
    incarnation: int = 0  # as ReplicaFetch's


ReplicationMessage = Push | ReplicaFetch | ReplicaFetchReply | ReplicaAck
_BY_TYPE: dict[str, Any] = {c.TYPE: c for c in (Push, ReplicaFetch, ReplicaFetchReply, ReplicaAck)}


def from_wire(d: Any) -> ReplicationMessage:
    """Any of the four messages, by its ``type``; ``ValueError`` if malformed."""
    if not isinstance(d, dict) or d.get("type") not in _BY_TYPE:
        raise ValueError(f"not a replication message: {d!r:.80}")
    return _BY_TYPE[d["type"]].from_wire(d)
