"""``Producer``: batching, key partitioning, acks, retries and back-pressure.

Threading contract (Kafka's): ``send`` runs in the caller's thread and only appends to an
in-memory batch (a few list appends); a background *sender* thread owns the broker socket,
closes batches by size or ``linger_ms``, encodes them, keeps up to ``max_in_flight`` requests in
flight, completes futures and retries.  ``send`` is thread-safe; several threads may share one
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
import itertools
import threading
import time
from time import time_ns as _time_ns
from collections import deque
from typing import Any, Sequence

import zmq

from ..multipart import recv_frames, try_send
from ..protocol.codec import HeaderTemplate
from ..protocol.errors import FabricError, exception_for
from ..records.batch import COMPRESSION_NONE, COMPRESSION_ZLIB, encode_batch
from ..records.partitioner import KeyPartitioner
from .admin import Admin
from .connection import ClientError, ClosedError, Connection, RequestTimeoutError, monotonic_ms, parse_bootstrap
from .futures import BatchFuture, RecordFuture, _BatchResult, _new_future
from .ordering import RequestBook

log = logging.getLogger("fabric.producer")

RECORD_OVERHEAD = 12  # estimated encoded bytes per record besides key and value
_batch_seq = itertools.count()  # creation order of batches: per partition, the order to write them


class BufferFullError(ClientError):
    """``send`` waited ``max_block_ms`` for buffer space (the broker is slower than the producer)."""


class _Batch:
    """Records of one partition collected by ``send``, as parallel columns (plain lists of ints
    and bytes are not tracked by the garbage collector; a tuple per record would be)."""

    __slots__ = ("topic", "partition", "timestamps", "keys", "values", "headers", "size", "created_ms",
                 "result", "attempts", "retry_at_ms", "data", "last_error", "seq")

    def __init__(self, topic: str, partition: int, now_ms: int) -> None:
        self.topic = topic
        self.partition = partition
        self.timestamps: list[int] = []
        self.keys: list[bytes | None] = []
        self.values: list[bytes | None] = []
        self.headers: list[Any] | None = None  # created when the first record with headers arrives
        self.size = 0
        self.created_ms = now_ms
        self.result = _BatchResult()
        self.attempts = 0
        self.retry_at_ms = 0
        self.data: bytes | None = None
        self.last_error: BaseException | None = None
        self.seq = next(_batch_seq)

    def encode(self, compression: int) -> bytes:
        data = encode_batch(self.timestamps, self.keys, self.values, self.headers, compression=compression)
        self.keys = self.values = []  # retries resend self.data; timestamps stay for RecordMetadata
        self.headers = None
        return data


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
    def __init__(self, bootstrap: str | Sequence[str] = "127.0.0.1:7171", *, acks: int | str = 1,
                 linger_ms: int = 5, batch_bytes: int = 1 << 20, buffer_bytes: int = 64 << 20,
                 max_block_ms: int = 60_000, request_timeout_ms: int = 30_000,
                 delivery_timeout_ms: int = 120_000, retry_backoff_ms: int = 100, max_in_flight: int = 5,
                 compression: str | None = None, auto_create_topics: bool = True,
                 client_id: str = "fabric-producer", ctx: zmq.Context | None = None) -> None:
        if acks == "all":
            acks = -1
        if acks not in (-1, 0, 1):
            raise ValueError(f"acks must be 0, 1, -1 or 'all', not {acks!r}")
        if compression not in (None, "none", "zlib"):
            raise ValueError(f"compression must be None or 'zlib', not {compression!r}")
        if linger_ms < 0 or batch_bytes <= 0 or buffer_bytes < batch_bytes or max_in_flight < 1:
            raise ValueError("linger_ms >= 0, batch_bytes > 0, buffer_bytes >= batch_bytes, max_in_flight >= 1")
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
        self._ctx = ctx or zmq.Context.instance()
        self._endpoints = parse_bootstrap(bootstrap)
        self._admin = Admin(self._endpoints, timeout_ms=request_timeout_ms, ctx=self._ctx, client_id=client_id)
        self._client_id = client_id
        self._partitioner = KeyPartitioner()
        self._partition_counts: dict[str, int] = {}
        self._templates: dict[Any, HeaderTemplate] = {}  # produce headers by targets (sender thread)
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._space_waiters = 0  # send() calls blocked in _wait_for_space (notified only if any)
        self._meta_lock = threading.Lock()
        self._open: dict[tuple[str, int], _Batch] = {}
        self._ready: deque[_Batch] = deque()
        self._incomplete: set[_BatchResult] = set()
        self._buffered = 0
        self._flush_all = False
        self._closed = False
        self._wake_pending = False  # a wake-up is queued for the sender (see _wake)
        self._wake_addr = f"inproc://fabric-producer-{id(self)}"
        self._wake_rx = self._ctx.socket(zmq.PAIR)
        self._wake_rx.bind(self._wake_addr)
        self._wake_tx = self._ctx.socket(zmq.PAIR)
        self._wake_tx.connect(self._wake_addr)
        self._sender = threading.Thread(target=self._run, name="fabric-producer-sender", daemon=True)
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
        with self._lock:
            if self._buffered + size > self.buffer_bytes or self._closed:
                self._wait_for_space(size)
            b = self._open.get((topic, partition))
            if b is None:
                b = self._new_batch(topic, partition)
            values = b.values
            i = len(values)
            values.append(value)
            b.keys.append(key)
            b.timestamps.append(ts)
            if headers or b.headers is not None:
                if b.headers is None:
                    b.headers = [None] * i
                b.headers.append(headers or None)
            b.size += size
            self._buffered += size
            if b.size >= self.batch_bytes:
                self._close_batch(b)
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
        with self._lock:
            b = self._open.get((topic, partition))
            used = 0 if b is None else b.size
            fit = max(1, (self.batch_bytes - used) // per_record)
            stop = min(len(values), start + fit)
            size = (stop - start) * per_record
            if self._buffered + size > self.buffer_bytes or self._closed:
                self._wait_for_space(size)
                b = None
            if b is None:
                b = self._open.get((topic, partition)) or self._new_batch(topic, partition)
            first = len(b.values)
            b.values.extend(values[start:stop])
            b.keys.extend(keys[start:stop])
            b.timestamps.extend([ts] * (stop - start))
            if b.headers is not None:
                b.headers.extend([None] * (stop - start))
            b.size += size
            self._buffered += size
            if b.size >= self.batch_bytes:
                self._close_batch(b)
        return b, first, stop

    def _new_batch(self, topic: str, partition: int) -> _Batch:
        b = _Batch(topic, partition, monotonic_ms())
        self._open[(topic, partition)] = b
        self._incomplete.add(b.result)
        self._wake()  # the sender may be asleep with no linger deadline to wake it for this batch
        return b

    def _close_batch(self, b: _Batch, wake: bool = True) -> None:
        """Move an open batch to the ready queue (lock held).  An empty batch is just dropped.
        ``wake=False`` from the sender itself: it is awake, and a wake-up would only cost it one
        more empty turn of its loop per batch."""
        del self._open[(b.topic, b.partition)]
        if not b.values:
            self._incomplete.discard(b.result)
            b.result.complete(-1, None)
            return
        self._ready.append(b)
        if b.keys[0] is None:
            self._partitioner.batch_done(b.topic, b.partition, self._partition_counts.get(b.topic, 1))
        if wake:
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
        for b in list(self._open.values()):  # make room: let the sender ship what we have
            self._close_batch(b)
        while self._buffered + size > self.buffer_bytes and self._buffered > 0:
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
            pending = list(self._incomplete)
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

    # ------------------------------------------------------------------ sender thread
    def _run(self) -> None:
        """The sender: one poll loop over the wake-up pipe, the broker socket and its monitor.

        The socket is one TCP connection (``Connection(reconnect=False)``); requests go out only
        while it is up.  When it ends (monitor event) or a request times out, the replies already
        received are read, everything still in flight goes back to the front of the queue
        (``RequestBook.on_lost``) and a new connection is opened: at once after a connection that
        served replies, else with a growing back-off (``retry_backoff_ms`` doubling, at most 1 s):
        a broker that is down, or that closes connections as it accepts them, is not hammered."""
        book = RequestBook(self._finish, self.retry_backoff_ms, self.delivery_timeout_ms)
        conn = Connection(self._endpoints[0], self._ctx, self._client_id, reconnect=False,
                          connect_timeout_ms=self.request_timeout_ms)
        opened_ms = monotonic_ms()
        reopen_at: int | None = None  # the connection is closed until then
        refused = 0  # connections in a row that served no reply
        replied = False  # the current connection served a reply
        poller = zmq.Poller()
        poller.register(self._wake_rx, zmq.POLLIN)
        self._watch(poller, conn, True)
        wake_seen = False
        try:
            while True:
                now = monotonic_ms()
                if reopen_at is not None and now >= reopen_at:
                    conn.reset()
                    self._watch(poller, conn, True)
                    reopen_at, opened_ms = None, now
                fresh, next_linger, closing = self._collect(now, wake_seen)
                wake_seen = False
                book.closing = closing
                sendable: list[_Batch] = []
                if conn.up:
                    sendable = book.select(fresh, now)
                    while sendable and len(book.inflight) < self.max_in_flight:
                        rest = self._send_request(conn, book, sendable, now)
                        if rest is None:  # the socket takes nothing: its connection just ended
                            break
                        sendable = rest
                    if sendable:
                        book.keep(sendable)
                elif fresh or book.waiting or book.retry:
                    book.hold(fresh, now)
                # Acks are read after the new batch went out (the batch is someone's latency, the
                # ack bookkeeping), and without a poll: a receive that finds nothing costs less.
                acked = False
                while conn.socket is not None and (got := conn.recv(0)) is not None:
                    book.on_reply(got[0], now, self._on_error)  # (an unreadable reply ends the
                    acked = replied = True                      # drain: the next poll returns at once)
                if sendable and acked and conn.up and len(book.inflight) < self.max_in_flight:
                    continue  # the acks opened the window
                if closing and (book.idle or not conn.up):
                    break  # (closing with no connection: what is left fails below)
                # wait for a reply, a wake-up, a connection event, the next linger expiry, retry,
                # reconnect or timeout
                wait = 100
                if next_linger is not None:
                    wait = min(wait, next_linger - now)
                due = book.next_due_ms()
                if due is not None and conn.up:
                    wait = min(wait, due - now)
                if reopen_at is not None:
                    wait = min(wait, reopen_at - now)
                oldest = min([f.sent_ms for f in book.inflight.values()]) if book.inflight else None
                if oldest is not None:
                    wait = min(wait, oldest + self.request_timeout_ms - now)
                for sock, _ in poller.poll(max(0, wait)):
                    if sock is self._wake_rx:
                        # _wake_pending lets one wake-up at a time into the pipe (a second one left
                        # by a race only costs one more turn); _collect clears it under its lock
                        recv_frames(self._wake_rx)
                        wake_seen = True
                    elif sock is conn.monitor:
                        conn.poll_events()
                now = monotonic_ms()
                if conn.socket is None:
                    continue
                lost: BaseException | None = None
                if conn.dead:
                    lost = ClientError(f"connection to {conn.endpoint} lost" if conn.was_up
                                       else f"cannot connect to {conn.endpoint}")
                elif oldest is not None and now - oldest >= self.request_timeout_ms:
                    lost = RequestTimeoutError(f"no produce reply within {self.request_timeout_ms} ms")
                elif not conn.up and now - opened_ms >= self.request_timeout_ms:
                    lost = RequestTimeoutError(f"no connection to {conn.endpoint} within "
                                               f"{self.request_timeout_ms} ms")
                if lost is None:
                    continue
                while (got := conn.recv(0)) is not None:  # replies that came before the end
                    book.on_reply(got[0], now, self._on_error)
                    replied = True
                if book.inflight:
                    log.warning("%s: re-sending %d produce requests in order on a new connection",
                                lost, len(book.inflight))
                book.on_lost(now, lost)
                self._watch(poller, conn, False)
                conn.close()
                refused = 0 if replied else refused + 1
                reopen_at = now + (0 if refused == 0 else min(self.retry_backoff_ms * 2 ** (refused - 1), 1000))
                replied = False
        except Exception:
            log.exception("producer sender thread crashed")
        finally:
            err = ClosedError("producer closed before the record was acknowledged")
            with self._lock:
                leftover = list(self._ready) + list(self._open.values())
                self._ready.clear()
                self._open.clear()
            for b in leftover + book.waiting + book.retry + [b for f in book.inflight.values() for b in f.batches] \
                    + [b for d in book.deferred.values() for b in d]:
                self._finish(b, -1, err)
            conn.close()
            self._wake_rx.close(linger=0)

    @staticmethod
    def _watch(poller: zmq.Poller, conn: Connection, on: bool) -> None:
        for sock in (conn.socket, conn.monitor):
            if sock is not None:
                poller.register(sock, zmq.POLLIN) if on else poller.unregister(sock)

    def _on_error(self, err: BaseException) -> None:
        """An error reply: forget the partition count of a topic that may have changed."""
        if isinstance(err, FabricError) and err.name in ("UNKNOWN_TOPIC_OR_PARTITION", "NOT_LEADER"):
            self._partition_counts.clear()

    def _collect(self, now: int, wake_seen: bool) -> tuple[list[_Batch], int | None, bool]:
        with self._lock:
            if wake_seen:
                self._wake_pending = False  # from here on a new batch wakes the sender again
            if self._flush_all or self._closed:
                for b in list(self._open.values()):
                    self._close_batch(b, wake=False)
                self._flush_all = False
            next_linger = None
            for b in list(self._open.values()):
                due = b.created_ms + self.linger_ms
                if due <= now:
                    self._close_batch(b, wake=False)
                elif next_linger is None or due < next_linger:
                    next_linger = due
            ready = list(self._ready)
            self._ready.clear()
            return ready, next_linger, self._closed

    def _send_request(self, conn: Connection, book: RequestBook, batches: list[_Batch],
                      now: int) -> list[_Batch] | None:
        """Send one produce request with as many batches as fit; returns the rest, or None if the
        socket took nothing (then no batch was sent)."""
        take: list[_Batch] = []
        frames: list[bytes] = []
        total = 0
        used = 0  # batches consumed from the list (sent or failed)
        for b in batches:
            if b.data is None:
                try:
                    b.data = b.encode(self.compression)
                except Exception as exc:  # e.g. a value that is not bytes: fail this batch only
                    log.error("cannot encode a batch for %s-%d: %s", b.topic, b.partition, exc)
                    self._finish(b, -1, ClientError(f"cannot encode batch: {exc}"))
                    used += 1
                    continue
            if take and (total + len(b.data) > (32 << 20) or len(take) >= 1000):
                break
            take.append(b)
            frames.append(b.data)
            total += len(b.data)
            used += 1
        if take:
            # The ProduceRequest fields as a plain map, encoded once per set of targets (a
            # producer at the tail sends the same header but for the cid again and again).
            targets = (take[0].topic, take[0].partition) if len(take) == 1 else \
                tuple([(b.topic, b.partition) for b in take])
            template = self._templates.get(targets)
            if template is None:
                if len(self._templates) >= 1024:
                    self._templates.clear()
                template = self._templates[targets] = HeaderTemplate("produce", 1, {
                    "acks": self.acks, "timeout_ms": self.request_timeout_ms,
                    "batches": [{"topic": b.topic, "partition": b.partition} for b in take]})
            cid = conn.try_send_templated(template, frames)
            if cid is None:
                return None
            for b in take:
                b.attempts += 1
            if self.acks == 0:
                for b in take:
                    self._finish(b, -1, None)
            else:
                book.sent(cid, take, now)
        return batches[used:]

    def _finish(self, b: _Batch, base_offset: int, err: BaseException | None) -> None:
        if b.result.done:
            return
        b.result.complete(base_offset, err)
        b.data = None
        with self._lock:
            self._buffered -= b.size
            self._incomplete.discard(b.result)
            if self._space_waiters:
                self._space.notify_all()
