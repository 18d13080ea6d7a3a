"""File names and the small durable files of a partition directory.

Why one module: every place that makes or parses a file name goes through ``segment_file`` /
``parse_segment_file`` (Kafka's ``LogFileUtils`` lesson), so a rename convention cannot drift
between the writer, the loader and the compactor.

A partition directory holds::

    00000000000000000000.log         record batches back to back, exactly as on the wire (no header)
    00000000000000000000.index       sparse offset index  (see index.py; magic + version header)
    00000000000000000000.timeindex   sparse time index    (see index.py; magic + version header)
    <segment file>.cleaned           compaction output being written; deleted on open
    <segment file>.swap              compaction output complete and fsynced, being swapped in;
                                     finished on open (see compaction.py for the protocol)
    <segment file>.tmp               an index being rebuilt; deleted on open
    checkpoint                       log start offset + recovery point (format below)
    .clean-shutdown                  written last by close(), removed by open()

``checkpoint`` (28 bytes, big-endian): magic ``FBCP``, version u16 = 1, reserved u16 = 0,
log_start_offset i64, recovery_point i64, CRC-32 of the preceding 24 bytes u32.  The recovery point
is an offset below which every segment (log and indexes) is known to be fsynced: after a crash only
the segments from the one containing it onwards need a full CRC scan.  It is always written as a
new file renamed over the old one, so it is either the old or the new value, never torn.
"""

from __future__ import annotations

import errno
import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

LOG = ".log"
INDEX = ".index"
TIMEINDEX = ".timeindex"
SEGMENT_SUFFIXES = (LOG, INDEX, TIMEINDEX)
CLEANED = ".cleaned"
SWAP = ".swap"
TMP = ".tmp"
STATES = ("", CLEANED, SWAP, TMP)
CHECKPOINT = "checkpoint"
CLEAN_SHUTDOWN = ".clean-shutdown"
OFFSET_DIGITS = 20

_CHECKPOINT = struct.Struct(">4sHHqq")
_CHECKPOINT_MAGIC = b"FBCP"
_CHECKPOINT_VERSION = 1


class SegmentFile(NamedTuple):
    base_offset: int
    suffix: str  # LOG | INDEX | TIMEINDEX
    state: str  # "" | CLEANED | SWAP | TMP


def segment_file(directory: Path, base_offset: int, suffix: str, state: str = "") -> Path:
    """``<directory>/<base_offset:020d><suffix><state>``."""
    if suffix not in SEGMENT_SUFFIXES or state not in STATES:
        raise ValueError(f"bad segment file kind {suffix!r}{state!r}")
    if not 0 <= base_offset < 10**OFFSET_DIGITS:
        raise ValueError(f"base offset {base_offset} out of range")
    return directory / f"{base_offset:0{OFFSET_DIGITS}d}{suffix}{state}"


def parse_segment_file(name: str) -> SegmentFile | None:
    """The inverse of ``segment_file`` for a bare file name; ``None`` for anything else."""
    digits = name[:OFFSET_DIGITS]
    if len(digits) != OFFSET_DIGITS or not digits.isdigit() or not digits.isascii():
        return None
    rest = name[OFFSET_DIGITS:]
    for suffix in SEGMENT_SUFFIXES:
        if rest.startswith(suffix) and rest[len(suffix):] in STATES:
            return SegmentFile(int(digits), suffix, rest[len(suffix):])
    return None


def datasync(fd: int) -> None:
    """fdatasync where it exists (Linux): enough for data and the file size."""
    sync = getattr(os, "fdatasync", os.fsync)
    sync(fd)


def fsync_dir(directory: Path) -> None:
    """Make creations, renames and unlinks in ``directory`` durable."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file, fsync it, rename it over ``path``, fsync the directory."""
    tmp = path.with_name(path.name + TMP)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_checkpoint(directory: Path, start_offset: int, recovery_point: int) -> None:
    body = _CHECKPOINT.pack(_CHECKPOINT_MAGIC, _CHECKPOINT_VERSION, 0, start_offset, recovery_point)
    write_durably(directory / CHECKPOINT, body + struct.pack(">I", zlib.crc32(body)))


def read_checkpoint(directory: Path) -> tuple[int, int] | None:
    """(log_start_offset, recovery_point), or ``None`` if absent or unreadable (the caller then
    trusts nothing: full recovery from the first segment)."""
    try:
        data = (directory / CHECKPOINT).read_bytes()
    except FileNotFoundError:
        return None
    if len(data) != _CHECKPOINT.size + 4 or struct.unpack_from(">I", data, _CHECKPOINT.size)[0] != \
            zlib.crc32(data[:_CHECKPOINT.size]):
        return None
    magic, version, _, start, recovery_point = _CHECKPOINT.unpack_from(data)
    if magic != _CHECKPOINT_MAGIC or version != _CHECKPOINT_VERSION or start < 0 or recovery_point < 0:
        return None
    return start, recovery_point


def finish_interrupted_swaps(directory: Path) -> list[str]:
    """Run before segments are loaded: finish or undo multi-file operations a crash interrupted.

    - ``*.tmp`` (index rebuilds, checkpoint writes) and ``*.cleaned`` (compaction output still
      being written) are incomplete: deleted.
    - ``X.log.swap`` means the compaction of segment X reached its commit point (its files were
      complete and fsynced, the index ``.swap`` files were renamed first and the log last): the
      swap is finished by renaming the index ``.swap`` files, then ``X.log.swap``, over the originals.
    - index ``.swap`` files without their ``X.log.swap`` never reached the commit point: deleted.

    Returns a description of each action, for the log.
    """
    actions: list[str] = []
    names = sorted(os.listdir(directory))
    committed = set()
    for name in names:
        parsed = parse_segment_file(name)
        if parsed and parsed.suffix == LOG and parsed.state == SWAP:
            committed.add(parsed.base_offset)
    for name in names:
        parsed = parse_segment_file(name)
        if name.endswith(TMP) or (parsed and parsed.state == CLEANED):
            os.unlink(directory / name)
            actions.append(f"deleted incomplete {name}")
        elif parsed and parsed.state == SWAP and parsed.suffix != LOG and parsed.base_offset not in committed:
            os.unlink(directory / name)
            actions.append(f"deleted uncommitted {name}")
    for base in sorted(committed):
        for suffix in (INDEX, TIMEINDEX, LOG):
            src = segment_file(directory, base, suffix, SWAP)
            if src.exists():
                os.replace(src, segment_file(directory, base, suffix))
        actions.append(f"finished the swap of compacted segment {base}")
    # Indexes whose log is gone (a deletion interrupted after its commit point, the unlink of the .log).
    logs = {p.base_offset for p in map(parse_segment_file, os.listdir(directory))
            if p is not None and p.suffix == LOG and p.state == ""}
    for name in sorted(os.listdir(directory)):
        parsed = parse_segment_file(name)
        if parsed and parsed.state == "" and parsed.suffix != LOG and parsed.base_offset not in logs:
            os.unlink(directory / name)
            actions.append(f"deleted {name}: its segment is gone")
    if actions:
        fsync_dir(directory)
    return actions
