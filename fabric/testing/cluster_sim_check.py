"""The invariants of the whole-cluster simulation (``cluster_sim.py``), checked after every step.

Why apart: the simulation says what happens, this says what must never happen, and each rule
reads only what the processes expose (Raft nodes, metadata states, replica objects, logs), so a
broken rule points at product code, not at the harness.

Controller (Raft and the metadata state machine):
1. at most one Raft leader per term;
2. a committed entry never changes: every entry any node holds at or below its commit index is
   recorded by index as (term, data) and must match whenever seen again; a new leader holds every
   recorded committed entry it has not compacted (Leader Completeness), so none disappears;
3. every metadata state (each voter's and each broker's) that applied the log up to index N has
   the same snapshot bytes as any other at N: same records, same order, same decisions.

Data (each partition):
4. at most one open leader replica per leader epoch;
5. committed data never changes: every batch any replica, leader or follower, holds below its
   high watermark is recorded by base offset and must be the same bytes in every replica that
   ever holds a batch there below its high watermark: no two replicas hold different records at
   one offset below their high watermarks, and every follower's committed prefix is the leader's;
6. no acknowledged ``acks=all`` batch is lost: it stays in the committed prefix at its offset, and
   the open leader of the newest leader epoch seen holds it (a deposed leader need not);
7. the high watermark a consumer sees never goes backwards: a consumer fetches from the leader of
   the newest leader epoch it has heard of (clients merge metadata by leader epoch), and what the
   broker's fetch path reports as the high watermark there (``Leadership.readable``) never
   falls below what it reported before.

Producer ids (``allocate_producer_ids``, KIP-730):
8. no two producer-id blocks a broker received overlap, whichever controller granted them and
   whichever node was killed, restarted or cut off meanwhile, and no id is handed out twice;
   every block received is below the ``next_producer_id_block_start`` of every metadata state
   that has applied its record (the state a later controller decides from).
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Iterable

from ..controller.raft import Role
from ..controller.raft_messages import Entry
from ..protocol.errors import FabricError
from ..records.batch import iter_headers
from ..replication.leader import LeaderReplica

if TYPE_CHECKING:
    from .cluster_sim_node import SimNode

__all__ = ["ClusterViolation", "ClusterChecker"]

BIG = 1 << 40


class ClusterViolation(AssertionError):
    """A safety or liveness rule broke; the message names the seed to replay."""


class ClusterChecker:
    def __init__(self, label: str) -> None:
        self.label = label
        self.leaders: dict[int, int] = {}  # Raft term -> leader
        self.entries: dict[int, tuple[int, bytes]] = {}  # index -> (term, data)
        self._checked: dict[int, tuple[int, int]] = {}  # node -> (incarnation, commit index checked)
        self._led: set[tuple[int, int, int]] = set()  # (node, incarnation, term) checked for completeness
        self.states: dict[int, int] = {}  # metadata offset -> snapshot crc
        self._state_seen: dict[tuple[int, str], int] = {}
        self.committed: dict[tuple[str, int], dict[int, bytes]] = {}  # partition -> base -> batch below a HW
        self._verified: dict[int, tuple[object, int]] = {}  # id(log) -> (log, offset checked up to)
        self._newest: dict[tuple[str, int], LeaderReplica] = {}
        self._top_epoch: dict[tuple[str, int], int] = {}  # partition -> newest leader epoch seen
        self.acked: dict[tuple[str, int], dict[int, bytes]] = {}  # partition -> base offset -> batch
        self.consumer: dict[tuple[str, int], tuple[int, int]] = {}  # partition -> (leader epoch, HW seen)
        self.pid_blocks: list[tuple[int, int, int]] = []  # (start, end, broker) of every block received
        self.pids: set[int] = set()  # every producer id handed out
        self.t = 0

    def fail(self, what: str) -> None:
        raise ClusterViolation(f"{self.label} t={self.t}ms: {what}")

    # ------------------------------------------------------------------ controller
    def check_raft(self, node: "SimNode") -> None:
        raft = node.raft
        if raft.role is Role.LEADER:
            first = self.leaders.setdefault(raft.term, raft.id)
            if first != raft.id:
                self.fail(f"two Raft leaders in term {raft.term}: {first} and {raft.id}")
            if (raft.id, node.incarnation, raft.term) not in self._led:
                self._led.add((raft.id, node.incarnation, raft.term))
                lo = raft.storage.first_index()
                for index, (term, data) in self.entries.items():
                    if index >= lo and (index > raft.last_index
                                        or raft.storage.entries(index, index + 1)[0] != Entry(term, index, data)):
                        self.fail(f"Raft leader {raft.id} of term {raft.term} lacks committed entry {index}")
        inc, done = self._checked.get(raft.id, (-1, 0))
        if inc != node.incarnation:
            done = 0
        commit = raft.commit_index
        start = max(done + 1, raft.storage.first_index())
        if commit >= start:
            for e in raft.storage.entries(start, commit + 1):
                known = self.entries.setdefault(e.index, (e.term, e.data))
                if known != (e.term, e.data):
                    self.fail(f"node {raft.id} holds committed entry {e.index} as {(e.term, e.data)!r:.80}, "
                              f"before it was {known!r:.80}")
        self._checked[raft.id] = (node.incarnation, max(done, commit))

    def check_state(self, who: str, state) -> None:
        """Rule 3, for a state that just changed (``who``: which holder)."""
        if self._state_seen.get((who, "")) == state.offset:
            return
        self._state_seen[(who, "")] = state.offset
        crc = zlib.crc32(state.to_snapshot())
        known = self.states.setdefault(state.offset, crc)
        if known != crc:
            self.fail(f"{who}'s metadata state at index {state.offset} differs from another holder's")

    # ------------------------------------------------------------------ data
    def ack(self, key: tuple[str, int], base: int, batch: bytes, nodes: Iterable["SimNode"]) -> None:
        """A producer got ``acks=all`` for ``batch`` at ``base``: from now on rule 6 holds for it."""
        self.acked.setdefault(key, {})[base] = batch
        self.check_partition(key, nodes)
        newest = self._newest.get(key)
        if newest is not None and not newest.closed and not _log_holds(newest.log, base, batch):
            self.fail(f"{key}: acknowledged batch at {base} is missing from the leader of epoch "
                      f"{newest.leader_epoch} (log end {newest.log.end_offset})")

    def check_partition(self, key: tuple[str, int], nodes: Iterable["SimNode"]) -> None:
        leaders: dict[int, LeaderReplica] = {}
        commit = self.committed.setdefault(key, {})
        for node in nodes:
            leader = node.replicas.leaders.get(key)
            if leader is not None and not leader.closed:
                other = leaders.setdefault(leader.leader_epoch, leader)
                if other is not leader:
                    self.fail(f"{key}: two leaders in leader epoch {leader.leader_epoch}")  # rule 4
                self._committed(key, commit, f"leader {node.id}", leader.log, leader.high_watermark)
            follower = node.replicas.followers.get(key)
            if follower is not None:
                self._committed(key, commit, f"follower {node.id}", follower.log, follower.high_watermark)
        top = max(leaders, default=-1)
        if top < self._top_epoch.get(key, -1) or not leaders:
            return  # (only a deposed leader is up, which may not know yet: the current one is down)
        self._top_epoch[key] = top
        newest = leaders[top]
        if self._newest.get(key) is not newest:  # rule 6, at each change of leader and each ack
            self._newest[key] = newest
            for base, batch in self.acked.get(key, {}).items():
                if commit.get(base) not in (None, batch):
                    self.fail(f"{key}: acknowledged batch at {base} is not the committed one there")
                if not _log_holds(newest.log, base, batch):
                    self.fail(f"{key}: acknowledged batch at {base} is missing from the leader of epoch "
                              f"{newest.leader_epoch} (log end {newest.log.end_offset})")

    def _committed(self, key: tuple[str, int], commit: dict[int, bytes], who: str, log, hw: int) -> None:
        """Rule 5 for one replica: its batches below its HW, from where it was last checked."""
        if hw > log.end_offset:
            self.fail(f"{key}: {who}'s high watermark {hw} is past its log end {log.end_offset}")
        held = self._verified.get(id(log))
        done = held[1] if held is not None and held[0] is log else log.start_offset
        done = min(done, log.end_offset)
        if hw > done:
            data = log.read(done, BIG, upto_offset=hw)
            for pos, h in iter_headers(data):
                batch = data[pos:pos + h.size]
                known = commit.setdefault(h.base_offset, batch)
                if known != batch:
                    self.fail(f"{key}: {who} holds another batch at {h.base_offset} below its HW {hw} than "
                              f"a replica held there below its HW (committed data changed)")
            done = hw
        self._verified[id(log)] = (log, done)

    def consumer_fetch(self, key: tuple[str, int], node: "SimNode") -> None:
        """Rule 7: a consumer fetches ``key`` from ``node`` (if it leads it at a leader epoch the
        consumer has no newer news of)."""
        try:
            state = node.leadership.readable(*key)
        except FabricError:  # (NOT_LEADER, LEADER_NOT_AVAILABLE: the consumer retries, maybe elsewhere)
            return
        epoch, seen = self.consumer.get(key, (-1, 0))
        if state.leader_epoch < epoch:
            return
        hw = state.high_watermark
        if hw < seen:
            self.fail(f"{key}: a consumer saw the high watermark go back from {seen} to {hw} "
                      f"(leader {node.id}, epoch {state.leader_epoch})")
        self.consumer[key] = (state.leader_epoch, max(hw, seen))


    # ------------------------------------------------------------------ producer ids
    def pid_block(self, broker: int, start: int, size: int, states: Iterable[object]) -> None:
        """Rule 8: broker ``broker`` received the block ``[start, start + size)``."""
        end = start + size
        for lo, hi, other in self.pid_blocks:
            if start < hi and lo < end:
                self.fail(f"producer-id block {start}-{end - 1} of broker {broker} overlaps block {lo}-{hi - 1} "
                          f"of broker {other}")
        self.pid_blocks.append((start, end, broker))
        for state in states:
            nxt = state.next_producer_id_block_start  # type: ignore[attr-defined]
            if state.offset >= 1 and 0 < nxt < end and nxt > start:  # (its record applied, the next free id inside)
                self.fail(f"a metadata state at {state.offset} gives out ids from {nxt}, inside the block "
                          f"{start}-{end - 1} broker {broker} holds")

    def producer_id(self, broker: int, pid: int) -> None:
        if pid in self.pids:
            self.fail(f"producer id {pid} handed out twice (the second time by broker {broker})")
        self.pids.add(pid)


def _log_holds(log, base: int, batch: bytes) -> bool:
    if not log.start_offset <= base < log.end_offset:
        return False
    return log.read(base, 1).startswith(batch)
