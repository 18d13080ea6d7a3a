"""The producer's record accumulator: records in, closed batches out (no threads, no sockets).

Why its own module: batching is the producer's core decision (which records travel together,
when a batch is complete) and it is pure bookkeeping, so it is tested with a number for the
clock instead of a broker and a sender thread.  The ``Producer`` wraps every call in its lock
and owns the waiting (back-pressure, waking the sender); the sender thread asks ``ready(now_ms)``
for what is due and ``drain`` splits it by leader.

Rules:

1. One *open* batch per partition; records are appended to it in the order given, as parallel
   columns (plain lists of ints and bytes are not tracked by the garbage collector; a tuple per
   record would be).
2. An open batch closes when it reaches ``batch_bytes`` (at append), when it is ``linger_ms``
   old (``ready``) unless its partition is *held* (``ready``'s ``held``: the sender cannot send
   it now, so it keeps growing, as Kafka's accumulator does for a node that is not ready), or
   when everything is flushed (``close_all``).  Closed batches leave in the
   order they closed; a partition's batches close in the order they were opened (``seq``), which
   is the order the sender must write them in (``ordering``).
3. ``buffered`` counts the estimated bytes of every batch not yet completed; the producer
   subtracts a batch's ``size`` when it completes it (``release``).
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any, Callable, Container, Hashable, Iterable, Sequence

from ..records.batch import encode_batch
from .futures import BatchResult

RECORD_OVERHEAD = 12  # estimated encoded bytes per record besides key and value
_batch_seq = itertools.count()  # creation order of batches: per partition, the order to write them


class ProducerBatch:
    """Records of one partition collected by ``send``, as parallel columns."""

    __slots__ = ("topic", "partition", "timestamps", "keys", "values", "headers", "size", "created_ms",
                 "result", "attempts", "retry_at_ms", "data", "last_error", "seq", "uncertain")

    def __init__(self, topic: str, partition: int, now_ms: int) -> None:
        self.topic = topic
        self.partition = partition
        self.timestamps: list[int] = []
        self.keys: list[bytes | None] = []
        self.values: list[bytes | None] = []
        self.headers: list[Any] | None = None  # created when the first record with headers arrives
        self.size = 0
        self.created_ms = now_ms
        self.result = BatchResult()
        self.attempts = 0
        self.retry_at_ms = 0
        self.data: bytes | None = None
        self.last_error: BaseException | None = None
        self.seq = next(_batch_seq)
        self.uncertain = False  # an attempt's outcome is unknown (lost connection, timeout): it may be written

    def encode(self, compression: int, producer_id: int = -1, producer_epoch: int = -1,
               base_sequence: int = -1) -> bytes:
        data = encode_batch(self.timestamps, self.keys, self.values, self.headers, compression=compression,
                            producer_id=producer_id, producer_epoch=producer_epoch, base_sequence=base_sequence)
        self.keys = self.values = []  # retries resend self.data; timestamps stay for RecordMetadata
        self.headers = None
        return data


class Accumulator:
    """Open batches by partition and the queue of closed ones (see the module rules).  Not
    thread-safe: the producer calls it under its lock."""

    def __init__(self, batch_bytes: int, linger_ms: int) -> None:
        if batch_bytes <= 0 or linger_ms < 0:
            raise ValueError("batch_bytes > 0 and linger_ms >= 0")
        self.batch_bytes = batch_bytes
        self.linger_ms = linger_ms
        self.open: dict[tuple[str, int], ProducerBatch] = {}
        self.closed: deque[ProducerBatch] = deque()
        self.incomplete: set[BatchResult] = set()
        self.buffered = 0
        # called with each batch that closes holding records (the producer's sticky partitioner
        # moves on when a null-key batch closes)
        self.on_close: Callable[[ProducerBatch], None] | None = None

    # ------------------------------------------------------------------ appending
    def new_batch(self, topic: str, partition: int, now_ms: int) -> ProducerBatch:
        b = ProducerBatch(topic, partition, now_ms)
        self.open[(topic, partition)] = b
        self.incomplete.add(b.result)
        return b

    def append(self, b: ProducerBatch, ts: int, key: bytes | None, value: bytes | None,
               headers: list[tuple[str, bytes]] | None, size: int) -> int:
        """Append one record to the open batch ``b`` (``open.get`` or ``new_batch``); returns its
        index in the batch.  A batch that reaches ``batch_bytes`` closes (``on_close`` hears it).
        (The producer's per-record path: one call, nothing allocated but the list slots.)"""
        values = b.values
        i = len(values)
        values.append(value)
        b.keys.append(key)
        b.timestamps.append(ts)
        if headers or b.headers is not None:
            if b.headers is None:
                b.headers = [None] * i
            b.headers.append(headers or None)
        b.size += size
        self.buffered += size
        if b.size >= self.batch_bytes:
            self.close(b)
        return i

    def fit(self, topic: str, partition: int, per_record: int) -> int:
        """How many records of ``per_record`` estimated bytes the open batch of the partition
        still takes (at least one: a new batch always takes a record)."""
        b = self.open.get((topic, partition))
        return max(1, (self.batch_bytes - (0 if b is None else b.size)) // per_record)

    def append_columns(self, b: ProducerBatch, keys: Sequence[bytes | None], values: Sequence[bytes | None],
                       ts: int, size: int) -> int:
        """Append whole columns (``send_batch``); returns the index of the first."""
        first = len(b.values)
        n = len(values)
        b.values.extend(values)
        b.keys.extend(keys)
        b.timestamps.extend([ts] * n)
        if b.headers is not None:
            b.headers.extend([None] * n)
        b.size += size
        self.buffered += size
        if b.size >= self.batch_bytes:
            self.close(b)
        return first

    # ------------------------------------------------------------------ closing
    def close(self, b: ProducerBatch) -> bool:
        """Move an open batch to the closed queue; True if it held records (an empty batch is
        completed at once and dropped)."""
        del self.open[(b.topic, b.partition)]
        if not b.values:
            self.incomplete.discard(b.result)
            b.result.complete(-1, None)
            return False
        self.closed.append(b)
        if self.on_close is not None:
            self.on_close(b)
        return True

    def close_all(self) -> None:
        """Close every open batch (flush, close, or making room in a full buffer)."""
        for b in list(self.open.values()):
            self.close(b)

    def ready(self, now_ms: int, held: Container[tuple[str, int]] = ()) -> tuple[list[ProducerBatch], int | None]:
        """Close the batches whose linger is over and take every closed batch, in closing order;
        also when the next open batch will be due (None: no open batch due).  The open batches of
        ``held`` partitions stay open and are not due (rule 2): the sender asks again when it can
        send them."""
        next_due = None
        linger = self.linger_ms
        for b in list(self.open.values()):
            if held and (b.topic, b.partition) in held:
                continue
            due = b.created_ms + linger
            if due <= now_ms:
                self.close(b)
            elif next_due is None or due < next_due:
                next_due = due
        out = list(self.closed)
        self.closed.clear()
        return out, next_due

    def release(self, b: ProducerBatch) -> None:
        """A batch completed (acknowledged or failed): its bytes leave the buffer."""
        self.buffered -= b.size
        self.incomplete.discard(b.result)

    def take_all(self) -> list[ProducerBatch]:
        """Every batch still here, open or closed (the sender fails them when it stops)."""
        out = list(self.closed) + list(self.open.values())
        self.closed.clear()
        self.open.clear()
        return out


def drain(batches: Iterable[ProducerBatch], leader_of: Callable[[str, int], Hashable]
          ) -> dict[Hashable, list[ProducerBatch]]:
    """Split ready batches by the broker leading their partition, keeping their order within
    each (so a partition's batches stay in ``seq`` order on their connection)."""
    out: dict[Hashable, list[ProducerBatch]] = {}
    for b in batches:
        node = leader_of(b.topic, b.partition)
        group = out.get(node)
        if group is None:
            out[node] = [b]
        else:
            group.append(b)
    return out
