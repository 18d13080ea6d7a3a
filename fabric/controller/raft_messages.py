"""Raft's messages and log entries as frozen dataclasses, with a CBOR-able wire form.

Why frozen dataclasses: the Raft core is sans-I/O, so a message is plain data that the node returns
and the shell (controller thread, or the simulator) carries.  ``to_wire`` gives a dict of ints,
bools, bytes and lists only, so the shell can CBOR-encode it without knowing Raft; ``from_wire``
is the inverse and rejects a dict of an unknown ``kind`` (a hostile or newer peer) with ValueError.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Union

from ..protocol.limits import DEFAULT_LIMITS as _LIMITS  # (SPEC 9: the one place limits live)

__all__ = ["Entry", "Snapshot", "VoteRequest", "VoteResponse", "AppendRequest", "AppendResponse",
           "SnapshotRequest", "SnapshotResponse", "RaftMessage", "message_from_wire"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry: ``data`` is opaque to Raft (a metadata record, or b"" for a leader's no-op)."""
    term: int
    index: int
    data: bytes

    def to_wire(self) -> list:
        return [self.term, self.index, self.data]

    @classmethod
    def from_wire(cls, wire: list) -> "Entry":
        term, index, data = wire
        return cls(_int(term), _int(index), _bytes(data))


def _int(value: Any) -> int:
    """Strict: a peer's str or float is an error, not something to convert."""
    if type(value) is not int:
        raise ValueError(f"expected an int, not {type(value).__name__}")
    return value


def _bytes(value: Any) -> bytes:
    # Never bytes(value): bytes(10**9) from a hostile peer would allocate a gigabyte.
    if not isinstance(value, (bytes, bytearray)):
        raise ValueError(f"expected bytes, not {type(value).__name__}")
    return bytes(value)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine as of ``last_index`` (whose entry had ``last_term``): replaces the log up
    to there, so compaction keeps what a lagging follower needs to catch up."""
    last_index: int
    last_term: int
    data: bytes


class _Wire:
    """to_wire/from_wire for flat dataclasses; ``kind`` names the class on the wire."""
    kind: ClassVar[str]

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = [e.to_wire() for e in value] if f.name == "entries" else value
        return out

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Any:
        if wire.get("kind") != cls.kind:
            raise ValueError(f"not a {cls.kind}: {wire.get('kind')!r}")
        kwargs = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name not in wire:
                raise ValueError(f"{cls.kind} lacks {f.name}")
            value = wire[f.name]
            if f.name == "entries":
                if not isinstance(value, (list, tuple)):
                    raise ValueError("entries must be a list")
                if len(value) > _LIMITS.raft_append_entries_max:
                    raise ValueError(f"{len(value)} entries in one message (at most {_LIMITS.raft_append_entries_max})")
                value = tuple(Entry.from_wire(e) for e in value)
                if any(len(e.data) > _LIMITS.raft_entry_bytes_max for e in value):
                    raise ValueError(f"an entry larger than {_LIMITS.raft_entry_bytes_max} bytes")
            elif f.name == "data":
                value = _bytes(value)
                if len(value) > _LIMITS.metadata_snapshot_bytes_max:
                    raise ValueError(f"a snapshot larger than {_LIMITS.metadata_snapshot_bytes_max} bytes")
            elif f.type == "bool":
                if not isinstance(value, bool):
                    raise ValueError(f"{f.name} must be a bool")
            else:
                value = _int(value)
            kwargs[f.name] = value
        return cls(**kwargs)


@dataclass(frozen=True, slots=True)
class VoteRequest(_Wire):
    """A candidate asks for a vote; ``pre_vote`` asks only "would you vote for me at ``term``?"
    without anyone changing term, so a node back from a partition cannot disrupt the cluster."""
    kind: ClassVar[str] = "vote"
    term: int
    candidate: int
    last_index: int
    last_term: int
    pre_vote: bool


@dataclass(frozen=True, slots=True)
class VoteResponse(_Wire):
    kind: ClassVar[str] = "vote_resp"
    term: int
    granted: bool
    pre_vote: bool


@dataclass(frozen=True, slots=True)
class AppendRequest(_Wire):
    """Entries after (prev_index, prev_term), and the leader's commit index; empty as heartbeat."""
    kind: ClassVar[str] = "append"
    term: int
    leader: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


@dataclass(frozen=True, slots=True)
class AppendResponse(_Wire):
    """On success ``match_index`` is the follower's last index matching the leader; on rejection
    ``hint_index`` is where the leader should retry (fast backtracking: the follower's last index
    when its log is short, or the first index of the conflicting term), not one step back."""
    kind: ClassVar[str] = "append_resp"
    term: int
    success: bool
    match_index: int
    hint_index: int


@dataclass(frozen=True, slots=True)
class SnapshotRequest(_Wire):
    """The leader's state machine snapshot, sent when the entries a follower needs are compacted."""
    kind: ClassVar[str] = "snapshot"
    term: int
    leader: int
    last_index: int
    last_term: int
    data: bytes


@dataclass(frozen=True, slots=True)
class SnapshotResponse(_Wire):
    kind: ClassVar[str] = "snapshot_resp"
    term: int
    last_index: int


RaftMessage = Union[VoteRequest, VoteResponse, AppendRequest, AppendResponse, SnapshotRequest,
                    SnapshotResponse]
_KINDS = {cls.kind: cls for cls in (VoteRequest, VoteResponse, AppendRequest, AppendResponse,
                                     SnapshotRequest, SnapshotResponse)}


def message_from_wire(wire: dict[str, Any]) -> RaftMessage:
    """Decode any Raft message from its wire dict (ValueError for an unknown kind or a bad field)."""
    cls = _KINDS.get(wire.get("kind")) if isinstance(wire, dict) else None
    if cls is None:
        raise ValueError(f"not a Raft message: {wire!r:.80}")
    try:
        return cls.from_wire(wire)
    except (TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"malformed {cls.kind}: {e}") from e
