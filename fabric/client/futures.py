"""What ``Producer.send`` and ``send_batch`` return: futures completed by the sender thread.

A batch's records share one ``BatchResult``; a ``RecordFuture`` is a plain tuple
``(batch, index)`` so that ``send`` makes no Python object per record beyond a tuple.  The batch
(``accumulator.ProducerBatch``) gives the topic, partition and timestamps a ``RecordMetadata``
needs; this module only knows its shape (``BatchLike``), so neither module imports the other's
user (no import cycle: ``accumulator`` imports this one).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, NamedTuple, Protocol

from .connection import RequestTimeoutError

log = logging.getLogger("fabric.producer")


class RecordMetadata(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: int


_RESULT_LOCK = threading.Lock()  # guards every BatchResult's lazy event and callback list


class BatchResult:
    """Completion of one batch, shared by the futures of all its records.

    The ``threading.Event`` is made only when someone waits before completion: most batches are
    never waited on one by one, and building an Event (a Condition and two locks) per batch was
    the largest cost of ``send`` at one record per batch."""

    __slots__ = ("done", "_event", "base_offset", "error", "callbacks")

    def __init__(self) -> None:
        self.done = False
        self._event: threading.Event | None = None
        self.base_offset = -1
        self.error: BaseException | None = None
        self.callbacks: list[Callable[[], None]] | None = None

    def complete(self, base_offset: int, error: BaseException | None) -> None:
        self.base_offset = base_offset
        self.error = error
        with _RESULT_LOCK:
            self.done = True
            event, callbacks = self._event, self.callbacks
        if event is not None:
            event.set()
        for cb in callbacks or ():
            try:
                cb()
            except Exception:
                log.exception("delivery callback failed")

    def wait(self, timeout: float | None) -> bool:
        if self.done:
            return True
        with _RESULT_LOCK:
            if self.done:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)

    def add_callback(self, cb: Callable[[], None]) -> None:
        """Run ``cb`` on completion (now, on this thread, if already complete)."""
        with _RESULT_LOCK:
            if not self.done:
                if self.callbacks is None:
                    self.callbacks = []
                self.callbacks.append(cb)
                return
        cb()


class RecordFuture(tuple):
    """Result of ``send``: ``result(timeout)`` gives ``RecordMetadata`` or raises the delivery error.

    A tuple ``(batch, index)`` built without a Python ``__init__``: the producer makes one per
    record, so it must cost as little as a tuple."""

    __slots__ = ()

    def done(self) -> bool:
        return self[0].result.done

    def result(self, timeout: float | None = None) -> RecordMetadata:
        b, i = self
        if not b.result.wait(timeout):
            raise RequestTimeoutError(f"record not acknowledged within {timeout} s")
        if b.result.error is not None:
            raise b.result.error
        off = b.result.base_offset
        return RecordMetadata(b.topic, b.partition, off + i if off >= 0 else -1, b.timestamps[i])

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self[0].result.wait(timeout)
        return self[0].result.error

    def add_done_callback(self, fn: Callable[["RecordFuture"], None]) -> None:
        """``fn(future)`` runs on the sender thread once the record is acknowledged or failed."""
        self[0].result.add_callback(lambda: fn(self))


_new_future = tuple.__new__


class BatchLike(Protocol):
    """What a future needs of its batch (``accumulator.ProducerBatch``)."""

    topic: str
    partition: int
    timestamps: list[int]
    result: BatchResult


class BatchFuture:
    """Result of ``send_batch``: completes when every record of the call is acknowledged."""

    def __init__(self, pieces: list[tuple[BatchLike, int, int]]) -> None:
        self._pieces = pieces  # (batch, index of the first record in it, number of records)

    def done(self) -> bool:
        return all(b.result.done for b, _, _ in self._pieces)

    def wait(self, timeout: float | None = None) -> None:
        """Wait for every record's acknowledgement; raise the first delivery error.  Unlike
        ``result`` it builds no per-record metadata."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for b, _, _ in self._pieces:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not b.result.wait(left):
                raise RequestTimeoutError(f"records not acknowledged within {timeout} s")
            if b.result.error is not None:
                raise b.result.error

    def result(self, timeout: float | None = None) -> list[RecordMetadata]:
        self.wait(timeout)
        out: list[RecordMetadata] = []
        for b, first, count in self._pieces:
            base = b.result.base_offset
            for i in range(first, first + count):
                out.append(RecordMetadata(b.topic, b.partition, base + i if base >= 0 else -1, b.timestamps[i]))
        return out
