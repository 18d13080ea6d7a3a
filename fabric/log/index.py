"""The sparse offset and time indexes of one segment.

File formats (big-endian)::

    header, 16 bytes:  magic (4: b"FBOI" offset index, b"FBTI" time index) | version u16 = 1 |
                       entry size u16 | segment base offset i64
    offset index entry, 8 bytes:   relative offset u32 | file position u32 of the batch with that base offset
    time index entry, 12 bytes:    timestamp i64 | relative offset u32 of a batch

The contract (Kafka's ``OffsetIndex``): entries are sparse — at most one per
``index_interval_bytes`` of log — and strictly increasing in both fields; every entry points at
the start of a batch.  A time index entry ``(T, r)`` says "T is the largest timestamp of all
batches up to and including the batch at relative offset r", so every record before that batch's
end is older than any target above T.

Indexes are disposable.  Lookups use an in-memory copy (``array`` + ``bisect``).  An index holds no
file descriptor: the active segment's new entries stay in memory (``pending``) and are written to
the file in one go when the segment stops being active (``write_pending``: a roll, a clean close;
``PartitionLog.flush`` fsyncs them), because a crash makes recovery rebuild the active segment's
indexes from its ``.log`` anyway.  (Writing each entry as it came kept two descriptors open per
partition: 20,000 of them for 10,000 partitions.)  Opening an index reads only the header and the
last entry (cheap even for thousands of segments); the body is loaded and fully checked on first
use.  Anything wrong — missing file, wrong magic, version, base offset or size, entries out of
order — raises ``InvalidIndex`` and the segment rebuilds both indexes from its ``.log`` by walking
batch headers (``segment.py``).
"""

from __future__ import annotations

import operator
import os
import struct
import sys
from array import array
from bisect import bisect_left, bisect_right
from pathlib import Path
from typing import TypeVar

from .files import TMP

_HEADER = struct.Struct(">4sHHq")
HEADER_BYTES = _HEADER.size  # 16
VERSION = 1
U32_MAX = 2**32 - 1

T = TypeVar("T", bound="_Index")


class InvalidIndex(Exception):
    """An index file that cannot be trusted; the message says why."""


class _Index:
    MAGIC: bytes = b""
    ENTRY: struct.Struct = struct.Struct(">II")
    KEY_CODE = "I"
    VALUE_CODE = "I"

    def __init__(self, path: Path, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self.keys = array(self.KEY_CODE)
        self.values = array(self.VALUE_CODE)
        self.pending = False  # memory holds entries (or a truncation) the file does not
        self._count = 0
        self._last: tuple[int, int] | None = None
        self._loaded = True

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls: type[T], path: Path, base_offset: int) -> T:
        """A new, empty index file (an existing file of that name is replaced); entries appended
        later stay in memory until ``write_pending``."""
        idx = cls(path, base_offset)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, idx._header())
        finally:
            os.close(fd)
        return idx

    @classmethod
    def in_memory(cls: type[T], path: Path, base_offset: int) -> T:
        """An index being rebuilt: fill it with ``append``, then ``write_all``."""
        return cls(path, base_offset)

    @classmethod
    def open(cls: type[T], path: Path, base_offset: int) -> T:
        """Check the header and size and read the last entry; the body loads lazily."""
        idx = cls(path, base_offset)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise InvalidIndex(f"{path.name} is missing") from None
        try:
            size = os.fstat(fd).st_size
            head = os.pread(fd, HEADER_BYTES, 0)
            if len(head) < HEADER_BYTES:
                raise InvalidIndex(f"{path.name} is {size} bytes, shorter than its {HEADER_BYTES}-byte header")
            magic, version, entry_size, base = _HEADER.unpack(head)
            if magic != cls.MAGIC or version != VERSION or entry_size != cls.ENTRY.size:
                raise InvalidIndex(f"{path.name} has magic {magic!r} version {version} entry size {entry_size}; "
                                   f"expected {cls.MAGIC!r} {VERSION} {cls.ENTRY.size}")
            if base != base_offset:
                raise InvalidIndex(f"{path.name} belongs to base offset {base}, not {base_offset}")
            body = size - HEADER_BYTES
            if body % cls.ENTRY.size:
                raise InvalidIndex(f"{path.name}: {body} bytes of entries is not a multiple of {cls.ENTRY.size}")
            idx._count = body // cls.ENTRY.size
            if idx._count:
                idx._last = cls.ENTRY.unpack(os.pread(fd, cls.ENTRY.size, size - cls.ENTRY.size))
                idx._loaded = False
        finally:
            os.close(fd)
        return idx

    def _header(self) -> bytes:
        return _HEADER.pack(self.MAGIC, VERSION, self.ENTRY.size, self.base_offset)

    # ------------------------------------------------------------------ state
    def __len__(self) -> int:
        return self._count

    @property
    def last(self) -> tuple[int, int] | None:
        return self._last

    def ensure_loaded(self) -> None:
        """Read and check the whole body (first lookup after ``open``)."""
        if self._loaded:
            return
        size = self._count * self.ENTRY.size
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise InvalidIndex(f"{self.path.name} disappeared") from None
        try:
            body = os.pread(fd, size, HEADER_BYTES)
        finally:
            os.close(fd)
        if len(body) != size:
            raise InvalidIndex(f"{self.path.name} shrank while loading ({len(body)} of {size} bytes)")
        keys, values = self._decode(body)
        if not (_strictly_increasing(keys) and _strictly_increasing(values)):
            raise InvalidIndex(f"{self.path.name}: entries are not strictly increasing")
        self.keys, self.values = keys, values
        self._loaded = True

    def _decode(self, body: bytes) -> tuple[array, array]:
        keys, values = array(self.KEY_CODE), array(self.VALUE_CODE)
        for k, v in self.ENTRY.iter_unpack(body):
            keys.append(k)
            values.append(v)
        return keys, values

    # ------------------------------------------------------------------ changes
    def append(self, key: int, value: int) -> None:
        """Add an entry (in memory: see ``write_pending``).  Pair assertion: both fields must grow."""
        if self._last is not None and (key <= self._last[0] or value <= self._last[1]):
            raise ValueError(f"{self.path.name}: entry ({key}, {value}) does not follow {self._last}")
        if not (0 <= value <= U32_MAX and (self.KEY_CODE == "q" or 0 <= key <= U32_MAX)):
            raise ValueError(f"{self.path.name}: entry ({key}, {value}) out of range")
        self.ensure_loaded()
        self.pending = True
        self.keys.append(key)
        self.values.append(value)
        self._count += 1
        self._last = (key, value)

    def truncate(self, keep: int) -> None:
        """Keep the first ``keep`` entries (in memory: the active segment's, see ``write_pending``)."""
        self.ensure_loaded()
        if keep >= self._count:
            return
        del self.keys[keep:]
        del self.values[keep:]
        self._count = keep
        self._last = (self.keys[-1], self.values[-1]) if keep else None
        self.pending = True

    def _body(self) -> bytes:
        self.ensure_loaded()
        body = bytearray(self._header())
        pack = self.ENTRY.pack
        for k, v in zip(self.keys, self.values):
            body += pack(k, v)
        return bytes(body)

    def write_all(self) -> None:
        """Persist the in-memory entries as a fresh file (temp file + fsync + rename)."""
        body = self._body()
        tmp = self.path.with_name(self.path.name + TMP)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_fully(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self.pending = False

    def write_pending(self) -> bool:
        """Write the in-memory entries over the file if it lags behind them, without fsync (the
        caller syncs the path later: ``PartitionLog.flush``).  Returns True if it wrote.

        In place rather than renamed: this runs when a segment rolls, on the appending thread,
        and a torn file is harmless because the segment stays below the recovery point — and
        is therefore re-checked and re-indexed after a crash — until the sync is done."""
        if not self.pending:
            return False
        body = self._body()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_fully(fd, body)
        finally:
            os.close(fd)
        self.pending = False
        return True

    def close(self) -> None:
        """Nothing to release (an index holds no descriptor); pending entries are dropped: a
        closed active segment is re-indexed by recovery, or was written by ``write_pending``."""


class OffsetIndex(_Index):
    """relative offset -> position of the batch starting at that offset."""

    MAGIC = b"FBOI"
    ENTRY = struct.Struct(">II")

    def _decode(self, body: bytes) -> tuple[array, array]:
        both = array("I")
        if both.itemsize != 4:  # exotic platform: the generic path
            return super()._decode(body)
        both.frombytes(body)
        if sys.byteorder == "little":
            both.byteswap()
        return both[0::2], both[1::2]

    def lookup(self, rel: int) -> int:
        """Position of the last indexed batch whose base offset is <= ``rel`` (0 if none)."""
        self.ensure_loaded()
        i = bisect_right(self.keys, rel) - 1
        return self.values[i] if i >= 0 else 0

    def truncate_to_position(self, position: int) -> None:
        """Drop entries pointing at ``position`` or beyond."""
        self.ensure_loaded()
        self.truncate(bisect_left(self.values, position))


class TimeIndex(_Index):
    """max timestamp so far -> relative offset of the batch holding it."""

    MAGIC = b"FBTI"
    ENTRY = struct.Struct(">qI")
    KEY_CODE = "q"

    @property
    def last_timestamp(self) -> int:
        return self._last[0] if self._last is not None else -1

    def lookup_before(self, timestamp: int) -> int | None:
        """Relative offset of the last entry with a timestamp < ``timestamp``: every record up to
        the end of that batch is older than ``timestamp``.  ``None``: search from the start."""
        self.ensure_loaded()
        i = bisect_left(self.keys, timestamp) - 1
        return self.values[i] if i >= 0 else None

    def truncate_to_offset(self, rel: int) -> None:
        """Drop entries for batches at relative offset ``rel`` or beyond."""
        self.ensure_loaded()
        self.truncate(bisect_left(self.values, rel))


def _write_fully(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _strictly_increasing(a: array) -> bool:
    return all(map(operator.lt, a, a[1:]))
