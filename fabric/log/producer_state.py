"""Idempotent producers' state of one partition: which sequence numbers it has written, where.

Why (Kafka's KIP-98): a producer that retries after a lost reply or a leader change must not write
its records twice.  Every batch of an idempotent producer carries ``producer_id``,
``producer_epoch`` and ``base_sequence`` (the batch header: ``fabric/records/batch.py``); the
partition leader remembers, per producer id, the last ``WINDOW`` batches it appended and answers a
batch it already has with the original offsets instead of appending it again.

This class is the table alone: no files, no clocks (``now_ms`` is passed in).  ``ProducerLog``
(``producer_log.py``) keeps one beside each partition log, updates it on every append (the
leader's and a follower's, so a new leader already has it), rebuilds it from a snapshot and the
log after a restart or a truncation, and writes the snapshot.

The leader's rules for a batch of producer ``pid`` (``check``), in this order:

1. ``pid`` unknown: ``base_sequence`` 0 starts it; anything else is ``UnknownProducerError``
   (its state expired or was never here: the client starts over with a new producer id).
2. ``epoch`` older than the producer's: ``ProducerFencedError`` (a newer incarnation owns it).
3. ``epoch`` newer: the producer's epoch was bumped; the batch must start at sequence 0, else
   ``OutOfOrderSequenceError``.
4. Same epoch: a batch whose first and last sequence equal one of the last ``WINDOW`` batches'
   is a duplicate: ``check`` returns that batch's ``(base_offset, last_offset)`` and the caller
   appends nothing.  Otherwise ``base_sequence`` must be the last batch's last sequence + 1
   (wrapping from 2**31 - 1 to 0), else ``OutOfOrderSequenceError``.

``update`` records an appended batch without checking (a follower and a log scan trust what the
leader wrote).  ``expire(now_ms, expiration_ms)`` forgets producers whose last batch's
``max_timestamp`` is older than ``expiration_ms`` (Kafka's ``producer.id.expiration.ms``).

Snapshot (``encode``/``decode``; file ``producer-state.snapshot`` beside the segments), big-endian:
magic ``FBPS``, version u16 = 1, reserved u16 = 0, ``end_offset`` i64 (the log end the state
covers), count u32, then per producer: producer_id i64, epoch i16, last_timestamp i64, batches u8
(1..5), and per batch (oldest first) first_seq i32, last_seq i32, base_offset i64, last_offset i64;
then the CRC-32 (zlib) of everything before it, u32.
"""

from __future__ import annotations

import struct
import zlib
from collections import deque
from typing import Iterable, NamedTuple

from .errors import OutOfOrderSequenceError, ProducerFencedError, UnknownProducerError

WINDOW = 5  # batches remembered per producer: what a client may have in flight per partition
SEQUENCE_MAX = (1 << 31) - 1
SNAPSHOT_MAGIC = b"FBPS"
SNAPSHOT_VERSION = 1
PRODUCERS_MAX = 1 << 20  # a sanity bound when decoding a snapshot

_HEADER = struct.Struct(">4sHHqI")
_PRODUCER = struct.Struct(">qhqB")
_BATCH = struct.Struct(">iiqq")
_CRC = struct.Struct(">I")

__all__ = ["BatchMeta", "OutOfOrderSequenceError", "ProducerEntry", "ProducerFencedError", "ProducerStateTable",
           "SnapshotError", "UnknownProducerError", "WINDOW", "decode_snapshot", "last_sequence"]


class SnapshotError(ValueError):
    """A snapshot that fails a check (its caller then rebuilds from the log)."""


class BatchMeta(NamedTuple):
    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int


def last_sequence(base_sequence: int, record_count: int) -> int:
    """The sequence of a batch's last record (sequences wrap from 2**31 - 1 to 0)."""
    return (base_sequence + record_count - 1) & SEQUENCE_MAX


class ProducerEntry:
    __slots__ = ("producer_id", "epoch", "batches", "last_timestamp")

    def __init__(self, producer_id: int, epoch: int, last_timestamp: int) -> None:
        self.producer_id = producer_id
        self.epoch = epoch
        self.batches: deque[BatchMeta] = deque(maxlen=WINDOW)
        self.last_timestamp = last_timestamp

    def __repr__(self) -> str:
        return f"ProducerEntry({self.producer_id}, epoch={self.epoch}, {list(self.batches)})"


class ProducerStateTable:
    """Per producer id: epoch and the last ``WINDOW`` batches (rules in the module docstring)."""

    def __init__(self) -> None:
        self.producers: dict[int, ProducerEntry] = {}
        self.end_offset = 0  # the log end the table covers (batches below it are in it)
        self.changes = 0  # bumped by every change: the snapshot writer's "dirty" test

    def __len__(self) -> int:
        return len(self.producers)

    def check(self, producer_id: int, epoch: int, base_sequence: int, record_count: int) -> BatchMeta | None:
        """Rules 1-4 for a batch about to be appended by a leader: None (append it), the original
        batch's ``BatchMeta`` (a duplicate: append nothing, answer with its offsets), or raises."""
        entry = self.producers.get(producer_id)
        if entry is None:
            if base_sequence != 0:
                raise UnknownProducerError(f"producer {producer_id} has no state on this partition (expired, or "
                                           f"never written here) and its batch starts at sequence {base_sequence}, "
                                           f"not 0")
            return None
        if epoch < entry.epoch:
            raise ProducerFencedError(f"producer {producer_id} epoch {epoch} is older than its epoch {entry.epoch}")
        if epoch > entry.epoch:
            if base_sequence != 0:
                raise OutOfOrderSequenceError(f"producer {producer_id}'s new epoch {epoch} must start at sequence "
                                              f"0, not {base_sequence}")
            return None
        last_seq = last_sequence(base_sequence, record_count)
        for b in entry.batches:
            if b.first_seq == base_sequence and b.last_seq == last_seq:
                return b
        if not entry.batches:
            return None
        expected = (entry.batches[-1].last_seq + 1) & SEQUENCE_MAX
        if base_sequence != expected:
            raise OutOfOrderSequenceError(f"producer {producer_id} epoch {epoch}: batch at sequence {base_sequence}, "
                                          f"expected {expected}")
        return None

    def update(self, producer_id: int, epoch: int, base_sequence: int, record_count: int, base_offset: int,
               max_timestamp: int) -> None:
        """Record an appended batch (no checks).  A batch of an older epoch than the entry's is
        ignored (it cannot be in a leader's log after the newer one; a scan may meet it first)."""
        entry = self.producers.get(producer_id)
        if entry is None:
            entry = self.producers[producer_id] = ProducerEntry(producer_id, epoch, max_timestamp)
        elif epoch < entry.epoch:
            return
        elif epoch > entry.epoch:
            entry.epoch = epoch
            entry.batches.clear()
        last_offset = base_offset + record_count - 1
        entry.batches.append(BatchMeta(base_sequence, last_sequence(base_sequence, record_count),
                                       base_offset, last_offset))
        entry.last_timestamp = max(entry.last_timestamp, max_timestamp)
        self.end_offset = max(self.end_offset, last_offset + 1)
        self.changes += 1

    def expire(self, now_ms: int, expiration_ms: int) -> list[int]:
        """Forget producers whose last batch is older than ``expiration_ms``; their ids."""
        gone = [pid for pid, e in self.producers.items() if now_ms - e.last_timestamp > expiration_ms]
        for pid in gone:
            del self.producers[pid]
        if gone:
            self.changes += 1
        return gone

    def clear(self, end_offset: int = 0) -> None:
        self.producers.clear()
        self.end_offset = end_offset
        self.changes += 1

    # ------------------------------------------------------------------ snapshot
    def encode(self) -> bytes:
        parts = [_HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, 0, self.end_offset, len(self.producers))]
        for pid in sorted(self.producers):
            e = self.producers[pid]
            parts.append(_PRODUCER.pack(pid, e.epoch, e.last_timestamp, len(e.batches)))
            parts.extend(_BATCH.pack(*b) for b in e.batches)
        body = b"".join(parts)
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def decode(cls, data: bytes) -> "ProducerStateTable":
        return decode_snapshot(data)

    def entries(self) -> Iterable[ProducerEntry]:
        return self.producers.values()


def decode_snapshot(data: bytes) -> ProducerStateTable:
    """The table a snapshot holds; ``SnapshotError`` naming the first failed check."""
    if len(data) < _HEADER.size + _CRC.size:
        raise SnapshotError(f"snapshot of {len(data)} bytes is shorter than its header")
    (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(memoryview(data)[:-_CRC.size]) != crc:
        raise SnapshotError("snapshot CRC mismatch")
    magic, version, _, end_offset, count = _HEADER.unpack_from(data)
    if magic != SNAPSHOT_MAGIC or version != SNAPSHOT_VERSION:
        raise SnapshotError(f"snapshot magic {magic!r} version {version}: this broker reads {SNAPSHOT_MAGIC!r} "
                            f"version {SNAPSHOT_VERSION}")
    if count > PRODUCERS_MAX or end_offset < 0:
        raise SnapshotError(f"snapshot claims {count} producers at end offset {end_offset}")
    table = ProducerStateTable()
    table.end_offset = end_offset
    pos = _HEADER.size
    limit = len(data) - _CRC.size
    try:
        for _ in range(count):
            pid, epoch, last_ts, n = _PRODUCER.unpack_from(data, pos)
            pos += _PRODUCER.size
            if not 1 <= n <= WINDOW or pid < 0 or pid in table.producers:
                raise SnapshotError(f"snapshot entry for producer {pid} is invalid ({n} batches)")
            e = table.producers[pid] = ProducerEntry(pid, epoch, last_ts)
            for _ in range(n):
                e.batches.append(BatchMeta(*_BATCH.unpack_from(data, pos)))
                pos += _BATCH.size
    except struct.error as exc:
        raise SnapshotError(f"snapshot truncated: {exc}") from None
    if pos != limit:
        raise SnapshotError(f"snapshot has {limit - pos} bytes after its last entry")
    return table
