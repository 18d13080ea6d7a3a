"""The producer's sender thread: ready batches to the leader of their partition, in order.

One ``_Link`` per broker (keyed by its address): a socket that is one TCP connection
(``Connection(reconnect=False)``) and the ``RequestBook`` of the requests sent on it.  A batch
goes to the link of its partition's leader (``MetadataCache``); the route of a partition is kept
until the metadata changes, and then a partition moves to its new leader's link only once its
old link owes it no reply (``RequestBook.release``): so, per partition, requests go to exactly
one connection at a time, in order, and ``ordering``'s rules hold as with one broker.

Per link, as before there were several: requests go out only while its connection is up.  When
it ends (monitor event) or a request times out, the replies already received are read,
everything still in flight goes back to the front of its queue (``RequestBook.on_lost``) and a
new connection is opened: at once after a connection that served replies, else with a growing
back-off (``retry_backoff_ms`` doubling, at most ``reconnect_backoff_max_ms``): a broker that is
down, or that closes connections as it accepts them, is not hammered.

Metadata is refreshed (a blocking request on this thread, bounded by ``REFRESH_TIMEOUT_MS``)
after ``NOT_LEADER`` / ``UNKNOWN_TOPIC_OR_PARTITION`` replies, after a lost connection when
there is more than one broker, for a partition whose leader is unknown, and every
``metadata_max_age_ms``.  Against one broker that is one link, and the loop is the one it was.
"""

from __future__ import annotations

import logging
from typing import Any

import zmq

from ..multipart import recv_frames
from ..protocol.codec import HeaderTemplate
from .accumulator import ProducerBatch, drain
from .connection import ClientError, ClosedError, Connection, RequestTimeoutError, monotonic_ms
from . import producer_ids
from .ordering import RequestBook

log = logging.getLogger("fabric.producer")

WAIT_MS_MAX = 100  # the loop wakes at least this often (closing, connection events, timeouts)
REFRESH_TIMEOUT_MS = 2000  # a metadata refresh on the sender thread waits at most this per broker
TEMPLATES_MAX = 1024  # produce headers kept, by their set of targets

_Key = tuple[str, int]


class _Link:
    """The sender's line to one broker."""

    __slots__ = ("endpoint", "conn", "book", "opened_ms", "reopen_at", "refused", "replied", "fresh", "full")

    def __init__(self, endpoint: str, conn: Connection, book: RequestBook, now: int) -> None:
        self.endpoint = endpoint
        self.conn = conn
        self.book = book
        self.opened_ms = now
        self.reopen_at: int | None = None  # the connection is closed until then
        self.refused = 0  # connections in a row that served no reply
        self.replied = False  # the current connection served a reply
        self.fresh: list[ProducerBatch] = []  # routed here this turn
        self.full = False  # its in-flight window was full when this turn collected (see ``_held``)


class Sender:
    """Runs on the producer's sender thread (``run``); ``p`` is the ``Producer`` (its config,
    ``_collect``, ``_finish``, ``_on_error``, ``_take_all``, wake-up pipe and Admin)."""

    def __init__(self, producer: Any) -> None:
        self.p = producer
        self.links: dict[str, _Link] = {}
        self.routes: dict[_Key, tuple[str, int]] = {}  # partition -> (link endpoint, metadata version)
        self.moving = False  # a partition waits for its old link to release it
        self.templates: dict[Any, HeaderTemplate] = {}
        self.poller = zmq.Poller()
        self.refresh_at = 0  # no metadata refresh before then (after a failed one)
        self.pid_retry_at = 0  # no init_producer_id before then (after a failed one)
        cache = producer._admin.cluster.cache
        self.cache = cache
        self.version = cache.version

    # ------------------------------------------------------------------ routing
    def _leader_endpoint(self, key: _Key) -> str:
        """The address of the partition's leader; the first bootstrap broker while unknown."""
        p = self.p
        with p._meta_lock:
            endpoint = self.cache.endpoint(self.cache.leader(*key))
        if endpoint is None:
            self.cache.invalidate()
            return p._endpoints[0]
        return endpoint

    def _link(self, endpoint: str, now: int) -> _Link:
        link = self.links.get(endpoint)
        if link is None:
            p = self.p
            conn = Connection(endpoint, p._ctx, p._client_id, reconnect=False,
                              connect_timeout_ms=p.request_timeout_ms)
            link = self.links[endpoint] = _Link(endpoint, conn, RequestBook(p._finish, p.retry_backoff_ms,
                                                                            p.delivery_timeout_ms,
                                                                            p._idem is not None), now)
            self._watch(conn, True)
        return link

    def _route(self, topic: str, partition: int, now: int) -> _Link:
        """The link of the partition's leader (see the module docstring for when it changes)."""
        key = (topic, partition)
        r = self.routes.get(key)
        if r is not None and r[1] == self.version:
            return self.links[r[0]]
        if r is not None:  # the metadata changed since: the partition may have to move first
            self._move(key, now)
            return self.links[self.routes[key][0]]
        endpoint = self._leader_endpoint(key)
        self.routes[key] = (endpoint, self.version)
        return self._link(endpoint, now)

    def _move(self, key: _Key, now: int) -> None:
        """Follow the metadata for ``key``: stay, or move its queued batches to the new leader's
        link once the old one has released them (else try again next turn)."""
        old = self.routes[key][0]
        new = self._leader_endpoint(key)
        if new == old:
            self.routes[key] = (old, self.version)
            return
        released = self.links[old].book.release(key)
        if released is None:
            self.moving = True
            return
        batches, cautious = released
        log.info("%s-%d: leader moved from %s to %s; %d batches follow", key[0], key[1], old, new, len(batches))
        self._link(new, now).book.adopt(batches, cautious)
        self.routes[key] = (new, self.version)

    def _follow_metadata(self, now: int) -> None:
        if self.cache.version == self.version and not self.moving:
            return
        self.version = self.cache.version
        self.moving = False
        for key, (_, version) in list(self.routes.items()):
            if version != self.version:
                self._move(key, now)

    def _refresh(self, now: int) -> None:
        if now < self.refresh_at or not self.cache.stale(now):
            return
        p = self.p
        topics = sorted({t for t, _ in self.routes} | set(p._partition_counts))
        if not topics:
            return  # nothing routed yet: the first route looks its leader up
        try:
            with p._meta_lock:
                p._admin.cluster.refresh(topics, timeout_ms=min(p.request_timeout_ms, REFRESH_TIMEOUT_MS))
        except Exception as exc:  # (any failure: try again after a back-off, the routes stay)
            log.info("metadata refresh failed: %s", exc)
            self.refresh_at = now + p.retry_backoff_ms
            return
        for topic, count in list(p._partition_counts.items()):  # a topic grown meanwhile: keys spread over all
            grown = self.cache.partitions(topic)
            if grown is not None and grown > count:
                log.info("topic %s now has %d partitions (was %d)", topic, grown, count)
                p._partition_counts[topic] = grown

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        p = self.p
        self.poller.register(p._wake_rx, zmq.POLLIN)
        self._link(p._endpoints[0], monotonic_ms())  # connecting while the first records come
        wake_seen = False
        try:
            while True:
                now = monotonic_ms()
                self._refresh(now)
                self._follow_metadata(now)
                for link in self.links.values():
                    if link.reopen_at is not None and now >= link.reopen_at:
                        link.conn.reset()
                        self._watch(link.conn, True)
                        link.reopen_at, link.opened_ms = None, now
                fresh, next_linger, closing = p._collect(now, wake_seen, self._held())
                wake_seen = False
                if fresh:
                    for link, batches in drain(fresh, lambda t, p: self._route(t, p, now)).items():
                        link.fresh += batches
                again = False
                for link in list(self.links.values()):
                    again |= self._turn(link, now, closing)
                if again:
                    continue  # the acks opened a window
                if closing and all(link.book.idle or not link.conn.up for link in self.links.values()):
                    break  # (closing with no connection: what is left fails below)
                # wait for a reply, a wake-up, a connection event, the next linger expiry, retry,
                # reconnect or timeout
                wait = WAIT_MS_MAX
                if next_linger is not None:
                    wait = min(wait, next_linger - now)
                for link in self.links.values():
                    wait = min(wait, self._due(link, now))
                for sock, _ in self.poller.poll(max(0, wait)):
                    if sock is p._wake_rx:
                        # _wake_pending lets one wake-up at a time into the pipe (a second one left
                        # by a race only costs one more turn); _collect clears it under its lock
                        recv_frames(p._wake_rx)
                        wake_seen = True
                    else:
                        for link in self.links.values():
                            if sock is link.conn.monitor:
                                link.conn.poll_events()
                now = monotonic_ms()
                for link in self.links.values():
                    self._check(link, now)
        except Exception:
            log.exception("producer sender thread crashed")
        finally:
            err = ClosedError("producer closed before the record was acknowledged")
            leftover = p._take_all()
            for link in self.links.values():
                book = link.book
                leftover += book.waiting + book.retry + [b for f in book.inflight.values() for b in f.batches] \
                    + [b for d in book.deferred.values() for b in d] + link.fresh \
                    + [b for d in book.rebasing.values() for b in d]
            for b in leftover:
                p._finish(b, -1, err)
            for link in self.links.values():
                link.conn.close()
            p._wake_rx.close(linger=0)

    def _held(self) -> set[_Key] | tuple[()]:
        """The partitions routed to a link whose in-flight window is full: their open batch stays
        open and keeps taking records (``Accumulator.ready``) until a reply opens the window.

        Why: with ``linger_ms`` 0 every record used to close into a batch of its own while the
        window was full, and the next request carried dozens of one-record batches; the broker
        appends, replicates and acknowledges per batch, so at 10,000 records/s with ``acks=all``
        (a window of replication round trips) it fell behind and latency grew to seconds.  Held
        open, the records that arrive during a round trip leave as one batch, as with Kafka."""
        max_in_flight = self.p.max_in_flight
        full = False
        for link in self.links.values():
            link.full = link.conn.up and len(link.book.inflight) >= max_in_flight
            full |= link.full
        if not full:
            return ()
        links = self.links
        return {key for key, (endpoint, _) in self.routes.items() if links[endpoint].full}

    def _turn(self, link: _Link, now: int, closing: bool) -> bool:
        """Send what may go on this link, then read its acks; True if the acks opened the
        in-flight window for batches that wait, queued or held open (go round again at once)."""
        book, conn = link.book, link.conn
        book.closing = closing
        fresh, link.fresh = link.fresh, []
        sendable: list[ProducerBatch] = []
        max_in_flight = self.p.max_in_flight
        if conn.up:
            if book.rebasing:
                producer_ids.rebase(self, book, now)
            sendable = book.select(fresh, now)
            while sendable and len(book.inflight) < max_in_flight:
                rest = self._send_request(conn, book, sendable, now)
                if rest is None:  # the socket takes nothing: its connection just ended
                    break
                sendable = rest
            if sendable:
                book.keep(sendable)
        elif fresh or book.waiting or book.retry:
            book.hold(fresh, now)
        # Acks are read after the new batch went out (the batch is someone's latency, the ack
        # bookkeeping), and without a poll: a receive that finds nothing costs less.
        acked = False
        while conn.socket is not None and (got := conn.recv(0)) is not None:
            book.on_reply(got[0], now, self.p._on_error)  # (an unreadable reply ends the drain:
            acked = link.replied = True                   # the next poll returns at once)
        return (bool(sendable) or link.full) and acked and conn.up and len(book.inflight) < max_in_flight

    def _due(self, link: _Link, now: int) -> int:
        """How long the loop may sleep for this link."""
        wait = WAIT_MS_MAX
        due = link.book.next_due_ms()
        if due is not None and link.conn.up:
            wait = min(wait, due - now)
        if link.reopen_at is not None:
            wait = min(wait, link.reopen_at - now)
        if link.book.inflight:
            oldest = min([f.sent_ms for f in link.book.inflight.values()])
            wait = min(wait, oldest + self.p.request_timeout_ms - now)
        return wait

    def _check(self, link: _Link, now: int) -> None:
        """After a wait: has the link's connection ended, or a request timed out?"""
        conn, book, p = link.conn, link.book, self.p
        if conn.socket is None:
            return
        oldest = min([f.sent_ms for f in book.inflight.values()]) if book.inflight else None
        lost: BaseException | None = None
        if conn.dead:
            lost = ClientError(f"connection to {conn.endpoint} lost" if conn.was_up
                               else f"cannot connect to {conn.endpoint}")
        elif oldest is not None and now - oldest >= p.request_timeout_ms:
            lost = RequestTimeoutError(f"no produce reply within {p.request_timeout_ms} ms")
        elif not conn.up and now - link.opened_ms >= p.request_timeout_ms:
            lost = RequestTimeoutError(f"no connection to {conn.endpoint} within {p.request_timeout_ms} ms")
        if lost is None:
            return
        while (got := conn.recv(0)) is not None:  # replies that came before the end
            book.on_reply(got[0], now, p._on_error)
            link.replied = True
        if book.inflight:
            log.warning("%s: re-sending %d produce requests in order on a new connection", lost, len(book.inflight))
        book.on_lost(now, lost)
        self._watch(conn, False)
        conn.close()
        link.refused = 0 if link.replied else link.refused + 1
        link.reopen_at = now + (0 if link.refused == 0 else
                                min(p.retry_backoff_ms * 2 ** (link.refused - 1), p.reconnect_backoff_max_ms))
        link.replied = False
        if len(self.links) > 1 or len(p._endpoints) > 1:
            self.cache.invalidate()  # the leader may have moved

    def _watch(self, conn: Connection, on: bool) -> None:
        for sock in (conn.socket, conn.monitor):
            if sock is not None:
                self.poller.register(sock, zmq.POLLIN) if on else self.poller.unregister(sock)

    def _send_request(self, conn: Connection, book: RequestBook, batches: list[ProducerBatch],
                      now: int) -> list[ProducerBatch] | None:
        """Send one produce request with as many batches as fit; returns the rest, or None if the
        socket took nothing (then no batch was sent)."""
        p = self.p
        take: list[ProducerBatch] = []
        frames: list[bytes] = []
        total = 0
        used = 0  # batches consumed from the list (sent or failed)
        max_bytes, max_batches = p.max_request_bytes, p.max_request_batches
        idem = p._idem
        if idem is not None and not idem.ready and not producer_ids.obtain(self, now):
            return None  # no producer id yet: nothing goes (tried again after a back-off)
        keys: set[tuple[str, int]] = set()
        for b in batches:
            if idem is not None:
                # One batch per partition per request (as Kafka's): with at most max_in_flight <= 5
                # requests in flight, a partition has at most 5 batches in flight, all inside the
                # leader's duplicate window; a retry of any of them is recognised.
                key = (b.topic, b.partition)
                if key in keys:
                    break
                keys.add(key)
            if b.data is None:
                try:
                    if idem is None:
                        b.data = b.encode(p.compression)
                    else:  # (idempotence rule 1: the sequence is taken at the first encoding)
                        key = (b.topic, b.partition)
                        b.data = b.encode(p.compression, *idem.next(key))
                        idem.advance(key, len(b.timestamps))
                except Exception as exc:  # e.g. a value that is not bytes: fail this batch only
                    log.error("cannot encode a batch for %s-%d: %s", b.topic, b.partition, exc)
                    p._finish(b, -1, ClientError(f"cannot encode batch: {exc}"))
                    used += 1
                    continue
            if take and (total + len(b.data) > max_bytes or len(take) >= max_batches):
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
            template = self.templates.get(targets)
            if template is None:
                if len(self.templates) >= TEMPLATES_MAX:
                    self.templates.clear()
                template = self.templates[targets] = HeaderTemplate("produce", 1, {
                    "acks": p.acks, "timeout_ms": p.request_timeout_ms,
                    "batches": [{"topic": b.topic, "partition": b.partition} for b in take]})
            cid = conn.try_send_templated(template, frames)
            if cid is None:
                return None
            for b in take:
                b.attempts += 1
            if p.acks == 0:
                for b in take:
                    p._finish(b, -1, None)
            else:
                book.sent(cid, take, now)
        return batches[used:]
