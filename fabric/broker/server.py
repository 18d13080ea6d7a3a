"""The broker's I/O shell: one ZeroMQ ROUTER, one poll loop (plus the flusher and compactor
threads of ``background.py``).

Loop turn: poll (until the next long-poll deadline, at most ``TICK_MS``), drain up to
``RECV_BURST`` requests and hand each to ``BrokerCore.handle``.  Replies leave at once, unless a
reply of this turn asked for an fsync: from then on replies wait for the end of the turn, when
every log that asked is fsynced once however many batches it got (group commit), and they go
out in order.  (Holding every reply to the end of a burst made an event wait for the requests
behind it: most of the broker's share of end-to-end latency at 10,000 events/s.)  Between turns:
expire long-polls, every ``GROUP_TICK_MS`` the group timeouts (``core.tick`` walks every member,
too much for every turn of a loop turning thousands of times a second) and, every
``retention_check_interval_ms``, housekeeping.

The ROUTER's monitor socket reports accepted and closed connections; ``connections.py`` decides
which to keep (``limits.connections_max``).

Interval fsync (``flush_interval_ms``) and compaction happen on separate threads so a slow disk
never stalls the loop.  SIGTERM/SIGINT stop the loop
after the current turn: parked fetches are answered, logs flushed and closed (clean-shutdown
marker), sockets closed with linger 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from ..multipart import recv_routed, send_frames
from ..protocol.codec import encode
from .config import BrokerConfig
from .background import Compactor, Flusher, timed_flush, wall_ms
from ..protocol.messages import StatsRequest
from .core import BrokerCore, Outbox
from .descriptors import raise_nofile_limit
from .prometheus import MetricsEndpoint, StatsExchange

log = logging.getLogger("fabric.broker.server")

TICK_MS = 100
RECV_BURST = 256
GROUP_TICK_MS = 10  # how often a busy loop runs the full ``core.tick`` (group timeouts)


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


class BrokerServer:
    def __init__(self, config: BrokerConfig, context: zmq.Context | None = None) -> None:
        self.config = config
        self.ctx = context or zmq.Context.instance()
        raise_nofile_limit()  # before the core sizes its file pool from it
        self.core = BrokerCore(config, wall_ms())
        self.stopping = threading.Event()
        limits = config.limits
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)  # a vanished client's reply is dropped
        self.router.setsockopt(zmq.SNDHWM, 100_000)
        self.router.setsockopt(zmq.RCVHWM, 100_000)
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
        self.stats_exchange: StatsExchange | None = None
        self.metrics_endpoint: MetricsEndpoint | None = None
        if config.metrics_port:
            self.stats_exchange = StatsExchange()
            self.metrics_endpoint = MetricsEndpoint(config.host, config.metrics_port, self.stats_exchange)
        self.flusher = Flusher(self.core, config.flush_check_interval_ms)
        self.compactor = Compactor(self.core, config.compaction_check_interval_ms)

    def install_signal_handlers(self) -> None:
        def stop(signum: int, frame: Any) -> None:
            log.info("signal %d: stopping", signum)
            self.stopping.set()
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def _send(self, outbox: Outbox) -> None:
        if not outbox:
            return
        synced: set[int] | None = None
        for _, reply in outbox:
            if reply.flush:
                if synced is None:
                    synced = set()
                for plog in reply.flush:
                    if id(plog) not in synced:
                        synced.add(id(plog))
                        timed_flush(plog, self.core.metrics.fsync)
        for peer, reply in outbox:
            parts = [peer, encode(reply.header)]
            parts.extend(reply.frames)
            try:
                send_frames(self.router, parts, copy=False)
            except zmq.ZMQError as exc:  # e.g. HWM reached for a peer that stopped reading
                log.warning("dropping reply to %s: %s", peer.hex(), exc)

    def _connection_events(self) -> None:
        """Count connections; close an accepted one over ``connections_max`` right away."""
        gate = self.core.connections
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            fd = int(event["value"])
            if event["event"] == zmq.EVENT_ACCEPTED:
                if not gate.accepted(fd):
                    _shut_down(fd)
                    if gate.refused_total % 100 == 1:  # (the first, then every 100th: a storm stays readable)
                        log.warning("connection limit (%d) reached: closed a new connection (%d so far)",
                                    gate.limit, gate.refused_total)
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                for peer in gate.disconnected(fd):
                    self._send(self.core.peer_gone(peer))

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
        monitor = self.monitor
        next_housekeeping = wall_ms() + self.config.retention_check_interval_ms
        next_tick = 0
        core = self.core
        router = self.router
        try:
            while not self.stopping.is_set():
                now = wall_ms()
                deadline = core.next_deadline_ms()
                timeout = TICK_MS if deadline is None else max(0, min(TICK_MS, deadline - now))
                events = poller.poll(timeout)
                if events:
                    if len(events) > 1 or events[0][0] is monitor:
                        self._connection_events()
                    outbox: Outbox = []
                    for _ in range(RECV_BURST):
                        got = recv_routed(router, core.peer_hosts)
                        if got is None:
                            break
                        msg, origin = got
                        if origin is not None:  # a peer's first message
                            core.peer_hosts[msg[0]] = origin.address
                            core.connections.peer_seen(msg[0], origin.fd)
                        try:
                            replies = core.handle(msg[0], msg[1:], wall_ms())
                        except Exception:  # last resort: handle answers every failure itself
                            log.exception("a request from %s went unanswered", msg[0].hex())
                            continue
                        if outbox or any([reply.flush for _, reply in replies]):
                            outbox.extend(replies)  # an fsync is due this turn: these wait for it
                        else:
                            self._send(replies)  # nothing to make durable first: answer now
                    self._send(outbox)
                now = wall_ms()
                if now >= next_tick:  # group timeouts: a walk over every member, seconds-long deadlines
                    self._send(core.tick(now))
                    next_tick = now + GROUP_TICK_MS
                else:  # parked fetches: a heap peek, every turn (their deadlines set the poll timeout)
                    self._send(core.expire(now))
                if exchange is not None and exchange.pending:
                    exchange.answer(lambda: core.stats_body(scrape, now))
                if now >= next_housekeeping:
                    core.housekeeping(now)
                    next_housekeeping = now + self.config.retention_check_interval_ms
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        log.info("shutting down: answering parked fetches, flushing logs")
        self.core.shutting_down = True
        try:
            self._send(self.core.drain_waiters())
        except Exception:
            log.exception("answering parked fetches")
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.stop()
        self.compactor.stop()
        self.flusher.stop()
        self.core.close()
        self.router.disable_monitor()
        self.monitor.close(linger=0)
        self.router.close(linger=0)
        log.info("broker stopped")
