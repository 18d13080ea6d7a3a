"""One partition's replication state on one broker: role, epoch, replicas, ISR, high watermark.

Pure: no sockets, no clock, no log.  The shell tells it what happened (this log appended, that
follower fetched at this offset, it is now ``now_ms``) and reads back the high watermark and ISR
changes to act on (answer produce requests waiting for ``acks=all``, serve fetches up to the high
watermark, propose a new ISR to the controller).

Vocabulary: a *replica* is a broker that holds a copy (``replicas``, the assignment, leader
included); the *ISR* (in-sync replicas) is the subset that is caught up; a follower's *log end*
is the offset it will fetch next, so it holds everything below it; the *high watermark* (HW) is
the offset below which every ISR member holds every record: committed, visible to consumers.

Rules
-----
1. Exactly one role: ``LEADER`` or ``FOLLOWER`` (or ``OFFLINE`` before the first decision).  A role
   change comes with a leader epoch; an epoch older than the current one is refused
   (``StaleEpoch``): it is a delayed message from a deposed controller.
2. While leader, the leader is always in the ISR and the ISR is a subset of ``replicas``.
3. While leader, HW = min(log end of each ISR member), the leader's own included, and of each
   replica proposed to join the ISR until the controller answers (``expect_isr_additions``); it never
   decreases (a recomputation that gives less keeps the old value: right after an election the
   followers' log ends are not yet known).  HW <= the leader's log end, always.
4. A follower's fetch at offset ``log_end`` means it holds everything below it.  It is *caught
   up* at a fetch if ``log_end`` >= the leader's log end now, and also (Kafka's rule) if it reaches
   the leader's log end as it was at the follower's previous fetch: then it was caught up at the
   time of that previous fetch.  A follower cannot be ahead of the leader: such a fetch is refused
   (OFFSET_OUT_OF_RANGE).
5. ISR expansion: a follower outside the ISR joins when its log end >= HW and >= the offset where
   the leader's epoch started (so it holds everything this leader wrote).  Checked on every fetch;
   checked on a timer (the controller's proposals), it must also have been caught up within
   ``replica_lag_ms`` (so what rule 6 removes is not proposed back until it fetches again).
6. ISR shrink: a follower that has not been caught up for more than ``replica_lag_ms`` leaves.
   Checked by the shell on a timer (``maybe_shrink_isr``).  Removing members can only raise HW.
7. On ``become_leader`` every ISR member counts as caught up *now* (it has ``replica_lag_ms`` to
   fetch before rule 6 can remove it); follower log ends are unknown until their first fetch; HW
   starts at the HW this broker had as a follower (<= its log end).
8. As follower, HW = min(the leader's HW from the last fetch reply, this log's end), and it may
   go down after a truncation (the follower's log is cut to agree with the new leader).

The ISR changes here are local decisions.  With a controller, the shell proposes them
(Kafka's AlterPartition) and applies the controller's answer with ``set_isr``: with
``isr_by_controller`` set (``LeaderReplica`` sets it), rules 5 and 6 only *answer*
(``isr_expand_candidates``, ``isr_shrink_candidates``) and never change the ISR themselves.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..protocol.errors import FabricError

__all__ = ["FollowerProgress", "PartitionState", "Role", "StaleEpoch", "UNKNOWN_LOG_END"]

UNKNOWN_LOG_END = -1


class Role(enum.Enum):
    OFFLINE = "OFFLINE"
    LEADER = "LEADER"
    FOLLOWER = "FOLLOWER"


class StaleEpoch(ValueError):
    """A role change with a leader epoch older than the one this state already has (rule 1)."""


@dataclass
class FollowerProgress:
    """What the leader knows of one follower."""

    log_end: int = UNKNOWN_LOG_END
    last_caught_up_ms: int = -1  # when it last was caught up (rule 4); -1: never
    last_fetch_ms: int = -1
    leader_log_end_at_last_fetch: int = UNKNOWN_LOG_END
    incarnation: int = 0  # the follower process this progress is of (LeaderReplica rule 7)


class PartitionState:
    def __init__(self, local: int) -> None:
        self.local = local  # this broker's node id
        self.role = Role.OFFLINE
        self.leader: int | None = None
        self.leader_epoch = -1
        self.replicas: tuple[int, ...] = ()
        self.isr: frozenset[int] = frozenset()
        self.high_watermark = 0
        self.log_end = 0  # this broker's log end
        self.epoch_start_offset = 0  # the leader's log end when its epoch began (rule 5)
        self.followers: dict[int, FollowerProgress] = {}
        self.isr_by_controller = False  # True: rules 5 and 6 propose, only ``set_isr`` changes the ISR
        self.pending_isr: frozenset[int] = frozenset()  # proposed additions, counted for the HW (rule 3)

    # ================================================================== role changes
    def become_leader(self, epoch: int, replicas: tuple[int, ...] | list[int], isr: frozenset[int] | set[int],
                      log_end: int, now_ms: int) -> None:
        """Rule 7.  ``log_end`` is this broker's log end; the new epoch starts there."""
        self._check_epoch(epoch)
        replicas = tuple(replicas)
        isr = frozenset(isr) | {self.local}
        if self.local not in replicas or not isr <= set(replicas):
            raise ValueError(f"leader {self.local} with replicas {replicas} and ISR {sorted(isr)}: "
                             f"the leader and every ISR member must be replicas")
        self.role, self.leader, self.leader_epoch = Role.LEADER, self.local, epoch
        self.replicas, self.isr = replicas, isr
        self.log_end = self.epoch_start_offset = log_end
        self.high_watermark = min(self.high_watermark, log_end)
        self.followers = {r: FollowerProgress(last_caught_up_ms=now_ms if r in isr else -1)
                          for r in replicas if r != self.local}
        self.pending_isr = frozenset()
        self._advance_hw()

    def become_follower(self, epoch: int, leader: int, replicas: tuple[int, ...] | list[int], log_end: int) -> None:
        """Rule 1.  Follower progress is the leader's business: it is dropped here."""
        self._check_epoch(epoch)
        if leader == self.local:
            raise ValueError(f"{self.local} cannot follow itself")
        self.role, self.leader, self.leader_epoch = Role.FOLLOWER, leader, epoch
        self.replicas = tuple(replicas)
        self.isr = frozenset()  # only the leader tracks it
        self.followers = {}
        self.log_end = log_end
        self.high_watermark = min(self.high_watermark, log_end)

    def _check_epoch(self, epoch: int) -> None:
        if epoch < self.leader_epoch:
            raise StaleEpoch(f"leader epoch {epoch} is older than the current {self.leader_epoch}")

    # ================================================================== leader side
    def leader_appended(self, log_end: int) -> int:
        """The local log now ends at ``log_end``; returns HW (a lone leader commits at once)."""
        self._require_leader()
        if log_end < self.log_end:
            raise ValueError(f"a leader's log does not shrink: {self.log_end} -> {log_end}")
        self.log_end = log_end
        self._advance_hw()
        return self.high_watermark

    def update_follower(self, replica: int, log_end: int, now_ms: int) -> int:
        """A follower fetched at ``log_end`` (rules 4, 5, 3); returns the new HW."""
        self._require_leader()
        progress = self.followers.get(replica)
        if progress is None:
            raise ValueError(f"{replica} is not a follower of this partition (replicas {self.replicas})")
        if log_end > self.log_end:
            raise FabricError("OFFSET_OUT_OF_RANGE",
                              f"follower {replica} fetches at {log_end}, beyond the leader's log end {self.log_end}")
        if log_end >= self.log_end:
            progress.last_caught_up_ms = now_ms
        elif log_end >= progress.leader_log_end_at_last_fetch >= 0:
            progress.last_caught_up_ms = max(progress.last_caught_up_ms, progress.last_fetch_ms)
        progress.log_end = log_end
        progress.last_fetch_ms = now_ms
        progress.leader_log_end_at_last_fetch = self.log_end
        if not self.isr_by_controller:
            self.maybe_expand_isr(replica)
        self._advance_hw()
        return self.high_watermark

    def maybe_expand_isr(self, replica: int) -> bool:
        """Rule 5; True if ``replica`` joined the ISR."""
        self._require_leader()
        if replica in self.isr or replica not in self.isr_expand_candidates():
            return False
        self.isr = self.isr | {replica}
        return True

    def isr_expand_candidates(self, now_ms: int | None = None, replica_lag_ms: int | None = None) -> frozenset[int]:
        """Rule 5 as a question: the followers outside the ISR that may join it now.  Asked on a
        timer (``now_ms`` and ``replica_lag_ms`` given), a follower must also have been caught up
        within ``replica_lag_ms`` (not a shrink candidate): its log end is what it last reported,
        and a follower that stopped fetching at the HW would otherwise be proposed back at once
        after leaving for lag (cluster simulation: the ISR flapped between two dead followers)."""
        self._require_leader()
        return frozenset(r for r, p in self.followers.items() if r not in self.isr and p.log_end >= 0
                         and p.log_end >= self.high_watermark and p.log_end >= self.epoch_start_offset
                         and (now_ms is None or replica_lag_ms is None
                              or now_ms - p.last_caught_up_ms <= replica_lag_ms))

    def isr_shrink_candidates(self, now_ms: int, replica_lag_ms: int) -> frozenset[int]:
        """Rule 6 as a question: the ISR followers not caught up for more than ``replica_lag_ms``."""
        self._require_leader()
        return frozenset(r for r in self.isr if r != self.local
                         and now_ms - self.followers[r].last_caught_up_ms > replica_lag_ms)

    def maybe_shrink_isr(self, now_ms: int, replica_lag_ms: int) -> frozenset[int]:
        """Rule 6; returns the followers removed (HW may rise, rule 3)."""
        out = self.isr_shrink_candidates(now_ms, replica_lag_ms)
        if out:
            self.isr = self.isr - out
            self._advance_hw()
        return out

    def set_isr(self, isr: frozenset[int] | set[int]) -> None:
        """Apply an ISR the controller decided (rule 2 still holds; HW follows rule 3)."""
        self._require_leader()
        isr = frozenset(isr)
        if self.local not in isr or not isr <= set(self.replicas):
            raise ValueError(f"ISR {sorted(isr)} must hold the leader {self.local} and only replicas {self.replicas}")
        self.isr = isr
        self.pending_isr = frozenset()
        self._advance_hw()

    def set_replicas(self, replicas: tuple[int, ...] | list[int], isr: frozenset[int] | set[int]) -> None:
        """The controller changed the replica set under this leader epoch (a reassignment:
        replicas joining start with an unknown log end and must catch up before they may join the
        ISR; replicas leaving are forgotten).  ``isr`` must be the controller's ISR for the new set."""
        self._require_leader()
        replicas = tuple(replicas)
        isr = frozenset(isr)
        if self.local not in replicas or self.local not in isr or not isr <= set(replicas):
            raise ValueError(f"replicas {replicas} / ISR {sorted(isr)} must hold the leader {self.local}")
        self.replicas = replicas
        self.followers = {r: self.followers.get(r) or FollowerProgress() for r in replicas if r != self.local}
        self.pending_isr = self.pending_isr & frozenset(replicas)
        self.isr = isr
        self.pending_isr = self.pending_isr - isr
        self._advance_hw()

    def expect_isr_additions(self, replicas: frozenset[int]) -> None:
        """Replicas proposed to join the ISR: they count for the HW from now until ``set_isr``
        answers (Kafka's "maximal ISR"), so that when the answer comes back they still hold
        everything below the HW, however far a lone leader appended meanwhile."""
        self._require_leader()
        self.pending_isr = (self.pending_isr | frozenset(replicas)) - self.isr  # (an older proposal may still win)

    def _advance_hw(self) -> None:
        members = self.isr | self.pending_isr if self.pending_isr else self.isr
        if len(members) == 1:  # the leader alone (rule 2): its log end (the hot path of a single node)
            if self.log_end > self.high_watermark:
                self.high_watermark = self.log_end
            return
        ends = [self.log_end] + [self.followers[r].log_end for r in members if r != self.local]
        if UNKNOWN_LOG_END in ends:
            return  # an ISR member has not fetched since the election: HW waits (rule 7)
        self.high_watermark = max(self.high_watermark, min(ends))

    def _require_leader(self) -> None:
        if self.role is not Role.LEADER:
            raise FabricError("NOT_LEADER", f"broker {self.local} is {self.role.value} (leader: {self.leader})")

    # ================================================================== follower side
    def follower_fetched(self, log_end: int, leader_high_watermark: int) -> int:
        """Rule 8: after a fetch reply was appended (or the log truncated) the log ends at
        ``log_end`` and the leader said its HW is ``leader_high_watermark``; returns the new HW."""
        if self.role is not Role.FOLLOWER:
            raise FabricError("NOT_LEADER", f"broker {self.local} is {self.role.value}, not a follower")
        self.log_end = log_end
        self.high_watermark = min(leader_high_watermark, log_end)
        return self.high_watermark

    def __repr__(self) -> str:
        return (f"PartitionState(local={self.local}, {self.role.value}, leader={self.leader}, "
                f"epoch={self.leader_epoch}, isr={sorted(self.isr)}, hw={self.high_watermark}, "
                f"log_end={self.log_end})")
