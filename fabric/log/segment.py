"""One segment: a ``.log`` file of whole batches and its two sparse indexes.

Invariants (checked when a batch is written, and again when it is read back after a crash):

- the ``.log`` holds whole batches back to back from position 0, byte for byte as on the wire, so
  a read is a ``pread`` handed to the socket untouched;
- batch offsets strictly increase and the first is >= the segment's base offset; appends are
  contiguous, gaps appear only where compaction removed records (so recovery checks "strictly
  increasing", which is "contiguous" for every segment compaction has not rewritten);
- every ``offset - base_offset`` and every position fits in a u32 (the index entry fields);
- index entries point at batch starts (see ``index.py`` for what they promise).

Three ways in:

- ``Segment.create``: a new, empty segment (roll, ``truncate_fully_and_start_at``, compaction output);
- ``Segment.open`` then ``load``: the log is trusted (clean shutdown or below the recovery point);
  the indexes get a cheap check (header, last entry, a walk of the batches after the last offset
  entry) and are rebuilt from batch headers on any doubt;
- ``Segment.open`` then ``recover``: after a crash, every batch is read and checked (length, CRC,
  offsets), the file is truncated at the first bad one and both indexes are rebuilt — Kafka's
  ``LogSegment.recover``: scan, validate, truncate, report.

Reading trusts the log (no CRC: the client checks it) but never blindly: ``read_batches`` checks
the header of the batch it starts at, and a walk never follows an impossible ``batch_length``.
Damage found so raises ``CorruptSegment``; ``PartitionLog`` then rebuilds the indexes (if the
log is intact) or has ``map_damage`` find the next valid batch, and reads step over the damaged
one from then on (``_detours``).

Nothing here decodes records except ``find_timestamp`` (one batch).  A Segment is not thread-safe:
``PartitionLog`` serialises access with its lock.

Descriptors: a segment of a partition log holds at most one, its ``.log``'s, and only while a
``FilePool`` (``handles.py``) lets it: ``fd`` opens the file on first use and the pool closes it
again when it needs the room for another partition, so a busy partition keeps its descriptor and
an idle one costs none.  Use ``fd`` right where the descriptor is needed, never a copy of it kept
across a call that may open another segment (the pool's rule 1).  The index files hold no
descriptor (``index.py``).  A segment made without a pool (compaction output, tests) keeps its
descriptor until ``close``.  The flusher and the compactor work on ``os.dup`` copies, so closing a
segment never pulls a descriptor out from under them.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import zlib
from bisect import bisect_right
from pathlib import Path
from typing import Iterator

from ..records.batch import (CRC_START, HEADER_SIZE, LENGTH_PREFIX, LOG_OVERHEAD, MAGIC, BatchHeader,
                             decode_records, parse_header)
from .files import INDEX, LOG, TIMEINDEX, segment_file
from .handles import FilePool, Guard
from .index import U32_MAX, InvalidIndex, OffsetIndex, TimeIndex

log = logging.getLogger("fabric.log")

_LAST_DELTA = struct.Struct(">i")  # at byte 23 of a batch
_LAST_DELTA_AT = 23
_SCAN_WINDOW = 16 << 10  # bytes read per step when walking from an index hint to an offset
RECENT_BATCHES = 64  # newest batches whose positions a segment remembers (tail reads skip the scan)
_RECOVERY_CHUNK = 1 << 20
MIN_BATCH_BYTES = HEADER_SIZE + 1
_REOPEN_FLAGS = os.O_RDWR | os.O_APPEND  # a closed descriptor comes back like this (never O_TRUNC)


def _integrity_problem(view: memoryview, h: BatchHeader) -> str:
    """What recovery checks in a stored batch: that it is intact (magic, CRC, counts), not the
    produce-time policy of ``validate_batch`` (limits, attribute and timestamp rules), which may
    tighten over time and must never make a restart truncate data the log accepted earlier."""
    if h.magic != MAGIC:
        return f"batch magic {h.magic}, expected {MAGIC}"
    crc = zlib.crc32(view[CRC_START:])
    if crc != h.crc:
        return f"batch CRC mismatch: header says {h.crc:#010x}, data gives {crc:#010x}"
    if h.record_count < 1 or h.last_offset_delta != h.record_count - 1:
        return f"record_count {h.record_count} and last_offset_delta {h.last_offset_delta} disagree"
    return ""


class CorruptSegment(Exception):
    """A ``.log`` whose structure is broken at ``position`` (only ``recover`` may fix it)."""

    def __init__(self, path: Path, position: int, reason: str, resume_offset: int | None = None) -> None:
        super().__init__(f"{path.name} at byte {position}: {reason}")
        self.path = path
        self.position = position
        self.reason = reason
        self.resume_offset = resume_offset  # where reading can go on, when known (a mapped detour)


def header_problem(h: BatchHeader, pos: int, end: int) -> str:
    """What is structurally impossible in a batch header found at ``pos`` of a file or buffer
    that ends at ``end`` (no CRC: a read checks where it starts, the client checks the rest)."""
    if h.magic != MAGIC:
        return f"magic {h.magic}, expected {MAGIC}"
    if h.size < MIN_BATCH_BYTES:
        return f"impossible batch_length {h.batch_length}"
    if pos + h.size > end:
        return f"batch_length {h.batch_length} runs to byte {pos + h.size}, past the end at {end}"
    if h.record_count < 1 or h.last_offset_delta != h.record_count - 1:
        return f"record_count {h.record_count} and last_offset_delta {h.last_offset_delta} disagree"
    return ""


def write_fully(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def iter_batch_bytes(fd: int, start: int, end: int) -> Iterator[tuple[int, memoryview]]:
    """Candidate batches between ``start`` and ``end`` in large reads: (position, bytes).  Stops
    quietly where the length prefix is impossible or the batch runs past ``end``; the caller
    compares the position reached with ``end`` and checks each batch itself (CRC, offsets)."""
    pos, buf, buf_pos = start, b"", start
    while end - pos >= HEADER_SIZE:
        off = pos - buf_pos
        if off + LOG_OVERHEAD > len(buf):
            buf, buf_pos, off = os.pread(fd, min(_RECOVERY_CHUNK, end - pos), pos), pos, 0
        length = LENGTH_PREFIX.unpack_from(buf, off)[1] if len(buf) - off >= LOG_OVERHEAD else -1
        size = length + LOG_OVERHEAD
        if size < MIN_BATCH_BYTES or pos + size > end:
            return
        if off + size > len(buf):
            if size > _RECOVERY_CHUNK:
                data = os.pread(fd, size, pos)
                if len(data) < size:
                    return
                yield pos, memoryview(data)
                pos += size
                continue
            buf, buf_pos, off = os.pread(fd, min(_RECOVERY_CHUNK, end - pos), pos), pos, 0
            if len(buf) < size:
                return
        yield pos, memoryview(buf)[off:off + size]
        pos += size


class Segment:
    def __init__(self, directory: Path, base_offset: int, fd: int, size: int, state: str = "",
                 files: FilePool | None = None, guard: Guard | None = None) -> None:
        """Use ``create`` or ``open``.  ``files``: the pool that lends the ``.log`` descriptor
        (None: the segment owns ``fd`` until ``close``); ``guard``: the lock of the owning log."""
        self.directory = directory
        self.base_offset = base_offset
        self.state = state
        self.path = segment_file(directory, base_offset, LOG, state)
        self._fd = fd
        self._used = True  # (FilePool's clock bit)
        self._files = files
        self._guard = guard
        self.closed = False
        self.size = size
        self.next_offset = base_offset
        self.max_timestamp = -1
        self.max_ts_rel = -1  # relative offset of the batch holding max_timestamp
        self.bytes_since_index = 0
        self.first_append_ms: int | None = None  # age clock for segment_ms
        self.index_interval = 4096  # last interval used; for lazy rebuilds
        self.writable = False  # index files open for appends (the active segment only)
        self.offset_index = OffsetIndex.in_memory(self._file(INDEX), base_offset)
        self.time_index = TimeIndex.in_memory(self._file(TIMEINDEX), base_offset)
        # The newest batches noted here: base offsets, next offsets, positions.  A consumer at the
        # tail asks for what was just appended; without these, each such fetch walked headers from
        # the last index entry (up to ``index_interval`` bytes of small batches), which was the
        # largest single cost of a tail fetch.
        self._recent: tuple[list[int], list[int], list[int]] = ([], [], [])
        # Damaged batches found while serving: position -> (position, base offset) of the next
        # valid batch.  Reads step over them instead of following a damaged batch_length (see
        # ``map_damage``); empty unless the disk was damaged.
        self._detours: dict[int, tuple[int, int]] = {}

    def __repr__(self) -> str:
        return f"Segment({self.path.name}, size={self.size}, next_offset={self.next_offset})"

    def _file(self, suffix: str) -> Path:
        return segment_file(self.directory, self.base_offset, suffix, self.state)

    @property
    def fd(self) -> int:
        """The ``.log``'s descriptor, opened again if the pool closed it (see the module header)."""
        fd = self._fd
        if fd >= 0:
            self._used = True
            return fd
        return self._open(_REOPEN_FLAGS)

    def _open(self, flags: int) -> int:
        if self.closed or self._files is None:
            raise OSError(errno.EBADF, f"{self.path.name} is closed")
        return self._files.open(self, self.path, flags)

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(cls, directory: Path, base_offset: int, state: str = "", files: FilePool | None = None,
               guard: Guard | None = None) -> "Segment":
        """A new empty segment; stale files of the same name are replaced."""
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        if files is None:
            seg = cls(directory, base_offset, os.open(segment_file(directory, base_offset, LOG, state), flags, 0o644),
                      0, state)
        else:
            seg = cls(directory, base_offset, -1, 0, state, files, guard)
            seg._open(flags)
        seg.writable = True
        try:
            seg.offset_index = OffsetIndex.create(seg._file(INDEX), base_offset)
            seg.time_index = TimeIndex.create(seg._file(TIMEINDEX), base_offset)
        except BaseException:
            seg.close()
            raise
        return seg

    @classmethod
    def open(cls, directory: Path, base_offset: int, files: FilePool | None = None,
             guard: Guard | None = None) -> "Segment":
        """Open an existing ``.log``; follow with ``load`` or ``recover``."""
        if files is None:
            fd = os.open(segment_file(directory, base_offset, LOG), _REOPEN_FLAGS)
            return cls(directory, base_offset, fd, os.fstat(fd).st_size)
        seg = cls(directory, base_offset, -1, 0, "", files, guard)
        try:
            seg.size = os.fstat(seg._open(_REOPEN_FLAGS)).st_size
        except BaseException:
            seg.close()
            raise
        return seg

    def load(self, interval: int) -> bool:
        """Open the indexes and derive next offset and max timestamp; rebuild the indexes if they
        do not match the log.  Returns True if they were rebuilt.  Raises ``CorruptSegment``."""
        self.index_interval = interval
        try:
            self.offset_index = OffsetIndex.open(self._file(INDEX), self.base_offset)
            self.time_index = TimeIndex.open(self._file(TIMEINDEX), self.base_offset)
            self._rescan_tail(check_indexes=True)
            return False
        except InvalidIndex as exc:
            log.warning("%s: rebuilding indexes: %s", self.path, exc)
        self.rebuild_indexes(interval)
        return True

    def rebuild_indexes(self, interval: int) -> None:
        """Rebuild both indexes from batch headers (no CRC: the log itself is trusted here)."""
        self.index_interval = interval
        self._reset_indexes()
        for pos, h in self._walk(0, self.size, self.base_offset):
            self._note_batch(pos, h.base_offset, h.next_offset, h.max_timestamp, h.size, interval)
        self.offset_index.write_all()
        self.time_index.write_all()

    def recover(self, interval: int, min_offset: int) -> int:
        """Check every batch (length, CRC, offsets strictly increasing from ``min_offset``), truncate
        the file at the first bad one, rebuild the indexes.  Returns the bytes truncated."""
        file_size = os.fstat(self.fd).st_size
        self.index_interval = interval
        self._reset_indexes()
        expected = max(min_offset, self.base_offset)
        valid_end, reason = 0, "no whole batch here (torn write or impossible length)"
        for pos, view in iter_batch_bytes(self.fd, 0, file_size):
            h = parse_header(view)
            reason = _integrity_problem(view, h) or self._offset_problem(h, expected, pos)
            if reason:
                break
            self._note_batch(pos, h.base_offset, h.next_offset, h.max_timestamp, h.size, interval)
            expected = h.next_offset
            valid_end = pos + h.size
        truncated = file_size - valid_end
        if truncated:
            log.warning("%s: truncating %d bytes after byte %d (offset %d): %s", self.path, truncated, valid_end,
                        expected, reason)
            os.ftruncate(self.fd, valid_end)
        self.size = valid_end
        self.offset_index.write_all()
        self.time_index.write_all()
        return truncated

    def _reset_indexes(self) -> None:
        self.offset_index = OffsetIndex.in_memory(self._file(INDEX), self.base_offset)
        self.time_index = TimeIndex.in_memory(self._file(TIMEINDEX), self.base_offset)
        self.next_offset = self.base_offset
        self.max_timestamp = self.max_ts_rel = -1
        self.bytes_since_index = 0
        self._recent = ([], [], [])

    def _offset_problem(self, h: BatchHeader, expected: int, pos: int) -> str:
        if h.base_offset < expected:
            return f"batch base offset {h.base_offset} is below the expected {expected}"
        if h.last_offset - self.base_offset > U32_MAX:
            return f"batch last offset {h.last_offset} is too far from the segment base {self.base_offset}"
        if pos + h.size > U32_MAX:
            return f"segment grows past {U32_MAX} bytes"
        return ""

    def _walk(self, start: int, end: int, min_offset: int) -> Iterator[tuple[int, BatchHeader]]:
        """Headers of the batches from ``start`` to exactly ``end`` (one small pread each)."""
        pos, expected = start, min_offset
        while pos < end:
            head = os.pread(self.fd, HEADER_SIZE, pos)
            if len(head) < HEADER_SIZE:
                raise CorruptSegment(self.path, pos, f"batch header truncated ({len(head)} bytes)")
            h = parse_header(head)
            if h.magic != MAGIC or h.size < MIN_BATCH_BYTES or pos + h.size > end \
                    or h.last_offset_delta != h.record_count - 1 or h.record_count < 1:
                raise CorruptSegment(self.path, pos, f"implausible batch header (magic {h.magic}, length "
                                                     f"{h.batch_length}, {h.record_count} records, ends at "
                                                     f"{pos + h.size} of {end})")
            problem = self._offset_problem(h, expected, pos)
            if problem:
                raise CorruptSegment(self.path, pos, problem)
            yield pos, h
            expected = h.next_offset
            pos += h.size

    def _rescan_tail(self, check_indexes: bool = False) -> None:
        """Derive next offset, max timestamp and the index cadence from the indexes' last entries
        plus a walk of the batches after the last offset entry."""
        last = self.offset_index.last
        start, rel = (last[1], last[0]) if last else (0, 0)
        if check_indexes and last and last[1] >= self.size:
            raise InvalidIndex(f"{self.offset_index.path.name}: last entry points at byte {last[1]} "
                               f"of a {self.size}-byte log")
        tlast = self.time_index.last
        self.max_timestamp, self.max_ts_rel = tlast if tlast else (-1, -1)
        self.next_offset = self.base_offset + rel
        first = True
        try:
            for pos, h in self._walk(start, self.size, self.base_offset + rel):
                if first and last and h.base_offset != self.base_offset + rel:
                    raise InvalidIndex(f"{self.offset_index.path.name}: last entry says offset "
                                       f"{self.base_offset + rel} at byte {pos}, the log has {h.base_offset}")
                first = False
                self.next_offset = h.next_offset
                if h.max_timestamp > self.max_timestamp:
                    self.max_timestamp, self.max_ts_rel = h.max_timestamp, h.base_offset - self.base_offset
        except CorruptSegment:
            if check_indexes and last and first:  # the index points at garbage
                raise InvalidIndex(f"{self.offset_index.path.name}: last entry points at no batch") from None
            raise
        if check_indexes and tlast and tlast[1] > self.next_offset - 1 - self.base_offset:
            raise InvalidIndex(f"{self.time_index.path.name}: last entry names relative offset {tlast[1]} "
                               f"beyond the log's last offset {self.next_offset - 1}")
        self.bytes_since_index = self.size - start

    # ------------------------------------------------------------------ appending
    def _note_batch(self, pos: int, base: int, next_offset: int, max_ts: int, size: int, interval: int) -> None:
        """Bookkeeping for a batch just written at ``pos`` (append, recovery, rebuild and
        compaction all go through here so the indexes always look the same).  The batch's offset
        entry and the time entry ``(largest timestamp before it, its batch)`` are added when
        ``interval`` bytes have passed since the last entry.  Counters are updated before the
        index files are written, so a failed index write leaves the segment's size telling."""
        self.index_interval = interval
        rel = base - self.base_offset
        index_here = pos > 0 and self.bytes_since_index >= interval
        prev_max, prev_rel = self.max_timestamp, self.max_ts_rel
        self.bytes_since_index = (0 if index_here else self.bytes_since_index) + size
        if max_ts > self.max_timestamp:
            self.max_timestamp, self.max_ts_rel = max_ts, rel
        self.size = pos + size
        self.next_offset = next_offset
        bases, nexts, positions = self._recent
        if len(bases) >= 2 * RECENT_BATCHES:
            del bases[:RECENT_BATCHES], nexts[:RECENT_BATCHES], positions[:RECENT_BATCHES]
        bases.append(base)
        nexts.append(next_offset)
        positions.append(pos)
        if index_here:
            self.offset_index.append(rel, pos)
            if prev_max > self.time_index.last_timestamp:
                self.time_index.append(prev_max, prev_rel)

    def append(self, batch: bytes | bytearray | memoryview, base: int, next_offset: int, max_ts: int,
               interval: int, now_ms: int) -> int:
        """Write one stamped batch; returns its position."""
        pos = self.size
        self.ensure_indexes()
        write_fully(self.fd, batch)
        self._note_batch(pos, base, next_offset, max_ts, len(batch), interval)
        if self.first_append_ms is None:
            self.first_append_ms = now_ms
        return pos

    def first_batch_max_timestamp(self) -> int | None:
        if self.size < HEADER_SIZE:
            return None
        return parse_header(os.pread(self.fd, HEADER_SIZE, 0)).max_timestamp

    # ------------------------------------------------------------------ reading
    def ensure_indexes(self) -> None:
        """Load lazily opened index bodies; rebuild them if they turn out to be invalid."""
        try:
            self.offset_index.ensure_loaded()
            self.time_index.ensure_loaded()
        except InvalidIndex as exc:
            log.warning("%s: rebuilding indexes: %s", self.path, exc)
            self.rebuild_indexes(self.index_interval)

    def find_position(self, offset: int) -> int | None:
        """Position of the first batch holding an offset >= ``offset``; None if there is none here."""
        if offset >= self.next_offset:
            return None
        bases, nexts, positions = self._recent
        if bases and offset >= bases[0]:
            return positions[bisect_right(nexts, offset)]  # the first noted batch ending after offset
        rel = offset - self.base_offset
        if rel > 0:
            self.ensure_indexes()
            pos = self.offset_index.lookup(rel)
        else:
            pos = 0
        buf, buf_pos = b"", pos
        detours = self._detours
        stepped, expect = -1, -1  # the batch just stepped over, and the offset after it
        while pos < self.size:
            if detours and pos in detours:
                self._check_detour(pos, offset)
                pos, stepped = detours[pos][0], -1
                continue
            off = pos - buf_pos
            if off + _LAST_DELTA_AT + 4 > len(buf):
                buf, buf_pos, off = os.pread(self.fd, min(_SCAN_WINDOW, self.size - pos), pos), pos, 0
                if len(buf) < _LAST_DELTA_AT + 4:
                    raise CorruptSegment(self.path, pos, f"{len(buf)} bytes at the end are no batch")
            base, length = LENGTH_PREFIX.unpack_from(buf, off)
            if base != expect and stepped >= 0:
                # Offsets do not continue (compaction's gaps, or the batch stepped over has a
                # damaged batch_length that happened to land on another batch): its CRC decides.
                self._check_crc(stepped)
            last = base + _LAST_DELTA.unpack_from(buf, off + _LAST_DELTA_AT)[0]
            if base < expect or base < self.base_offset or last >= self.next_offset:  # (no CRC covers base_offset)
                raise CorruptSegment(self.path, pos, f"batch offsets {base}-{last} do not fit: offsets here run "
                                                     f"from {max(expect, self.base_offset)} to {self.next_offset - 1}")
            if last >= offset:
                return pos  # (read_batches checks the header it starts at)
            if length + LOG_OVERHEAD < MIN_BATCH_BYTES or pos + length + LOG_OVERHEAD > self.size:
                # A damaged batch_length: stepping by it would land inside a batch (or loop).
                raise CorruptSegment(self.path, pos, f"impossible batch_length {length} while looking for "
                                                     f"offset {offset}")
            stepped, expect = pos, last + 1
            pos += length + LOG_OVERHEAD
        return None

    def _check_crc(self, pos: int) -> None:
        """Raise ``CorruptSegment`` unless the batch at ``pos`` passes its CRC."""
        h = parse_header(os.pread(self.fd, HEADER_SIZE, pos))
        body = os.pread(self.fd, h.size, pos)
        crc = zlib.crc32(memoryview(body)[CRC_START:])
        if crc != h.crc:
            raise CorruptSegment(self.path, pos, f"CRC mismatch (header {h.crc:#010x}, data {crc:#010x}): its "
                                                 f"batch_length {h.batch_length} or its contents are damaged")

    def read_batches(self, pos: int, budget: int, upto: int | None,
                     at_least_one: bool, offset: int = -1) -> tuple[bytes, bool, bool]:
        """Whole batches from ``pos`` within ``budget`` bytes (at least one if ``at_least_one``),
        none with a base offset >= ``upto``: one ``pread``, found with the offset index and a
        short header walk (never one step per batch sent).  Returns (bytes, True if the end of
        the segment was reached and the caller may continue with the next one, True if the bytes
        hold everything readable here: they end at ``upto`` or at the end of the segment).

        Pair assertion on the read side: the header the bytes start with is checked (magic,
        length within the segment, counts, offsets within the segment and reaching ``offset``),
        so a damaged ``batch_length`` upstream can never make the broker serve bytes that do not
        start at a batch boundary; it raises ``CorruptSegment`` instead."""
        if self._detours and pos in self._detours:  # (pos 0 of a segment after the one read so far)
            if not at_least_one and offset < self._detours[pos][1]:
                return b"", False, False  # the bytes read so far end in front of the damage
            self._check_detour(pos, offset)
            pos = self._detours[pos][0]
        stop = self.size
        if upto is not None and upto < self.next_offset:
            stop = self._first_position_from(upto)
        limit = max(pos, min(stop, pos + max(budget, 0)))
        end = self._last_boundary_at_most(pos, limit)
        if end > pos:
            data = os.pread(self.fd, end - pos, pos)
            self._check_start(data, pos, offset)
            return data, end == self.size, end >= stop
        if not at_least_one or pos >= stop:
            return b"", pos >= self.size and budget > 0, pos >= stop
        head = os.pread(self.fd, HEADER_SIZE, pos)
        self._check_start(head, pos, offset)
        end = pos + LENGTH_PREFIX.unpack_from(head)[1] + LOG_OVERHEAD  # one batch beyond the budget
        return os.pread(self.fd, end - pos, pos), False, end >= stop

    def _check_start(self, data: bytes, pos: int, offset: int) -> None:
        """Raise ``CorruptSegment`` unless ``data`` (read at ``pos``) starts with a plausible
        batch of this segment whose last offset is >= ``offset``."""
        if len(data) < HEADER_SIZE:
            raise CorruptSegment(self.path, pos, f"only {len(data)} bytes where a batch should start")
        h = parse_header(data)
        problem = header_problem(h, pos, self.size)
        if not problem and not self.base_offset <= h.base_offset <= h.last_offset < self.next_offset:
            problem = (f"batch offsets {h.base_offset}-{h.last_offset} lie outside the segment's "
                       f"[{self.base_offset}, {self.next_offset})")
        if not problem and h.last_offset < offset:
            problem = f"batch offsets {h.base_offset}-{h.last_offset} end before the requested offset {offset}"
        if problem:
            raise CorruptSegment(self.path, pos, f"no batch starts here: {problem}")

    def keep_damaged(self, next_base: int) -> None:
        """``load`` found damage in this closed segment and ``next_base`` is the base offset of
        the segment after it: keep every byte (reads step over the damage, ``map_damage``)
        instead of truncating here and dropping the later segments with it, which lost every
        record after one flipped byte.  The segment ends where the next one starts."""
        # (An index rebuild cut short by the damage noted the batches before it, and with them a
        # size and offsets that end there: everything after the damage would vanish from reads.)
        self.size = os.fstat(self.fd).st_size
        self.next_offset = next_base  # (what the walk derived may come from a damaged base_offset)
        self._recent = ([], [], [])

    def _check_detour(self, pos: int, offset: int) -> None:
        """Reading ``offset`` passes the damaged batch at ``pos``: fine if ``offset`` lies beyond
        it, else ``CorruptSegment`` saying where reading resumes."""
        resume_pos, resume_offset = self._detours[pos]
        if offset < resume_offset:
            raise CorruptSegment(self.path, pos, f"damaged batch; the next valid one is at byte {resume_pos}",
                                 resume_offset)

    def map_damage(self, offset: int) -> bool:
        """A read of ``offset`` met damage: walk from the index entry it started at, checking each
        batch whole (header and CRC), to the first damaged one, and find the next valid batch
        after it by scanning byte by byte (header and CRC must hold).  Reads then step over the
        damaged batch only (a detour), instead of following its ``batch_length`` into the middle
        of other batches.  Returns True if a new damaged batch was found."""
        self.ensure_indexes()
        rel = offset - self.base_offset
        pos = self.offset_index.lookup(rel) if rel > 0 else 0
        expected = self.base_offset
        while pos < self.size:
            if pos in self._detours:
                pos, expected = self._detours[pos]
                continue
            head = os.pread(self.fd, HEADER_SIZE, pos)
            h = parse_header(head) if len(head) == HEADER_SIZE else None
            problem = header_problem(h, pos, self.size) if h is not None else "header truncated"
            if not problem:
                assert h is not None
                if zlib.crc32(memoryview(os.pread(self.fd, h.size, pos))[CRC_START:]) != h.crc:
                    problem = "CRC mismatch"
                elif h.base_offset < expected or h.last_offset >= self.next_offset:
                    problem = f"offsets {h.base_offset}-{h.last_offset} outside [{expected}, {self.next_offset})"
            if problem:
                found = self._next_valid_batch(pos + 1, expected)
                self._detours[pos] = found if found is not None else (self.size, self.next_offset)
                log.error("%s: damaged batch at byte %d (%s); reads skip to byte %d (offset %d)", self.path, pos,
                          problem, *self._detours[pos])
                return True
            assert h is not None
            if h.last_offset >= offset:
                return False
            expected = h.next_offset
            pos += h.size
        return False

    def _next_valid_batch(self, start: int, min_offset: int) -> tuple[int, int] | None:
        """(position, base offset) of the first whole batch at or after byte ``start`` whose
        header and CRC hold, found by trying each byte that could be a batch's magic."""
        magic = bytes([MAGIC])
        chunk_pos = start
        while chunk_pos < self.size:
            chunk = os.pread(self.fd, min(_RECOVERY_CHUNK, self.size - chunk_pos) + HEADER_SIZE, chunk_pos)
            i = chunk.find(magic, 16)
            while i != -1 and i - 16 < _RECOVERY_CHUNK:
                pos = chunk_pos + i - 16
                head = chunk[i - 16: i - 16 + HEADER_SIZE]
                if len(head) == HEADER_SIZE:
                    h = parse_header(head)
                    if not header_problem(h, pos, self.size) and min_offset <= h.base_offset \
                            and h.last_offset < self.next_offset \
                            and zlib.crc32(memoryview(os.pread(self.fd, h.size, pos))[CRC_START:]) == h.crc:
                        return pos, h.base_offset
                i = chunk.find(magic, i + 1)
            chunk_pos += _RECOVERY_CHUNK
        return None

    def repair_indexes(self) -> bool:
        """After a read met no batch where it expected one: if every batch header of the log
        checks out, the offset index led it astray (a damaged entry), so rebuild both indexes
        and return True; False if the log itself is damaged (one header walk, no CRC)."""
        try:
            expect, stepped = self.base_offset, -1
            for pos, h in self._walk(0, self.size, self.base_offset):
                if h.base_offset != expect and stepped >= 0:
                    self._check_crc(stepped)  # (as in find_position: a length landing on another batch)
                expect, stepped = h.next_offset, pos
        except CorruptSegment:
            return False
        log.warning("%s: a read found no batch where the offset index pointed; rebuilding the indexes", self.path)
        self.rebuild_indexes(self.index_interval)
        return True

    def next_readable_offset(self, position: int) -> int | None:
        """The base offset of the first batch after the damage at ``position`` that a read can
        start at: the first offset-index entry beyond it whose batch header checks out (a read
        walks from an index entry, so nothing between the damage and that entry is reachable).
        None if there is none in this segment."""
        self.ensure_indexes()
        index = self.offset_index
        first = bisect_right(index.values, position)
        for rel, pos in zip(index.keys[first:], index.values[first:]):
            head = os.pread(self.fd, HEADER_SIZE, pos)
            if len(head) < HEADER_SIZE:
                return None
            h = parse_header(head)
            if not header_problem(h, pos, self.size) and h.base_offset == self.base_offset + rel:
                return h.base_offset
        return None

    def _first_position_from(self, offset: int) -> int:
        """Position of the first batch whose base offset is >= ``offset`` (the size if none)."""
        pos = self.find_position(offset)
        if pos is None:
            return self.size
        base, length = LENGTH_PREFIX.unpack(os.pread(self.fd, LOG_OVERHEAD, pos))
        return pos if base >= offset else pos + length + LOG_OVERHEAD

    def _last_boundary_at_most(self, pos: int, limit: int) -> int:
        """The last batch boundary in [pos, limit] (``pos`` itself is one)."""
        if self._detours:  # a read ends in front of a damaged batch
            limit = min([limit, *(p for p in self._detours if pos < p <= limit)])
        if limit >= self.size:
            return self.size
        self.ensure_indexes()
        positions = self.offset_index.values
        i = bisect_right(positions, limit) - 1
        p = max(pos, positions[i]) if i >= 0 else pos
        buf, buf_pos = b"", p
        while True:
            off = p - buf_pos
            if off + LOG_OVERHEAD > len(buf):  # headers starting at or before limit are all we need
                buf, buf_pos, off = os.pread(self.fd, min(_SCAN_WINDOW, limit + LOG_OVERHEAD - p), p), p, 0
            if len(buf) - off < LOG_OVERHEAD:
                return p  # no header here: the data stops before it (a read stops at damage)
            nxt = p + LENGTH_PREFIX.unpack_from(buf, off)[1] + LOG_OVERHEAD
            if nxt > limit or nxt - p < MIN_BATCH_BYTES:
                return p
            p = nxt

    def header_at(self, pos: int) -> BatchHeader | None:
        """The header of the batch at ``pos`` (a position ``find_position`` returned), or None
        if the bytes there are not a whole header."""
        head = os.pread(self.fd, HEADER_SIZE, pos)
        return parse_header(head) if len(head) == HEADER_SIZE else None

    def find_timestamp(self, timestamp: int, min_offset: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after ``min_offset`` with a timestamp >=
        ``timestamp``.  Decodes the one batch that holds it."""
        if self.max_timestamp < timestamp or self.next_offset <= min_offset:
            return None
        self.ensure_indexes()
        rel = self.time_index.lookup_before(timestamp)
        pos = self.offset_index.lookup(rel) if rel is not None else 0
        for p, h in self._walk(pos, self.size, self.base_offset):
            if h.max_timestamp >= timestamp and h.next_offset > min_offset:
                for r in decode_records("", 0, os.pread(self.fd, h.size, p), h):
                    if r.offset >= min_offset and r.timestamp >= timestamp:
                        return r.offset, r.timestamp
        return None

    # ------------------------------------------------------------------ truncation, files
    def truncate_from(self, offset: int) -> int | None:
        """Drop every batch holding an offset >= ``offset``; returns the first dropped batch's base
        offset, or None if nothing was dropped."""
        pos = self.find_position(offset)
        if pos is None:
            return None
        self.ensure_indexes()
        dropped = parse_header(os.pread(self.fd, HEADER_SIZE, pos)).base_offset
        os.ftruncate(self.fd, pos)
        self.size = pos
        self._recent = ([], [], [])
        self._detours = {p: d for p, d in self._detours.items() if d[0] < pos}
        self.offset_index.truncate_to_position(pos)
        self.time_index.truncate_to_offset(dropped - self.base_offset)
        self._rescan_tail()
        return dropped

    def make_writable(self) -> None:
        """Become the active segment again (after a truncation): index entries may change."""
        self.ensure_indexes()
        self.writable = True

    def seal(self) -> list[Path]:
        """Stop being the active segment: write the indexes' in-memory entries to their files
        (unsynced) and return the paths written, for the caller to fsync later."""
        self.writable = False
        return [i.path for i in (self.offset_index, self.time_index) if i.write_pending()]

    def dup_fds(self, with_indexes: bool) -> list[int]:
        """Descriptors for fsync off the lock (the caller closes them): a duplicate of the
        ``.log``'s and, ``with_indexes``, the index files, sealed first (see ``seal``)."""
        fds = [os.dup(self.fd)]
        if with_indexes:
            try:
                for path in self.seal():
                    fds.append(os.open(path, os.O_RDONLY))
            except BaseException:
                for fd in fds:
                    os.close(fd)
                raise
        return fds

    def close(self) -> None:
        """Give the descriptor up (idempotent); pending index entries are dropped (see
        ``index.py``)."""
        self.closed = True
        for closeable in (self.offset_index, self.time_index):
            closeable.close()
        if self._files is not None:
            self._files.close(self)
        elif self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def delete_files(self) -> None:
        self.close()
        for suffix in (LOG, INDEX, TIMEINDEX):
            try:
                os.unlink(self._file(suffix))
            except FileNotFoundError:
                pass
