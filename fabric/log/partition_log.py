"""A partition's log: an ordered list of segments, the last one active.

Theory of operation
-------------------
- **Append** stamps the batch (base offset = log end, leader epoch; log-append time if the topic
  says so), rolls the active segment first if it is full or old, writes the batch with one
  ``write`` to an ``O_APPEND`` descriptor and updates the sparse indexes.  Only the 61-byte header
  is parsed; records are never decoded.
- **Read** finds the segment by bisecting base offsets, the batch through the offset index plus a
  short header walk, and returns whole batches as they lie on disk (``pread``), possibly across
  segments: the bytes go to the socket untouched.  Damage met on the way (a flipped byte in a
  segment trusted since a clean shutdown) is never served: see ``_work_around`` and ``_damaged``.
- **Durability** is a policy, not a side effect of writing: ``flush`` fsyncs what was written since
  the last flush (every batch if ``flush_every_batch``, otherwise when ``needs_flush`` says so).  A
  *recovery point* (``files.py`` checkpoint) records the offset below which every segment is known
  to be on disk; it moves when a rolled segment has been fsynced whole.  ``close`` writes a
  clean-shutdown marker.  ``open`` without the marker re-checks (CRC, offsets) every segment from
  the one holding the recovery point — normally just the active one — and truncates a torn tail.
- **Time** is a parameter: every time-dependent method takes ``now_ms``; there is no clock here.

Locking
-------
One ``threading.Lock`` guards the segment list, the descriptors and the counters; it is also the
guard that the shared ``FilePool`` (``handles.py``) tries before it closes one of this log's idle
descriptors to make room for another log's, so a descriptor never closes under a user.  The event-loop
thread holds it for each append and read (microseconds).  The flusher thread holds it only to
snapshot which files to sync; it fsyncs ``os.dup`` copies with the lock released, so a roll,
truncation or deletion meanwhile cannot close a descriptor under it.  The compactor
(``compaction.py``) reads duplicated descriptors without the lock and takes it for the final swap.
Flushes are serialised by a flush lock (``close`` takes it too, so it never writes the
clean-shutdown marker while a background fsync is still running).  The checkpoint file has its own
lock, taken last: flush lock, main lock, checkpoint lock is the only order.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from bisect import bisect_right
from pathlib import Path
from typing import Any, NamedTuple

from .errors import (CorruptSegmentError, InvalidBatchError, LogClosedError, MalformedBatchError,
                     OffsetOutOfRangeError, StorageFailure)
from ..records.batch import HEADER, LOG_OVERHEAD, parse_header, set_log_append_time, stamp
from .config import LogConfig
from .files import CLEAN_SHUTDOWN, datasync, fsync_dir, write_checkpoint, write_durably
from .handles import FilePool, shared_pool
from .index import U32_MAX
from .recovery import RecoveryReport, load_directory
from .segment import MIN_BATCH_BYTES, CorruptSegment, Segment

TAIL_BATCH_BYTES_MAX = 64 << 10  # newest batches up to this size are kept in memory for tail reads
DAMAGE_SPOTS_MAX = 1024  # damaged spots a log remembers (for rate-limited logging); then it starts over

log = logging.getLogger("fabric.log")


class AppendResult(NamedTuple):
    """(A named tuple, not a frozen dataclass: one is made per produced batch, and a frozen
    dataclass's ``__init__`` costs four ``object.__setattr__`` calls.)"""

    base_offset: int
    last_offset: int
    max_timestamp: int
    size: int


class PartitionLog:
    def __init__(self, directory: Path, config: LogConfig, files: FilePool | None = None) -> None:
        """Use ``PartitionLog.open``."""
        self.directory = directory
        self.config = config
        self._files = files if files is not None else shared_pool()
        self.start_offset = 0
        self.end_offset = 0
        self.recovery = RecoveryReport(0, 0, 0, True)
        self.last_flush_ms = 0
        self._segments: list[Segment] = []
        self._bases: list[int] = []
        self._lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time; close waits for a running one
        self._dirty: set[Segment] = set()  # segments written since their last fsync
        self._dir_dirty = False  # files created or removed since the last directory fsync
        self._index_paths: list[Path] = []  # index files of rolled segments, to fsync once
        self._first_unflushed_ms: int | None = None
        self._flushing = 0
        self._recovery_point = 0  # as persisted in the checkpoint
        self._meta_gen = 0  # bumped whenever the checkpoint is rewritten outside flush
        self._generation = 0  # bumped by truncation; a compaction swap aborts if it changed
        self._now_ms = 0
        self._closed = False
        self._failed: str | None = None
        # The newest batch as written (base offset, next offset, bytes), while it is small: a
        # consumer at the tail reads exactly this batch right after it is appended, and serving
        # it from memory skips the position lookup and the pread (see read_upto).
        self._tail: tuple[int, int, bytes] | None = None
        self._damage_seen: dict[tuple[str, int], int] = {}  # (file, position) -> reads that hit it

    # ================================================================== opening
    @classmethod
    def open(cls, directory: Path, config: LogConfig, now_ms: int, files: FilePool | None = None) -> "PartitionLog":
        """Open (creating it if needed) the log in ``directory``.  ``files``: the pool lending
        segment descriptors (default: the process-wide ``shared_pool()``).  Raises
        ``StorageFailure``; nothing stays open then."""
        self = cls(Path(directory), config, files)
        self._now_ms = self.last_flush_ms = now_ms
        try:
            if not self.directory.is_dir():
                self.directory.mkdir(parents=True)
                fsync_dir(self.directory.parent)
            with self._lock:  # the pool's guard for the segments being loaded
                self._load(now_ms)
        except OSError as exc:
            raise StorageFailure(f"cannot open log {self.directory}: {exc}") from None
        return self

    def _load(self, now_ms: int) -> None:
        loaded = load_directory(self.directory, self.config.index_interval_bytes, now_ms, self._files, self._lock)
        self._segments = loaded.segments
        self._bases = [s.base_offset for s in self._segments]
        self.end_offset = self._segments[-1].next_offset
        self.start_offset = loaded.start_offset
        self._recovery_point = loaded.recovery_point
        self.recovery = loaded.report

    # ================================================================== appending
    def append(self, batch: bytearray, now_ms: int, leader_epoch: int = 0, *, defer_flush: bool = False
               ) -> AppendResult:
        """Append one validated batch (``validate_batch`` already ran); offsets and leader epoch
        are stamped in place (a ``bytes`` batch is copied first).

        ``defer_flush``: with ``flush_every_batch``, do not fsync here; the caller promises to call
        ``flush()`` before acknowledging (the broker does, once per loop turn for every batch it
        appended: group commit)."""
        if not isinstance(batch, bytearray):
            batch = bytearray(batch)
        return self._append(batch, now_ms, leader_epoch, None, defer_flush)

    def append_replicated(self, batch: bytearray, now_ms: int) -> AppendResult:
        """Follower side: append a batch that already carries the leader's base offset and epoch
        (>= ``end_offset``; a gap is allowed, the leader may have compacted records away)."""
        if not isinstance(batch, bytearray):
            batch = bytearray(batch)
        return self._append(batch, now_ms, None, parse_header(batch).base_offset, False)

    def _append(self, batch: bytearray, now_ms: int, leader_epoch: int | None, given_base: int | None,
                defer_flush: bool) -> AppendResult:
        n = len(batch)
        if n < MIN_BATCH_BYTES:
            raise MalformedBatchError(f"a batch is at least {MIN_BATCH_BYTES} bytes, got {n}")
        # Pair assertion with validate_batch, at the cost of one unpack (no BatchHeader object).
        _, length, _, _, _, _, last_delta, _, max_ts, _, _, _, count = HEADER.unpack_from(batch)
        if length + LOG_OVERHEAD != n:
            raise MalformedBatchError(f"batch_length says {length + LOG_OVERHEAD} bytes, the frame holds {n}")
        if count < 1 or last_delta != count - 1:
            raise InvalidBatchError(f"record_count {count}, last_offset_delta {last_delta}")
        config = self.config
        with self._lock:
            if self._closed or self._failed:
                self._check_writable()  # raises
            self._now_ms = now_ms
            base = self.end_offset if given_base is None else given_base
            if base < self.end_offset:
                raise OffsetOutOfRangeError(
                                  f"replicated batch at offset {base} is below the log end {self.end_offset}")
            if given_base is None:
                if config.timestamp_type == "log_append_time":
                    set_log_append_time(batch, now_ms)
                    max_ts = now_ms
                stamp(batch, base, leader_epoch or 0)
            seg = self._segments[-1]
            size_before = seg.size
            try:
                if self._should_roll(seg, n, base + last_delta, now_ms):
                    seg = self._roll(base)
                    size_before = 0
                seg.append(batch, base, base + count, max_ts, config.index_interval_bytes, now_ms)
            except OSError as exc:
                self._write_failed(seg, size_before, exc)
            self.end_offset = base + count
            self._tail = (base, base + count, bytes(batch)) if n <= TAIL_BATCH_BYTES_MAX else None
            self._dirty.add(seg)  # (_mark_dirty, inline: once per produced batch)
            if self._first_unflushed_ms is None:
                self._first_unflushed_ms = now_ms
        if config.flush_every_batch and not defer_flush:
            self.flush(now_ms)
        return AppendResult(base, base + last_delta, max_ts, n)

    def _should_roll(self, seg: Segment, n: int, last_offset: int, now_ms: int) -> bool:
        if seg.size == 0:
            return last_offset - seg.base_offset > U32_MAX  # only a replica's gap can do this
        config = self.config
        return (seg.size + n > config.segment_bytes
                or (seg.first_append_ms is not None and now_ms - seg.first_append_ms >= config.segment_ms)
                or last_offset - seg.base_offset > U32_MAX)

    def _roll(self, base: int) -> Segment:
        old = self._segments[-1]
        new = Segment.create(self.directory, base, files=self._files, guard=self._lock)
        if old.size == 0:  # an empty active segment too far behind a replicated gap: replace it
            self._segments.pop()
            self._bases.pop()
            self._dirty.discard(old)
            old.delete_files()
        else:
            self._dirty.add(old)
            self._index_paths.extend(old.seal())  # final now: written out, synced by the next flush
        self._segments.append(new)
        self._bases.append(base)
        self._dir_dirty = True
        log.info("%s: rolled to a new segment at offset %d (previous: %d bytes)", self.directory, base, old.size)
        return new

    def maybe_roll(self, now_ms: int) -> bool:
        """Age-based roll of a non-empty active segment (``segment_ms`` since its first append)."""
        with self._lock:
            self._check_open()
            self._now_ms = now_ms
            seg = self._segments[-1]
            if (self._failed or seg.size == 0 or seg.first_append_ms is None
                    or now_ms - seg.first_append_ms < self.config.segment_ms):
                return False
            try:
                self._roll(self.end_offset)
            except OSError as exc:
                raise StorageFailure(f"{self.directory}: cannot roll a segment: {exc}") from None
            self._mark_dirty(self._segments[-1], now_ms)
            return True

    def _write_failed(self, seg: Segment, size_before: int, exc: OSError) -> None:
        """Undo a partial write if possible; otherwise stop accepting appends until reopened."""
        if seg.size == size_before and not seg.closed:
            try:
                os.ftruncate(seg.fd, size_before)
            except OSError:
                self._failed = f"write failed ({exc}) and could not be undone"
        else:
            self._failed = f"index write failed: {exc}"
        if self._failed:
            log.error("%s: %s; appends refused until the log is reopened", self.directory, self._failed)
        raise StorageFailure(f"{self.directory}: append failed: {exc.strerror or exc}")

    def _mark_dirty(self, seg: Segment, now_ms: int) -> None:
        self._dirty.add(seg)
        if self._first_unflushed_ms is None:
            self._first_unflushed_ms = now_ms

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"log {self.directory} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._failed:
            raise StorageFailure(f"log {self.directory}: {self._failed}")

    # ================================================================== reading
    def read(self, offset: int, max_bytes: int, upto_offset: int | None = None) -> bytes:
        """Whole batches from the one holding ``offset``, up to ``max_bytes`` (at least one batch),
        none with a base offset >= ``upto_offset``; may span segments."""
        return self.read_upto(offset, max_bytes, upto_offset)[0]

    def read_upto(self, offset: int, max_bytes: int, upto_offset: int | None = None) -> tuple[bytes, bool]:
        """``read``, plus whether the bytes hold everything readable from ``offset`` (they end at
        ``upto_offset``, or at the end of the log): then the next read starts at ``upto_offset``
        (the end offset), known without walking the batches.  A pipelined fetch relies on it."""
        with self._lock:
            self._check_open()
            if offset < self.start_offset or offset > self.end_offset:
                raise OffsetOutOfRangeError(f"offset {offset} is outside the log "
                                            f"[{self.start_offset}, {self.end_offset}]")
            if offset == self.end_offset:
                return b"", True
            tail = self._tail
            if tail is not None and tail[0] == offset and tail[1] == self.end_offset \
                    and (upto_offset is None or upto_offset > offset):
                return tail[2], True  # the newest batch, whole (a read returns at least one)
            try:
                try:
                    return self._read(offset, max_bytes, upto_offset)
                except CorruptSegment as exc:
                    if not self._work_around(exc, offset):
                        raise
                    return self._read(offset, max_bytes, upto_offset)  # with the index rebuilt or a detour
            except CorruptSegment as exc:
                raise self._damaged(exc, offset) from None
            except OSError as exc:
                raise StorageFailure(f"{self.directory}: read at offset {offset} failed: {exc}") from None

    def _work_around(self, exc: CorruptSegment, offset: int) -> bool:
        """A read met no batch where it expected one.  If the segment's log is intact, its offset
        index was wrong: rebuild it (tried once per segment).  Else map the damaged batch so reads
        step over it (``Segment.map_damage``; once per spot).  True: read again."""
        seg = next((s for s in self._segments if s.path == exc.path), None)
        if seg is None or exc.resume_offset is not None or (exc.path.name, exc.position) in self._damage_seen:
            return False
        self._damage_seen[(exc.path.name, exc.position)] = 0
        if (exc.path.name, -1) not in self._damage_seen:
            self._damage_seen[(exc.path.name, -1)] = 0
            if seg.repair_indexes():
                return True
        return seg.map_damage(offset)

    def _damaged(self, exc: CorruptSegment, offset: int) -> CorruptSegmentError:
        """A read ran into damage on disk (caller holds the lock): log it at ERROR with the file
        and position (the 1st, 2nd, 4th, 8th ... and every 1000th time for the same spot, so
        clients retrying cannot flood the log), and raise ``CorruptSegmentError`` naming the offset and
        where reading can resume (``skip_offset``), never the bytes."""
        skip = exc.resume_offset if exc.resume_offset is not None else self.end_offset
        for seg in self._segments:
            if seg.path == exc.path and exc.resume_offset is None:
                found = seg.next_readable_offset(exc.position)
                later = [s.base_offset for s in self._segments if s.base_offset > seg.base_offset]
                skip = found if found is not None else (later[0] if later else self.end_offset)
                break
        skip = max(skip, offset + 1)
        key = (exc.path.name, exc.position)
        seen = self._damage_seen[key] = self._damage_seen.get(key, 0) + 1
        if len(self._damage_seen) > DAMAGE_SPOTS_MAX:
            self._damage_seen = {key: seen}
        if seen & (seen - 1) == 0 or seen % 1000 == 0:
            log.error("%s: damaged batch in %s at byte %d (%s); fetches from offset %d answer CORRUPT_BATCH, "
                      "readable again from offset %d (seen %d times; `fabric log verify %s` lists the damage)",
                      self.directory, exc.path, exc.position, exc.reason, offset, skip, seen, self.directory)
        return CorruptSegmentError(f"{self.directory.name}: offset {offset} cannot be read: the stored batch at byte "
                                   f"{exc.position} of {exc.path.name} is damaged ({exc.reason}); reading can resume "
                                   f"at offset {skip}", offset, skip)

    def _read(self, offset: int, max_bytes: int, upto: int | None) -> tuple[bytes, bool]:
        segments = self._segments
        i = max(0, bisect_right(self._bases, offset) - 1)
        parts: list[bytes] = []
        budget = max_bytes
        pos: int | None = segments[i].find_position(offset)
        complete = True
        while True:
            if pos is not None:
                data, more, complete = segments[i].read_batches(pos, budget, upto, not parts, offset)
                if data:
                    parts.append(data)
                    budget -= len(data)
                if not more or budget <= 0:
                    break
            i += 1
            if i >= len(segments):
                break
            pos = 0
        if complete and i + 1 < len(segments) and (upto is None or segments[i + 1].base_offset < upto):
            complete = segments[i + 1].size == 0  # the budget ran out at a segment end, more follows
        return (parts[0] if len(parts) == 1 else b"".join(parts)), complete

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with a timestamp >= ``timestamp``, or None."""
        with self._lock:
            self._check_open()
            try:
                for seg in self._segments:
                    found = seg.find_timestamp(timestamp, self.start_offset)
                    if found is not None:
                        return found
            except (OSError, CorruptSegment) as exc:
                raise StorageFailure(f"{self.directory}: timestamp search failed: {exc}") from None
            return None

    # ================================================================== truncation and deletion
    def truncate_to(self, offset: int) -> None:
        """Keep only records < ``offset``: whole batches go, from the one holding ``offset``."""
        with self._lock:
            self._check_open()
            if offset >= self.end_offset:
                return
            if offset < self.start_offset:
                self._truncate_fully(offset)
                return
            try:
                i = max(0, bisect_right(self._bases, offset) - 1)
                while len(self._segments) > i + 1:
                    self._delete_segment(-1)
                self._tail = None
                seg = self._segments[i]
                seg.make_writable()
                dropped = seg.truncate_from(offset)
                new_end = offset if dropped is None else min(offset, dropped)
                seg.next_offset = new_end
                log.info("%s: truncated to offset %d (was %d)", self.directory, new_end, self.end_offset)
                self.end_offset = new_end
                self.start_offset = min(self.start_offset, new_end)
                self._dirty.add(seg)
                self._dir_dirty = True
                self._generation += 1
                # Written segments above this one may be re-filled: re-check from here after a crash.
                self._write_checkpoint_locked(min(self._recovery_point, seg.base_offset))
            except OSError as exc:
                self._failed = f"truncation failed: {exc}"
                raise StorageFailure(f"{self.directory}: truncation failed: {exc}") from None

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Drop everything; the next append gets ``offset``."""
        with self._lock:
            self._check_open()
            try:
                self._truncate_fully(offset)
            except OSError as exc:
                self._failed = f"truncation failed: {exc}"
                raise StorageFailure(f"{self.directory}: truncation failed: {exc}") from None

    def _truncate_fully(self, offset: int) -> None:
        if offset < 0:
            raise OffsetOutOfRangeError(f"offset {offset} < 0")
        self._tail = None
        while self._segments:
            self._delete_segment(-1)
        seg = Segment.create(self.directory, offset, files=self._files, guard=self._lock)
        self._segments, self._bases = [seg], [offset]
        log.info("%s: emptied; the log now starts at offset %d", self.directory, offset)
        self.start_offset = self.end_offset = offset
        self._generation += 1
        self._failed = None
        fsync_dir(self.directory)
        self._write_checkpoint_locked(offset)

    def _delete_segment(self, i: int, why: str = "") -> None:
        """Drop segment ``i`` and its files (caller holds the lock)."""
        seg = self._segments.pop(i)
        del self._bases[i]
        self._dirty.discard(seg)
        seg.delete_files()
        self._dir_dirty = True
        if why:
            log.info("%s: deleted segment %d (%d bytes): %s", self.directory, seg.base_offset, seg.size, why)

    def _replace_segment(self, old: Segment, new: Segment | None) -> None:
        """Compaction swapped ``new`` in for ``old`` (same base offset), or deleted ``old`` if
        ``new`` is None (its files are gone already).  Caller holds the lock."""
        i = self._segments.index(old)
        self._tail = None  # (compaction only rewrites older segments; this keeps it simple to check)
        self._dirty.discard(old)
        if new is not None:
            self._segments[i] = new
        else:
            del self._segments[i], self._bases[i]
            self._dir_dirty = True

    def advance_start_offset(self, offset: int) -> None:
        """Delete-records: the log starts at ``max(start_offset, offset)``; segments wholly below
        it are deleted.  Durable when this returns."""
        with self._lock:
            self._check_open()
            if offset > self.end_offset:
                raise OffsetOutOfRangeError(
                                  f"cannot start the log at {offset}: it ends at {self.end_offset}")
            if offset <= self.start_offset:
                return
            self.start_offset = offset
            try:
                while len(self._segments) > 1 and self._segments[1].base_offset <= offset:
                    self._delete_segment(0, f"below the new log start {offset}")
                self._write_checkpoint_locked(self._recovery_point)
            except OSError as exc:
                raise StorageFailure(f"{self.directory}: {exc}") from None

    def apply_retention(self, now_ms: int) -> int:
        """Delete whole non-active segments past ``retention_ms`` (by their largest timestamp) or
        beyond ``retention_bytes``, oldest first.  Returns how many went."""
        with self._lock:
            self._check_open()
            self._now_ms = now_ms
            config, segs = self.config, self._segments
            count = 0
            try:
                while len(segs) > 1 and segs[1].base_offset <= self.start_offset:
                    self._delete_segment(0, "below the log start offset")
                    count += 1
                if config.delete and config.retention_ms >= 0:
                    while len(segs) > 1 and now_ms - segs[0].max_timestamp > config.retention_ms:
                        self._delete_segment(0, f"newest timestamp {segs[0].max_timestamp} is older "
                                                   f"than retention_ms {config.retention_ms}")
                        count += 1
                if config.delete and config.retention_bytes >= 0:
                    total = sum(s.size for s in segs)
                    while len(segs) > 1 and total - segs[0].size >= config.retention_bytes:
                        total -= segs[0].size
                        self._delete_segment(0, f"log exceeds retention_bytes {config.retention_bytes}")
                        count += 1
            except OSError as exc:
                raise StorageFailure(f"{self.directory}: retention failed: {exc}") from None
            if count:
                self.start_offset = max(self.start_offset, segs[0].base_offset)
            return count

    # ================================================================== durability
    @property
    def unflushed(self) -> bool:
        """Appended data not yet fsynced (removed files are synced with the next flush, unhurried)."""
        return bool(self._dirty) or self._flushing > 0

    def needs_flush(self, now_ms: int) -> bool:
        """True once the oldest unflushed write is ``flush_interval_ms`` old."""
        first = self._first_unflushed_ms
        return first is not None and now_ms - first >= self.config.flush_interval_ms

    def flush(self, now_ms: int | None = None) -> None:
        """fsync the log files written since the last flush, and the index files of segments
        rolled since (the active segment's indexes are rebuilt by recovery after a crash, so
        they are not synced on every flush).  Thread-safe: the lock is held only to take the
        snapshot; syncing works on duplicated descriptors."""
        with self._flush_lock:
            self._flush(now_ms)

    def _flush(self, now_ms: int | None) -> None:
        with self._lock:
            if self._closed or not (self._dirty or self._dir_dirty or self._index_paths):
                return
            active = self._segments[-1]
            segs = list(self._dirty)
            dups: list[int] = []
            try:
                for seg in segs:
                    dups.extend(seg.dup_fds(with_indexes=False))
            except OSError as exc:
                for fd in dups:
                    os.close(fd)
                raise StorageFailure(f"{self.directory}: flush failed: {exc}") from None
            owned, self._index_paths = self._index_paths, []
            self._dirty.clear()
            sync_dir, self._dir_dirty = self._dir_dirty, False
            first_unflushed, self._first_unflushed_ms = self._first_unflushed_ms, None
            durable, active_base, gen, start = self.end_offset, active.base_offset, self._meta_gen, self.start_offset
            self._flushing += 1
        try:
            for fd in dups:
                datasync(fd)
            _sync_paths(owned)
            if sync_dir:
                fsync_dir(self.directory)
        except OSError as exc:
            with self._lock:
                self._dirty.update(s for s in segs if s in self._segments)
                self._dir_dirty |= sync_dir
                self._index_paths.extend(owned)
                if first_unflushed is not None:
                    self._first_unflushed_ms = min(first_unflushed, self._first_unflushed_ms or first_unflushed)
            raise StorageFailure(f"{self.directory}: fsync failed: {exc}") from None
        finally:
            for fd in dups:
                os.close(fd)
            with self._lock:
                self._flushing -= 1
        self.last_flush_ms = now_ms if now_ms is not None else self._now_ms
        if active_base > self._recovery_point:  # a rolled segment is now wholly on disk
            with self._checkpoint_lock:
                if gen == self._meta_gen and not self._closed and durable > self._recovery_point:
                    try:
                        write_checkpoint(self.directory, start, durable)
                        self._recovery_point = durable
                    except OSError as exc:
                        log.warning("%s: cannot write the checkpoint: %s", self.directory, exc)

    def _write_checkpoint_locked(self, recovery_point: int) -> None:
        """Rewrite the checkpoint now (caller holds the main lock)."""
        with self._checkpoint_lock:
            self._meta_gen += 1
            write_checkpoint(self.directory, self.start_offset, recovery_point)
            self._recovery_point = recovery_point

    # ================================================================== settings, description, closing
    def reconfigure(self, config: LogConfig) -> None:
        self.config = config

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def active_base_offset(self) -> int:
        """The base offset of the segment being written: it changes exactly when the log rolls
        (compaction rewrites only closed segments), which is what the compactor watches."""
        return self._bases[-1]

    def timestamp_at(self, offset: int) -> int | None:
        """The first timestamp of the batch holding ``offset`` (one header read), or None when
        the offset is outside the log: how old the oldest unconsumed record is, for consumer lag
        in seconds."""
        with self._lock:
            self._check_open()
            if not self.start_offset <= offset < self.end_offset:
                return None
            i = max(0, bisect_right(self._bases, offset) - 1)
            for seg in self._segments[i:]:
                pos = seg.find_position(offset)
                if pos is not None:
                    try:
                        h = seg.header_at(pos)
                    except OSError:
                        return None
                    return None if h is None else h.base_timestamp
            return None

    def segments(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"base_offset": s.base_offset, "size_bytes": s.size, "max_timestamp": s.max_timestamp,
                     "next_offset": s.next_offset} for s in self._segments]

    def close(self) -> None:
        """Flush, write the checkpoint and the clean-shutdown marker, close every descriptor."""
        if self._closed:
            return
        error: Exception | None = None
        with self._flush_lock:  # a background flush in progress finishes first
            try:
                self._flush(None)
            except StorageFailure as exc:
                error = exc
            with self._lock:
                if self._closed:
                    return
                try:
                    if error is None and not self._failed:
                        # The active segment's indexes, written but not fsynced (as when they were
                        # written entry by entry): after a power loss the cheap check of ``load``
                        # finds a stale one and rebuilds it; one fewer fsync per partition on the
                        # way down keeps the shutdown of 10,000 partitions short.
                        self._segments[-1].seal()
                        self._write_checkpoint_locked(self.end_offset)
                        write_durably(self.directory / CLEAN_SHUTDOWN, b"")
                except OSError as exc:
                    error = StorageFailure(f"{self.directory}: clean shutdown failed: {exc}")
                finally:
                    self._close_descriptors()
        if error is not None:
            raise error

    def _close_descriptors(self) -> None:
        """Caller holds the lock."""
        self._closed = True
        for seg in self._segments:
            seg.close()
        self._index_paths = []

    def delete(self) -> None:
        """Close without ceremony and remove the directory."""
        with self._lock:
            self._close_descriptors()
            self._dirty.clear()
            with self._checkpoint_lock:  # a flusher's checkpoint write finishes first (then sees closed)
                pass
        try:
            shutil.rmtree(self.directory)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageFailure(f"cannot delete {self.directory}: {exc}") from None


def _sync_paths(paths: list[Path]) -> None:
    """fsync files written earlier through descriptors closed since (index files: ``Segment.seal``).
    Linux syncs a file's dirty pages whichever descriptor wrote them.  A file gone meanwhile
    (its segment deleted) is skipped."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            datasync(fd)
        finally:
            os.close(fd)
