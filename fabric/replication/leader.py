"""``LeaderReplica``: one partition's leader side of data replication, sans-I/O.

The broker shell calls it with what happened and ``now_ms``, and acts on what it returns:

- ``append(batch, now_ms, token)`` appends a produced batch (``token`` set: ``acks=all``) and
  returns its offsets; ``push(base_offset, batch)`` is the ``Push`` to publish on PUB;
- ``on_fetch(ReplicaFetch, now_ms)`` -> ``ReplicaFetchReply``; ``on_ack(ReplicaAck, now_ms)``;
- ``hw_moved()`` -> the ``acks=all`` tokens now answerable (the shell keeps those requests in its
  purgatory and answers them); ``close()`` -> the tokens left (answer NOT_LEADER);
- ``tick(now_ms)`` -> an ``IsrChange`` proposal for the controller, or None; the ISR changes only
  when the controller's answer comes back through ``set_isr``.

Rules (the partition's ISR/HW rules are ``state.py``'s; these are the leader's):

1. Becoming leader of an epoch assigns that epoch at the log end before anything is appended
   (KIP-101): followers ask where their epoch ends, and the answer must exist before the first
   batch of the new epoch does.
2. ``acks=all`` with fewer ISR members than ``min_insync_replicas`` is refused before anything is
   appended (NOT_ENOUGH_REPLICAS).  A waiting ``acks=all`` batch is answerable when the high
   watermark passes its last offset *and* the ISR then has at least ``min_insync_replicas``
   members: if the ISR shrank meanwhile the waiter stays parked (until the ISR grows back, with
   every new member holding the batch since it joined at or above the HW, or the request times
   out), so an answer always means ``min_insync_replicas`` copies.
3. A fetch whose ``last_fetched_epoch`` ends, in this log, below the follower's ``fetch_offset``
   (or that this log does not have) gets ``diverging_epoch`` and no data, and does not count as
   the follower's progress (KIP-320): its log above that point is not this leader's.
4. A fetch at ``fetch_offset`` sets the follower's log end to it (the truth, even when lower: a
   follower that restarted lost its tail); an ack only raises it (acks may be reordered).
   Messages with another leader epoch are refused (fetch: FENCED_LEADER_EPOCH when older,
   UNKNOWN_LEADER_EPOCH when newer) or ignored (ack).
5. The ISR proposal in ``tick`` is the ISR minus followers lagging more than ``replica_lag_ms``
   plus followers caught up to the HW and the epoch start (``state.py`` rules 5, 6); one
   proposal is outstanding at a time, made again after ``isr_retry_ms`` if unanswered.  From the
   proposal on, the HW also waits for the proposed additions (Kafka's "maximal ISR"): a lone
   leader would otherwise commit alone while the answer travels, and the joiner it then counts
   would not hold those records.
6. ``visible_high_watermark`` (what consumers may read below) is None until the high watermark
   reaches the offset where this epoch began: before that a new leader's HW may be below the one
   its predecessor showed consumers (KRaft's rule), and a consumer-visible HW must not go back.
7. Follower incarnations (KIP-903).  Each follower's progress belongs to one process of its
   broker (``FollowerProgress.incarnation``): the registered one the metadata names
   (``set_incarnations``) or a newer one its messages carry.  A newer incarnation's progress starts
   unknown (its predecessor's log end may be gone with an unflushed tail: the HW waits for its
   first fetch, and it is not proposed for the ISR on what the old process reported); a fetch
   from an older incarnation is refused ``STALE_BROKER_EPOCH`` and an ack from one ignored, so a
   delayed message of a dead process never counts toward the ISR or the high watermark.
"""

from __future__ import annotations

import bisect
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Hashable, Iterable, Mapping

from ..log.store import ReplicaLogStore
from ..protocol.errors import FabricError
from .config import ReplicationConfig
from .messages import Push, ReplicaAck, ReplicaFetch, ReplicaFetchReply
from .state import UNKNOWN_LOG_END, FollowerProgress, PartitionState

__all__ = ["IsrChange", "LeaderReplica"]

log = logging.getLogger("fabric.replication.leader")


@dataclass(frozen=True)
class IsrChange:
    """A proposed ISR for the controller (Kafka's AlterPartition): valid only for this leader epoch
    and partition epoch (the controller refuses it if either moved on)."""

    topic_id: str
    partition: int
    leader_epoch: int
    partition_epoch: int
    isr: frozenset[int]
    # each follower in ``isr``: the incarnation its progress is of (rule 7; the controller admits a
    # newcomer only if that is the one it registered: a restarted follower rejoins by catching up)
    incarnations: Mapping[int, int] = field(default_factory=dict, compare=False)


def _first(item: tuple[int, Hashable]) -> int:
    return item[0]


class LeaderReplica:
    def __init__(self, log_store: ReplicaLogStore, state: PartitionState, topic_id: str, partition: int, *,
                 leader_epoch: int, replicas: Iterable[int], isr: Iterable[int], now_ms: int,
                 min_insync_replicas: int = 1, partition_epoch: int = 0,
                 config: ReplicationConfig = ReplicationConfig()) -> None:
        """Become leader of ``leader_epoch`` (``state`` is this partition's, carrying the HW this
        broker had as a follower)."""
        if min_insync_replicas < 1:
            raise ValueError(f"min_insync_replicas must be >= 1, not {min_insync_replicas}")
        self.log = log_store
        self.state = state
        self.topic_id = topic_id
        self.partition = partition
        self.config = config
        self.min_insync_replicas = min_insync_replicas
        self.partition_epoch = partition_epoch
        state.become_leader(leader_epoch, tuple(replicas), frozenset(isr), log_store.end_offset, now_ms)
        state.isr_by_controller = True
        log_store.assign_epoch(leader_epoch, log_store.end_offset)  # rule 1
        # (last offset of its batch, token), in offset order: appends come in offset order, so a
        # new waiter goes at the end and ``hw_moved`` pops from the front, O(tokens released).
        # (A scan of every waiter per HW move was quadratic: at 10,000 records/s an ack released
        # one batch of thousands waiting, and the leader spent its time scanning.)
        self._waiters: deque[tuple[int, Hashable]] = deque()
        self._tokens: set[Hashable] = set()
        self._reported_hw = -1  # the HW ``take_hw_change`` last reported
        self._proposal: IsrChange | None = None
        self._proposed_ms = 0
        self.closed = False

    @property
    def leader_epoch(self) -> int:
        return self.state.leader_epoch

    @property
    def high_watermark(self) -> int:
        return self.state.high_watermark

    @property
    def visible_high_watermark(self) -> int | None:
        """Rule 6."""
        hw = self.state.high_watermark
        return hw if hw >= self.state.epoch_start_offset else None

    @property
    def isr(self) -> frozenset[int]:
        return self.state.isr

    # ================================================================== producing
    def append(self, batch: bytearray, now_ms: int, token: Hashable | None = None) -> tuple[int, int]:
        """Append a validated batch in this epoch; ``(base_offset, last_offset)``.  With ``token``
        (``acks=all``, rule 2) NOT_ENOUGH_REPLICAS is raised before appending when the ISR is too
        small, and the token waits for ``hw_moved``."""
        self._require_open()
        if token is not None and len(self.state.isr) < self.min_insync_replicas:
            raise FabricError("NOT_ENOUGH_REPLICAS", f"{self.topic_id}/{self.partition}: ISR {sorted(self.state.isr)} "
                              f"is smaller than min_insync_replicas {self.min_insync_replicas}")
        res = self.log.append(batch, now_ms, self.state.leader_epoch)
        self.state.leader_appended(self.log.end_offset)
        if token is not None:
            self.wait(token, res.last_offset)
        return res.base_offset, res.last_offset

    def wait(self, token: Hashable, last_offset: int) -> None:
        """Park ``token`` until the batch ending at ``last_offset`` is committed (rule 2)."""
        self._require_open()
        if token in self._tokens:
            raise ValueError(f"token {token!r} is already waiting")
        self._tokens.add(token)
        waiters = self._waiters
        if not waiters or waiters[-1][0] <= last_offset:
            waiters.append((last_offset, token))
        else:  # (not seen: a caller waiting for an older batch after a newer one)
            waiters.insert(bisect.bisect_right(waiters, last_offset, key=_first), (last_offset, token))

    def hw_moved(self) -> list[Hashable]:
        """The tokens now answerable (removed from the waiters), in append order.  Call it
        after anything that may move the HW or the ISR: append, on_fetch, on_ack, set_isr."""
        if not self._waiters or len(self.state.isr) < self.min_insync_replicas:
            return []
        hw = self.state.high_watermark
        waiters = self._waiters
        done = []
        while waiters and waiters[0][0] < hw:
            done.append(waiters.popleft()[1])
        self._tokens.difference_update(done)
        return done

    def take_hw_change(self) -> bool:
        """Whether the high watermark moved since the last call.  Why: the shell wakes the
        consumers parked on this partition only then; waking them at every follower ack re-read
        the log for each parked fetch although their read limit had not moved (with two
        followers, at least every other ack)."""
        hw = self.state.high_watermark
        if hw == self._reported_hw:
            return False
        self._reported_hw = hw
        return True

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def push(self, base_offset: int, batch: bytes | bytearray) -> Push:
        """The message that publishes an appended batch (as stamped by ``append``) to followers."""
        return Push(self.topic_id, self.partition, self.state.leader_epoch, base_offset,
                    self.state.high_watermark, bytes(batch))

    def close(self) -> list[Hashable]:
        """Leadership ends (a newer epoch, fencing, deletion): the waiting tokens, to be answered
        with NOT_LEADER, since a new leader may truncate their batches."""
        self.closed = True
        tokens = [t for _, t in self._waiters]
        self._waiters.clear()
        self._tokens.clear()
        return tokens

    # ================================================================== followers
    def on_fetch(self, fetch: ReplicaFetch, now_ms: int) -> ReplicaFetchReply:
        """Rules 3 and 4."""
        st, lg = self.state, self.log

        def reply(error: str | None = None, batches: bytes = b"", diverging: tuple[int, int] | None = None
                  ) -> ReplicaFetchReply:
            return ReplicaFetchReply(self.topic_id, self.partition, fetch.leader_epoch, fetch.fetch_offset, error,
                                     st.high_watermark, lg.start_offset, lg.end_offset, batches, diverging)

        if self.closed:
            return reply("NOT_LEADER")
        if fetch.leader_epoch != st.leader_epoch:
            return reply("FENCED_LEADER_EPOCH" if fetch.leader_epoch < st.leader_epoch else "UNKNOWN_LEADER_EPOCH")
        if fetch.replica not in st.followers:
            return reply("REPLICA_NOT_AVAILABLE")
        if not self._current(st.followers[fetch.replica], fetch.incarnation):
            return reply("STALE_BROKER_EPOCH")  # rule 7
        if fetch.last_fetched_epoch >= 0:
            epoch, end = lg.end_offset_for_epoch(fetch.last_fetched_epoch)
            if epoch < fetch.last_fetched_epoch or end < fetch.fetch_offset:
                return reply(diverging=(epoch, end))
        if not lg.start_offset <= fetch.fetch_offset <= lg.end_offset:
            return reply("OFFSET_OUT_OF_RANGE")
        st.update_follower(fetch.replica, fetch.fetch_offset, now_ms)
        data = lg.read(fetch.fetch_offset, min(fetch.max_bytes, self.config.replica_fetch_max_bytes))
        return reply(batches=data)

    def on_ack(self, ack: ReplicaAck, now_ms: int) -> None:
        """Rule 4: an ack of this epoch raises the follower's log end (stale epochs are ignored)."""
        st = self.state
        progress = st.followers.get(ack.replica)
        if self.closed or ack.leader_epoch != st.leader_epoch or progress is None \
                or not self._current(progress, ack.incarnation):
            return
        if ack.log_end > self.log.end_offset:
            log.warning("%s/%d: follower %d acks log end %d beyond the leader's %d: ignored", self.topic_id,
                        self.partition, ack.replica, ack.log_end, self.log.end_offset)
            return
        st.update_follower(ack.replica, max(ack.log_end, progress.log_end), now_ms)

    def forget_follower(self, replica: int) -> None:
        """``replica``'s broker restarted (a new incarnation): what it reported before may be lost
        with its unflushed tail, so its log end is unknown until it fetches again."""
        progress = self.state.followers.get(replica)
        if progress is not None:
            progress.log_end = progress.leader_log_end_at_last_fetch = UNKNOWN_LOG_END

    def set_incarnations(self, incarnations: Mapping[int, int]) -> None:
        """Rule 7: the registered incarnation of each broker (the metadata image's); a follower
        whose broker registered a newer process than its progress is of starts over."""
        for replica, progress in self.state.followers.items():
            self._current(progress, incarnations.get(replica, 0))

    def _current(self, progress: FollowerProgress, incarnation: int) -> bool:
        """Rule 7: False for an older incarnation than ``progress``'s; a newer one takes it over."""
        if incarnation < progress.incarnation:
            return False
        if incarnation > progress.incarnation:
            if progress.log_end != UNKNOWN_LOG_END:
                log.info("%s/%d: a follower restarted (incarnation %d -> %d): its log end is unknown until it "
                         "fetches", self.topic_id, self.partition, progress.incarnation, incarnation)
            progress.incarnation = incarnation
            progress.log_end = progress.leader_log_end_at_last_fetch = UNKNOWN_LOG_END
        return True

    # ================================================================== ISR
    def tick(self, now_ms: int) -> IsrChange | None:
        """Rule 5: the ISR proposal to send to the controller, if one is due."""
        if self.closed:
            return None
        st = self.state
        isr = st.isr
        lag = self.config.replica_lag_ms
        proposed = (isr - st.isr_shrink_candidates(now_ms, lag)) | st.isr_expand_candidates(now_ms, lag)
        if proposed == isr:
            self._proposal = None
            return None
        if (self._proposal is not None and self._proposal.isr == proposed
                and now_ms - self._proposed_ms < self.config.isr_retry_ms):
            return None
        self._proposal = IsrChange(self.topic_id, self.partition, st.leader_epoch, self.partition_epoch, proposed,
                                   {r: st.followers[r].incarnation for r in proposed if r in st.followers})
        st.expect_isr_additions(proposed - isr)  # the HW waits for them from now on (state.py rule 3)
        self._proposed_ms = now_ms
        log.info("%s/%d: proposing ISR %s (now %s, HW %d)", self.topic_id, self.partition, sorted(proposed),
                 sorted(isr), st.high_watermark)
        return self._proposal

    def set_isr(self, isr: Iterable[int], partition_epoch: int | None = None) -> None:
        """Apply the ISR the controller decided (its answer, or its own change such as fencing)."""
        isr = frozenset(isr)
        for r in isr - self.state.isr:  # a new member was caught up when it last reported
            progress = self.state.followers.get(r)
            if progress is not None:
                progress.last_caught_up_ms = max(progress.last_caught_up_ms, progress.last_fetch_ms)
        self.state.set_isr(isr)
        if partition_epoch is not None:
            self.partition_epoch = partition_epoch
        self._proposal = None

    def set_replicas(self, replicas: Iterable[int], isr: Iterable[int], partition_epoch: int | None = None) -> None:
        """The controller reassigned the partition (same leader epoch): track the new replica set
        (``PartitionState.set_replicas``) and its ISR; an outstanding proposal is void."""
        self.state.set_replicas(tuple(replicas), frozenset(isr))
        if partition_epoch is not None:
            self.partition_epoch = partition_epoch
        self._proposal = None

    def _require_open(self) -> None:
        if self.closed:
            raise FabricError("NOT_LEADER", f"{self.topic_id}/{self.partition}: leadership of epoch "
                              f"{self.state.leader_epoch} ended")

    def __repr__(self) -> str:
        return (f"LeaderReplica({self.topic_id}/{self.partition}, {self.state!r}, "
                f"waiting={len(self._waiters)})")
