"""The idempotent producer after a partition lost its state: bump the epoch, re-stamp, retry
(Kafka's KIP-360; SPEC 14.5).  A mixin of ``RequestBook`` (``ordering.py``), no I/O.

Rule 4 of ``ordering.py``, in full.  A batch refused with ``OUT_OF_ORDER_SEQUENCE`` or
``UNKNOWN_PRODUCER_ID`` while no older batch of its partition is unacknowledged means the
partition lost this producer's state (expired after ``producer_id_expiration_ms``, or a tail lost
in an unclean failover); retrying it under the same numbering can never succeed.  Instead:

1. The partition is *rebasing*: the batch is held, with every later batch of the partition that
   comes back refused (or with a retriable error) or whose connection is lost; nothing of the
   partition is sent meanwhile.
2. Once no batch of the partition is in flight, the shell asks ``init_producer_id`` for the next
   epoch of its id (``Idempotence.bump_request``) and calls ``rebased``: the partition restarts
   at sequence 0 under that epoch, and its unacknowledged encoded batches are re-stamped in their
   original order and retried in that order, before anything newer.
3. Which batches are retried: those known not to be in the log, i.e. never sent, or every
   attempt refused with an error the broker gives only before appending (``NOT_APPENDED``: the
   sequence checks, an unknown partition, too few in-sync replicas, throttling).  A batch with
   any other outcome of an attempt (``uncertain``: its connection was lost or it timed out in
   flight, or NOT_LEADER or REQUEST_TIMED_OUT, which an ``acks=all`` batch appended and then
   abandoned by a leader change or a slow ISR also gets) may have been written before the state
   was lost; it fails with the partition's lost-state error instead, so it is never written
   twice.  (The leader's producer state follows its log, so a refused retry implies its earlier
   attempts are not in that log either, unless the state went while the log kept them: an
   expiry, which needs the producer idle for ``producer_id_expiration_ms``, not retrying.  The
   uncertain batches are failed anyway: the rare records lost to the user are reported, never
   duplicated.)  (It cannot be in the log *after* a retried one: within an epoch the leader
   writes in sequence order, and the retried ones were refused before it.)
4. A later batch of the partition acknowledged while older ones are held (which the leader's
   sequence rules make impossible) fails the held ones with ``RetryWouldReorderError``: order
   first.

So no acknowledged record is written twice (acknowledged batches are never re-sent) and none is
reordered; the records that the lost state made undeliverable before are delivered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..protocol.errors import FabricError

if TYPE_CHECKING:
    from .accumulator import ProducerBatch as _Batch
    from .idempotence import Idempotence

_Key = tuple[str, int]
_SEQUENCE_GAPS = ("OUT_OF_ORDER_SEQUENCE", "UNKNOWN_PRODUCER_ID")
# Produce errors the reference broker answers only before it appends anything (rule 3)
NOT_APPENDED = frozenset({*_SEQUENCE_GAPS, "UNKNOWN_TOPIC_OR_PARTITION", "LEADER_NOT_AVAILABLE", "NOT_ENOUGH_REPLICAS",
                          "THROTTLED"})


def is_gap(err: BaseException) -> bool:
    return isinstance(err, FabricError) and err.name in _SEQUENCE_GAPS


def not_appended(err: BaseException) -> bool:
    """Whether an attempt answered with ``err`` certainly appended nothing (rule 3)."""
    return isinstance(err, FabricError) and err.name in NOT_APPENDED


class EpochBump:
    """Mixed into ``RequestBook``; uses its ``inflight``, ``retry``, ``waiting``, ``deferred``,
    ``cautious``, ``finish``, ``_give_up``, ``_not_retried`` and ``delivery_timeout_ms``."""

    rebasing: dict[_Key, list["_Batch"]]
    _rebase_cause: dict[_Key, BaseException]
    closing: bool

    def _hold_for_rebase(self, key: _Key, b: "_Batch", err: BaseException) -> None:
        """Rule 1 (``err``: why ``b`` came back)."""
        if key not in self.rebasing:
            self._rebase_cause[key] = err  # (the lost-state error: what the uncertain batches fail with)
        held = self.rebasing.setdefault(key, [])
        held.append(b)
        held.extend(self.deferred.pop(key, ()))  # type: ignore[attr-defined]

    def _rebase_acked(self, key: _Key, b: "_Batch") -> None:
        """Rule 4: ``b`` of a rebasing partition was written."""
        held = self.rebasing.get(key, [])
        older = [x for x in held if x.seq < b.seq]
        if older:
            self.rebasing[key] = [x for x in held if x.seq > b.seq]
            for x in older:
                self._not_retried(x, f"a later batch of {key[0]}-{key[1]} was written first")  # type: ignore[attr-defined]
        if not self.rebasing.get(key):
            self.rebasing.pop(key, None)
            self._rebase_cause.pop(key, None)

    def rebase_ready(self) -> list[_Key]:
        """Rule 2: the rebasing partitions with nothing in flight (ready for the new epoch)."""
        if not self.rebasing:
            return []
        busy = {(x.topic, x.partition) for f in self.inflight.values() for x in f.batches}  # type: ignore[attr-defined]
        return [key for key in self.rebasing if key not in busy]

    def rebased(self, key: _Key, idem: "Idempotence", now: int) -> tuple[int, int]:
        """Rules 2 and 3, once ``idem`` holds the bumped epoch: (batches retried, failed)."""
        held = self.rebasing.pop(key, [])
        cause = self._rebase_cause.pop(key, None)
        queued = [b for b in self.retry if (b.topic, b.partition) == key]  # type: ignore[attr-defined]
        self.retry = [b for b in self.retry if (b.topic, b.partition) != key]  # type: ignore[attr-defined]
        encoded = [b for b in self.waiting if (b.topic, b.partition) == key and b.data is not None]  # type: ignore[attr-defined]
        idem.restart(key)
        retried = failed = 0
        for b in sorted(held + queued + encoded, key=lambda x: x.seq):
            if b.result.done or b.data is None:
                continue
            if b.uncertain or self.closing or now - b.created_ms >= self.delivery_timeout_ms:  # type: ignore[attr-defined]
                err: Any = cause if b.uncertain and cause is not None else self._give_up(b, now)  # type: ignore[attr-defined]
                self.finish(b, -1, err)  # type: ignore[attr-defined]
                failed += 1
                continue
            b.data = idem.restamp(key, b.data)
            if b.attempts:
                b.retry_at_ms = now
                self.retry.append(b)  # type: ignore[attr-defined]
                retried += 1
        if encoded:  # (the partition's queued batches in creation order: the order of their new sequences)
            mine = iter(sorted((b for b in self.waiting if (b.topic, b.partition) == key), key=lambda x: x.seq))  # type: ignore[attr-defined]
            self.waiting = [next(mine) if (b.topic, b.partition) == key else b for b in self.waiting]  # type: ignore[attr-defined]
        self.cautious.add(key)  # type: ignore[attr-defined]
        return retried, failed
