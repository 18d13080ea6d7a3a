"""``FollowerReplica``: one partition's follower side of data replication, sans-I/O.

The broker shell feeds it what arrived (``on_push`` from SUB, ``on_fetch_reply`` from the
leader's ROUTER) and the time (``tick``), and sends what each returns (a list of
``ReplicaFetch``/``ReplicaAck`` for the leader).  PUB/SUB is the fast path and may lose, reorder
or repeat anything; the offsets and the fetch path are the truth (DESIGN §5).

Rules:

1. A follower of a new leader epoch takes no push before one fetch of that epoch has come back
   without ``diverging_epoch`` (KIP-101/320): until then its log may hold a tail the new leader
   never had.  Becoming follower also drops an epoch this replica assigned as leader and never
   wrote in (``truncate_to(log end)``).
2. A push is appended only if it is of this leader epoch and starts exactly at the log end; the
   follower then acks its new log end.  A push below the log end is a repeat (only its HW is
   used); above it, a gap: fetch from the log end.  A push whose batch is not stamped with its
   own base offset and epoch is the leader's bug: dropped (logged), and fetched instead.
3. At most one fetch is outstanding; it is sent again after ``replica_fetch_timeout_ms`` without a
   reply.  A reply whose echoed epoch or offset is not the outstanding fetch's is dropped.
4. A reply with ``diverging_epoch = (E, O)``: truncate to min(O, where E ends in this log); when
   the leader does not know E, or this log does not, to the high watermark (everything below it
   is committed, so it agrees).  Then fetch again (the check repeats until the logs agree).
5. A reply with batches appends those that start at the log end (older ones are skipped: pushes
   got there first); if the leader has more, fetch again at once, else ack the new log end.
6. ``tick``: with no fetch outstanding and nothing heard (push or reply) for
   ``replica_fetch_idle_ms``, fetch anyway: a lost last push is repaired without a later one, and
   the leader keeps seeing this follower caught up.  A fetch the leader refused (an epoch it does
   not agree with: one of the two has not heard the news yet) is retried only after
   ``replica_fetch_idle_ms``, not on every tick.
7. HW = min(leader's HW, own log end), and it never goes back (only a truncation below it could
   lower it, and rule 4 never cuts below it).
8. An ack is returned by the ``on_push``/``on_fetch_reply`` call that appended, never by a timer:
   the leader's ``acks=all`` replies wait for it.  What it means: the batches below ``log_end``
   are in this replica's log, written to the operating system but *not fsynced* (the broker's
   flusher fsyncs every ``flush_interval_ms``, as Kafka's replicas do).  So an acknowledged
   ``acks=all`` batch survives the crash of any minority of the ISR's processes (and of every
   process, since the page cache outlives them), but not a power loss of every ISR member's
   machine before their next fsync.  Acks of one loop turn are coalesced by the shell
   (``ReplicaManager`` rule 6): only the last log end matters.
9. A replica joining by reassignment has a ``throttle`` (``throttle.py``): its fetches ask for
   a bounded number of bytes and wait as long as the bytes received need at the throttle's rate;
   a fetch held back is sent by ``tick`` once allowed.
"""

from __future__ import annotations

import logging
from typing import Iterable

from ..log.errors import InvalidBatchError, MalformedBatchError
from ..log.store import ReplicaLogStore
from ..protocol.errors import FabricError
from ..records.batch import iter_headers, parse_header
from .config import ReplicationConfig
from .messages import Push, ReplicaAck, ReplicaFetch, ReplicaFetchReply
from .state import PartitionState
from .throttle import FetchThrottle

__all__ = ["FollowerReplica"]

log = logging.getLogger("fabric.replication.follower")

Outgoing = list[ReplicaFetch | ReplicaAck]


class FollowerReplica:
    def __init__(self, log_store: ReplicaLogStore, state: PartitionState, topic_id: str, partition: int, *,
                 leader: int, leader_epoch: int, replicas: Iterable[int], now_ms: int,
                 config: ReplicationConfig = ReplicationConfig(), incarnation: int = 0) -> None:
        self.log = log_store
        self.incarnation = incarnation  # this broker process's, on every message (KIP-903, messages.py)
        self.state = state
        self.topic_id = topic_id
        self.partition = partition
        self.config = config
        log_store.truncate_to(log_store.end_offset)  # rule 1: an unused epoch of our own leadership goes
        state.become_follower(leader_epoch, leader, tuple(replicas), log_store.end_offset)
        self.validated = False  # rule 1: a fetch of this epoch came back without divergence
        self._outstanding: ReplicaFetch | None = None
        self._sent_ms = 0
        self._heard_ms = now_ms
        self._backoff_until_ms = 0  # after a refused fetch, no new one before this
        self.throttle = FetchThrottle()  # rule 9 (a replica joining by reassignment)
        self._throttled = False  # a fetch was due but the throttle held it

    @property
    def leader(self) -> int:
        assert self.state.leader is not None
        return self.state.leader

    @property
    def leader_epoch(self) -> int:
        return self.state.leader_epoch

    @property
    def high_watermark(self) -> int:
        return self.state.high_watermark

    @property
    def fetch_outstanding(self) -> bool:
        return self._outstanding is not None

    # ================================================================== input
    def on_push(self, push: Push, now_ms: int) -> Outgoing:
        """Rule 2."""
        if push.leader_epoch != self.state.leader_epoch:
            return []  # an older leader's, or a newer one we have not been told of yet
        self._heard_ms = now_ms
        end = self.log.end_offset
        if not self.validated or push.base_offset > end:
            return self._fetch(now_ms)
        if push.base_offset < end:
            self._set_hw(push.high_watermark)
            return []
        try:
            h = parse_header(push.batch)
            if h.base_offset != push.base_offset or h.leader_epoch != push.leader_epoch:
                raise InvalidBatchError(f"stamped at {h.base_offset} in epoch {h.leader_epoch}")
            self.log.append_replicated(bytearray(push.batch), now_ms)
        except (FabricError, MalformedBatchError, InvalidBatchError) as exc:
            log.warning("%s/%d: the push at %d in epoch %d is unusable (%s): fetching instead",
                        self.topic_id, self.partition, push.base_offset, push.leader_epoch, exc)
            return self._fetch(now_ms)
        self._set_hw(push.high_watermark)
        return [self._ack()]

    def on_fetch_reply(self, reply: ReplicaFetchReply, now_ms: int) -> Outgoing:
        """Rules 3 to 5."""
        sent = self._outstanding
        if (sent is None or reply.leader_epoch != sent.leader_epoch or reply.fetch_offset != sent.fetch_offset
                or reply.leader_epoch != self.state.leader_epoch):
            return []
        self._outstanding = None
        self._heard_ms = now_ms
        if reply.error is not None:
            if reply.error == "OFFSET_OUT_OF_RANGE" and reply.log_start > self.log.end_offset:
                log.info("%s/%d: the leader's log starts at %d, past this log's end %d: starting there",
                         self.topic_id, self.partition, reply.log_start, self.log.end_offset)
                self.log.truncate_fully_and_start_at(reply.log_start)
                self.state.follower_fetched(self.log.end_offset, min(reply.high_watermark, self.log.end_offset))
                return self._fetch(now_ms)
            log.info("%s/%d: fetch from leader %d refused: %s", self.topic_id, self.partition, self.leader,
                     reply.error)
            self._backoff_until_ms = now_ms + self.config.replica_fetch_idle_ms  # (new metadata will come)
            return []
        if reply.diverging_epoch is not None:
            self._truncate(*reply.diverging_epoch)
            return self._fetch(now_ms)
        self.validated = True
        appended, usable = self._append_from(reply.batches, now_ms)
        self.throttle.spent(len(reply.batches), self._sent_ms)  # (from when it was asked: the round trip counts)
        self._set_hw(reply.high_watermark)
        if self.log.end_offset < reply.log_end:
            return self._fetch(now_ms) if usable else []  # (unusable: the idle fetch retries)
        return [self._ack()] if appended else []

    def tick(self, now_ms: int) -> Outgoing:
        """Rules 3 and 6."""
        sent = self._outstanding
        if sent is not None:
            if now_ms - self._sent_ms >= self.config.replica_fetch_timeout_ms:
                self._outstanding = None
                return self._fetch(now_ms)
            return []
        if now_ms < self._backoff_until_ms:
            return []
        if self._throttled and self.throttle.ready(now_ms):
            self._throttled = False
            return self._fetch(now_ms)
        if not self.validated or now_ms - self._heard_ms >= self.config.replica_fetch_idle_ms:
            return self._fetch(now_ms)
        return []

    def restart_fetch(self) -> None:
        """Forget the outstanding fetch (the connection to the leader was reset): the next ``tick``
        sends a new one."""
        self._outstanding = None

    # ================================================================== helpers
    def _fetch(self, now_ms: int) -> Outgoing:
        if self._outstanding is not None:
            return []
        if not self.throttle.ready(now_ms):
            self._throttled = True  # (tick sends it once the throttle allows)
            return []
        entries = self.log.leader_epochs()
        self._outstanding = ReplicaFetch(self.topic_id, self.partition, self.state.local, self.state.leader_epoch,
                                         self.log.end_offset, entries[-1].epoch if entries else -1,
                                         self.throttle.max_bytes(self.config.replica_fetch_max_bytes), self.incarnation)
        self._sent_ms = now_ms
        self._heard_ms = now_ms
        return [self._outstanding]

    def _ack(self) -> ReplicaAck:
        return ReplicaAck(self.topic_id, self.partition, self.state.local, self.state.leader_epoch,
                          self.log.end_offset, self.incarnation)

    def _append_from(self, batches: bytes, now_ms: int) -> tuple[int, bool]:
        """Append the batches that continue this log; (how many, False if one did not fit)."""
        count = consumed = 0
        try:
            for pos, h in iter_headers(batches):
                consumed = pos + h.size
                end = self.log.end_offset
                if h.base_offset + h.record_count <= end:
                    continue  # already here (a push came first)
                if h.base_offset != end:
                    raise InvalidBatchError(f"fetched batch at {h.base_offset} does not continue the log end {end}")
                self.log.append_replicated(bytearray(batches[pos:pos + h.size]), now_ms)
                count += 1
            if consumed != len(batches):  # (the leader sends whole batches only)
                raise MalformedBatchError(f"{len(batches) - consumed} bytes of a torn batch at the end")
        except (FabricError, MalformedBatchError, InvalidBatchError) as exc:
            log.warning("%s/%d: fetched data from leader %d unusable: %s", self.topic_id, self.partition,
                        self.leader, exc)
            return count, False
        return count, True

    def _truncate(self, epoch: int, end_offset: int) -> None:
        """Rule 4."""
        hw = self.state.high_watermark
        if epoch < 0 or end_offset < 0:
            target = hw
        else:
            mine_epoch, mine_end = self.log.end_offset_for_epoch(epoch)
            target = hw if mine_epoch < 0 else min(end_offset, mine_end)
        if target < hw:  # (cannot happen with clean elections: the committed prefix agrees)
            log.error("%s/%d: leader %d's log diverges at %d, below this replica's high watermark %d",
                      self.topic_id, self.partition, self.leader, target, hw)
        if target < self.log.end_offset:
            log.info("%s/%d: log diverges from leader %d's at %d (its epoch %d ends at %d): truncating from %d",
                     self.topic_id, self.partition, self.leader, target, epoch, end_offset, self.log.end_offset)
        self.log.truncate_to(target)
        self.state.follower_fetched(self.log.end_offset, min(hw, self.log.end_offset))

    def _set_hw(self, leader_hw: int) -> None:
        st = self.state
        st.follower_fetched(self.log.end_offset, max(st.high_watermark, min(leader_hw, self.log.end_offset)))

    def __repr__(self) -> str:
        return (f"FollowerReplica({self.topic_id}/{self.partition}, {self.state!r}, validated={self.validated}, "
                f"fetching={self._outstanding is not None})")
