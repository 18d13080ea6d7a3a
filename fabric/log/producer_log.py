"""``ProducerLog``: any ``LogStore`` plus its idempotent producers' state, kept in step with it.

Why a wrapper (as ``EpochLog`` is for the leader-epoch table): the state must follow every change
of the log, whoever makes it: a leader's append, a follower's replicated append, a truncation, a
restart.  Holding the hooks here means a follower's state is current when it becomes leader, and
the single node and the cluster share one implementation.  The table and its rules are
``producer_state.py``; this class adds where it comes from and where it is kept.

The hooks:

- ``append``/``append_replicated``: a batch with ``producer_id >= 0`` is recorded in the table;
  when the append rolled a segment, a snapshot is written (so compaction, which only rewrites
  closed segments, and retention never remove a batch the newest snapshot does not cover);
- ``truncate_to``: the table is rebuilt (the snapshot if it covers no more than the new end, else
  from nothing) and the log scanned from there; ``truncate_fully_and_start_at`` empties it;
- retention and ``advance_start_offset`` leave it alone: the state outlives the batches it came
  from (that is what the snapshot is for);
- on first use (the first idempotent batch appended, or the leader's first question; a
  truncation): the snapshot ``producer-state.snapshot`` is loaded if it is valid and covers no more
  than the recovered log (a crash may lose an unflushed tail the snapshot saw), then every batch
  from its end offset (or the log start) to the log end is scanned.  A corrupt or newer snapshot
  is logged and ignored: the scan then starts at the log start;
- ``producer_housekeeping(now_ms, expiration_ms)`` (the broker's housekeeping): expire idle
  producers and write the snapshot if the table changed;
- ``close``: the snapshot is written after the log closed cleanly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..protocol.errors import FabricError
from ..records.batch import iter_headers
from .config import LogConfig
from .errors import CorruptSegmentError, LogError
from .files import write_durably
from .partition_log import AppendResult, PartitionLog
from .producer_state import BatchMeta, ProducerStateTable, SnapshotError, decode_snapshot
from .store import LogStore

__all__ = ["ProducerLog", "SNAPSHOT_FILE"]

SNAPSHOT_FILE = "producer-state.snapshot"
SCAN_READ_BYTES = 1 << 20
_PID = slice(43, 51)  # (batch.py: producer_id at 43, epoch at 51, base_sequence at 53, count at 57)

log = logging.getLogger("fabric.log.producers")


def _idempotent(batch: bytearray) -> bool:
    """producer_id >= 0 (its sign bit clear); a batch too short to say is left to the log's checks."""
    return len(batch) > 51 and batch[43] & 0x80 == 0


class ProducerLog:
    def __init__(self, log_store: LogStore, directory: Path | None = None) -> None:
        """``directory``: where the snapshot lives (None: no snapshot, the memory backend)."""
        object.__setattr__(self, "log", log_store)
        object.__setattr__(self, "snapshot_dir", directory)
        object.__setattr__(self, "producers", ProducerStateTable())
        object.__setattr__(self, "_snapshot_changes", -1)
        object.__setattr__(self, "_segments_seen", log_store.segment_count)
        object.__setattr__(self, "_loaded", False)

    @classmethod
    def open(cls, directory: Path, config: LogConfig, now_ms: int, files: Any = None) -> "ProducerLog":
        return cls(PartitionLog.open(directory, config, now_ms, files), Path(directory))

    def __getattr__(self, name: str) -> Any:  # everything not intercepted below
        return getattr(self.log, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("producers", "_snapshot_changes", "_segments_seen", "_loaded"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.log, name, value)

    # ------------------------------------------------------------------ the leader's question
    def check_producer(self, producer_id: int, epoch: int, base_sequence: int, record_count: int
                       ) -> BatchMeta | None:
        """``ProducerStateTable.check`` (rules 1-4): None to append, the original batch for a
        duplicate; raises ``OutOfOrderSequenceError`` / ``ProducerFencedError`` /
        ``UnknownProducerError``."""
        if not self._loaded:
            self._load()
        return self.producers.check(producer_id, epoch, base_sequence, record_count)

    # ------------------------------------------------------------------ the hooks
    def append(self, batch: bytearray, now_ms: int, leader_epoch: int = 0, *, defer_flush: bool = False
               ) -> AppendResult:
        if not self._loaded and _idempotent(batch):
            self._load()  # (before the append: the scan must not see this batch too)
        res = self.log.append(batch, now_ms, leader_epoch, defer_flush=defer_flush)
        self._record(batch, res)
        return res

    def append_replicated(self, batch: bytearray, now_ms: int) -> AppendResult:
        if not self._loaded and _idempotent(batch):
            self._load()
        res = self.log.append_replicated(batch, now_ms)
        self._record(batch, res)
        return res

    def _record(self, batch: bytearray, res: AppendResult) -> None:
        if not self._loaded:
            return  # (no idempotent batch yet: a later load scans this one)
        if _idempotent(batch):
            pid = int.from_bytes(batch[_PID], "big")
            self.producers.update(pid, int.from_bytes(batch[51:53], "big", signed=True),
                                  int.from_bytes(batch[53:57], "big", signed=True),
                                  res.last_offset - res.base_offset + 1, res.base_offset, res.max_timestamp)
        segments = self.log.segment_count
        if segments != self._segments_seen:
            self._segments_seen = segments
            if segments > 1:  # a roll: the closed segments are now covered by a snapshot
                self.write_snapshot()

    def truncate_to(self, offset: int) -> None:
        self.log.truncate_to(offset)
        self._segments_seen = self.log.segment_count
        self._load()  # (also when not loaded yet: a snapshot beyond the new end must go now)

    def truncate_fully_and_start_at(self, offset: int) -> None:
        self.log.truncate_fully_and_start_at(offset)
        self._segments_seen = self.log.segment_count
        self.producers.clear(offset)
        self._loaded = True
        self._remove_snapshot()

    def producer_housekeeping(self, now_ms: int, expiration_ms: int) -> None:
        """Expire producers idle longer than ``expiration_ms``; snapshot the table if it changed."""
        if not self._loaded:
            return
        gone = self.producers.expire(now_ms, expiration_ms)
        if gone:
            log.info("%s: expired %d idle producer ids", self.snapshot_dir, len(gone))
        if self.producers.changes != self._snapshot_changes:
            self.write_snapshot()

    def close(self) -> None:
        self.log.close()
        try:
            if self._loaded and self.producers.changes != self._snapshot_changes and self.log.directory.is_dir():
                self.write_snapshot()
        except (OSError, AttributeError) as exc:
            log.warning("%s: producer-state snapshot not written at close: %s", self.snapshot_dir, exc)

    # ------------------------------------------------------------------ snapshot and scan
    def write_snapshot(self) -> None:
        """Write the table (covering the log up to its end) durably; a failure is logged only:
        the log stays the source, a restart scans more of it."""
        if self.snapshot_dir is None or not self._loaded:
            return
        self.producers.end_offset = self.log.end_offset
        try:
            write_durably(self.snapshot_dir / SNAPSHOT_FILE, self.producers.encode())
            self._snapshot_changes = self.producers.changes
        except OSError as exc:
            log.warning("%s: producer-state snapshot not written: %s", self.snapshot_dir, exc)

    def _remove_snapshot(self) -> None:
        if self.snapshot_dir is not None:
            try:
                (self.snapshot_dir / SNAPSHOT_FILE).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("%s: stale producer-state snapshot not removed: %s", self.snapshot_dir, exc)

    def _read_snapshot(self) -> ProducerStateTable | None:
        if self.snapshot_dir is None:
            return None
        path = self.snapshot_dir / SNAPSHOT_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("%s: unreadable, rebuilding producer state from the log: %s", path, exc)
            return None
        try:
            table = decode_snapshot(data)
        except SnapshotError as exc:
            log.warning("%s: %s; rebuilding producer state from the log", path, exc)
            return None
        if table.end_offset > self.log.end_offset:  # it saw a tail the log lost (or truncated)
            log.info("%s covers up to %d, beyond the log end %d: ignored", path, table.end_offset,
                     self.log.end_offset)
            self._remove_snapshot()
            return None
        return table

    def _load(self) -> None:
        """Snapshot plus scan.  Lazily, at the first idempotent batch or question (a broker with
        10,000 partitions and no idempotent producer reads nothing more at start)."""
        self._loaded = True
        table = self._read_snapshot() or ProducerStateTable()
        covered = table.end_offset
        self.producers = table
        scanned = self._scan(max(covered, self.log.start_offset))
        # Dirty only when the scan found producers the snapshot lacks: a log no idempotent
        # producer wrote gets a snapshot at its next roll, not at every close (10,000 partitions).
        self._snapshot_changes = 0 if not scanned else -1
        if scanned or table.producers:
            log.info("%s: producer state of %d producers (snapshot to %d, %d batches scanned)",
                     self.snapshot_dir, len(table), covered, scanned)

    def _scan(self, start: int) -> int:
        """Record every idempotent batch from ``start`` to the log end; how many batches."""
        table, store = self.producers, self.log
        pos, end, count = start, store.end_offset, 0
        while pos < end:
            try:
                data = store.read(pos, SCAN_READ_BYTES)
            except CorruptSegmentError as exc:
                pos = max(exc.skip_offset, pos + 1)
                continue
            except (LogError, FabricError) as exc:
                log.warning("%s: producer-state scan stopped at %d: %s", self.snapshot_dir, pos, exc)
                break
            if not data:
                break
            moved = False
            try:
                for _, h in iter_headers(data):
                    if h.next_offset <= pos:
                        continue
                    if h.producer_id >= 0:
                        table.update(h.producer_id, h.producer_epoch, h.base_sequence, h.record_count,
                                     h.base_offset, h.max_timestamp)
                        count += 1
                    pos = h.next_offset
                    moved = True
            except FabricError as exc:  # damaged bytes after the first batch of a read
                log.warning("%s: producer-state scan skips damage after offset %d: %s", self.snapshot_dir, pos, exc)
                pos += 1
                continue
            if not moved:
                break
        table.end_offset = max(table.end_offset, end)
        return count

    def __repr__(self) -> str:
        return f"ProducerLog({self.log!r}, {len(self.producers)} producers)"
