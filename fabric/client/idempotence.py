"""The idempotent producer's identity and sequence numbers (no I/O; SPEC 14).

Why: with a producer id, an epoch and a per-partition sequence number in every batch, the
partition leader recognises a batch it already wrote (a retry after a lost reply, a timeout or a
leader change) and answers it with the original offsets instead of writing it twice.

Rules the sender follows (the client side of SPEC 14.5):

1. A batch gets its sequence when it is first encoded, which happens in send order per
   partition (``ordering`` rule 1); the partition's next sequence moves past it only if the
   encoding succeeded.  A retry re-sends the same bytes: the same sequence.
2. Sequences are kept per partition together with the producer id and epoch they belong to, so a
   partition keeps its numbering across retries, reconnects and leader changes.
3. A batch that fails for good with ``OUT_OF_ORDER_SEQUENCE`` (no earlier batch of the partition
   is still being retried) or ``UNKNOWN_PRODUCER_ID`` means the partition lost this producer's
   state (expiration, a lost unreplicated tail): the batch fails, and the partition starts over
   at sequence 0 under a new producer id (``reset``), obtained before its next batch is encoded.
"""

from __future__ import annotations

WINDOW = 5  # batches a leader remembers per producer and partition: the most a producer has in flight
SEQUENCE_MAX = (1 << 31) - 1  # sequences wrap to 0 after it (SPEC 14.3)
_Key = tuple[str, int]


class Idempotence:
    def __init__(self) -> None:
        self.producer_id = -1  # the id new partitions use (-1: none yet, ask init_producer_id)
        self.epoch = -1
        self._partitions: dict[_Key, tuple[int, int, int]] = {}  # key -> (producer id, epoch, next sequence)
        self.resets = 0

    @property
    def ready(self) -> bool:
        return self.producer_id >= 0

    def granted(self, producer_id: int, epoch: int) -> None:
        """The broker's ``init_producer_id`` answer."""
        self.producer_id, self.epoch = producer_id, epoch

    def next(self, key: _Key) -> tuple[int, int, int]:
        """(producer id, epoch, base sequence) for the partition's next batch (rule 1: call
        ``advance`` once it is encoded)."""
        got = self._partitions.get(key)
        if got is None:
            got = self._partitions[key] = (self.producer_id, self.epoch, 0)
        return got

    def advance(self, key: _Key, record_count: int) -> None:
        pid, epoch, seq = self._partitions[key]
        self._partitions[key] = (pid, epoch, (seq + record_count) & SEQUENCE_MAX)

    def reset(self, key: _Key, producer_id: int) -> bool:
        """Rule 3: the partition lost ``producer_id``'s state.  True if a new producer id is
        needed (the partition used the current one); the partition restarts at 0 then."""
        got = self._partitions.get(key)
        if got is None or got[0] != producer_id:
            return False  # (already reset: a later batch of the old numbering failed too)
        del self._partitions[key]
        self.resets += 1
        if producer_id == self.producer_id:
            self.producer_id = self.epoch = -1
            return True
        return False
