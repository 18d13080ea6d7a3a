"""Leader epochs of a partition's log: which epoch started at which offset.

Why: after a leader change, a follower must learn where its log stops agreeing with the new
leader's before it fetches, or it keeps records the new leader never had (Kafka's KIP-101).  The
follower asks the leader "where does my latest epoch end in your log?" and truncates there; the
answer comes from this table (Kafka's ``LeaderEpochFileCache``).

The table is a list of ``(epoch, start_offset)`` entries, both strictly increasing.  Rules:

1. ``assign(epoch, start_offset)`` records that ``epoch`` begins at ``start_offset``.  Assigning
   the latest epoch again changes nothing (its first offset is what counts).  An assignment that
   contradicts the table (an epoch <= one already there, or a start offset <= one already there)
   drops the contradicted entries first, so the table stays monotonic in both columns.
2. ``end_offset_for(epoch, log_end)`` answers the follower's question: for the latest epoch, the
   log end; for an older one, the start offset of the first larger epoch, paired with the largest
   epoch <= the one asked (the requested one if it is in the table); for an epoch newer than the
   latest, or when the table is empty, ``(UNDEFINED_EPOCH, UNDEFINED_OFFSET)``.
3. ``truncate_from_end(end_offset)`` follows a log truncation: entries starting at or after the
   new end go.  ``truncate_from_start(start_offset)`` follows a log-start advance: entries wholly
   below it go and the newest of them is moved up to start there.

``LeaderEpochCache`` keeps the table in memory (the memory log uses it); ``LeaderEpochFile``
also keeps it durable in one small file of the partition directory, rewritten whole (write to a
temporary, fsync, rename, fsync the directory) on every change: changes happen once per leader
election, not per batch.

File ``leader-epoch-checkpoint`` (big-endian): magic ``FBLE``, version u16 = 1, reserved u16 = 0,
count u32, then ``count`` entries of (epoch i32, start_offset i64), then the CRC-32 of everything
before it, u32.  A file that fails any check is reported and treated as empty: the follower then
truncates to the high watermark (the safe answer), as Kafka does with a missing cache.
"""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

from .files import write_durably

UNDEFINED_EPOCH = -1
UNDEFINED_OFFSET = -1
EPOCH_FILE = "leader-epoch-checkpoint"

_HEADER = struct.Struct(">4sHHI")
_ENTRY = struct.Struct(">iq")
_CRC = struct.Struct(">I")
_MAGIC = b"FBLE"
_VERSION = 1
EPOCH_ENTRIES_MAX = 1 << 16  # a sanity bound when reading the file: one entry per election

log = logging.getLogger("fabric.log.epochs")


class EpochEntry(NamedTuple):
    epoch: int
    start_offset: int


class LeaderEpochCache:
    """The epoch table in memory (rules in the module docstring)."""

    def __init__(self, entries: list[EpochEntry] | None = None) -> None:
        self._entries: list[EpochEntry] = []
        for e in entries or ():
            self._assign(EpochEntry(*e))

    def entries(self) -> list[EpochEntry]:
        return list(self._entries)

    @property
    def latest_epoch(self) -> int:
        return self._entries[-1].epoch if self._entries else UNDEFINED_EPOCH

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Rule 1.  Returns True if the table changed."""
        if epoch < 0 or start_offset < 0:
            raise ValueError(f"epoch {epoch} and start offset {start_offset} must be >= 0")
        changed = self._assign(EpochEntry(epoch, start_offset))
        if changed:
            self._changed()
        return changed

    def _assign(self, entry: EpochEntry) -> bool:
        entries = self._entries
        if entries and entries[-1].epoch == entry.epoch:
            return False
        kept = [e for e in entries if e.epoch < entry.epoch and e.start_offset < entry.start_offset]
        dropped = entries[len(kept):]  # (both columns increase, so what is kept is a prefix)
        # An epoch in which nothing was written, replaced at the same offset, is routine (Kafka
        # logs only the other cases).
        if len(dropped) > 1 or (dropped and dropped[0].start_offset != entry.start_offset):
            log.warning("epoch %d at offset %d contradicts %s: dropped", entry.epoch, entry.start_offset,
                        [tuple(e) for e in dropped])
        kept.append(entry)
        self._entries = kept
        return True

    def end_offset_for(self, epoch: int, log_end: int) -> tuple[int, int]:
        """Rule 2: ``(epoch found, end offset)``."""
        entries = self._entries
        if epoch == UNDEFINED_EPOCH or not entries or epoch > entries[-1].epoch:
            return UNDEFINED_EPOCH, UNDEFINED_OFFSET
        if epoch == entries[-1].epoch:
            return epoch, log_end
        higher = next(e for e in entries if e.epoch > epoch)
        floor = [e for e in entries if e.epoch <= epoch]
        return (floor[-1].epoch if floor else epoch), higher.start_offset

    def truncate_from_end(self, end_offset: int) -> None:
        """Rule 3, after the log was truncated to ``end_offset``."""
        kept = [e for e in self._entries if e.start_offset < end_offset]
        if len(kept) != len(self._entries):
            self._entries = kept
            self._changed()

    def truncate_from_start(self, start_offset: int) -> None:
        """Rule 3, after the log start moved to ``start_offset``."""
        entries = self._entries
        below = [e for e in entries if e.start_offset < start_offset]
        if not below:
            return
        rest = [e for e in entries if e.start_offset >= start_offset]
        if rest and rest[0].start_offset == start_offset:
            self._entries = rest
        else:
            self._entries = [EpochEntry(below[-1].epoch, start_offset)] + rest
        self._changed()

    def clear(self) -> None:
        if self._entries:
            self._entries = []
            self._changed()

    def _changed(self) -> None:
        """Hook: the table changed (the file backend persists it)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({[tuple(e) for e in self._entries]})"


class LeaderEpochFile(LeaderEpochCache):
    """The epoch table, durable in ``<directory>/leader-epoch-checkpoint`` (format above).
    Every change is on disk when the method returns."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / EPOCH_FILE
        super().__init__(read_epoch_file(self.path))

    def _changed(self) -> None:
        write_epoch_file(self.path, self._entries)


def encode_epochs(entries: list[EpochEntry]) -> bytes:
    body = _HEADER.pack(_MAGIC, _VERSION, 0, len(entries)) + b"".join(_ENTRY.pack(*e) for e in entries)
    return body + _CRC.pack(zlib.crc32(body))


def decode_epochs(data: bytes) -> list[EpochEntry]:
    """The entries of an epoch file's bytes; ``ValueError`` naming what is wrong."""
    if len(data) < _HEADER.size + _CRC.size:
        raise ValueError(f"{len(data)} bytes is shorter than an empty file")
    magic, version, _, count = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise ValueError(f"magic {magic!r}, expected {_MAGIC!r}")
    if version != _VERSION:
        raise ValueError(f"version {version}, this code reads {_VERSION}")
    if count > EPOCH_ENTRIES_MAX or len(data) != _HEADER.size + count * _ENTRY.size + _CRC.size:
        raise ValueError(f"{count} entries do not fit {len(data)} bytes")
    crc = _CRC.unpack_from(data, len(data) - _CRC.size)[0]
    if crc != zlib.crc32(data[:-_CRC.size]):
        raise ValueError("CRC mismatch")
    entries = [EpochEntry(*_ENTRY.unpack_from(data, _HEADER.size + i * _ENTRY.size)) for i in range(count)]
    for a, b in zip(entries, entries[1:]):
        if not (a.epoch < b.epoch and a.start_offset < b.start_offset):
            raise ValueError(f"entries out of order: {tuple(a)} then {tuple(b)}")
    if entries and (entries[0].epoch < 0 or entries[0].start_offset < 0):
        raise ValueError(f"negative entry {tuple(entries[0])}")
    return entries


def write_epoch_file(path: Path, entries: list[EpochEntry]) -> None:
    write_durably(path, encode_epochs(entries))


def read_epoch_file(path: Path) -> list[EpochEntry]:
    """The entries on disk; none if the file is absent or damaged (logged: the caller falls back to
    truncating to the high watermark, which is safe)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    try:
        return decode_epochs(data)
    except ValueError as exc:
        log.warning("%s: ignoring a damaged leader-epoch file: %s", path, exc)
        return []
