"""``fabric log verify``: check every stored batch and index of a partition, offline, and say
what is damaged (Kafka's ``kafka-dump-log --verify``).

Why a separate pass: the broker trusts segments below its recovery point (re-reading every byte
on each start would make starts as slow as the log is big), and a read checks only the header
it starts at.  Damage there (a flipped byte in a closed segment) is found when a consumer
reaches it; this tool finds it before, or tells an operator after a ``CORRUPT_BATCH`` what else
is affected.  Run it on a stopped broker's data (on a live one the newest segment may end in a
batch still being written).

What is checked, per segment, in file order:

- every batch: a whole header, magic, ``batch_length`` within the file, record count and
  ``last_offset_delta`` agreeing, the CRC, the records section (its four columns hold
  ``record_count`` records: a batch whose CRC is right but whose count lies is damage too), and
  offsets moving forward (gaps are allowed: compaction leaves them);
- after a damaged batch, the scan resynchronises on the next position where a whole valid batch
  starts (header, CRC), and reports the unreadable byte range and offsets in between;
- the offset index: its header, entries strictly increasing, each pointing at the start of a
  batch with that offset; the time index: its header, order, each entry naming a batch whose
  timestamps do not contradict it;
- across segments: each segment's offsets end before the next one's base offset.

Damaged indexes are disposable: delete the ``.index`` / ``.timeindex`` files and the broker
rebuilds them from the log when it opens the partition.
"""

from __future__ import annotations

import mmap
import os
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cbor2

from ..records.batch import ATTR_COMPRESSION_MASK, COMPRESSION_ZLIB, CRC_START, HEADER_SIZE, MAGIC, BatchHeader, parse_header
from .files import INDEX, LOG, TIMEINDEX, parse_segment_file, segment_file
from .index import InvalidIndex, OffsetIndex, TimeIndex
from .segment import MIN_BATCH_BYTES, header_problem

_MAGIC_AT = 16  # byte of the magic in a batch header


@dataclass(frozen=True)
class Problem:
    """One damaged spot: ``file`` at byte ``position`` (-1: the file as a whole), concerning
    ``offset`` (None if unknown); for a damaged batch, where valid data starts again
    (``resume_position``, ``resume_offset``; None if nothing valid follows in the file)."""

    file: str
    position: int
    offset: int | None
    message: str
    resume_position: int | None = None
    resume_offset: int | None = None


@dataclass
class PartitionReport:
    directory: str
    segments: int = 0
    batches: int = 0
    records: int = 0
    first_offset: int | None = None
    next_offset: int | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def damaged(self) -> bool:
        return bool(self.problems)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["damaged"] = self.damaged
        return d


def partition_dirs(path: Path) -> list[Path]:
    """``path`` itself if it holds segments, else its sub-directories that do (a data dir)."""
    def has_segments(d: Path) -> bool:
        return any((p := parse_segment_file(n)) is not None and p.suffix == LOG and p.state == ""
                   for n in os.listdir(d))
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory")
    if has_segments(path):
        return [path]
    return sorted(d for d in path.iterdir() if d.is_dir() and has_segments(d))


def verify_partition(directory: Path) -> PartitionReport:
    report = PartitionReport(str(directory))
    bases = sorted(p.base_offset for p in map(parse_segment_file, os.listdir(directory))
                   if p is not None and p.suffix == LOG and p.state == "")
    prev_next = 0
    for base in bases:
        if base < prev_next:
            report.problems.append(Problem(str(segment_file(directory, base, LOG)), -1, base,
                                           f"segment starts at offset {base}, below the end of the previous "
                                           f"one ({prev_next}): a damaged base_offset in the previous segment's "
                                           f"last batch, or a stray segment file"))
        damaged_before = len(report.problems)
        batches = _verify_log(directory, base, max(prev_next, base), report)
        damaged = {p.position for p in report.problems[damaged_before:]}
        _verify_indexes(directory, base, batches, damaged, report)
        report.segments += 1
        if batches:
            if report.first_offset is None:
                report.first_offset = batches[0][1].base_offset
            prev_next = max(prev_next, batches[-1][1].next_offset)
            report.next_offset = prev_next
    return report


def _verify_log(directory: Path, base: int, expected: int, report: PartitionReport) -> list[tuple[int, BatchHeader]]:
    """The valid batches of one ``.log`` as (position, header); problems go to ``report``."""
    path = segment_file(directory, base, LOG)
    name = str(path)
    batches: list[tuple[int, BatchHeader]] = []
    size = path.stat().st_size
    if size == 0:
        return batches
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        try:
            pos = 0
            while pos < size:
                problem, h = _batch_problem(view, pos, size, expected)
                if problem:
                    nxt = _resync(mm, view, pos + 1, size, expected)
                    if nxt is None:
                        report.problems.append(Problem(name, pos, expected, f"{problem}; no valid batch follows: bytes "
                                                                            f"{pos}-{size} unreadable"))
                        break
                    q, hq = nxt
                    report.problems.append(Problem(name, pos, expected,
                                                   f"{problem}; bytes {pos}-{q} unreadable, offsets {expected}-"
                                                   f"{hq.base_offset - 1} lost; the next valid batch is at byte {q} "
                                                   f"(offset {hq.base_offset})", q, hq.base_offset))
                    pos, h = q, hq
                assert h is not None
                batches.append((pos, h))
                report.batches += 1
                report.records += h.record_count
                expected = h.next_offset
                pos += h.size
        finally:
            view.release()
    return batches


def _batch_problem(view: memoryview, pos: int, size: int, expected: int) -> tuple[str, BatchHeader | None]:
    if size - pos < HEADER_SIZE:
        return f"{size - pos} bytes at the end are no whole batch (a torn write, or damage)", None
    h = parse_header(view, pos)
    problem = header_problem(h, pos, size)
    if problem:
        return f"batch header: {problem}", h
    batch = view[pos: pos + h.size]
    crc = zlib.crc32(batch[CRC_START:])
    if crc != h.crc:
        return f"CRC mismatch: header says {h.crc:#010x}, data gives {crc:#010x}", h
    if h.base_offset < expected:
        return (f"batch base offset {h.base_offset} is below the expected {expected} (no CRC covers base_offset: "
                f"this batch's or the one before's is damaged)"), h
    return _records_problem(batch, h), h


def _records_problem(batch: memoryview, h: BatchHeader) -> str:
    """The records section must hold ``record_count`` records in each column."""
    body: Any = batch[HEADER_SIZE:]
    try:
        if h.attributes & ATTR_COMPRESSION_MASK == COMPRESSION_ZLIB:
            body = zlib.decompress(body)
        cols = cbor2.loads(body)
        lengths = [len(c) for c in cols] if isinstance(cols, list) and len(cols) == 4 else None
    except Exception as exc:
        return f"records section unreadable: {type(exc).__name__}: {exc}"
    if lengths is None:
        return "records section is not an array of 4 columns"
    if any(n != h.record_count for n in lengths):
        return (f"batch at offset {h.base_offset} claims {h.record_count} records but its columns hold "
                f"{lengths} (its offsets {h.base_offset}-{h.last_offset} are not real records)")
    return ""


def _resync(mm: mmap.mmap, view: memoryview, start: int, size: int, expected: int
            ) -> tuple[int, BatchHeader] | None:
    """The next position at or after ``start`` where a whole batch with a valid header and CRC
    starts (jumping between bytes that could be a batch's magic)."""
    magic = bytes([MAGIC])
    i = mm.find(magic, start + _MAGIC_AT)
    while i != -1:
        pos = i - _MAGIC_AT
        if size - pos >= MIN_BATCH_BYTES:
            h = parse_header(view, pos)
            if not header_problem(h, pos, size) and h.base_offset >= expected \
                    and zlib.crc32(view[pos + CRC_START: pos + h.size]) == h.crc:
                return pos, h
        i = mm.find(magic, i + 1)
    return None


def _verify_indexes(directory: Path, base: int, batches: list[tuple[int, BatchHeader]], damaged: set[int],
                    report: PartitionReport) -> None:
    """``damaged``: positions of batches reported already (an entry pointing there is no news)."""
    at = {pos: h for pos, h in batches}
    max_ts_upto: dict[int, int] = {}  # batch base offset -> largest timestamp up to and including it
    running = -1
    for _, h in batches:
        running = max(running, h.max_timestamp)
        max_ts_upto[h.base_offset] = running
    path = segment_file(directory, base, INDEX)
    try:
        index = OffsetIndex.open(path, base)
        index.ensure_loaded()
        for rel, pos in zip(index.keys, index.values):
            h = at.get(pos)
            if pos in damaged:
                continue
            if h is None or h.base_offset != base + rel:
                found = "no batch starts there" if h is None else f"the batch there has offset {h.base_offset}"
                report.problems.append(Problem(str(path), pos, base + rel,
                                               f"offset index entry (offset {base + rel} at byte {pos}): {found}"))
                break  # (the rest would repeat it)
    except InvalidIndex as exc:
        report.problems.append(Problem(str(path), -1, None, f"offset index unusable: {exc}"))
    path = segment_file(directory, base, TIMEINDEX)
    try:
        tindex = TimeIndex.open(path, base)
        tindex.ensure_loaded()
        for ts, rel in zip(tindex.keys, tindex.values):
            upto = max_ts_upto.get(base + rel)
            if upto is None or ts > upto:
                found = "no batch has that offset" if upto is None else f"the largest timestamp up to it is {upto}"
                report.problems.append(Problem(str(path), -1, base + rel,
                                               f"time index entry (timestamp {ts}, offset {base + rel}): {found}"))
                break
    except InvalidIndex as exc:
        report.problems.append(Problem(str(path), -1, None, f"time index unusable: {exc}"))
