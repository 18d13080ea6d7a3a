"""``Producer``: batching, key partitioning, acks, retries and back-pressure.

Threading contract (Kafka's): ``send`` runs in the caller's thread and only appends to an
in-memory batch (``accumulator``: a few list appends); a background *sender* thread
(``sender``) owns the broker sockets, one per partition leader, closes batches by size or
``linger_ms``, encodes them, keeps up to ``max_in_flight`` requests in flight per broker,
completes futures and retries.  ``send`` is thread-safe; several threads may share one
producer.

Delivery: ``acks=1`` (default) answers once the leader has appended (and fsynced, if the topic's
flush policy says so); ``acks=-1``/``"all"`` once every in-sync replica has it (on one node the
same as 1); ``acks=0`` does not wait: futures complete at send with offset -1.  Retriable errors,
timeouts and lost connections are retried until ``delivery_timeout_ms``.

Order: records sent to one partition are written in the order sent, with any ``max_in_flight``,
through broker crashes and lost connections (``ordering`` states the rules and the exact
promise).  Until the idempotent producer lands, a retry after a lost reply can write a run of
records a second time, after the first copies and in the same order.
"""

from __future__ import annotations

import logging
import threading
import time
from time import time_ns as _time_ns
from typing import Any, Container, Sequence

import zmq

from ..multipart import try_send
from ..protocol.errors import FabricError, exception_for
from ..protocol.limits import Limits
from ..records.batch import COMPRESSION_NONE, COMPRESSION_ZLIB
from ..records.partitioner import KeyPartitioner
from .accumulator import RECORD_OVERHEAD, Accumulator, ProducerBatch as _Batch
from .admin import Admin
from .connection import ClientError, ClosedError, RequestTimeoutError, monotonic_ms, parse_bootstrap
from .futures import BatchFuture, RecordFuture, _new_future
from .metadata import REFRESH_ERRORS
from .idempotence import WINDOW, Idempotence
from .sender import Sender

log = logging.getLogger("fabric.producer")

_BROKER_LIMITS = Limits()  # the protocol's defaults: what any broker takes in one request
# a produce request's batches together (half the broker's request limit: headroom for the header)
REQUEST_BYTES_DEFAULT = _BROKER_LIMITS.request_bytes_max // 2
REQUEST_BATCHES_DEFAULT = 1000  # batches in one produce request (the protocol allows request_frames_max - 1)


class BufferFullError(ClientError):
    """``send`` waited ``max_block_ms`` for buffer space (the broker is slower than the producer)."""


def _total_len(items: Sequence[bytes | None]) -> int:
    try:
        return sum(map(len, items))  # C speed when there is no None
    except TypeError:
        return sum(len(x) for x in items if x is not None)


def _as_bytes(value: Any, what: str) -> bytes | None:
    if value is None or type(value) is bytes:
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes, str or None, not {type(value).__name__}")


class Producer:
    def __init__(self, bootstrap: str | Sequence[str] = "127.0.0.1:7171", *, acks: int | str | None = None,
                 enable_idempotence: bool | None = None,
                 linger_ms: int = 5, batch_bytes: int = 1 << 20, buffer_bytes: int = 64 << 20,
                 max_block_ms: int = 60_000, request_timeout_ms: int = 30_000,
                 delivery_timeout_ms: int = 120_000, retry_backoff_ms: int = 100, max_in_flight: int = 5,
                 compression: str | None = None, auto_create_topics: bool = True,
                 max_request_bytes: int = REQUEST_BYTES_DEFAULT, max_request_batches: int = REQUEST_BATCHES_DEFAULT,
                 reconnect_backoff_max_ms: int = 1000, metadata_max_age_ms: int = 300_000,
                 client_id: str = "fabric-producer", ctx: zmq.Context | None = None) -> None:
        """``max_request_bytes`` / ``max_request_batches``: what one produce request carries at
        most (a batch bigger than the first still goes alone), within the broker's
        ``request_bytes_max`` and ``request_frames_max``.  ``reconnect_backoff_max_ms``: the
        longest wait before reconnecting to a broker whose connections serve no reply
        (``retry_backoff_ms`` doubling up to it).  ``metadata_max_age_ms``: partition leaders
        are looked up again at least this often (and at once after ``NOT_LEADER``)."""
        if acks == "all":
            acks = -1
        if acks not in (-1, 0, 1, None):
            raise ValueError(f"acks must be 0, 1, -1 or 'all', not {acks!r}")
        # Idempotence (Kafka's rule, KIP-679): on unless turned off, or unless acks 0/1 or more
        # than 5 requests in flight were asked for without asking for idempotence; asked for
        # together with them, it is an error.  It needs acks=all: a batch acknowledged by a
        # leader alone can vanish in a failover, and its successor's sequence would then leave a gap.
        if enable_idempotence is None:
            enable_idempotence = acks in (None, -1) and max_in_flight <= WINDOW
        elif enable_idempotence and (acks not in (None, -1) or max_in_flight > WINDOW):
            raise ValueError(f"enable_idempotence needs acks='all' and max_in_flight <= {WINDOW} (got acks={acks!r}, "
                             f"max_in_flight={max_in_flight}); pass enable_idempotence=False for those")
        if acks is None:
            acks = -1 if enable_idempotence else 1
        self.enable_idempotence = enable_idempotence
        self._idem = Idempotence() if enable_idempotence else None
        if compression not in (None, "none", "zlib"):
            raise ValueError(f"compression must be None or 'zlib', not {compression!r}")
        if linger_ms < 0 or batch_bytes <= 0 or buffer_bytes < batch_bytes or max_in_flight < 1:
            raise ValueError("linger_ms >= 0, batch_bytes > 0, buffer_bytes >= batch_bytes, max_in_flight >= 1")
        if not 0 < max_request_bytes <= _BROKER_LIMITS.request_bytes_max \
                or not 0 < max_request_batches < _BROKER_LIMITS.request_frames_max:
            raise ValueError(f"max_request_bytes must be 1 to {_BROKER_LIMITS.request_bytes_max}, max_request_batches "
                             f"1 to {_BROKER_LIMITS.request_frames_max - 1}")
        self.acks = acks
        self.linger_ms = linger_ms
        self.batch_bytes = batch_bytes
        self.buffer_bytes = buffer_bytes
        self.max_block_ms = max_block_ms
        self.request_timeout_ms = request_timeout_ms
        self.delivery_timeout_ms = delivery_timeout_ms
        self.retry_backoff_ms = retry_backoff_ms
        self.max_in_flight = max_in_flight
        self.compression = COMPRESSION_ZLIB if compression == "zlib" else COMPRESSION_NONE
        self.auto_create_topics = auto_create_topics
        self.max_request_bytes = max_request_bytes
        self.max_request_batches = max_request_batches
        self.reconnect_backoff_max_ms = reconnect_backoff_max_ms
        self._ctx = ctx or zmq.Context.instance()
        self._endpoints = parse_bootstrap(bootstrap)
        self._admin = Admin(self._endpoints, timeout_ms=request_timeout_ms, ctx=self._ctx, client_id=client_id)
        self._admin.cluster.cache.max_age_ms = metadata_max_age_ms
        self._client_id = client_id
        self._partitioner = KeyPartitioner()
        self._partition_counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._space_waiters = 0  # send() calls blocked in _wait_for_space (notified only if any)
        self._meta_lock = threading.Lock()  # the Admin (metadata look-ups) is shared by every thread
        self._acc = Accumulator(batch_bytes, linger_ms)
        self._acc.on_close = self._on_batch_closed
        self._open = self._acc.open  # (the hot path's look-up, without one more attribute hop)
        self._flush_all = False
        self._closed = False
        self._wake_pending = False  # a wake-up is queued for the sender (see _wake)
        self._wake_addr = f"inproc://fabric-producer-{id(self)}"
        self._wake_rx = self._ctx.socket(zmq.PAIR)
        self._wake_rx.bind(self._wake_addr)
        self._wake_tx = self._ctx.socket(zmq.PAIR)
        self._wake_tx.connect(self._wake_addr)
        self._sender = threading.Thread(target=Sender(self).run, name="fabric-producer-sender", daemon=True)
        self._sender.start()

    # ------------------------------------------------------------------ user thread
    def partitions_for(self, topic: str) -> int:
        n = self._partition_counts.get(topic)
        if n is None:
            with self._meta_lock:
                meta = self._admin.metadata([topic], allow_auto_create=self.auto_create_topics)
            t = meta["topics"][0]
            if "error" in t:
                raise exception_for(t["error"])
            n = self._partition_counts[topic] = len(t["partitions"])
        return n

    def send(self, topic: str, value: bytes | str | None, key: bytes | str | None = None, *,
             partition: int | None = None, timestamp_ms: int | None = None,
             headers: Sequence[tuple[str, bytes]] | None = None) -> RecordFuture:
        """Queue one record; returns at once (blocking only while the buffer is full).

        This is the producer's hot path: a few dict look-ups and three list appends under a lock."""
        if value.__class__ is not bytes:
            value = _as_bytes(value, "value")
        size = RECORD_OVERHEAD if value is None else len(value) + RECORD_OVERHEAD
        if key is not None:
            if key.__class__ is not bytes:
                key = _as_bytes(key, "key")
            size += len(key)
        if partition is None:
            n = self._partition_counts.get(topic) or self.partitions_for(topic)
            partition = 0 if n == 1 else self._partitioner.partition(topic, key, n)
        ts = _time_ns() // 1_000_000 if timestamp_ms is None else int(timestamp_ms)
        if headers:
            headers = [(str(n), _as_bytes(v, "header value") or b"") for n, v in headers]
            size += sum(len(n) + len(v) + 4 for n, v in headers)
        acc = self._acc
        with self._lock:
            if acc.buffered + size > self.buffer_bytes or self._closed:
                self._wait_for_space(size)
            b = self._open.get((topic, partition))
            if b is None:
                b = self._new_batch(topic, partition)
            i = acc.append(b, ts, key, value, headers, size)
        return _new_future(RecordFuture, (b, i))

    def send_batch(self, topic: str, values: Sequence[bytes | None], keys: Sequence[bytes | None] | None = None,
                   *, partition: int | None = None, timestamp_ms: int | None = None) -> "BatchFuture":
        """Queue many records at once (the columnar fast path: no per-record Python work when
        ``keys`` is None or ``partition`` is given).  All records get ``timestamp_ms`` (default:
        now).  Keyed records are spread by the partitioner exactly as ``send`` would.  Returns one
        future for all of them; ``result()`` gives the ``RecordMetadata`` of each, grouped by
        partition (in input order within a partition).

        Values and keys must be ``bytes`` (or None): they are not converted or checked one by one."""
        n_values = len(values)
        if n_values == 0:
            return BatchFuture([])
        if keys is not None and len(keys) != n_values:
            raise ValueError("keys and values must have the same length")
        ts = _time_ns() // 1_000_000 if timestamp_ms is None else int(timestamp_ms)
        if partition is None and keys is not None:
            n = self._partition_counts.get(topic) or self.partitions_for(topic)
            part = self._partitioner.partition
            groups: dict[int, tuple[list, list]] = {}
            for k, v in zip(keys, values):
                g = groups.get(p := part(topic, k, n))
                if g is None:
                    g = groups[p] = ([], [])
                g[0].append(k)
                g[1].append(v)
            parts = [(p, ks, vs) for p, (ks, vs) in groups.items()]
        else:
            if partition is None:
                n = self._partition_counts.get(topic) or self.partitions_for(topic)
                partition = self._partitioner.partition(topic, None, n)
            parts = [(partition, [None] * n_values if keys is None else list(keys), list(values))]
        pieces: list[tuple[_Batch, int, int]] = []
        for p, ks, vs in parts:
            per_record = _total_len(vs) // len(vs) + (0 if keys is None else _total_len(ks) // len(ks)) \
                + RECORD_OVERHEAD
            start = 0
            while start < len(vs):
                b, first, stop = self._append_columns(topic, p, ks, vs, start, ts, per_record)
                pieces.append((b, first, stop - start))
                start = stop
        return BatchFuture(pieces)

    def _append_columns(self, topic: str, partition: int, keys: list, values: list, start: int, ts: int,
                        per_record: int) -> tuple[_Batch, int, int]:
        """Append values[start:stop] to the open batch of ``partition``: as many as fit (by the
        average record size), at least one."""
        acc = self._acc
        with self._lock:
            stop = min(len(values), start + acc.fit(topic, partition, per_record))
            size = (stop - start) * per_record
            if acc.buffered + size > self.buffer_bytes or self._closed:
                self._wait_for_space(size)
            b = self._open.get((topic, partition)) or self._new_batch(topic, partition)
            first = acc.append_columns(b, keys[start:stop], values[start:stop], ts, size)
        return b, first, stop

    def _new_batch(self, topic: str, partition: int) -> _Batch:
        b = self._acc.new_batch(topic, partition, monotonic_ms())
        self._wake()  # the sender may be asleep with no linger deadline to wake it for this batch
        return b

    def _on_batch_closed(self, b: _Batch) -> None:
        """A batch with records closed (lock held): a sticky partition moves on, and the sender
        is woken (not when it closed the batch itself: see ``_collect``)."""
        if b.keys[0] is None:
            self._partitioner.batch_done(b.topic, b.partition, self._partition_counts.get(b.topic, 1))
        self._wake()

    def _wake(self) -> None:
        """Wake the sender (lock held).  One wake-up at a time: the sender clears ``_wake_pending``
        before it collects, so whatever was queued behind a skipped wake-up is collected then."""
        if self._wake_pending:
            return
        self._wake_pending = True
        try_send(self._wake_tx, b"")  # (if the pipe is full of wake-ups the sender will look anyway)

    def _wait_for_space(self, size: int) -> None:
        if self._closed:
            raise ClosedError("producer is closed")
        deadline = monotonic_ms() + self.max_block_ms
        self._acc.close_all()  # make room: let the sender ship what we have (each close wakes it)
        while self._acc.buffered + size > self.buffer_bytes and self._acc.buffered > 0:
            if self._closed:
                raise ClosedError("producer is closed")
            left = deadline - monotonic_ms()
            if left <= 0:
                raise BufferFullError(f"buffer of {self.buffer_bytes} bytes still full after {self.max_block_ms} ms")
            self._space_waiters += 1
            try:
                self._space.wait(left / 1000)
            finally:
                self._space_waiters -= 1

    def flush(self, timeout: float | None = None) -> None:
        """Send everything buffered and wait until each record is acknowledged or failed."""
        with self._lock:
            pending = list(self._acc.incomplete)
            self._flush_all = True
            self._wake()
        deadline = None if timeout is None else time.monotonic() + timeout
        for r in pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not r.wait(left):
                raise RequestTimeoutError(f"flush did not complete within {timeout} s")

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush (up to ``timeout``), stop the sender, close sockets.  Unsent records then fail."""
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            with self._lock:
                self._closed = True
                self._space.notify_all()
                self._wake()
            self._sender.join(timeout=5)
            self._wake_tx.close(linger=0)
            self._admin.close()

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ for the sender thread
    def _collect(self, now: int, wake_seen: bool, held: Container[tuple[str, int]] = ()
                 ) -> tuple[list[_Batch], int | None, bool]:
        """The batches ready to go (closed by size, linger, flush or close), when the next open
        one is due, and whether the producer is closing.  ``held``: partitions whose open batch
        stays open (the sender's window to their leader is full: ``Accumulator.ready``)."""
        with self._lock:
            # The batches closed here wake nobody (the sender is awake: a wake-up would only cost
            # it one more empty turn per batch); after a wake-up was seen, a new batch wakes it again.
            pending, self._wake_pending = self._wake_pending, True
            if self._flush_all or self._closed:
                self._acc.close_all()
                self._flush_all = False
            ready, next_linger = self._acc.ready(now, held)
            self._wake_pending = False if wake_seen else pending
            return ready, next_linger, self._closed

    def _take_all(self) -> list[_Batch]:
        with self._lock:
            return self._acc.take_all()

    def _on_error(self, err: BaseException) -> None:
        """An error reply: forget the partition count of a topic that may have changed, and look
        the leaders up again."""
        if isinstance(err, FabricError) and err.name in REFRESH_ERRORS:
            self._partition_counts.clear()
            self._admin.cluster.cache.invalidate()

    def _finish(self, b: _Batch, base_offset: int, err: BaseException | None) -> None:
        if b.result.done:
            return
        b.result.complete(base_offset, err)
        b.data = None
        with self._lock:
            self._acc.release(b)
            if self._space_waiters:
                self._space.notify_all()
