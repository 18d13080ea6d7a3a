"""Connections by broker id, and the metadata refresh that tells which broker leads what.

``ConnectionPool``: one ``Connection`` per broker node id, opened on first use.  A pool belongs
to one reader: the code that sends on a connection also reads its replies (a DEALER's replies
come back on that socket, and a reader drops replies to cids it does not know), so the producer's
sender, the consumer, an ``Admin`` and each coordinator link keep pools of their own.

``Cluster``: the bootstrap brokers, a ``MetadataCache`` and a pool.  ``refresh`` asks *every*
bootstrap broker for metadata and merges the answers (see ``metadata``): with one bootstrap
broker that is one request, as before; with several independent brokers each topic is routed to
the broker that leads it.  Topics are auto-created (when asked) only if no broker knows them, by
the first bootstrap broker (in the order given) that allows it, so a topic is never made twice.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Sequence

import zmq

from ..protocol.errors import exception_for
from ..protocol.messages import MetadataRequest
from .connection import ClientError, Connection, RequestTimeoutError, monotonic_ms
from .metadata import MetadataCache

log = logging.getLogger("fabric.client")


class ConnectionPool:
    """Request/reply connections keyed by broker node id (owned by one thread)."""

    def __init__(self, ctx: zmq.Context | None = None, client_id: str = "fabric-python") -> None:
        self.ctx = ctx or zmq.Context.instance()
        self.client_id = client_id
        self._conns: dict[Any, Connection] = {}

    def get(self, key: Any, endpoint: str) -> Connection:
        """The connection to broker ``key`` at ``endpoint`` (a new one if its address changed)."""
        conn = self._conns.get(key)
        if conn is not None and conn.endpoint == endpoint:
            return conn
        if conn is not None:
            conn.close()
        conn = self._conns[key] = Connection(endpoint, self.ctx, self.client_id)
        return conn

    def find(self, endpoint: str) -> Connection | None:
        """An open connection to ``endpoint``, whatever its key."""
        for conn in self._conns.values():
            if conn.endpoint == endpoint:
                return conn
        return None

    def discard(self, conn: Connection) -> None:
        """Close ``conn`` and forget it, whatever its key."""
        for key, c in list(self._conns.items()):
            if c is conn:
                del self._conns[key]
        conn.close()

    def drop(self, key: Any) -> None:
        conn = self._conns.pop(key, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


class Cluster:
    """Bootstrap brokers + metadata cache + connection pool, for one thread's requests."""

    def __init__(self, endpoints: Sequence[str], *, ctx: zmq.Context | None = None, client_id: str = "fabric-python",
                 timeout_ms: int = 30_000, metadata_max_age_ms: int = 300_000) -> None:
        if not endpoints:
            raise ValueError("no bootstrap endpoints")
        self.endpoints = list(endpoints)
        self.timeout_ms = timeout_ms
        self.cache = MetadataCache(metadata_max_age_ms)
        self.pool = ConnectionPool(ctx, client_id)

    @property
    def ctx(self) -> zmq.Context:
        return self.pool.ctx

    def bootstrap(self, i: int = 0) -> Connection:
        """The connection to bootstrap broker ``i`` (also a node's connection when it is one)."""
        endpoint = self.endpoints[i]
        return self.pool.find(endpoint) or self.pool.get(("bootstrap", endpoint), endpoint)

    def broker(self, node_id: int) -> Connection:
        """The connection to broker ``node_id`` (refreshing metadata if its address is unknown)."""
        endpoint = self.cache.endpoint(node_id)
        if endpoint is None:
            self.refresh()
            endpoint = self.cache.endpoint(node_id)
            if endpoint is None:
                raise ClientError(f"broker {node_id} is not in the metadata of {', '.join(self.endpoints)}")
        return self.pool.find(endpoint) or self.pool.get(node_id, endpoint)

    def for_topic(self, topic: str) -> Connection:
        """A connection to a broker that knows ``topic`` (its partition 0's leader), else the
        first bootstrap broker (which then answers for an unknown topic)."""
        if len(self.endpoints) == 1:
            return self.bootstrap()
        if self.cache.leader(topic, 0) is None or self.cache.stale(monotonic_ms()):
            self.refresh([topic])
        node = self.cache.leader(topic, 0)
        return self.bootstrap() if node is None else self.broker(node)

    def answering_bootstrap(self, timeout_ms: int | None = None) -> int | None:
        """The index of the bootstrap broker that answers first (all asked at once, as a
        refresh does), or None if none answers: where cluster-level requests go when the
        first bootstrap broker may be down."""
        answered: list[str] = []
        _ask(self, [(self.bootstrap(i), e) for i, e in enumerate(self.endpoints)], MetadataRequest(topics=()),
             timeout_ms or self.timeout_ms, answered)
        return self.endpoints.index(answered[0]) if answered else None

    def close(self) -> None:
        self.pool.close()

    def _ask_all(self, conns: list[tuple[Connection, str]], req: MetadataRequest,
                 timeout_ms: int) -> tuple[list[dict[str, Any]], Exception | None]:
        return _ask(self, conns, req, timeout_ms)

    # ------------------------------------------------------------------ metadata
    def refresh(self, topics: Iterable[str] | None = None, allow_auto_create: bool = False,
                timeout_ms: int | None = None) -> dict[str, Any]:
        """Ask every bootstrap broker and merge (see the module docstring); returns one
        ``metadata`` reply: ``brokers`` merged, ``topics`` in the order asked (every known topic
        when ``topics`` is None), a topic no broker knows with the first broker's error.  Raises
        the last error if no bootstrap broker answered."""
        names = None if topics is None else list(topics)
        timeout = timeout_ms or self.timeout_ms
        cache = self.cache
        single = len(self.endpoints) == 1
        req = MetadataRequest(topics=None if names is None else tuple(names),
                              allow_auto_create=allow_auto_create and single)
        replies, error = self._ask_all([(self.bootstrap(i), e) for i, e in enumerate(self.endpoints)], req, timeout)
        if not replies:
            # Every bootstrap broker is silent (dead, or cut off): any other broker the metadata
            # named may answer (a cluster outlives the brokers a client was started with).
            others = [(self.pool.find(e) or self.pool.get(n, e), e) for n, e in sorted(cache.brokers.items())
                      if e not in self.endpoints]
            if others:
                replies, error = self._ask_all(others, req, timeout)
        if not replies:
            assert error is not None
            raise error
        if names is not None and allow_auto_create and not single:
            missing = [n for n in names if n not in cache.topics]
            for i in range(len(self.endpoints)):  # in bootstrap order, until every one exists
                if not missing:
                    break
                try:
                    header, _ = self.bootstrap(i).request("metadata", MetadataRequest(
                        topics=tuple(missing), allow_auto_create=True), timeout_ms=timeout)
                except RequestTimeoutError:
                    continue
                made = set(cache.update(header, self.endpoints[i], monotonic_ms()))
                replies.append(header)
                missing = [n for n in missing if n not in made]
        cache.refreshed(monotonic_ms())
        return _merged(replies, names)


SETTLE_MS = 50  # after the first answer, how long the others may take before a refresh goes on without them


def _ask(cluster: "Cluster", conns: list[tuple[Connection, str]], req: MetadataRequest,
         timeout_ms: int, answered: list[str] | None = None) -> tuple[list[dict[str, Any]], Exception | None]:
    """``metadata`` to every connection at once; the answers that came within ``timeout_ms``
    (and at most ``SETTLE_MS`` after the first one), merged into the cache in arrival order.

    Why at once: asked one after another, a dead broker cost every refresh its whole timeout, and
    a refresh is what a client does first after a failover."""
    replies: list[dict[str, Any]] = []
    error: Exception | None = None
    pending: dict[Connection, tuple[str, int]] = {}
    for conn, endpoint in conns:
        try:
            pending[conn] = (endpoint, conn.send("metadata", req))
        except (ClientError, zmq.ZMQError) as exc:
            error = exc
    start = monotonic_ms()
    deadline = start + timeout_ms
    poller = zmq.Poller()
    for conn in pending:
        poller.register(conn.socket, zmq.POLLIN)
    while pending:
        now = monotonic_ms()
        if now >= deadline:
            break
        ready = dict(poller.poll(max(1, deadline - now)))
        for conn in [c for c in pending if c.socket in ready]:
            got = conn.recv(0)
            if got is None:
                continue
            header, _ = got
            endpoint, cid = pending[conn]
            if header.get("cid") != cid:
                continue  # a stale reply to an older request
            poller.unregister(conn.socket)
            del pending[conn]
            if "error" in header:
                error = exception_for(header["error"])
                continue
            cluster.cache.update(header, endpoint, monotonic_ms())
            replies.append(header)
            if answered is not None:
                answered.append(endpoint)
            deadline = min(deadline, monotonic_ms() + SETTLE_MS)
    for conn, (endpoint, _) in pending.items():
        log.info("metadata from %s: no answer within the refresh", endpoint)
        if error is None:
            error = RequestTimeoutError(f"no reply to metadata from {endpoint} within {timeout_ms} ms")
    return replies, error


def _merged(replies: list[dict[str, Any]], names: list[str] | None) -> dict[str, Any]:
    """One ``metadata`` reply out of several brokers' (a later reply's topic entry wins over an
    error entry; the first answer's cluster fields are kept)."""
    if len(replies) == 1:
        return replies[0]
    brokers: dict[int, dict[str, Any]] = {}
    topics: dict[str, dict[str, Any]] = {}
    for rep in replies:
        for b in rep.get("brokers") or ():
            brokers.setdefault(b["node_id"], b)
        for t in rep.get("topics") or ():
            old = topics.get(t["name"])
            if old is None or ("error" in old and "error" not in t):
                topics[t["name"]] = t
    order = names if names is not None else sorted(topics)
    out = dict(replies[0])
    out["brokers"] = [brokers[n] for n in sorted(brokers)]
    out["topics"] = [topics[n] for n in order if n in topics]
    return out
