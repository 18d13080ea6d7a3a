"""The one place the log's errors become wire errors.

Why here: the log speaks storage (``fabric/log/errors.py``), the wire speaks codes
(``fabric/protocol/errors.py``); the broker is what joins them.  Every handler catches
``FabricError`` *or* ``LogError`` where a partition's failure must not fail the whole request, and
turns the latter into the former with ``wire_error``; ``BrokerCore.handle`` does the same for any
log error no handler caught, so none becomes an ``UNKNOWN_ERROR``.
"""

from __future__ import annotations

from ..log.errors import (CorruptSegmentError, InvalidBatchError, LogClosedError, LogError, MalformedBatchError,
                          OffsetOutOfRangeError, OutOfOrderSequenceError, ProducerFencedError, StorageFailure,
                          UnknownProducerError)
from ..protocol.errors import FabricError

__all__ = ["WIRE_CODES", "wire_error"]

# The log's error classes and the wire error each becomes (SPEC section 8).  A closed log is a
# STORAGE_ERROR: the client retries (the topic is being deleted, or the broker is stopping).
WIRE_CODES: dict[type[LogError], str] = {
    LogClosedError: "STORAGE_ERROR",
    StorageFailure: "STORAGE_ERROR",
    OffsetOutOfRangeError: "OFFSET_OUT_OF_RANGE",
    MalformedBatchError: "CORRUPT_BATCH",
    InvalidBatchError: "INVALID_BATCH",
    CorruptSegmentError: "CORRUPT_BATCH",
    OutOfOrderSequenceError: "OUT_OF_ORDER_SEQUENCE",
    ProducerFencedError: "INVALID_PRODUCER_EPOCH",
    UnknownProducerError: "UNKNOWN_PRODUCER_ID",
}


def wire_error(exc: FabricError | LogError) -> FabricError:
    """``exc`` as the error a reply carries (a ``FabricError`` passes unchanged).  Damage on disk
    keeps where reading resumes (``skip_offset``, SPEC 5.10)."""
    if isinstance(exc, FabricError):
        return exc
    name = next((code for cls, code in WIRE_CODES.items() if isinstance(exc, cls)), "STORAGE_ERROR")
    if isinstance(exc, CorruptSegmentError):
        return FabricError(name, exc.message, skip_offset=exc.skip_offset)
    return FabricError(name, exc.message)
