"""One controller voter without sockets: Raft, the metadata state it commits, and (while this
voter leads) the controller's decisions, behind one request/reply interface.

Why a separate layer: the Raft node knows nothing of brokers or topics, the metadata state and
``ControllerLogic`` know nothing of terms and quorums; something must turn a broker's request into
records, propose them, and answer the broker only once they are committed (an answer given before
a quorum holds the records could be forgotten by the next controller).  Keeping that here, pure,
lets the simulation run whole controllers and the I/O shell (``server.py``) stay a socket pump.

Rules:
1. Only the Raft leader decides.  A request reaching a follower is answered NOT_CONTROLLER with
   the leader it believes in (``leader_id``, -1 when unknown), and the broker retries there.
2. A request whose decision produced records is answered when the last of them commits; if this
   voter loses leadership first, it is answered NOT_CONTROLLER (the records may or may not commit:
   every request is safe to retry because its records are idempotent in effect).
3. Committed entries are applied to the metadata state in index order, on every voter; the
   logic's soft state (sessions) starts afresh when a voter becomes leader (``on_became_leader``).
4. ``metadata_fetch`` is answered by any voter from its committed prefix: brokers may read from
   whichever voter answers first.  A position older than the compacted log gets the snapshot.
5. Every ``snapshot_every`` applied entries, the state is snapshotted and the Raft log compacted
   to it, so the metadata log does not grow without bound.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Hashable

from ..protocol.errors import FabricError
from .logic import ControllerLogic
from .metadata import MetadataState
from .raft import RaftNode, RaftOutput, Role
from .records import RecordError, decode_record, encode_record

log = logging.getLogger("fabric.controller")

__all__ = ["ControllerService", "Effects"]

SNAPSHOT_EVERY = 10_000
FETCH_ENTRIES_MAX = 2_000


@dataclass
class Effects:
    """What the shell must do after a call: Raft messages to send, replies to give."""

    messages: list[tuple[int, Any]] = field(default_factory=list)
    replies: list[tuple[Hashable, dict[str, Any]]] = field(default_factory=list)

    def add(self, other: "Effects") -> "Effects":
        self.messages.extend(other.messages)
        self.replies.extend(other.replies)
        return self


class ControllerService:
    def __init__(self, raft: RaftNode, state: MetadataState, logic: ControllerLogic,
                 snapshot_every: int = SNAPSHOT_EVERY) -> None:
        self.raft = raft
        self.state = state
        self.logic = logic
        self.snapshot_every = snapshot_every
        self._pending: dict[int, list[tuple[Hashable, dict[str, Any]]]] = {}  # index -> replies (rule 2)
        self._was_leader = False
        self._ready_at: int | None = None  # the index a new leader's state must reach (rule 3)
        self._logic_started = False
        self._lost: dict[int, int] = {}  # broker id -> when its connection closed (not heard since)
        self.lost_grace_ms = 500
        self._since_snapshot = 0
        self.fetch_entries_max = FETCH_ENTRIES_MAX  # records per metadata_fetch reply (the sim makes it small)

    # ------------------------------------------------------------------ Raft plumbing
    @property
    def is_leader(self) -> bool:
        """Leads, and has applied everything committed before its term (rule 3): only then may
        the logic decide."""
        return self.raft.role is Role.LEADER and self._logic_started

    @property
    def leader_id(self) -> int:
        leader = self.raft.leader_id
        return -1 if leader is None else leader

    def tick(self, now_ms: int) -> Effects:
        fx = self._absorb(self.raft.tick(now_ms), now_ms)
        if self.is_leader:
            records, _, _ = self.logic.tick(now_ms)
            if records:
                fx.add(self._propose(records, None, {}, now_ms))
        return fx

    def connection_lost(self, broker_id: int, now_ms: int, grace_ms: int) -> None:
        """The shell saw ``broker_id``'s connection close (see ``ControllerLogic.connection_lost``);
        remembered while this voter follows too, so a leader elected because that same process
        died does not give its broker a whole fresh session."""
        self._lost[broker_id] = now_ms
        if self.is_leader:
            self.logic.connection_lost(broker_id, now_ms, grace_ms)

    def voter_lost(self, voter: int, now_ms: int) -> Effects:
        """The connection from voter ``voter`` closed: Raft's hint (``RaftNode.peer_lost``)."""
        return self._absorb(self.raft.peer_lost(voter, now_ms), now_ms)

    def heard_from(self, broker_id: int) -> None:
        self._lost.pop(broker_id, None)

    def receive(self, src: int, message: Any, now_ms: int) -> Effects:
        return self._absorb(self.raft.receive(src, message, now_ms), now_ms)

    def _absorb(self, out: RaftOutput, now_ms: int) -> Effects:
        fx = Effects(messages=list(out.messages))
        if out.snapshot_to_apply is not None:
            self.state = MetadataState.from_snapshot(out.snapshot_to_apply.data)
            self.state.offset = max(self.state.offset, out.snapshot_to_apply.last_index)
            self.logic.state = self.state
        for entry in out.committed:
            if entry.index <= self.state.offset:
                continue  # (in the snapshot already)
            if entry.data:
                try:
                    self.state.apply(decode_record(entry.data), entry.index)
                except (RecordError, FabricError, ValueError, KeyError) as exc:  # the logic wrote it: a bug
                    log.error("metadata record %d could not be applied: %s", entry.index, exc)
                    self.state.offset = entry.index
            else:
                self.state.offset = entry.index  # (a leader's no-op entry)
            for target, reply in self._pending.pop(entry.index, []):
                fx.replies.append((target, reply))
            self._since_snapshot += 1
        if self._since_snapshot >= self.snapshot_every:
            try:
                self.raft.compact(self.state.offset, self.state.to_snapshot())
            except ValueError as exc:  # (not applied that far by Raft's count yet: next time)
                log.debug("compaction postponed: %s", exc)
            else:
                self._since_snapshot = 0
        leading = self.raft.role is Role.LEADER
        if leading and not self._was_leader:
            # Rule 3: decide only once everything committed before this term is applied; the
            # new leader's no-op entry (its term's first) is at the log end now.
            self._ready_at = self.raft.last_index
            log.info("controller %d leads the metadata quorum (term %d)", self.raft.id, self.raft.term)
        elif self._was_leader and not leading:
            self._ready_at = None
            fx.replies.extend(self._abandon())
        if leading and self._ready_at is not None and not self._logic_started and self.state.offset >= self._ready_at:
            self.logic.on_became_leader(now_ms)
            for broker_id, at in self._lost.items():
                self.logic.connection_lost(broker_id, at, self.lost_grace_ms)
            self._logic_started = True
        if not leading:
            self._logic_started = False
        self._was_leader = leading
        return fx

    def _abandon(self) -> list[tuple[Hashable, dict[str, Any]]]:
        """Rule 2: leadership lost with requests waiting for their records."""
        gone = [(t, r) for replies in self._pending.values() for t, r in replies if t is not None]
        self._pending.clear()
        err = self._not_controller()
        return [(t, {"error": err.to_wire(), "leader_id": self.leader_id}) for t, _ in gone]

    def _not_controller(self) -> FabricError:
        leader = self.raft.leader_id
        return FabricError("NOT_CONTROLLER", f"controller {self.raft.id} does not lead; "
                                             f"try {leader if leader is not None and leader >= 0 else 'another'}")

    def _propose(self, records: list[dict[str, Any]], target: Hashable | None, reply: dict[str, Any],
                 now_ms: int) -> Effects:
        fx = Effects()
        last = None
        for record in records:
            index, out = self.raft.propose(encode_record(record), now_ms)
            fx.add(self._absorb(out, now_ms))
            if index is None:  # lost leadership between the decision and the proposal
                if target is not None:
                    fx.replies.append((target, {"error": self._not_controller().to_wire(),
                                                "leader_id": self.leader_id}))
                return fx
            last = index
        if target is not None:
            if last is not None:  # a broker waits for its metadata to reach this before it answers
                reply["metadata_offset"] = max(int(reply.get("metadata_offset") or 0), last)
            if last is None or last <= self.state.offset:
                fx.replies.append((target, reply))  # nothing to wait for
            else:
                self._pending.setdefault(last, []).append((target, reply))
        return fx

    # ------------------------------------------------------------------ broker requests
    def request(self, target: Hashable, op: str, fields: dict[str, Any], now_ms: int) -> Effects:
        """A broker's (or the CLI's) request; the reply reaches ``target`` through ``Effects``."""
        if op == "metadata_fetch":
            offset = fields.get("offset", 0)
            if type(offset) is not int or not 0 <= offset < 2**63:  # (a hostile peer's str, float, bignum)
                err = FabricError("INVALID_FIELD", f"metadata_fetch: offset must be an int >= 0, not {offset!r:.60}")
                return Effects(replies=[(target, {"error": err.to_wire()})])
            return Effects(replies=[(target, self.metadata_fetch(offset))])
        if op == "cluster_status":
            return Effects(replies=[(target, self.status(now_ms))])
        if not self.is_leader:
            return Effects(replies=[(target, {"error": self._not_controller().to_wire(),
                                              "leader_id": self.leader_id})])
        handler = getattr(self.logic, op, None)
        if op not in ("register", "heartbeat", "create_topic", "delete_topic", "alter_partition",
                      "controlled_shutdown", "ensure_internal_topic", "create_partitions", "alter_topic_configs",
                      "alter_partition_reassignments", "list_partition_reassignments", "decommission_broker",
                      "elect_leaders", "allocate_producer_ids") or handler is None:
            err = FabricError("UNKNOWN_OPERATION", f"the controller does not serve {op!r}")
            return Effects(replies=[(target, {"error": err.to_wire()})])
        try:
            records, error, reply = handler(now_ms=now_ms, **fields)
        except FabricError as err:
            return Effects(replies=[(target, {"error": err.to_wire()})])
        except (TypeError, ValueError, KeyError, AttributeError) as exc:  # fields of the wrong shape
            err = FabricError("INVALID_FIELD", f"{op}: {exc}"[:500])
            return Effects(replies=[(target, {"error": err.to_wire()})])
        reply = dict(reply or {})
        if error is not None:
            reply["error"] = (error if isinstance(error, FabricError) else FabricError(error, op)).to_wire()
            return Effects(replies=[(target, reply)])
        reply.setdefault("metadata_offset", self.state.offset)
        return self._propose(records, target, reply, now_ms)

    def metadata_fetch(self, offset: int) -> dict[str, Any]:
        """Rule 4: committed records after ``offset`` (the broker's last applied index)."""
        commit = self.raft.commit_index
        if offset >= commit:
            return {"records": [], "offset": offset, "committed": commit, "leader_id": self.leader_id}
        entries = self.raft.entries(offset + 1, self.fetch_entries_max)
        if entries is None:
            return {"snapshot": self.state.to_snapshot(), "offset": self.state.offset, "committed": commit,
                    "leader_id": self.leader_id}
        entries = [e for e in entries if e.index <= commit]
        last = entries[-1].index if entries else offset
        return {"records": [[e.index, e.data] for e in entries], "offset": last, "committed": commit,
                "leader_id": self.leader_id}

    def status(self, now_ms: int) -> dict[str, Any]:
        raft = self.raft
        body: dict[str, Any] = {"node_id": raft.id, "role": raft.role.value, "term": raft.term,
                                "leader_id": raft.leader_id, "commit_index": raft.commit_index,
                                "last_index": raft.last_index, "applied": self.state.offset}
        if raft.role is Role.LEADER:
            body["followers"] = {str(v): p.match_index for v, p in sorted(raft._progress.items())}
            body["brokers"] = self.logic.broker_status(now_ms)
        return body
