"""Opening a partition directory: finish interrupted swaps, load segments, recover after a crash.

Kafka's ``LogSegment.recover`` lesson: recovery is *scan, validate, truncate, report*.

- After a clean shutdown (``.clean-shutdown`` present) every segment is trusted; its indexes get
  the cheap check of ``Segment.load`` and are rebuilt from batch headers on any doubt.
- After a crash, every segment from the one holding the checkpoint's *recovery point* onwards
  (normally only the active one; all of them if there is no checkpoint) is read whole: length,
  CRC and offsets of each batch.  The first bad batch and everything after it go — including
  any later segments, since a log never has holes — and the bytes dropped are logged and
  reported.  What is left is then fsynced and the recovery point moved to its end.
- A trusted segment whose structure turns out broken (a batch running past the end of the file)
  is recovered the same way if it is the last one.  An earlier one is damage, not a torn write
  (it was complete and synced when the next one began): it is kept byte for byte and logged at
  ERROR, and reads step over the damaged batch; truncating it would drop every later segment.

The result is a list of segments that satisfies ``segment.py``'s invariants, for
``PartitionLog.open``.
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

from .files import (CLEAN_SHUTDOWN, LOG, datasync, finish_interrupted_swaps, fsync_dir, parse_segment_file,
                    read_checkpoint, write_checkpoint)
from .handles import FilePool, Guard
from .segment import CorruptSegment, Segment

log = logging.getLogger("fabric.log")


@dataclass(frozen=True)
class RecoveryReport:
    segments: int
    truncated_bytes: int
    rebuilt_indexes: int  # segments whose indexes were rebuilt (every re-checked segment counts)
    clean: bool  # the previous shutdown was clean (or the log is new): nothing was re-checked


@dataclass
class Loaded:
    segments: list[Segment]
    start_offset: int
    recovery_point: int
    report: RecoveryReport


def load_directory(directory: Path, interval: int, now_ms: int, files: FilePool | None = None,
                   guard: Guard | None = None) -> Loaded:
    """Load (and if needed recover) the segments of ``directory``.  Raises ``OSError``.
    ``files``/``guard``: the pool lending the segments' descriptors and the lock the caller
    holds meanwhile (see ``handles.py``); loading thousands of segments needs no more
    descriptors than the pool has."""
    for action in finish_interrupted_swaps(directory):
        log.warning("%s: %s", directory, action)
    marker = directory / CLEAN_SHUTDOWN
    was_clean = marker.exists()
    bases = sorted(p.base_offset for p in map(parse_segment_file, os.listdir(directory))
                   if p is not None and p.suffix == LOG and p.state == "")
    checkpoint = read_checkpoint(directory)
    start, recovery_point = checkpoint if checkpoint else (0, 0)
    clean = was_clean or not bases
    recover_from = len(bases) if clean else max(0, bisect_right(bases, recovery_point) - 1)
    segments: list[Segment] = []
    truncated = rebuilt = 0
    try:
        for i, base in enumerate(bases):
            prev_next = segments[-1].next_offset if segments else 0
            if base < prev_next:
                _drop(directory, bases[i:], f"segment {base} overlaps the previous one (ends at {prev_next})")
                break
            seg = Segment.open(directory, base, files, guard)
            segments.append(seg)
            cut = 0
            if i >= recover_from:
                cut = seg.recover(interval, prev_next)
                rebuilt += 1
            else:
                try:
                    rebuilt += seg.load(interval)
                except CorruptSegment as exc:
                    if i + 1 < len(bases):  # a closed segment below the recovery point: damage, not a torn write
                        log.error("%s: damaged batch in %s; the segment is kept as it is (reads step over the "
                                  "damage; `fabric log verify %s` lists it)", directory, exc, directory)
                        seg.keep_damaged(bases[i + 1])
                    else:
                        log.warning("%s: %s; re-checking the whole segment", directory, exc)
                        cut = seg.recover(interval, prev_next)
                        rebuilt += 1
            if not cut and i + 1 < len(bases) and seg.next_offset > bases[i + 1]:
                # No CRC covers a batch's base_offset: a damaged one can make a segment seem to run
                # into the next, which would then be dropped as overlapping.  The next one is right.
                log.error("%s: %s ends at offset %d, past the next segment's base %d: a damaged base offset; "
                          "the segment is kept as it is (`fabric log verify %s` lists it)", directory, seg.path.name,
                          seg.next_offset, bases[i + 1], directory)
                seg.keep_damaged(bases[i + 1])
            truncated += cut
            if cut and i + 1 < len(bases):
                _drop(directory, bases[i + 1:], f"segment {base} was truncated at byte {seg.size}")
                break
        if not segments:
            segments.append(Segment.create(directory, start, files=files, guard=guard))
            fsync_dir(directory)
        active = segments[-1]
        active.make_writable()
        # The age clock of the active segment (segment_ms) runs from its first batch, at the latest now.
        first_ts = active.first_batch_max_timestamp()
        active.first_append_ms = None if first_ts is None else max(0, min(now_ms, first_ts))
        end = active.next_offset
        start = min(max(start, segments[0].base_offset), end)
        if not clean:
            # What recovery kept is now known good: make it durable and move the recovery point.
            for seg in segments[recover_from:]:
                datasync(seg.fd)
            fsync_dir(directory)
            recovery_point = end
            write_checkpoint(directory, start, recovery_point)
            log.warning("%s: recovered after an unclean shutdown: %d segments re-checked, %d bytes truncated, "
                        "log is [%d, %d)", directory, len(segments) - recover_from, truncated, start, end)
        if was_clean:
            os.unlink(marker)
            fsync_dir(directory)
    except BaseException:
        for seg in segments:
            seg.close()
        raise
    return Loaded(segments, start, recovery_point if checkpoint or not clean else 0,
                  RecoveryReport(len(segments), truncated, rebuilt, clean))


def _drop(directory: Path, bases: list[int], why: str) -> None:
    log.warning("%s: %s; deleting %d later segments", directory, why, len(bases))
    for base in bases:
        Segment(directory, base, -1, 0).delete_files()
