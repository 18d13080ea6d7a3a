"""Log replication for ``RaftNode``: the leader's side (what to send each follower, when an entry
commits) and the follower's (accept, repair or reject an append; install a snapshot).

Why a mixin: these methods share the node's state with elections and terms in ``raft.py``, but
are a separate concern with their own invariants; splitting keeps both modules readable.

Per follower the leader keeps a ``Progress`` (etcd/raft's "progress" model):
- *probe*: the leader does not know where the follower's log matches, so it sends one append at a
  time (per response or heartbeat) and backs off using the follower's ``hint_index``;
- *replicate*: the last append matched, so the leader streams new entries optimistically
  (``next_index`` moves at send time); a lost message shows up as a rejection, back to probe.
"""

from __future__ import annotations

from dataclasses import dataclass

from .raft_messages import (AppendRequest, AppendResponse, Entry, Snapshot, SnapshotRequest, SnapshotResponse)


__all__ = ["Progress", "Replication"]


@dataclass
class Progress:
    next_index: int            # the next entry to send
    last_heard_ms: int         # for check-quorum
    match_index: int = 0       # highest index known to match the leader's log
    replicating: bool = False  # replicate (stream) vs probe (one at a time)
    paused: bool = False       # probe: a message is out, wait for its answer or the next heartbeat


class Replication:
    """Mixed into ``RaftNode``: every method runs with the node's state (``self`` is the node, not
    imported here so that the two modules do not import each other)."""

    # ------------------------------------------------------------------ leader side
    def _append_local(self, data: bytes) -> int:
        index = self.storage.last_index() + 1
        self.storage.append([Entry(self._term, index, data)])
        return index

    def _send_append(self, peer: int, heartbeat: bool = False) -> None:
        pr = self._progress[peer]
        if pr.paused and not heartbeat:
            return
        if pr.next_index < self.storage.first_index():
            # What the follower needs is compacted: it gets the snapshot (one per heartbeat at most).
            snap = self.storage.snapshot()
            assert snap is not None
            self._send(peer, SnapshotRequest(self._term, self.id, snap.last_index, snap.last_term, snap.data))
            pr.replicating, pr.paused = False, True
            return
        prev = pr.next_index - 1
        prev_term = self.storage.term_at(prev)
        assert prev_term is not None, (prev, self)
        hi = min(self.storage.last_index(), prev + self.config.max_entries_per_append)
        entries = tuple(self.storage.entries(prev + 1, hi + 1)) if hi > prev else ()
        self._send(peer, AppendRequest(self._term, self.id, prev, prev_term, entries, self._commit))
        if pr.replicating:
            pr.next_index = hi + 1
        else:
            pr.paused = True

    def _on_append_response(self, src: int, m: AppendResponse, now_ms: int) -> None:
        if self._role.value != "leader":
            return
        pr = self._progress[src]
        pr.last_heard_ms = now_ms
        if m.success:
            pr.match_index = max(pr.match_index, m.match_index)
            pr.next_index = max(pr.next_index, pr.match_index + 1)
            pr.replicating, pr.paused = True, False
            self._maybe_commit()
        else:
            # On rejection match_index carries the prev_index the follower rejected.
            rejected = m.match_index
            if rejected <= pr.match_index or (not pr.replicating and rejected != pr.next_index - 1):
                return  # an answer to an older append; a newer one is on its way
            pr.next_index = max(pr.match_index + 1, min(rejected, m.hint_index + 1))
            pr.replicating, pr.paused = False, False
        if pr.next_index <= self.storage.last_index():
            self._send_append(src)

    def _on_snapshot_response(self, src: int, m: SnapshotResponse, now_ms: int) -> None:
        if self._role.value != "leader":
            return
        pr = self._progress[src]
        pr.last_heard_ms = now_ms
        pr.match_index = max(pr.match_index, m.last_index)
        pr.next_index = max(pr.next_index, pr.match_index + 1)
        pr.replicating, pr.paused = False, False
        self._maybe_commit()
        if pr.next_index <= self.storage.last_index():
            self._send_append(src)

    def _maybe_commit(self) -> None:
        """Commit the highest index a quorum holds - only if it is of the current term (§5.4.2):
        an older term's entry on a majority can still be overwritten (Figure 8); it commits
        indirectly, with the first entry of this term."""
        matches = sorted([self.storage.last_index()] + [p.match_index for p in self._progress.values()],
                         reverse=True)
        n = matches[self.quorum - 1]
        if n > self._commit and self.storage.term_at(n) == self._term:
            self._commit = n

    # ------------------------------------------------------------------ follower side
    def _follow(self, leader: int, now_ms: int) -> None:
        if self._role.value != "follower" or self._leader != leader:
            self._become_follower(self._term, leader, now_ms)
        self._leader_heard_ms = now_ms
        self._reset_election_timer(now_ms)

    def _on_append_request(self, src: int, m: AppendRequest, now_ms: int) -> None:
        self._follow(m.leader, now_ms)
        prev, entries = m.prev_index, m.entries
        last = self.storage.last_index()
        if prev < self._commit:
            # Our committed prefix equals the leader's: start matching after it (this also covers
            # a prev_index already compacted into our snapshot).
            entries = tuple(e for e in entries if e.index > self._commit)
            prev = self._commit
        elif prev > last:
            self._send(src, AppendResponse(self._term, False, m.prev_index, last))
            return
        elif self.storage.term_at(prev) != m.prev_term:
            self._send(src, AppendResponse(self._term, False, m.prev_index, self._conflict_hint(prev)))
            return
        for i, e in enumerate(entries):
            have = self.storage.term_at(e.index)
            if have == e.term:
                continue
            if have is not None:
                assert e.index > self._commit, f"node {self.id} would truncate committed entry {e.index}"
                self.storage.truncate_suffix(e.index)
            self.storage.append(entries[i:])
            break
        match = prev + len(entries)
        self._commit = max(self._commit, min(m.commit, match))
        self._send(src, AppendResponse(self._term, True, match, 0))

    def _conflict_hint(self, prev: int) -> int:
        """Fast backtracking: skip the whole conflicting term in one round trip, answering the last
        index before its first entry (never below our commit index, which certainly matches)."""
        conflict_term = self.storage.term_at(prev)
        i = prev
        while i - 1 > self._commit and self.storage.term_at(i - 1) == conflict_term:
            i -= 1
        return max(i - 1, self._commit)

    def _on_snapshot_request(self, src: int, m: SnapshotRequest, now_ms: int) -> None:
        self._follow(m.leader, now_ms)
        if m.last_index <= self._commit:
            pass  # we have all of it already
        elif self.storage.term_at(m.last_index) == m.last_term:
            self._commit = m.last_index  # our log holds it: commit, entries apply as usual
        else:
            snap = Snapshot(m.last_index, m.last_term, m.data)
            self.storage.save_snapshot(snap)
            self._commit = self._applied = m.last_index
            self._pending_snapshot = snap
        self._send(src, SnapshotResponse(self._term, max(self._commit, m.last_index)))
