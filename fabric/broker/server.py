"""The broker's I/O shell: one ZeroMQ ROUTER, one poll loop (plus the flusher and compactor
threads of ``background.py``).

Loop turn: poll (until the next long-poll deadline, at most ``TICK_MS``), drain up to
``RECV_BURST`` requests and hand each to ``BrokerCore.handle``.  Replies leave at once, unless a
reply asked for an fsync (``flush_every_batch``, group commits): it waits in ``durability.py``,
and so do later replies to the same connection, which leave in order.  At the end of the turn
the logs those replies wait for go to the flusher thread in one job (each fsynced once however
many batches it got: group commit); the flusher reports the job done on a queue and writes a byte
to a socketpair the poller watches, and the loop then releases the replies (``_synced``).  The
loop never waits for a disk, and other connections are never held up by one.  (Holding every
reply to the end of a burst made an event wait for the requests behind it: most of the broker's
share of end-to-end latency at 10,000 events/s.)  Between turns:
expire long-polls, every ``GROUP_TICK_MS`` the group timeouts (``core.tick`` walks every member,
too much for every turn of a loop turning thousands of times a second) and, every
``retention_check_interval_ms``, housekeeping.

The ROUTER's monitor socket reports accepted and closed connections; ``connections.py`` decides
which to keep (``limits.connections_max``), which an idle one replaces, and which are told
``TOO_MANY_CONNECTIONS`` before they are shut down; every request marks its connection active.

Flow control (``flow.py``, SPEC "Flow control").  Inbound, the ROUTER reads at most
``connection_requests_queued_max`` requests ahead per connection (``RCVHWM``): beyond, ZeroMQ stops
reading that connection's socket and TCP holds the client back, so a client flooding produce
requests cannot fill the broker's memory with them.  Outbound, every reply's bytes are counted
per peer until ZeroMQ lets go of them (``_send``: some replies carry a ``MessageTracker``); the
core refuses work for a peer whose replies wait unread (``THROTTLED``).  ``SNDHWM``
(``connection_replies_queued_max``) still caps the count of small replies; with
``ROUTER_MANDATORY`` off a reply beyond it is dropped, never waited for.

Every fsync (interval and requested) and compaction happen on separate threads so a slow disk
never stalls the loop.  Time comes from one ``Clock`` (``fabric/clock.py``).  SIGTERM/SIGINT stop the loop
after the current turn: parked fetches are answered, logs flushed and closed (clean-shutdown
marker), sockets closed with linger 0.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import queue
import threading
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from ..clock import Clock, SystemClock, read
from ..multipart import ZERO_COPY_MIN, recv_routed, send_frames
from ..protocol.codec import encode
from ..protocol.errors import FabricError
from .config import BrokerConfig
from .background import Compactor, Flusher, timed_flush
from ..protocol.messages import StatsRequest, error_reply
from .core import BrokerCore, Outbox
from .descriptors import raise_nofile_limit
from .durability import DurableReplies
from .replies import Reply
from .restart import mark_clean_shutdown
from .prometheus import MetricsEndpoint, StatsExchange

log = logging.getLogger("fabric.broker.server")

TICK_MS = 100
RECV_BURST = 256
CLUSTER_TICK_MS = 20  # heartbeats, follower idle fetches, ISR checks, acks=all deadlines
GROUP_TICK_MS = 10  # how often a busy loop runs the full ``core.tick`` (group timeouts)
IDLE_CHECK_MS = 1000  # how often connections are checked against ``connection_idle_ms_max``
TRIM_AFTER_BYTES = 32 << 20  # queued reply bytes gone (sent or dropped) before the heap is trimmed


def _shut_down(fd: int) -> None:
    """End the TCP connection on ZeroMQ's descriptor ``fd`` without closing the descriptor (ZeroMQ
    owns it and closes it when it sees the connection end): a duplicate is shut down, then closed."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return  # gone already
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


def _send_tracked(socket: zmq.Socket, frames: list) -> zmq.MessageTracker:
    """Send ``frames`` as one message through pyzmq; the tracker of its last frame is done once
    ZeroMQ has let go of the whole message (frames leave in order).  The last frame is made with
    ``copy_threshold=0``: below the socket's threshold (64 KiB) pyzmq would copy it and hand back
    a tracker that is done already, whatever became of the message."""
    for frame in frames[:-1]:
        socket.send(frame, zmq.SNDMORE, copy=len(frame) < ZERO_COPY_MIN)
    last = zmq.Frame(frames[-1], track=True, copy=False, copy_threshold=0)
    return socket.send(last, 0, copy=False, track=True)


def _tracker_done(tracker: Any) -> bool:
    return tracker.done


def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None elsewhere.  Why: the replies of a client that read nothing
    are large buffers freed all at once when it goes; glibc keeps freed heap memory for reuse
    (after the first large free it serves such buffers from the heap, not from ``mmap``), so the
    broker's RSS stayed at its peak long after.  Trimming returns it to the system."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class BrokerServer:
    def __init__(self, config: BrokerConfig, context: zmq.Context | None = None,
                 clock: Clock | None = None) -> None:
        self.config = config
        self.ctx = context or zmq.Context.instance()
        # The one source of time (``fabric/clock.py``): monotonic for every deadline the loop keeps
        # (poll timeout, group timers, idle connections, housekeeping's schedule), wall for dates.
        self.clock = clock or SystemClock()
        raise_nofile_limit()  # before the core sizes its file pool from it
        self.core = BrokerCore(config, read(self.clock))
        self.stopping = threading.Event()
        limits = config.limits
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)  # a vanished client's reply is dropped
        self.router.setsockopt(zmq.SNDHWM, limits.connection_replies_queued_max)
        self.router.setsockopt(zmq.RCVHWM, limits.connection_requests_queued_max)
        # ZeroMQ drops (disconnects) a peer sending a frame beyond this.  Our own limits are lower,
        # so a moderately oversized frame still gets a FRAME_TOO_LARGE reply; only absurd ones
        # are cut off before they can use the broker's memory.
        self.router.setsockopt(zmq.MAXMSGSIZE, 2 * max(limits.batch_bytes_max, limits.header_frame_bytes_max))
        self.router.bind(config.endpoint)
        # Accepted and closed connections, for the connection limit (connections.py)
        self.monitor = self.router.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        endpoint = self.router.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.port = int(endpoint.rsplit(":", 1)[1])
        self.core.advertised_port = self.port
        self.cluster = None  # a cluster member's controller link and replication (cluster_node.py)
        if getattr(config, "clustered", False):
            from .cluster_handlers import install
            from .cluster_node import ClusterNode
            self.cluster = ClusterNode(self.core, self.ctx, read(self.clock))
            self.core.cluster = self.cluster
            self.core.leadership.follow_controller(self.cluster.replicas)  # roles come from the controller now
            self.cluster.on_image = self.core.apply_image
            install(self.core)
        self.stats_exchange: StatsExchange | None = None
        self.metrics_endpoint: MetricsEndpoint | None = None
        if config.metrics_port:
            self.stats_exchange = StatsExchange()
            self.metrics_endpoint = MetricsEndpoint(config.host, config.metrics_port, self.stats_exchange)
        self._trim = _malloc_trim()
        self._late: Outbox = []
        # Replies waiting for an fsync; the flusher wakes the loop through this socketpair
        self.durable = DurableReplies(limits.inflight_requests_max)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.flusher = Flusher(self.core, config.flush_check_interval_ms, self.clock, self._wake)
        self.compactor = Compactor(self.core, config.compaction_check_interval_ms, self.clock)

    def install_signal_handlers(self) -> None:
        def stop(signum: int, frame: Any) -> None:
            log.info("signal %d: stopping", signum)
            self.stopping.set()
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def _wake(self) -> None:
        """(flusher thread) A job is done: make the loop's poll return."""
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # full: the loop has wake-ups pending already (or it is closing)

    def _synced(self) -> None:
        """Release the replies whose fsyncs the flusher finished, in order per connection."""
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        while True:
            try:
                job, failed = self.flusher.completed.get_nowait()
            except queue.Empty:
                return
            done = [(k.topic, k.partition, plog, end) for k, (plog, end) in job.logs.items() if k not in failed]
            woken = self.core.synced(done, read(self.clock))
            self._transmit(self.durable.flushed(job, failed))  # (already in order: not routed again)
            self._send(woken)

    def _flush_now(self, reply: Reply) -> Reply:
        """Fsync ``reply``'s logs on the loop: the durable purgatory is full (or the broker stops)."""
        done = []
        for topic, p, plog in reply.flush:
            try:
                timed_flush(plog, self.core.metrics.fsync)
            except Exception as exc:
                log.error("fsync of %s-%d: %s", topic, p, exc)
                err = FabricError("STORAGE_ERROR", f"the batch was written but could not be made durable: {exc}")
                return Reply(error_reply(reply.header.get("op"), reply.header.get("cid"), err))
            done.append((topic, p, plog, plog.end_offset))
        self._late.extend(self.core.synced(done, read(self.clock)))
        return reply

    def _handoff(self) -> None:
        """End of a turn: the logs this turn's held replies wait for go to the flusher, in one job."""
        job = self.durable.handoff()
        if job is not None:
            self.flusher.submit(job)

    def _send(self, outbox: Outbox) -> None:
        if not outbox:
            return
        self._transmit(self.durable.route(outbox, self._flush_now))
        if self._late:  # fetches woken by an fsync done on the spot
            late, self._late = self._late, []
            self._send(late)

    def _transmit(self, outbox: Outbox) -> None:
        flow = self.core.flow
        router = self.router
        for peer, reply in outbox:
            parts = [peer, encode(reply.header)]
            parts.extend(reply.frames)
            nbytes = sum(map(len, parts))
            try:
                if flow.needs_mark(peer, nbytes):  # (flow.py: which replies carry a tracker, and why)
                    flow.sent(peer, nbytes, _send_tracked(router, parts))
                else:
                    send_frames(router, parts, copy=False)
                    flow.sent(peer, nbytes)
            except zmq.ZMQError as exc:
                log.warning("dropping reply to %s: %s", peer.hex(), exc)

    def _busy(self, peers: list[bytes]) -> bool:
        """Whether a connection carrying ``peers`` waits for data (not idle though silent)."""
        parked = self.core.fetcher.parked
        return any([parked(p) for p in peers])

    def _connection_events(self, now: int) -> None:
        """Count connections; on one over ``connections_max``, let it replace an idle one or
        refuse it (``connections.py``)."""
        gate = self.core.connections
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            fd = int(event["value"])
            if event["event"] == zmq.EVENT_ACCEPTED:
                verdict = gate.accepted(fd, now, self._busy)
                for old in verdict.close:
                    _shut_down(old)
                if verdict.close:
                    log.debug("connection limit (%d) reached: a new connection replaced one idle for %d ms or more",
                              gate.limit, gate.replace_idle_ms)
                if not verdict.keep:
                    if not verdict.tell:
                        _shut_down(fd)
                    if gate.refused_total % 100 == 1:  # (the first, then every 100th: a storm stays readable)
                        log.warning("connection limit (%d) reached, no idle connection to replace: refused a new "
                                    "connection (%d so far)", gate.limit, gate.refused_total)
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                for peer in gate.disconnected(fd):
                    self._send(self.core.peer_gone(peer))
                    self.core.flow.forget(peer)  # (what was just sent to it goes too)

    def _tell_refused(self, peer: bytes, frames: list, fd: int, now: int) -> None:
        """A request on a refused connection: answered TOO_MANY_CONNECTIONS, never executed."""
        gate = self.core.connections
        err = FabricError("TOO_MANY_CONNECTIONS", f"the broker has {gate.limit} connections open and none idle "
                                                  "to replace: back off, then reconnect")
        for p, reply in self.core.refuse(peer, frames, err):
            try:
                send_frames(self.router, [p, encode(reply.header)])
            except zmq.ZMQError:
                pass
        gate.told(fd, now)

    def _connection_timers(self, now: int, idle_check: bool) -> None:
        """Shut down refused connections that were told (or whose grace is over) and, on
        ``idle_check``, connections idle longer than ``connection_idle_ms_max``."""
        gate = self.core.connections
        for fd in gate.due(now):
            _shut_down(fd)
        if idle_check:
            idle = gate.idle(now, self._busy)
            for fd in idle:
                _shut_down(fd)
            if idle:
                log.info("closed %d connections idle for %d ms or more", len(idle), gate.idle_ms_max)
            flow = self.core.flow
            if flow.marked_high - flow.marked_bytes >= TRIM_AFTER_BYTES and self._trim is not None:
                log.debug("queued reply bytes fell from %d to %d: trimming the heap", flow.marked_high,
                          flow.marked_bytes)
                self._trim(0)
            flow.marked_high = flow.marked_bytes

    def serve_forever(self) -> None:
        log.info("broker %d serving on %s, data in %s (cluster %s)", self.config.node_id,
                 self.router.getsockopt(zmq.LAST_ENDPOINT).decode(), self.config.data_dir, self.core.cluster_id)
        self.flusher.start()
        self.compactor.start()
        exchange = self.stats_exchange
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.start()
            log.info("Prometheus metrics on http://%s:%d/metrics", self.config.host, self.metrics_endpoint.port)
        scrape = StatsRequest(histograms=True)
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        wake_fd = self._wake_r.fileno()
        poller.register(wake_fd, zmq.POLLIN)
        cluster = self.cluster
        polled: set = set()
        if cluster is not None:
            cluster.start(self.port)
        monitor = self.monitor
        clock = self.clock
        mono = clock.monotonic_ms
        next_housekeeping = mono() + self.config.retention_check_interval_ms
        next_tick = 0
        next_cluster_tick = 0
        next_idle_check = 0
        core = self.core
        router = self.router
        gate = core.connections
        flow = core.flow
        try:
            while not self.stopping.is_set():
                now = mono()
                deadline = core.next_deadline_ms()
                timeout = TICK_MS if deadline is None else max(0, min(TICK_MS, deadline - now))
                if cluster is not None and cluster.sockets_changed:  # (DEALERs to leaders come and go)
                    cluster.sockets_changed = False
                    current = cluster.sockets()
                    for sock in polled.difference(current):
                        poller.unregister(sock)
                        polled.discard(sock)
                    for sock in current:
                        if sock not in polled:
                            poller.register(sock, zmq.POLLIN)
                            polled.add(sock)
                if cluster is not None:
                    timeout = min(timeout, CLUSTER_TICK_MS)
                events = poller.poll(timeout)
                flow.settle(_tracker_done)  # credit what ZeroMQ let go of since the last turn
                if events:
                    now = mono()
                    if len(events) > 1 or events[0][0] is not router:
                        if any([sock is monitor for sock, _ in events]):
                            self._connection_events(now)
                        if any([sock == wake_fd for sock, _ in events]):
                            self._synced()
                        if cluster is not None:
                            for sock, _ in events:
                                if sock in polled:
                                    self._send(cluster.on_readable(sock, read(clock)))
                    for _ in range(RECV_BURST):
                        got = recv_routed(router, core.peer_hosts)
                        if got is None:
                            break
                        msg, origin = got
                        peer = msg[0]
                        if origin is not None:  # a peer's first message
                            if origin.fd >= 0 and not gate.knows(origin.fd):
                                self._connection_events(now)  # its ACCEPTED event may wait behind it
                            if gate.refused(origin.fd):
                                self._tell_refused(peer, msg[1:], origin.fd, now)
                                continue
                            core.peer_hosts[peer] = origin.address
                            gate.peer_seen(peer, origin.fd, now)
                        else:
                            gate.touch(peer, now)
                        try:
                            replies = core.handle(peer, msg[1:], read(clock))
                        except Exception:  # last resort: handle answers every failure itself
                            log.exception("a request from %s went unanswered", peer.hex())
                            continue
                        self._send(replies)  # (those that wait for an fsync are held: durability.py)
                    self._handoff()
                turn = read(clock)
                now = turn.mono_ms
                if now >= next_tick:  # group timeouts: a walk over every member, seconds-long deadlines
                    self._send(core.tick(turn))
                    next_tick = now + GROUP_TICK_MS
                else:  # parked fetches: a heap peek, every turn (their deadlines set the poll timeout)
                    self._send(core.expire(turn))
                if exchange is not None and exchange.pending:
                    exchange.answer(lambda: core.stats_body(scrape, turn))
                if now >= next_idle_check:
                    self._connection_timers(now, True)
                    next_idle_check = now + IDLE_CHECK_MS
                elif gate.due_soon:
                    self._connection_timers(now, False)
                if now >= next_housekeeping:
                    core.housekeeping(turn)
                    next_housekeeping = now + self.config.retention_check_interval_ms
                if cluster is not None:
                    if now >= next_cluster_tick:
                        self._send(cluster.tick(turn))
                        next_cluster_tick = now + CLUSTER_TICK_MS
                    cluster.flush()  # this turn's pushes to followers, fetches and acks to leaders
                self._handoff()  # (a tick may have held a reply too)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        log.info("shutting down: answering parked fetches, flushing logs")
        self.core.shutting_down = True
        try:
            self._send(self.core.drain_waiters())
            self._transmit(self.durable.drain(self._flush_now))  # what waits for an fsync: synced here
            self._transmit(self._late)
        except Exception:
            log.exception("answering parked fetches")
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.stop()
        if self.cluster is not None:
            try:
                self._transmit(self.cluster.acks.drain(FabricError("BROKER_SHUTTING_DOWN", "the broker is stopping")))
            except Exception:
                log.exception("answering acks=all produce requests")
            self.cluster.close()
        self.compactor.stop()
        self.flusher.stop()
        self.core.close()
        if self.cluster is not None:  # every log flushed and closed: the next start may trust them (restart.py)
            try:
                mark_clean_shutdown(Path(self.config.data_dir), self.cluster.link.incarnation)
            except OSError:
                log.exception("writing the clean-shutdown marker (the next start counts as unclean)")
        self.router.disable_monitor()
        self.monitor.close(linger=0)
        self._wake_r.close()
        self._wake_w.close()
        self.router.close(linger=0)
        log.info("broker stopped")
