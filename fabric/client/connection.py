"""One client connection to one broker: a DEALER socket, correlation ids, deadlines.

Why "lazy pirate" (zguide ch. 4): ZeroMQ reconnects by itself, but a request queued on a dead
connection may be delivered much later, after we gave up on it.  So when a request times out we
close the socket (linger 0) and open a new one: a timed-out request is really gone from our
side, and late replies to old correlation ids are dropped.  Several requests may be in flight;
replies are matched by ``cid``.

``Connection(reconnect=False)`` (the producer's): one socket is one TCP connection.  libzmq does
not reconnect it, and a socket monitor reports when the connection comes up and when it ends
(``poll_events``).  Why: a DEALER that reconnects by itself delivers the requests still queued
in it over the *new* connection, while the ones already written to the old one are lost; the
broker then appends a later produce request before an earlier one, and the client, which cannot
tell which requests were lost, cannot re-send them in order.  With one connection per socket the
broker executes what it received of that connection in the order sent, a crash cuts that
sequence at one point, and nothing sent on a dead socket ever reaches a broker.

Refused connections (``TOO_MANY_CONNECTIONS``, SPEC "Flow control").  A broker at its connection
limit answers a new connection's requests with that error and closes it.  libzmq would reconnect
50 ms later, and again, and again: its reconnect back-off grows only while TCP connects fail, not
for connections accepted and then closed (and ``zmq_disconnect`` does not stop a reconnecting
endpoint in libzmq 4.3).  So on that answer a reconnecting connection closes its socket, opens a
new one and connects it only after an exponential back-off with jitter (``REFUSED_BACKOFF_MS``
doubling up to ``REFUSED_BACKOFF_MAX_MS``), reset by any other reply.  Callers that poll
``socket`` must notice that it changed.  A send during the back-off waits for its end.
``request`` resends a refused request (the broker executed none of it) until its deadline.  (A
non-reconnecting connection just sees its connection end; its owner backs off.)

A ``Connection`` is owned by one thread (ZeroMQ sockets are not thread-safe).
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from typing import Any, Sequence

import cbor2
import zmq

from ..multipart import recv_frames, send_frames, try_send_frames
from ..protocol import codec
from ..protocol.errors import exception_for
from ..protocol.messages import request_header

log = logging.getLogger("fabric.client")

# Monitor events of a non-reconnecting connection: up once the ZMTP handshake is done (a broker
# that shuts a connection as it accepts it, e.g. over its connection limit, never gets there);
# ended by a disconnect, a failed connect (EVENT_CLOSED) or a failed handshake.
_UP_EVENT = getattr(zmq, "EVENT_HANDSHAKE_SUCCEEDED", zmq.EVENT_CONNECTED)
_DEAD_EVENTS = (zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED | zmq.EVENT_MONITOR_STOPPED
                | getattr(zmq, "EVENT_HANDSHAKE_FAILED_NO_DETAIL", 0) | getattr(zmq, "EVENT_HANDSHAKE_FAILED_PROTOCOL", 0))

_cids = itertools.count(1)

TOO_MANY_CONNECTIONS = 27  # the error code of a refused connection (fabric.protocol.errors)
REFUSED_BACKOFF_MS = 100  # the first wait after a refusal; it doubles with each refusal in a row ...
REFUSED_BACKOFF_MAX_MS = 5000  # ... up to this


class ClientError(Exception):
    """A failure on the client side (no broker reply to speak of)."""


class RequestTimeoutError(ClientError, TimeoutError):
    """No reply within the timeout: the broker is unreachable, stopped, or overloaded."""


class ClosedError(ClientError):
    """The producer/consumer/admin was closed."""


def parse_bootstrap(bootstrap: str | Sequence[str]) -> list[str]:
    """``"host:port,host2:port"`` or ``["tcp://host:port"]`` -> ZeroMQ endpoints."""
    items = bootstrap.split(",") if isinstance(bootstrap, str) else list(bootstrap)
    out = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        if "://" not in item:
            if ":" not in item:
                raise ValueError(f"bootstrap address {item!r} needs a port, like 127.0.0.1:7171")
            item = "tcp://" + item
        out.append(item)
    if not out:
        raise ValueError("no bootstrap address given")
    return out


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class Connection:
    def __init__(self, endpoint: str, ctx: zmq.Context | None = None, client_id: str = "fabric-python",
                 *, reconnect: bool = True, connect_timeout_ms: int = 30_000) -> None:
        self.endpoint = endpoint
        self.ctx = ctx or zmq.Context.instance()
        self.client_id = client_id
        self.reconnect = reconnect
        self.connect_timeout_ms = connect_timeout_ms
        self.socket: zmq.Socket | None = None
        self.monitor: zmq.Socket | None = None  # reconnect=False: the socket's event stream
        self.up = False  # reconnect=False: the TCP connection is established and has not ended
        self.dead = False  # reconnect=False: the connection ended, or never came up: reset()
        self.was_up = False  # reconnect=False: the connection came up at some point
        self.refusals = 0  # TOO_MANY_CONNECTIONS answers in a row
        self._reconnect_at: int | None = None  # disconnected after a refusal: connect again then
        self._open()

    def _open(self, connect: bool = True) -> None:
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 10_000)
        s.setsockopt(zmq.RCVHWM, 10_000)
        if self.reconnect:
            s.setsockopt(zmq.RECONNECT_IVL, 50)
            s.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        else:
            s.setsockopt(zmq.RECONNECT_IVL, -1)  # never: a new connection is a new socket
            s.setsockopt(zmq.CONNECT_TIMEOUT, max(1, self.connect_timeout_ms))
            self.monitor = s.get_monitor_socket(_UP_EVENT | _DEAD_EVENTS)
            self.up = self.dead = self.was_up = False
        if connect:
            s.connect(self.endpoint)
        self.socket = s

    def poll_events(self) -> bool:
        """Read the monitor's waiting events (``reconnect=False``); True if ``up`` or ``dead``
        changed.  Never waits."""
        changed = False
        while self.monitor is not None and (msg := recv_frames(self.monitor)) is not None:
            event = int.from_bytes(bytes(msg[0])[:2], "little")  # frame 0: event (16 bits), value (32)
            if event & _UP_EVENT:
                changed |= not self.up
                self.up = self.was_up = True
            elif event & _DEAD_EVENTS:
                changed |= not self.dead
                self.up, self.dead = False, True
        return changed

    def try_send_templated(self, template: codec.HeaderTemplate, frames: Sequence[bytes] = ()) -> int | None:
        """``send_templated`` that never waits: None if the socket cannot take the request now
        (its connection ended and it does not reconnect, or its high-water mark is reached)."""
        if self.socket is None:
            raise ClosedError("connection closed")
        cid = next(_cids)
        return cid if try_send_frames(self.socket, [template.with_cid(cid), *frames]) else None

    def reset(self) -> None:
        """Drop everything in flight (after a timeout or a lost connection); the caller re-sends
        what it still needs."""
        self._close_sockets()
        self._reconnect_at = None
        self._open()

    def _refused(self) -> None:
        """The broker refused this connection: stop libzmq's quick reconnects, back off."""
        if self._reconnect_at is not None or not self.reconnect:
            return  # another answer from the same refused connection, or the owner handles it
        self.refusals += 1
        backoff = min(REFUSED_BACKOFF_MAX_MS, REFUSED_BACKOFF_MS << min(self.refusals - 1, 16))
        backoff = int(backoff * random.uniform(0.5, 1.0))  # jitter: refused clients do not return together
        if self.socket is not None:
            self.socket.close(linger=0)
            self._open(connect=False)  # connected when the back-off is over
        self._reconnect_at = monotonic_ms() + backoff
        log.info("%s refused the connection (too many connections, %d in a row): reconnecting in %d ms",
                 self.endpoint, self.refusals, backoff)

    def _reconnect_when_due(self, wait_ms: int) -> bool:
        """After a refusal: connect again once the back-off is over, waiting up to ``wait_ms``
        for it; True if the socket is connected (or was never refused)."""
        if self._reconnect_at is None:
            return True
        left = self._reconnect_at - monotonic_ms()
        if left > 0:
            if wait_ms < left:
                if wait_ms > 0:
                    time.sleep(wait_ms / 1000)
                return False
            time.sleep(left / 1000)
        self._reconnect_at = None
        assert self.socket is not None
        self.socket.connect(self.endpoint)
        return True

    def close(self) -> None:
        self._close_sockets()

    def _close_sockets(self) -> None:
        self.up = False
        if self.monitor is not None:
            assert self.socket is not None
            self.socket.disable_monitor()
            self.monitor.close(linger=0)
            self.monitor = None
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None

    # -------------------------------------------------------------- async style
    def send(self, op: str, body: Any = None, frames: Sequence[bytes] = (), fields: dict | None = None) -> int:
        """Send a request; returns its correlation id.  ``body`` is a request dataclass (or None);
        ``fields`` adds raw header fields."""
        if self.socket is None:
            raise ClosedError("connection closed")
        self._reconnect_when_due(REFUSED_BACKOFF_MAX_MS)  # (a DEALER without a peer would block)
        cid = next(_cids)
        header = request_header(op, cid, body)
        if fields:
            header.update(fields)
        parts = [codec.encode(header), *frames]
        # copy=True: a memcpy of a batch costs less than pyzmq's zero-copy bookkeeping (its
        # garbage-collector thread), measured at 1 MiB batches.
        send_frames(self.socket, parts)
        return cid

    def send_templated(self, template: codec.HeaderTemplate, frames: Sequence[bytes] = ()) -> int:
        """``send`` with a header encoded once (``codec.HeaderTemplate``); returns the cid."""
        if self.socket is None:
            raise ClosedError("connection closed")
        self._reconnect_when_due(REFUSED_BACKOFF_MAX_MS)
        cid = next(_cids)
        send_frames(self.socket, [template.with_cid(cid), *frames])
        return cid

    def recv(self, timeout_ms: int) -> tuple[dict[str, Any], list] | None:
        """One reply (header, payload frames as bytes-like objects), or None after ``timeout_ms``."""
        assert self.socket is not None
        if self._reconnect_at is not None and not self._reconnect_when_due(timeout_ms):
            return None  # backing off: nothing can arrive
        if timeout_ms > 0 and not self.socket.poll(timeout_ms, zmq.POLLIN):
            return None
        msg = recv_frames(self.socket)
        if msg is None:
            return None
        # The broker's replies need none of decode_map's checks for what other encoders may send
        # (trailing bytes, key types): cbor2.loads, and a map or nothing, cost 30% less per reply.
        try:
            header = cbor2.loads(msg[0])
        except Exception as exc:  # cbor2 raises several types
            log.warning("unreadable reply from %s: %s", self.endpoint, exc)
            return None
        if type(header) is not dict:
            log.warning("unreadable reply from %s: not a CBOR map", self.endpoint)
            return None
        err = header.get("error")
        if err is not None and type(err) is dict and err.get("code") == TOO_MANY_CONNECTIONS:
            self._refused()
        elif self.refusals:
            self.refusals = 0
        return header, msg[1:]

    # -------------------------------------------------------------- sync style
    def request(self, op: str, body: Any = None, frames: Sequence[bytes] = (), timeout_ms: int = 30_000,
                fields: dict | None = None) -> tuple[dict[str, Any], list]:
        """Send and wait for the matching reply; raises the typed error of an error reply, or
        ``RequestTimeoutError``."""
        cid = self.send(op, body, frames, fields)
        deadline = monotonic_ms() + timeout_ms
        while True:
            left = deadline - monotonic_ms()
            if left <= 0:
                self.reset()
                raise RequestTimeoutError(f"no reply to {op} from {self.endpoint} within {timeout_ms} ms "
                                          "(is the broker running?)")
            got = self.recv(left)
            if got is None:
                continue
            header, payload = got
            if header.get("cid") != cid:
                if header.get("cid") is None and "error" in header:
                    raise exception_for(header["error"])
                log.debug("dropping stale reply cid=%s (waiting for %s)", header.get("cid"), cid)
                continue
            if "error" in header:
                exc = exception_for(header["error"])
                if exc.code == TOO_MANY_CONNECTIONS and self._reconnect_at is not None \
                        and self._reconnect_at < deadline:
                    # refused before anything was executed: again once the back-off is over
                    self._reconnect_when_due(self._reconnect_at - monotonic_ms())
                    cid = self.send(op, body, frames, fields)
                    continue
                exc.reply = header  # e.g. MEMBER_ID_REQUIRED carries the member id to rejoin with
                raise exc
            return header, payload
