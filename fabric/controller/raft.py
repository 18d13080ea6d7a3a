"""A Raft node as a sans-I/O state machine (like etcd/raft's ``Ready``): the controller quorum's core.

Why sans-I/O: the node never reads a clock, a socket or the global random generator.  The shell
(the controller thread, or ``fabric.testing.raft_sim``) calls ``tick``/``receive``/``propose`` with
the current monotonic time and sends the messages in the returned ``RaftOutput``; the node has
already synced its storage by then, so nothing it says can be forgotten by a crash.  The same code
therefore runs in production and in a seeded simulation with faults.

What it does (Raft paper, and the etcd/raft refinements):
- elections with randomised timeouts drawn from the injected rng, preceded by a **pre-vote**
  round, so a node back from a partition cannot bump everyone's term and depose a healthy leader;
  a follower that heard from a leader within the minimum election timeout refuses (pre-)votes;
- log replication with **fast backtracking**: a follower's rejection carries ``hint_index``;
- the commit index moves by counting replicas **only for entries of the leader's own term** (§5.4.2,
  Figure 8); older entries commit indirectly, which is why a new leader appends an empty entry;
- **check-quorum**: a leader that has not heard from a quorum within an election timeout steps down;
- snapshots: ``compact`` drops the log up to an applied index, and a follower that needs compacted
  entries gets a ``SnapshotRequest``.
Log replication (the leader's and the follower's side) lives in ``raft_replication.py`` to keep this module readable.
"""

from __future__ import annotations

import enum
import logging
import random
from dataclasses import dataclass, field
from typing import Sequence

from .raft_messages import (AppendRequest, AppendResponse, Entry, RaftMessage, Snapshot, SnapshotRequest,
                            SnapshotResponse, VoteRequest, VoteResponse)
from .raft_replication import Progress, Replication
from .raft_storage import RaftStorage

__all__ = ["RaftConfig", "RaftNode", "RaftOutput", "Role"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RaftConfig:
    """Timers and batch sizes.  The defaults suit a controller quorum on a LAN: heartbeats an order
    of magnitude faster than the election timeout, so a few lost heartbeats do not start an election."""
    election_timeout_min_ms: int = 1000  # a follower waits a random time in [min, max) without a leader...
    election_timeout_max_ms: int = 2000  # ...before it starts a (pre-)election; randomised against split votes
    heartbeat_ms: int = 100              # how often a leader sends (possibly empty) appends to each follower
    max_entries_per_append: int = 64     # bounds one message; a lagging follower catches up in several

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_ms < self.election_timeout_min_ms < self.election_timeout_max_ms:
            raise ValueError(f"need 0 < heartbeat < election min < election max: {self}")


class Role(str, enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass
class RaftOutput:
    """What the shell must do after a call: send ``messages`` (destination, message), apply
    ``snapshot_to_apply`` (if any) and then ``committed`` entries in order to the state machine."""
    messages: list[tuple[int, RaftMessage]] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    snapshot_to_apply: Snapshot | None = None


class RaftNode(Replication):
    """One voter of the quorum; see the module docstring.  Not thread-safe: one shell thread drives it."""

    def __init__(self, node_id: int, voters: Sequence[int], storage: RaftStorage, config: RaftConfig,
                 rng: random.Random) -> None:
        if node_id not in voters:
            raise ValueError(f"node {node_id} is not among the voters {list(voters)}")
        self.id = node_id
        self.voters = sorted(set(voters))
        self.peers = [v for v in self.voters if v != node_id]
        self.quorum = len(self.voters) // 2 + 1
        self.storage = storage
        self.config = config
        self.rng = rng
        self._term, self._vote = storage.hard_state()
        self._role = Role.FOLLOWER
        self._leader: int | None = None
        snap = storage.snapshot()
        # Commit and apply restart at the snapshot: later entries are re-learnt from the leader.
        self._commit = self._applied = snap.last_index if snap else 0
        self._pending_snapshot: Snapshot | None = snap  # the state machine starts from it
        self._election_deadline: int | None = None       # set at the first call that knows the time
        self._heartbeat_due = 0
        self._leader_heard_ms: int | None = None         # last time a current leader spoke to us
        self._votes: dict[int, bool] = {}
        self._progress: dict[int, Progress] = {}
        self._out = RaftOutput()

    # ------------------------------------------------------------------ properties
    @property
    def role(self) -> Role:
        return self._role

    @property
    def term(self) -> int:
        return self._term

    @property
    def leader_id(self) -> int | None:
        return self._leader

    @property
    def commit_index(self) -> int:
        return self._commit

    @property
    def last_index(self) -> int:
        return self.storage.last_index()

    def __repr__(self) -> str:
        return (f"RaftNode(id={self.id}, {self._role.value}, term={self._term}, leader={self._leader}, "
                f"commit={self._commit}, last={self.last_index})")

    # ------------------------------------------------------------------ public calls
    def tick(self, now_ms: int) -> RaftOutput:
        """Fire whatever timer is due: a follower's election timeout, a leader's heartbeat and
        quorum check."""
        self._start_timers(now_ms)
        if self._role is Role.LEADER:
            self._check_quorum(now_ms)
            if self._role is Role.LEADER and now_ms >= self._heartbeat_due:
                self._heartbeat_due = now_ms + self.config.heartbeat_ms
                for peer in self.peers:
                    self._send_append(peer, heartbeat=True)
        elif now_ms >= self._election_deadline:  # type: ignore[operator]
            self._campaign(now_ms, pre_vote=True)
        return self._finish()

    def propose(self, data: bytes, now_ms: int) -> tuple[int | None, RaftOutput]:
        """Append ``data`` as a new entry if this node leads; the index it will commit at, or None
        (ask ``leader_id``).  The entry is synced and sent before this returns."""
        self._start_timers(now_ms)
        if self._role is not Role.LEADER:
            return None, self._finish()
        index = self._append_local(data)
        for peer in self.peers:
            self._send_append(peer)
        self._maybe_commit()
        return index, self._finish()

    def receive(self, src: int, message: RaftMessage, now_ms: int) -> RaftOutput:
        """Handle one message from voter ``src`` (messages from non-voters are ignored)."""
        self._start_timers(now_ms)
        if src in self.peers and self._check_term(src, message, now_ms):
            handler = _HANDLERS.get(type(message))
            if handler is not None:
                handler(self, src, message, now_ms)
        return self._finish()

    def peer_lost(self, peer: int, now_ms: int) -> RaftOutput:
        """A hint from the shell: the connection to ``peer`` closed (its process died and the
        kernel reset its sockets).  If ``peer`` is the leader this node follows, its lease is no
        longer trusted and a (pre-)election starts after a short random delay instead of a whole
        election timeout.  Safety does not depend on the hint: a pre-vote still needs a majority,
        which grants it only if it lost the leader too; a wrong hint costs one pre-vote round."""
        self._start_timers(now_ms)
        if self._role is not Role.LEADER and self._leader == peer:
            self._leader_heard_ms = None
            deadline = now_ms + self.rng.randrange(0, max(1, self.config.heartbeat_ms))
            if self._election_deadline is None or deadline < self._election_deadline:
                self._election_deadline = deadline
        return self._finish()

    def entries(self, start: int, max_count: int) -> list[Entry] | None:
        """Committed entries from ``start`` on, for observers fetching the metadata log; None when
        ``start`` is compacted (fetch the snapshot instead)."""
        if start < self.storage.first_index():
            return None
        hi = min(self._commit, start + max_count - 1)
        return self.storage.entries(start, hi + 1) if hi >= start else []

    def snapshot(self) -> Snapshot | None:
        return self.storage.snapshot()

    def compact(self, upto_index: int, snapshot: bytes) -> None:
        """Replace the log up to ``upto_index`` by ``snapshot``, the state machine as of that
        index; it must already have been handed out as committed (so the shell has applied it).
        The shell decides when (e.g. every N entries): Raft cannot judge a snapshot's cost."""
        if not self.storage.first_index() <= upto_index <= self._applied:
            raise ValueError(f"compact to {upto_index}: must be in {self.storage.first_index()}..{self._applied}")
        term = self.storage.term_at(upto_index)
        assert term is not None
        self.storage.save_snapshot(Snapshot(upto_index, term, snapshot))
        self.storage.sync()

    # ------------------------------------------------------------------ terms and timers
    def _start_timers(self, now_ms: int) -> None:
        if self._election_deadline is None:
            self._reset_election_timer(now_ms)

    def _reset_election_timer(self, now_ms: int) -> None:
        c = self.config
        self._election_deadline = now_ms + self.rng.randrange(c.election_timeout_min_ms, c.election_timeout_max_ms)

    def _in_lease(self, now_ms: int) -> bool:
        """True while a leader we know was heard from within the minimum election timeout: then a
        (pre-)vote request is from a node that merely lost touch, and is refused."""
        if self._role is Role.LEADER:
            return True
        return (self._leader is not None and self._leader_heard_ms is not None
                and now_ms - self._leader_heard_ms < self.config.election_timeout_min_ms)

    def _check_term(self, src: int, m: RaftMessage, now_ms: int) -> bool:
        """Term fencing; False when ``m`` is to be dropped."""
        if m.term > self._term:
            if isinstance(m, VoteRequest):
                if self._in_lease(now_ms):
                    self._send(src, VoteResponse(self._term, False, m.pre_vote))
                    return False
                if m.pre_vote:
                    return True  # a pre-vote changes no term
            elif isinstance(m, VoteResponse) and m.pre_vote and m.granted:
                return True  # granted at the term we would campaign at
            leader = m.leader if isinstance(m, (AppendRequest, SnapshotRequest)) else None
            self._become_follower(m.term, leader, now_ms)
        elif m.term < self._term:
            if isinstance(m, (AppendRequest, SnapshotRequest)):
                # A deposed leader learns the new term (and steps down) from this answer.
                self._send(src, AppendResponse(self._term, False, 0, 0))
            elif isinstance(m, VoteRequest) and m.pre_vote:
                self._send(src, VoteResponse(self._term, False, True))
            return False
        return True

    def _become_follower(self, term: int, leader: int | None, now_ms: int) -> None:
        if term != self._term:
            self._term, self._vote = term, None
            self.storage.set_hard_state(term, None)
        if self._role is Role.LEADER:
            log.info("raft %d: leader steps down in term %d", self.id, term)
        self._role, self._leader, self._progress = Role.FOLLOWER, leader, {}
        self._reset_election_timer(now_ms)

    # ------------------------------------------------------------------ elections
    def _campaign(self, now_ms: int, pre_vote: bool) -> None:
        self._reset_election_timer(now_ms)
        self._votes = {self.id: True}
        if pre_vote:
            self._role, self._leader = Role.PRE_CANDIDATE, None
            term = self._term + 1
        else:
            self._role, self._leader = Role.CANDIDATE, None
            self._term, self._vote = self._term + 1, self.id
            self.storage.set_hard_state(self._term, self.id)
            term = self._term
        if self._tally(now_ms):
            return
        last = self.storage.last_index()
        last_term = self.storage.term_at(last) or 0
        for peer in self.peers:
            self._send(peer, VoteRequest(term, self.id, last, last_term, pre_vote))

    def _tally(self, now_ms: int) -> bool:
        """Win (move on) or lose (back to follower) once a quorum has answered; True when decided."""
        yes = sum(self._votes.values())
        if yes >= self.quorum:
            if self._role is Role.PRE_CANDIDATE:
                self._campaign(now_ms, pre_vote=False)
            else:
                self._become_leader(now_ms)
            return True
        if len(self._votes) - yes >= self.quorum:
            self._become_follower(self._term, None, now_ms)
            return True
        return False

    def _on_vote_request(self, src: int, m: VoteRequest, now_ms: int) -> None:
        last = self.storage.last_index()
        up_to_date = (m.last_term, m.last_index) >= (self.storage.term_at(last) or 0, last)
        can_vote = self._vote == m.candidate or (self._vote is None and self._leader is None)
        if m.pre_vote:
            grant = up_to_date and (m.term > self._term or can_vote) and not self._in_lease(now_ms)
            self._send(src, VoteResponse(m.term if grant else self._term, grant, True))
            return
        grant = can_vote and up_to_date
        if grant:
            self._vote = m.candidate
            self.storage.set_hard_state(self._term, m.candidate)
            self._reset_election_timer(now_ms)
        self._send(src, VoteResponse(self._term, grant, False))

    def _on_vote_response(self, src: int, m: VoteResponse, now_ms: int) -> None:
        wanted = Role.PRE_CANDIDATE if m.pre_vote else Role.CANDIDATE
        if self._role is not wanted or (m.pre_vote and m.granted and m.term != self._term + 1):
            return  # an answer to an earlier round
        self._votes.setdefault(src, m.granted)
        self._tally(now_ms)

    def _become_leader(self, now_ms: int) -> None:
        log.info("raft %d: leader of term %d", self.id, self._term)
        self._role, self._leader = Role.LEADER, self.id
        last = self.storage.last_index()
        self._progress = {p: Progress(next_index=last + 1, last_heard_ms=now_ms) for p in self.peers}
        self._heartbeat_due = now_ms + self.config.heartbeat_ms
        # An entry of the new term: committing it commits every older entry (§5.4.2, Figure 8).
        self._append_local(b"")
        for peer in self.peers:
            self._send_append(peer)
        self._maybe_commit()

    def _check_quorum(self, now_ms: int) -> None:
        """Step down when fewer than a quorum (self included) answered within an election timeout:
        a leader cut off from the majority must stop acting as one (its clients go elsewhere, and
        the majority, which elects a new leader after the same timeout, is not disturbed)."""
        window = self.config.election_timeout_min_ms
        active = 1 + sum(1 for p in self._progress.values() if now_ms - p.last_heard_ms < window)
        if active < self.quorum:
            log.warning("raft %d: leader hears only %d of %d voters; stepping down", self.id, active,
                        len(self.voters))
            self._become_follower(self._term, None, now_ms)

    # ------------------------------------------------------------------ output
    def _send(self, dst: int, message: RaftMessage) -> None:
        self._out.messages.append((dst, message))

    def _finish(self) -> RaftOutput:
        """Sync, then release the messages and the newly committed entries."""
        self.storage.sync()
        out, self._out = self._out, RaftOutput()
        if self._pending_snapshot is not None:
            out.snapshot_to_apply, self._pending_snapshot = self._pending_snapshot, None
        if self._commit > self._applied:
            out.committed = self.storage.entries(self._applied + 1, self._commit + 1)
            self._applied = self._commit
        return out


_HANDLERS = {
    VoteRequest: RaftNode._on_vote_request,
    VoteResponse: RaftNode._on_vote_response,
    AppendRequest: RaftNode._on_append_request,
    AppendResponse: RaftNode._on_append_response,
    SnapshotRequest: RaftNode._on_snapshot_request,
    SnapshotResponse: RaftNode._on_snapshot_response,
}
