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
3. ``OUT_OF_ORDER_SEQUENCE`` or ``UNKNOWN_PRODUCER_ID`` with no earlier batch of the partition
   outstanding means the partition lost this producer's state (expiration, a tail lost in an
   unclean failover).  As Kafka's KIP-360: the producer asks ``init_producer_id`` for its next
   epoch (``bump_request``/``granted``), the partition starts over at sequence 0 under it
   (``restart``), and its unacknowledged batches are re-stamped in order (``restamp``) and
   retried (``ordering`` rule 4 says which).  The leader takes a newer epoch from sequence 0 and
   fences the older one, so a late copy of an old-epoch batch can no longer be written.  Other
   partitions keep their numbering: each partition's state is its own.
"""

from __future__ import annotations

from ..records.batch import parse_header, restamp_producer

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

    def bump_request(self) -> tuple[int, int]:
        """Rule 3: the ``init_producer_id`` fields that ask for the next epoch of the newest id."""
        return self.producer_id, self.epoch

    def restart(self, key: _Key) -> None:
        """Rule 3: the partition starts over at sequence 0 under the current (bumped) id and epoch."""
        self._partitions[key] = (self.producer_id, self.epoch, 0)
        self.resets += 1

    def restamp(self, key: _Key, data: bytes) -> bytes:
        """An encoded batch of ``key`` with the partition's next sequence (rule 3, after ``restart``;
        called in the partition's send order)."""
        pid, epoch, seq = self.next(key)
        self.advance(key, parse_header(data).record_count)
        return restamp_producer(data, pid, epoch, seq)
