"""The log's own errors: what went wrong in storage terms, never a wire code.

Why its own: the log is a library under the broker (and under tools such as ``fabric log verify``
and the replication simulation); it knows about offsets, batches and files, not about replies.
The broker maps each class to a wire error in one place (``fabric/broker/log_errors.py``), so a
new wire code, or a second protocol, changes nothing here.  Every class carries ``message`` (for
people, naming the log's directory) and the numbers a caller acts on.

    LogError
    ├── LogClosedError         the log was closed (shut down, or its topic deleted) under the caller
    ├── StorageFailure         the disk failed (open, write, fsync, truncate, delete); after a failed
    │                          write the log refuses appends until reopened
    ├── OffsetOutOfRangeError  an offset outside [start_offset, end_offset]
    ├── MalformedBatchError    a batch handed to append whose framing is wrong (length, size)
    ├── InvalidBatchError      a batch whose header contradicts itself (record count, deltas)
    └── CorruptSegmentError    stored bytes are damaged; ``skip_offset`` is where reading resumes
"""

from __future__ import annotations

__all__ = ["CorruptSegmentError", "InvalidBatchError", "LogClosedError", "LogError", "MalformedBatchError",
           "OffsetOutOfRangeError", "OutOfOrderSequenceError", "ProducerFencedError", "StorageFailure",
           "UnknownProducerError"]


class LogError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LogClosedError(LogError):
    """The log is closed: nothing can be read or written through this object any more."""


class StorageFailure(LogError):
    """An I/O error of the disk under the log."""


class OffsetOutOfRangeError(LogError):
    """An offset the log does not hold (below its start, beyond its end)."""


class MalformedBatchError(LogError):
    """A batch to append whose bytes are not one whole batch."""


class InvalidBatchError(LogError):
    """A batch to append whose header is inconsistent."""


class CorruptSegmentError(LogError):
    """A read ran into damaged stored bytes at ``offset``; the next readable offset is
    ``skip_offset``."""

    def __init__(self, message: str, offset: int, skip_offset: int) -> None:
        super().__init__(message)
        self.offset = offset
        self.skip_offset = skip_offset


# An idempotent producer's batch refused by the partition's producer state (producer_state.py).

class OutOfOrderSequenceError(LogError):
    """A batch's sequence does not continue the producer's (a gap, or a new epoch not at 0)."""


class ProducerFencedError(LogError):
    """A batch of an older epoch than the producer's newest: a newer incarnation fenced it."""


class UnknownProducerError(LogError):
    """A producer id this partition has no state for, with a batch not at sequence 0."""
