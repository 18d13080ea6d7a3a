"""The storage seam: what the broker needs from a partition's log, as a ``typing.Protocol``.

Why a protocol: the broker, the group service and (next) replication should depend on *this*
surface, not on ``PartitionLog``'s files, so that a memory backend can stand in for tests and
simulations (STYLE: nats-server's ``StreamStore`` with a file and a memory store).  Both backends
pass one conformance suite, ``fabric.testing.log_conformance`` (trio's ``check_one_way_stream``
idea): behaviour, not implementation, is the contract.

``LogStore`` is exactly the part of ``PartitionLog``'s public API that ``fabric/broker`` and
``fabric/groups`` call today (found by reading them), nothing more:

- appending: ``append`` (the leader stamps offsets and epoch), ``append_replicated`` (a follower
  keeps the leader's offsets);
- reading: ``read``/``read_upto`` (whole batches, at least one, none at or past ``upto_offset``),
  ``offset_for_timestamp``, ``start_offset``/``end_offset``;
- shortening: ``truncate_to`` (a follower drops its divergent tail), ``truncate_fully_and_start_at``,
  ``advance_start_offset`` (delete-records), ``apply_retention``, ``maybe_roll``;
- durability: ``flush``, ``unflushed``, ``needs_flush``, ``last_flush_ms``;
- description and life: ``config``/``reconfigure``, ``size_bytes``, ``segment_count``,
  ``segments``, ``recovery``, ``directory``, ``close``, ``delete``.

Not in it: compaction (``fabric.log.compaction.compact`` works on a ``PartitionLog``'s segment
files; a memory backend has none to rewrite) and the file backend's internals.

``LeaderEpochs`` is the replication hook (Kafka's ``LeaderEpochFileCache``, rules in
``fabric/log/epochs.py``).  ``ReplicaLogStore`` is a log that has both; ``MemoryLog`` is one.
``PartitionLog`` is a ``LogStore`` today; ``EpochLog`` (``epoch_log.py``) wraps it with a
``LeaderEpochFile`` in its directory to make a ``ReplicaLogStore``, and lists the hooks that
``PartitionLog`` needs to do the same itself.

Errors: a backend raises the log's own errors (``fabric/log/errors.py``): ``OffsetOutOfRangeError``
for an offset outside ``[start_offset, end_offset]``, ``MalformedBatchError`` / ``InvalidBatchError``
for a malformed batch, ``LogClosedError`` for a closed log, ``StorageFailure`` for an I/O failure and
``CorruptSegmentError`` for damaged stored bytes (the broker maps them to wire replies, in
``fabric/broker/log_errors.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .config import LogConfig
from .epochs import EpochEntry
from .partition_log import AppendResult, RecoveryReport

__all__ = ["LeaderEpochs", "LogStore", "ReplicaLogStore"]


@runtime_checkable
class LogStore(Protocol):
    directory: Path  # where it lives (a memory log names a pseudo-path); used in log messages
    config: LogConfig
    start_offset: int  # first readable offset
    end_offset: int  # offset the next appended record gets
    recovery: RecoveryReport  # what opening found (a memory log: always clean)
    last_flush_ms: int

    # ---------------------------------------------------------------- appending
    def append(self, batch: bytearray, now_ms: int, leader_epoch: int = 0, *, defer_flush: bool = False
               ) -> AppendResult:
        """Append one validated batch at ``end_offset``; its base offset and leader epoch (and the
        timestamps, for ``log_append_time``) are stamped in place."""
        ...

    def append_replicated(self, batch: bytearray, now_ms: int) -> AppendResult:
        """Append a batch that carries the leader's base offset (>= ``end_offset``) and epoch."""
        ...

    # ---------------------------------------------------------------- reading
    def read(self, offset: int, max_bytes: int, upto_offset: int | None = None) -> bytes:
        """Whole batches from the one holding ``offset`` within ``max_bytes`` (at least one),
        none with a base offset >= ``upto_offset``."""
        ...

    def read_upto(self, offset: int, max_bytes: int, upto_offset: int | None = None) -> tuple[bytes, bool]:
        """``read``, plus True if the bytes hold every batch readable from ``offset`` below
        ``upto_offset`` (or to the log end)."""
        ...

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after ``start_offset`` whose timestamp is
        >= ``timestamp``, or None."""
        ...

    # ---------------------------------------------------------------- shortening
    def truncate_to(self, offset: int) -> None:
        """Keep only records < ``offset``: whole batches go, from the one holding ``offset``."""
        ...

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Drop everything; the next append gets ``offset``."""
        ...

    def advance_start_offset(self, offset: int) -> None:
        """Start the log at ``max(start_offset, offset)`` (<= ``end_offset``); durable on return."""
        ...

    def apply_retention(self, now_ms: int) -> int:
        """Delete old data by the config's retention; returns how many units (segments) went."""
        ...

    def maybe_roll(self, now_ms: int) -> bool:
        """Age-based housekeeping of the active unit; True if it rolled."""
        ...

    # ---------------------------------------------------------------- durability
    @property
    def unflushed(self) -> bool: ...

    def needs_flush(self, now_ms: int) -> bool: ...

    def flush(self, now_ms: int | None = None) -> None:
        """Make everything appended so far durable (the file backend fsyncs)."""
        ...

    # ---------------------------------------------------------------- description and life
    def reconfigure(self, config: LogConfig) -> None: ...

    @property
    def size_bytes(self) -> int: ...

    @property
    def segment_count(self) -> int: ...

    def segments(self) -> list[dict[str, Any]]: ...

    def close(self) -> None:
        """Flush and release; every later call raises STORAGE_ERROR (``close`` again is a no-op)."""
        ...

    def delete(self) -> None:
        """Close without ceremony and remove the data."""
        ...


@runtime_checkable
class LeaderEpochs(Protocol):
    """The epoch table of a log (rules in ``fabric/log/epochs.py``)."""

    def leader_epochs(self) -> list[EpochEntry]:
        """The (epoch, start_offset) entries, oldest first."""
        ...

    def assign_epoch(self, epoch: int, start_offset: int) -> None:
        """Record that ``epoch`` starts at ``start_offset`` (a new leader, before its first append)."""
        ...

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """(largest epoch <= ``epoch``, the offset where it ends in this log), or (-1, -1)."""
        ...


@runtime_checkable
class ReplicaLogStore(LogStore, LeaderEpochs, Protocol):
    """A log a replica can use: the broker's surface plus the epoch table."""
