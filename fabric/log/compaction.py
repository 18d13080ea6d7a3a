"""Log compaction: keep (at least) the latest record per key in the non-active segments.

For topics whose ``cleanup_policy`` contains ``compact`` (internal offsets/config topics, tables).
One ``compact(log, now_ms)`` call is one pass; the broker decides when to run it, normally on a
background thread.

The pass
--------
1. **Snapshot** (under the log's lock, microseconds): the *cleanable range* is the longest prefix
   of non-active segments whose newest record is at least ``min_compaction_lag_ms`` old — so no
   record younger than the lag is ever removed, and the active segment is never touched.  Their
   descriptors are duplicated (a concurrent retention or truncation cannot close them under us).
2. **Map** (no lock): ``key -> offset of its latest record``, built from the newest segment of
   the range backwards.  At most ``max_map_keys`` keys: when the map is full it covers only the
   newest segments, and the older ones are cleaned conservatively (a record goes only if the map
   knows a newer one for its key), so memory stays bounded and every pass still makes progress.
3. **Clean** (no lock): each segment is streamed batch by batch.  A record survives if its key is
   null, or no newer record with its key is known — except a tombstone (null value) that is its
   key's latest record and at least ``delete_retention_ms`` old.  Offsets are kept: a batch whose
   records all survive is copied byte for byte; otherwise, since a batch's offsets are
   ``base_offset + index``, each run of consecutive surviving records becomes one batch whose base
   offset is the run's first offset (same compression, leader epoch, producer id/epoch,
   timestamp type; the base sequence moves with the run).  ``<base>.*.cleaned`` files are only
   created at the first removal; they are fsynced.
4. **Swap** (under the lock, all cleaned segments at once): skip any segment that is gone, changed
   or active, or every one if the log was truncated meanwhile.  Crash-safe renames:
   ``.cleaned -> .swap`` (indexes first, the log last: **the commit point**), directory fsync,
   ``.swap -> final names`` (indexes first, the log last), directory fsync.  ``open`` finishes a
   swap that reached its commit point and deletes one that did not (``files.finish_interrupted_swaps``),
   so a crash leaves either the old or the new segment, never a hole or a duplicate.  A segment
   left with no records is deleted instead (its ``.log`` first; orphaned indexes are removed on
   open), except the first one, which keeps the log start offset where it was.

Readers are unaffected: offsets never change, a read at a removed offset returns the next batch.
Not done (yet): merging small cleaned segments into one (Kafka's grouping), and a dirty-ratio
trigger; the result counters let the caller decide how often to run.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from .errors import LogError, MalformedBatchError, StorageFailure
from ..records.batch import (ATTR_COMPRESSION_MASK, ATTR_LOG_APPEND_TIME, BatchHeader, Record, decode_records,
                             encode_batch, parse_header, set_log_append_time, stamp)
from .config import LogConfig
from .files import CLEANED, INDEX, LOG, SWAP, TIMEINDEX, datasync, fsync_dir, segment_file
from .index import U32_MAX
from .segment import CorruptSegment, Segment, iter_batch_bytes

if TYPE_CHECKING:
    from .partition_log import PartitionLog

log = logging.getLogger("fabric.log")

MAX_MAP_KEYS = 2_000_000  # distinct keys held in memory by one pass
_SEQUENCE_WRAP = 2**31


@dataclass(frozen=True)
class CompactionResult:
    segments_examined: int  # segments in the cleanable range
    segments_cleaned: int  # rewritten (or deleted) and swapped in
    segments_aborted: int  # cleaned, but the log changed meanwhile: discarded
    records_before: int  # in the rewritten segments
    records_after: int
    tombstones_removed: int
    bytes_before: int
    bytes_after: int
    # Without new appends, a later pass could still do more from this time on (a segment leaving
    # min_compaction_lag_ms, a tombstone passing delete_retention_ms); None: not before a roll.
    retry_at_ms: int | None = None


@dataclass
class _Job:
    old: Segment
    fd: int  # duplicated descriptor of old
    size: int  # old.size at the snapshot
    cleaned: Segment | None = None  # survivors, in .cleaned files
    delete: bool = False  # nothing survived: delete the segment instead
    installed: bool = False
    records_before: int = 0
    records_after: int = 0
    tombstones_removed: int = 0


@dataclass
class _Plan:
    latest: dict[bytes, int]  # key -> offset of its latest record, in the covered segments
    horizon: int  # tombstones at or before this timestamp may go
    young_tombstone: int | None = None  # oldest kept latest-tombstone timestamp (for retry_at_ms)


def compact(log_: "PartitionLog", now_ms: int, *, max_map_keys: int = MAX_MAP_KEYS,
            before_swap: Callable[[], None] | None = None) -> CompactionResult:
    """One compaction pass over ``log_`` (see the module docstring).  Safe to run on another
    thread while the log appends, reads, flushes, applies retention or truncates.  ``before_swap``
    runs after cleaning, before the lock is taken for the swap (tests change the log there)."""
    jobs, generation, config, retry_at = _snapshot(log_, now_ms)
    try:
        plan = _Plan(_build_map(jobs, max_map_keys), now_ms - config.delete_retention_ms)
        for i, job in enumerate(jobs):
            _clean_segment(log_.directory, job, plan, config.index_interval_bytes, now_ms, keep_empty=i == 0)
        todo = [j for j in jobs if j.cleaned is not None or j.delete]
        if before_swap is not None:
            before_swap()
        swapped = _swap(log_, todo, generation) if todo else 0
    except OSError as exc:
        raise StorageFailure(f"{log_.directory}: compaction failed: {exc}") from None
    except LogError as exc:
        raise StorageFailure(f"{log_.directory}: compaction failed: {exc.message}") from None
    finally:
        for job in jobs:
            os.close(job.fd)
            if job.cleaned is not None and not job.installed:
                job.cleaned.delete_files()
    if plan.young_tombstone is not None:
        due = plan.young_tombstone + config.delete_retention_ms
        retry_at = due if retry_at is None else min(retry_at, due)
    done = [j for j in jobs if j.installed]
    result = CompactionResult(
        segments_examined=len(jobs), segments_cleaned=len(done),
        segments_aborted=sum(1 for j in jobs if (j.cleaned is not None or j.delete) and not j.installed),
        records_before=sum(j.records_before for j in done), records_after=sum(j.records_after for j in done),
        tombstones_removed=sum(j.tombstones_removed for j in done), bytes_before=sum(j.size for j in done),
        bytes_after=sum(j.cleaned.size for j in done if j.cleaned is not None), retry_at_ms=retry_at)
    if swapped:
        log.info("%s: compacted %d segments: %d -> %d records, %d -> %d bytes", log_.directory, swapped,
                 result.records_before, result.records_after, result.bytes_before, result.bytes_after)
    return result


def _snapshot(log_: "PartitionLog", now_ms: int) -> tuple[list[_Job], int, LogConfig, int | None]:
    with log_._lock:
        log_._check_open()
        config = log_.config
        newest_allowed = now_ms - config.min_compaction_lag_ms
        jobs: list[_Job] = []
        retry_at = None
        try:
            for seg in log_._segments[:-1]:
                if seg.max_timestamp > newest_allowed:
                    retry_at = seg.max_timestamp + config.min_compaction_lag_ms
                    break
                jobs.append(_Job(seg, os.dup(seg.fd), seg.size))
        except OSError as exc:
            for job in jobs:
                os.close(job.fd)
            raise StorageFailure(f"{log_.directory}: compaction snapshot failed: {exc}") from None
        return jobs, log_._generation, config, retry_at


def _batches(job: _Job, end: int | None = None) -> Iterator[tuple[int, memoryview, BatchHeader]]:
    """(position, bytes, header) of the batches of ``job``'s segment up to ``end``."""
    end = job.size if end is None else end
    pos = 0
    for pos, view in iter_batch_bytes(job.fd, 0, end):
        h = parse_header(view)
        yield pos, view, h
        pos += h.size
    if pos != end:
        raise MalformedBatchError(f"segment {job.old.base_offset}: no whole batch at byte {pos}")


def _build_map(jobs: list[_Job], max_keys: int) -> dict[bytes, int]:
    """key -> offset of its latest record, newest segment first, until ``max_keys`` keys."""
    latest: dict[bytes, int] = {}
    for job in reversed(jobs):
        if len(latest) >= max_keys:
            break
        in_segment: dict[bytes, int] = {}
        for _, view, h in _batches(job):
            for r in decode_records("", 0, view, h):
                if r.key is not None:
                    in_segment[r.key] = r.offset
        for key, offset in in_segment.items():
            latest.setdefault(key, offset)  # a newer segment's record wins
    return latest


def _clean_segment(directory: Path, job: _Job, plan: _Plan, interval: int, now_ms: int, keep_empty: bool) -> None:
    """Stream ``job.old`` into ``.cleaned`` files from its first removal on (none: no files)."""
    latest, horizon = plan.latest, plan.horizon
    cleaned: Segment | None = None
    for pos, view, h in _batches(job):
        records = decode_records("", 0, view, h)
        kept = []
        for r in records:
            if r.key is not None:
                newest = latest.get(r.key, r.offset)
                if newest > r.offset:
                    continue
                if r.value is None and newest == r.offset and r.key in latest:
                    if r.timestamp <= horizon:
                        job.tombstones_removed += 1
                        continue
                    if plan.young_tombstone is None or r.timestamp < plan.young_tombstone:
                        plan.young_tombstone = r.timestamp
            kept.append(r)
        job.records_before += len(records)
        job.records_after += len(kept)
        if cleaned is None:
            if len(kept) == len(records):
                continue
            cleaned = job.cleaned = Segment.create(directory, job.old.base_offset, CLEANED)
            for _, earlier, eh in _batches(job, pos):  # the untouched batches before the first removal
                cleaned.append(earlier, eh.base_offset, eh.next_offset, eh.max_timestamp, interval, now_ms)
        for data in ([view] if len(kept) == len(records) else _rebuild(h, kept)):
            head = parse_header(data)
            if cleaned.size + len(data) > U32_MAX:
                raise StorageFailure(f"cleaned segment {job.old.base_offset} would exceed 4 GiB")
            cleaned.append(data, head.base_offset, head.next_offset, head.max_timestamp, interval, now_ms)
    if cleaned is None:
        job.records_before = job.records_after = 0
        return
    if job.records_after == 0 and not keep_empty:
        cleaned.delete_files()
        job.cleaned, job.delete = None, True
        return
    for fd in cleaned.dup_fds(with_indexes=True):
        try:
            datasync(fd)
        finally:
            os.close(fd)


def _rebuild(h: BatchHeader, kept: list[Record]) -> list[bytearray]:
    """One batch per run of consecutive offsets, keeping the original batch's properties."""
    runs: list[list[Record]] = []
    for r in kept:
        if runs and runs[-1][-1].offset + 1 == r.offset:
            runs[-1].append(r)
        else:
            runs.append([r])
    out = []
    for run in runs:
        first = run[0].offset
        seq = -1 if h.base_sequence < 0 else (h.base_sequence + first - h.base_offset) % _SEQUENCE_WRAP
        data = bytearray(encode_batch([r.timestamp for r in run], [r.key for r in run], [r.value for r in run],
                                      [r.headers or None for r in run],
                                      compression=h.attributes & ATTR_COMPRESSION_MASK, producer_id=h.producer_id,
                                      producer_epoch=h.producer_epoch, base_sequence=seq))
        if h.attributes & ATTR_LOG_APPEND_TIME:
            set_log_append_time(data, h.max_timestamp)
        stamp(data, first, h.leader_epoch)
        out.append(data)
    return out


def _swap(log_: "PartitionLog", jobs: list[_Job], generation: int) -> int:
    """Install the cleaned segments (see the module docstring for the rename protocol)."""
    directory = log_.directory
    with log_._lock:
        if log_._closed or log_._generation != generation:
            log.info("%s: log truncated or closed during compaction; discarding its output", directory)
            return 0
        live = {id(s) for s in log_._segments[:-1]}
        first = log_._segments[0]
        # (A segment that became the first meanwhile is not deleted: it holds the log start.)
        ready = [j for j in jobs if id(j.old) in live and j.old.size == j.size and not (j.delete and j.old is first)]
        try:
            for job in ready:  # commit: indexes first, the log last
                if job.cleaned is not None:
                    job.cleaned.close()
                    for suffix in (INDEX, TIMEINDEX, LOG):
                        os.replace(segment_file(directory, job.old.base_offset, suffix, CLEANED),
                                   segment_file(directory, job.old.base_offset, suffix, SWAP))
                    job.installed = True  # from here on open() finishes the swap
            fsync_dir(directory)
            for job in ready:
                base = job.old.base_offset
                if job.delete:  # nothing survived: delete (the .log first)
                    job.old.delete_files()
                    log_._replace_segment(job.old, None)
                    job.installed = True
                    continue
                job.old.close()
                for suffix in (INDEX, TIMEINDEX, LOG):
                    os.replace(segment_file(directory, base, suffix, SWAP), segment_file(directory, base, suffix))
                fresh = Segment.open(directory, base, log_._files, log_._lock)
                fresh.load(log_.config.index_interval_bytes)
                log_._replace_segment(job.old, fresh)
            fsync_dir(directory)
        except (OSError, CorruptSegment) as exc:
            log_._failed = f"compaction swap failed ({exc}); reopen the log to finish it"
            log.error("%s: %s", directory, log_._failed)
            raise StorageFailure(f"{directory}: {log_._failed}") from None
        return len(ready)
