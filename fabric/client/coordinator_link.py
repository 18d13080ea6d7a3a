"""``CoordinatorLink``: one thread's line to the coordinator of one consumer group.

Why a module of its own: the consumer's poll thread, its heartbeat thread and ``Admin`` all reach
a group's coordinator the same way (SPEC-groups.md): ask any bootstrap broker ``find_coordinator``,
send to the broker it names, and on ``NOT_COORDINATOR`` / ``COORDINATOR_NOT_AVAILABLE`` or a
timeout look it up again, back off and retry.

Several requests may be in flight at once (a parked ``join_group``, async commits, a blocking
offset fetch), so replies go to an inbox keyed by ``cid`` until their owner ``take``\\ s them:
waiting for one reply never drops another.  When the connection is dropped (coordinator moved,
or a timeout: lazy pirate, see connection.py) every in-flight request is gone; ``epoch`` counts
those drops so owners of async requests can tell their reply will never come.

Connections come from a ``ConnectionPool``: the coordinator's is the pool's connection to the
broker ``find_coordinator`` names (by node id), so an ``Admin`` lends the link its own pool and
reuses its connections (its calls and the link's never overlap: both wait for their reply on the
same thread).  A link that is given no pool makes its own and closes it with itself; a link whose
owner reads other replies on the same thread (the consumer's) must not share, since a reader
drops replies to cids it does not know.

A link holds ZeroMQ sockets, so it is owned by one thread.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Sequence

import zmq

from ..groups.messages import FindCoordinatorRequest
from ..protocol.errors import FabricError, exception_for
from .connection import ClosedError, Connection, RequestTimeoutError, monotonic_ms
from .metadata import WILDCARD_HOSTS, host_of
from .pool import ConnectionPool

log = logging.getLogger("fabric.client.coordinator")

RETRY_BACKOFF_MS_MIN = 50
RETRY_BACKOFF_MS_MAX = 1000
INBOX_MAX = 1000  # unclaimed replies kept (replies to requests their owner gave up on)
WAIT_SLICE_MS = 100  # blocking waits wake this often to notice ``stop``
COORDINATOR_MOVED = frozenset({"NOT_COORDINATOR", "COORDINATOR_NOT_AVAILABLE"})


def backoff_ms(attempt: int) -> int:
    """50, 100, 200, ... ms, at most ``RETRY_BACKOFF_MS_MAX``."""
    return min(RETRY_BACKOFF_MS_MIN << min(max(attempt - 1, 0), 10), RETRY_BACKOFF_MS_MAX)


def reply_error(header: dict[str, Any]) -> FabricError:
    """The typed exception of an error reply, with the reply attached (``exc.reply``)."""
    exc = exception_for(header["error"])
    exc.reply = header
    return exc


class CoordinatorLink:
    def __init__(self, endpoints: Sequence[str], group_id: str, *, client_id: str = "fabric-python",
                 request_timeout_ms: int = 30_000, ctx: zmq.Context | None = None,
                 stop: threading.Event | None = None, pool: ConnectionPool | None = None) -> None:
        if not endpoints:
            raise ValueError("no bootstrap endpoints")
        self.endpoints = list(endpoints)
        self.group_id = group_id
        self.client_id = client_id
        self.request_timeout_ms = request_timeout_ms
        self.ctx = pool.ctx if pool is not None else ctx or zmq.Context.instance()
        self._pool = pool or ConnectionPool(self.ctx, client_id)
        self._own_pool = pool is None
        self.stop = stop or threading.Event()  # set by the owner to abort blocking waits
        self.epoch = 0  # grows each time in-flight requests are dropped
        self._conn: Connection | None = None
        self.node_id: int | None = None  # the coordinator's, as find_coordinator named it
        self._boot: Connection | None = None
        self._boot_index = 0
        self._inbox: dict[int, dict[str, Any]] = {}

    @property
    def endpoint(self) -> str | None:
        return self._conn.endpoint if self._conn is not None else None

    @property
    def socket(self) -> zmq.Socket | None:
        """The socket replies arrive on (to register with a poller), or None while unknown."""
        return self._conn.socket if self._conn is not None else None

    # ------------------------------------------------------------------ lookup
    def ensure(self, deadline_ms: int, raise_timeout: bool = True) -> bool:
        """Look the coordinator up unless known.  False (or the error, with ``raise_timeout``) if
        it cannot be found by ``deadline_ms``; a non-retriable error is always raised."""
        attempt = 0
        while self._conn is None:
            endpoint = self.endpoints[self._boot_index % len(self.endpoints)]
            try:
                if self._boot is None or self._boot.endpoint != endpoint:
                    self._boot = self._pool.find(endpoint) or self._pool.get(("bootstrap", endpoint), endpoint)
                timeout = max(WAIT_SLICE_MS, min(self.request_timeout_ms, deadline_ms - monotonic_ms()))
                header, _ = self._boot.request("find_coordinator", FindCoordinatorRequest(group_id=self.group_id),
                                               timeout_ms=timeout)
                host = header.get("host")
                if host in WILDCARD_HOSTS:  # a wildcard is no address: use the one we used
                    host = host_of(endpoint)
                target = f"tcp://{host}:{header['port']}"
                self.node_id = header.get("node_id")
                self._conn = self._pool.find(target) or self._pool.get(self.node_id, target)
                log.debug("group %s: coordinator is node %s at %s", self.group_id, header.get("node_id"),
                          self._conn.endpoint)
            except (RequestTimeoutError, FabricError) as exc:
                if isinstance(exc, FabricError) and not exc.retriable:
                    raise
                self._boot_index += isinstance(exc, RequestTimeoutError)  # try the next bootstrap broker
                attempt += 1
                if monotonic_ms() >= deadline_ms or self.stop.is_set():
                    if raise_timeout:
                        raise
                    log.info("group %s: coordinator lookup failed: %s", self.group_id, exc)
                    return False
                self.stop.wait(min(backoff_ms(attempt), max(0, deadline_ms - monotonic_ms())) / 1000)
        return True

    def forget(self) -> None:
        """The coordinator moved (or is unreachable): drop the connection and what is in flight."""
        if self._conn is not None:
            self._pool.discard(self._conn)  # (closed: what is in flight on it is gone)
            if self._boot is self._conn:
                self._boot = None
            self._conn = None
        self._inbox.clear()
        self.epoch += 1

    def reset(self) -> None:
        """After a timeout: a fresh socket to the same coordinator; in-flight requests are gone."""
        endpoint, node_id = self.endpoint, self.node_id
        self.forget()
        if endpoint is not None:
            self._conn = self._pool.get(node_id, endpoint)

    def close(self) -> None:
        """Close the link's connections (a lent pool's stay open)."""
        if self._own_pool:
            self.forget()
            self._pool.close()
        else:  # the lender keeps using its connections; late replies to us it drops as stale
            self._conn = None
            self._inbox.clear()
            self.epoch += 1
        self._boot = None

    # ------------------------------------------------------------------ async style
    def send(self, op: str, body: Any) -> int:
        """Send to the known coordinator (call ``ensure`` first); returns the cid."""
        if self._conn is None:
            raise ClosedError(f"group {self.group_id!r}: no coordinator connection")
        return self._conn.send(op, body)

    def pump(self, timeout_ms: int) -> bool:
        """Move arrived replies into the inbox, waiting up to ``timeout_ms`` for the first."""
        if self._conn is None:
            return False
        got = self._conn.recv(timeout_ms)
        n = 0
        while got is not None:
            header = got[0]
            if isinstance(header.get("cid"), int):
                self._inbox[header["cid"]] = header
                n += 1
            got = self._conn.recv(0)
        while len(self._inbox) > INBOX_MAX:
            del self._inbox[next(iter(self._inbox))]
        return n > 0

    def has(self, cid: int) -> bool:
        return cid in self._inbox

    def take(self, cid: int) -> dict[str, Any] | None:
        return self._inbox.pop(cid, None)

    # ------------------------------------------------------------------ sync style
    def request(self, op: str, body: Any, timeout_ms: int | None = None) -> dict[str, Any]:
        """Send and wait, retrying coordinator moves with backoff until the deadline.  Raises the
        typed error of an error reply, ``RequestTimeoutError``, or ``ClosedError`` once ``stop``."""
        deadline = monotonic_ms() + (timeout_ms or self.request_timeout_ms)
        attempt = 0
        while True:
            self.ensure(deadline)
            cid = self.send(op, body)
            while not self.has(cid):
                if self.stop.is_set():
                    raise ClosedError(f"group {self.group_id!r}: stopped while waiting for {op}")
                left = deadline - monotonic_ms()
                if left <= 0:
                    endpoint = self.endpoint
                    self.forget()  # maybe it moved or died: look it up again next time
                    raise RequestTimeoutError(f"no reply to {op} from {endpoint} (coordinator of group "
                                              f"{self.group_id!r}) within the timeout (is the broker running?)")
                self.pump(min(left, WAIT_SLICE_MS))
            header = self.take(cid)
            assert header is not None
            if "error" not in header:
                return header
            err = reply_error(header)
            if err.name not in COORDINATOR_MOVED or monotonic_ms() >= deadline:
                raise err
            log.info("group %s: %s: %s; looking the coordinator up again", self.group_id, op, err.name)
            self.forget()
            attempt += 1
            self.stop.wait(min(backoff_ms(attempt), max(0, deadline - monotonic_ms())) / 1000)
