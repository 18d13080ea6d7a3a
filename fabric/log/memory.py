"""``MemoryLog``: a partition log held in memory, with ``PartitionLog``'s observable behaviour.

Why: replication, the purgatory and deterministic simulations need many logs that are fast to
make, free to throw away and able to "crash" on demand; a directory of segment files is none of
those.  The conformance suite (``fabric.testing.log_conformance``) runs against this class and
``PartitionLog`` alike, so a test that passes on memory says something about the file backend.

What is the same as the file backend: offsets and leader epoch stamped in place on append,
log-append time, the framing checks (pair assertion with ``validate_batch``), reads of whole
batches from the one holding the offset with at-least-one semantics and the ``upto_offset`` and
``complete`` rules, ``offset_for_timestamp`` over records, truncation by whole batches, the log
start offset, ``close`` and the errors (``fabric/log/errors.py``).

What differs, by design: a batch plays the part of a segment (``segment_count`` is 1,
``apply_retention`` deletes whole batches other than the newest, ``maybe_roll`` never rolls);
"durable" means "flushed": ``crashed()`` returns the log a restart would find, everything
appended since the last ``flush`` gone.  It also keeps the leader-epoch table (``epochs.py``)
and updates it on append and truncation, as Kafka's ``UnifiedLog`` does: ``PartitionLog`` will do
the same with a ``LeaderEpochFile``.

Not thread-safe: one owner (a test, a simulated broker loop) at a time.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from pathlib import Path
from typing import Any

from .errors import InvalidBatchError, LogClosedError, MalformedBatchError, OffsetOutOfRangeError
from ..records.batch import (HEADER, LOG_OVERHEAD, BatchHeader, decode_records, parse_header, set_log_append_time,
                             stamp)
from .config import LogConfig
from .epochs import EpochEntry, LeaderEpochCache
from .partition_log import AppendResult, RecoveryReport
from .segment import MIN_BATCH_BYTES

__all__ = ["MemoryLog"]

log = logging.getLogger("fabric.log.memory")


class MemoryLog:
    def __init__(self, config: LogConfig, now_ms: int = 0, directory: Path | str = "memory") -> None:
        self.directory = Path(directory)
        self.config = config
        self.start_offset = 0
        self.end_offset = 0
        self.recovery = RecoveryReport(1, 0, 0, True)
        self.last_flush_ms = now_ms
        self.epochs = LeaderEpochCache()
        self._batches: list[bytes] = []
        self._bases: list[int] = []
        self._nexts: list[int] = []  # next offset after each batch (bisected by reads)
        self._max_ts: list[int] = []
        self._size = 0
        self._first_unflushed_ms: int | None = None
        self._durable_end = 0  # records below it survive ``crashed()``
        self._closed = False

    @classmethod
    def open(cls, directory: Path | str, config: LogConfig, now_ms: int) -> "MemoryLog":
        """``PartitionLog.open``'s signature, so factories can swap one for the other."""
        return cls(config, now_ms, directory)

    # ================================================================== appending
    def append(self, batch: bytearray, now_ms: int, leader_epoch: int = 0, *, defer_flush: bool = False
               ) -> AppendResult:
        if not isinstance(batch, bytearray):
            batch = bytearray(batch)
        return self._append(batch, now_ms, leader_epoch, None, defer_flush)

    def append_replicated(self, batch: bytearray, now_ms: int) -> AppendResult:
        if not isinstance(batch, bytearray):
            batch = bytearray(batch)
        return self._append(batch, now_ms, None, parse_header(batch).base_offset, False)

    @staticmethod
    def _check_framing(batch: bytearray) -> BatchHeader:
        n = len(batch)
        if n < MIN_BATCH_BYTES:
            raise MalformedBatchError(f"a batch is at least {MIN_BATCH_BYTES} bytes, got {n}")
        h = parse_header(batch)
        if h.batch_length + LOG_OVERHEAD != n:
            raise MalformedBatchError(f"batch_length says {h.batch_length + LOG_OVERHEAD} bytes, "
                                               f"the frame holds {n}")
        if h.record_count < 1 or h.last_offset_delta != h.record_count - 1:
            raise InvalidBatchError(f"record_count {h.record_count}, "
                                               f"last_offset_delta {h.last_offset_delta}")
        return h

    def _append(self, batch: bytearray, now_ms: int, leader_epoch: int | None, given_base: int | None,
                defer_flush: bool) -> AppendResult:
        h = self._check_framing(batch)
        self._check_open()
        base = self.end_offset if given_base is None else given_base
        if base < self.end_offset:
            raise OffsetOutOfRangeError(
                              f"replicated batch at offset {base} is below the log end {self.end_offset}")
        max_ts = h.max_timestamp
        if given_base is None:
            if self.config.timestamp_type == "log_append_time":
                set_log_append_time(batch, now_ms)
                max_ts = now_ms
            stamp(batch, base, leader_epoch or 0)
            epoch = leader_epoch or 0
        else:
            epoch = h.leader_epoch
        data = bytes(batch)
        assert HEADER.unpack_from(data)[0] == base  # pair assertion: what is kept is what was stamped
        if epoch >= 0 and epoch > self.epochs.latest_epoch:
            self.epochs.assign(epoch, base)
        count = h.record_count
        self._batches.append(data)
        self._bases.append(base)
        self._nexts.append(base + count)
        self._max_ts.append(max_ts)
        self._size += len(data)
        self.end_offset = base + count
        if self._first_unflushed_ms is None:
            self._first_unflushed_ms = now_ms
        if self.config.flush_every_batch and not defer_flush:
            self.flush(now_ms)
        return AppendResult(base, base + count - 1, max_ts, len(data))

    # ================================================================== reading
    def read(self, offset: int, max_bytes: int, upto_offset: int | None = None) -> bytes:
        return self.read_upto(offset, max_bytes, upto_offset)[0]

    def read_upto(self, offset: int, max_bytes: int, upto_offset: int | None = None) -> tuple[bytes, bool]:
        self._check_open()
        self._check_in_range(offset)
        if offset == self.end_offset:
            return b"", True
        batches, bases = self._batches, self._bases
        i = bisect_right(self._nexts, offset)  # the batch holding offset, or the first after a gap
        parts: list[bytes] = []
        total = 0
        while i < len(batches) and (upto_offset is None or bases[i] < upto_offset):
            size = len(batches[i])
            if parts and total + size > max_bytes:  # (the first batch goes even beyond the budget)
                break
            parts.append(batches[i])
            total += size
            i += 1
        complete = i == len(batches) or (upto_offset is not None and bases[i] >= upto_offset)
        return b"".join(parts), complete

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        self._check_open()
        start = self.start_offset
        for i in range(bisect_right(self._nexts, start), len(self._batches)):
            if self._max_ts[i] < timestamp:
                continue
            for r in decode_records("", 0, self._batches[i]):
                if r.offset >= start and r.timestamp >= timestamp:
                    return r.offset, r.timestamp
        return None

    # ================================================================== shortening
    def truncate_to(self, offset: int) -> None:
        self._check_open()
        if offset >= self.end_offset:
            # No record goes, but an epoch this replica assigned as leader and never wrote in
            # (it starts at the log end) does: left there, it would make the follower claim an
            # epoch the new leader never had, on every fetch (Kafka's UnifiedLog.truncateTo).
            self.epochs.truncate_from_end(self.end_offset)
            return
        if offset < self.start_offset:
            self.truncate_fully_and_start_at(offset)
            return
        i = bisect_right(self._nexts, offset)  # first batch holding an offset >= offset
        new_end = min(offset, self._bases[i]) if i < len(self._batches) else offset
        self._drop_from(i)
        log.debug("%s: truncated to offset %d (was %d)", self.directory, new_end, self.end_offset)
        self.end_offset = new_end
        self.start_offset = min(self.start_offset, new_end)
        self._durable_end = min(self._durable_end, new_end)
        self.epochs.truncate_from_end(new_end)

    def truncate_fully_and_start_at(self, offset: int) -> None:
        self._check_open()
        if offset < 0:
            raise OffsetOutOfRangeError( f"offset {offset} < 0")
        self._drop_from(0)
        self.start_offset = self.end_offset = self._durable_end = offset
        self.epochs.clear()

    def advance_start_offset(self, offset: int) -> None:
        self._check_open()
        if offset > self.end_offset:
            raise OffsetOutOfRangeError( f"cannot start the log at {offset}: it ends at {self.end_offset}")
        if offset <= self.start_offset:
            return
        self.start_offset = offset
        self._drop_below_start()
        self.epochs.truncate_from_start(offset)

    def apply_retention(self, now_ms: int) -> int:
        """Whole batches other than the newest, by ``retention_ms`` (their largest timestamp) and
        ``retention_bytes``, oldest first; a batch plays the part of a segment."""
        self._check_open()
        config = self.config
        count = self._drop_below_start()
        doomed = 0
        if config.delete and config.retention_ms >= 0:
            while doomed < len(self._batches) - 1 and now_ms - self._max_ts[doomed] > config.retention_ms:
                doomed += 1
        if config.delete and config.retention_bytes >= 0:
            total = self._size - sum(len(b) for b in self._batches[:doomed])
            while doomed < len(self._batches) - 1 and total - len(self._batches[doomed]) >= config.retention_bytes:
                total -= len(self._batches[doomed])
                doomed += 1
        if doomed:
            self.start_offset = max(self.start_offset, self._bases[doomed])
            self._drop_below_start()
            self.epochs.truncate_from_start(self.start_offset)
        return count + doomed

    def maybe_roll(self, now_ms: int) -> bool:
        self._check_open()
        return False

    def _drop_from(self, i: int) -> None:
        self._size -= sum(len(b) for b in self._batches[i:])
        for column in (self._batches, self._bases, self._nexts, self._max_ts):
            del column[i:]

    def _drop_below_start(self) -> int:
        """Forget batches wholly below the log start; returns how many."""
        i = bisect_right(self._nexts, self.start_offset)
        if i:
            self._size -= sum(len(b) for b in self._batches[:i])
            for column in (self._batches, self._bases, self._nexts, self._max_ts):
                del column[:i]
        return i

    # ================================================================== durability
    @property
    def unflushed(self) -> bool:
        return self._first_unflushed_ms is not None

    def needs_flush(self, now_ms: int) -> bool:
        first = self._first_unflushed_ms
        return first is not None and now_ms - first >= self.config.flush_interval_ms

    def flush(self, now_ms: int | None = None) -> None:
        if self._closed:
            return
        self._durable_end = self.end_offset
        self._first_unflushed_ms = None
        if now_ms is not None:
            self.last_flush_ms = now_ms

    def crashed(self) -> "MemoryLog":
        """The log a restart after a crash now would find: only what was flushed (or appended with
        ``flush_every_batch``); the start offset and the epoch table are durable on change."""
        return self._restarted(clean=False)

    def reopened(self) -> "MemoryLog":
        """The log a restart after ``close`` finds (everything, since close flushes)."""
        if not self._closed:
            raise LogClosedError(f"log {self.directory} is open: close it first")
        return self._restarted(clean=True)

    def _restarted(self, clean: bool) -> "MemoryLog":
        keep = bisect_right(self._nexts, self._durable_end)  # batches wholly below the durable end
        other = MemoryLog(self.config, self.last_flush_ms, self.directory)
        other._batches, other._bases = self._batches[:keep], self._bases[:keep]
        other._nexts, other._max_ts = self._nexts[:keep], self._max_ts[:keep]
        other._size = sum(len(b) for b in other._batches)
        other.recovery = RecoveryReport(1, self._size - other._size, 0, clean)
        other.end_offset = other._durable_end = self._durable_end
        other.start_offset = min(self.start_offset, self._durable_end)
        other._drop_below_start()
        other.epochs = LeaderEpochCache(self.epochs.entries())
        other.epochs.truncate_from_end(other.end_offset)
        return other

    # ================================================================== leader epochs
    def leader_epochs(self) -> list[EpochEntry]:
        return self.epochs.entries()

    def assign_epoch(self, epoch: int, start_offset: int) -> None:
        self.epochs.assign(epoch, start_offset)

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        return self.epochs.end_offset_for(epoch, self.end_offset)

    # ================================================================== description, closing
    def reconfigure(self, config: LogConfig) -> None:
        self.config = config

    @property
    def size_bytes(self) -> int:
        return self._size

    @property
    def segment_count(self) -> int:
        return 1

    def segments(self) -> list[dict[str, Any]]:
        return [{"base_offset": self._bases[0] if self._bases else self.start_offset, "size_bytes": self._size,
                 "max_timestamp": max(self._max_ts, default=-1), "next_offset": self.end_offset}]

    def close(self) -> None:
        if not self._closed:
            self.flush()
            self._closed = True

    def delete(self) -> None:
        self._closed = True
        self._drop_from(0)

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"log {self.directory} is closed")

    def _check_in_range(self, offset: int) -> None:
        if offset < self.start_offset or offset > self.end_offset:
            raise OffsetOutOfRangeError(
                              f"offset {offset} is outside the log [{self.start_offset}, {self.end_offset}]")

    def __repr__(self) -> str:
        return (f"MemoryLog({str(self.directory)!r}, start={self.start_offset}, end={self.end_offset}, "
                f"batches={len(self._batches)})")
