"""A consumer group's data: its states, the events that move it and the only legal moves,
its members, and the actions the coordinator hands the broker.

Kept apart from ``coordinator.py`` so that the state machine's vocabulary can be read (and its
transition table checked) on one page; the coordinator holds the rules that use it.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Hashable

from ..protocol.errors import FabricError
from .assignors import TopicPartition
from .offsets import OffsetRecord


class State(enum.Enum):
    EMPTY = "EMPTY"  # no members (maybe committed offsets)
    PREPARING_REBALANCE = "PREPARING_REBALANCE"  # collecting joins
    COMPLETING_REBALANCE = "COMPLETING_REBALANCE"  # assignment computed, waiting for every sync
    STABLE = "STABLE"  # every member has its assignment
    DEAD = "DEAD"  # deleted or moved to another coordinator; the object is dropped


class Event(enum.Enum):
    JOIN = "a member joins, rejoins or changes its subscription"
    REMOVE = "a member leaves or is expired"
    METADATA = "a subscribed topic's partition count changed"
    JOIN_DONE = "the join phase ends with members"
    JOIN_DONE_EMPTY = "the join phase ends with no member left"
    ALL_SYNCED = "the last member fetched its assignment"
    DELETE = "delete_groups"
    UNLOAD = "this broker no longer leads the group's offsets partition"


E, P, C, S, D = (State.EMPTY, State.PREPARING_REBALANCE, State.COMPLETING_REBALANCE, State.STABLE,
                 State.DEAD)
TRANSITIONS: dict[State, dict[Event, State]] = {
    E: {Event.JOIN: P, Event.DELETE: D, Event.UNLOAD: D},
    P: {Event.JOIN: P, Event.REMOVE: P, Event.JOIN_DONE: C, Event.JOIN_DONE_EMPTY: E, Event.UNLOAD: D},
    C: {Event.JOIN: P, Event.REMOVE: P, Event.METADATA: P, Event.ALL_SYNCED: S, Event.UNLOAD: D},
    S: {Event.JOIN: P, Event.REMOVE: P, Event.METADATA: P, Event.UNLOAD: D},
    D: {},
}


@dataclass(frozen=True, slots=True)
class GroupConfig:
    initial_rebalance_delay_ms: int = 3000  # an empty group's first join phase waits this long for more members
    group_members_max: int = 1000
    groups_max: int = 100_000


@dataclass(frozen=True, slots=True)
class Reply:
    token: Hashable
    op: str
    result: dict[str, Any] = field(default_factory=dict)
    error: FabricError | None = None

    def header(self, cid: int | None) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op, "cid": cid, **self.result}
        if self.error is not None:
            out["error"] = self.error.to_wire()
        return out


@dataclass(frozen=True, slots=True)
class AppendOffsets:
    token: Hashable
    records: tuple[OffsetRecord, ...]
    reply: Reply  # to send once the records are durable and applied


Action = Reply | AppendOffsets


@dataclass(slots=True, eq=False)
class Member:
    member_id: str
    instance_id: str | None
    seq: int  # join order: the oldest member's assignor preference wins
    client_id: str = ""
    host: str = ""
    session_timeout_ms: int = 0
    rebalance_timeout_ms: int = 0
    topics: tuple[str, ...] = ()
    assignors: tuple[str, ...] = ()
    owned: tuple[TopicPartition, ...] = ()
    owned_generation: int = -1
    held: frozenset[TopicPartition] = frozenset()  # cooperative: owned partitions no one else got (Rule 8)
    session_deadline: int = 0
    poll_deadline: int = 0
    join_token: Hashable | None = None  # parked join
    synced: bool = False
    assignment: tuple[TopicPartition, ...] = ()
    revoked: tuple[TopicPartition, ...] = ()


@dataclass(slots=True, eq=False)
class Group:
    group_id: str
    state: State = State.EMPTY
    generation: int = 0
    protocol: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    static: dict[str, str] = field(default_factory=dict)  # instance id -> member id
    support: Counter[str] = field(default_factory=Counter)  # assignor -> members offering it
    pending: dict[str, int] = field(default_factory=dict)  # KIP-394 ids handed out -> expiry
    phase_started_ms: int = 0
    not_before_ms: int = 0  # initial rebalance delay
    join_deadline_ms: int = 0  # phase start + the longest rebalance timeout of the members
    partition_counts: dict[str, int] = field(default_factory=dict)  # at the last assignment


def transition(group: Group, event: Event) -> None:
    """The only way a group changes state (coordinator Rule 1)."""
    nxt = TRANSITIONS[group.state].get(event)
    if nxt is None:
        raise AssertionError(f"group {group.group_id!r}: no transition from {group.state.name} on {event.name}")
    group.state = nxt
