"""Which broker the consumer fetches each partition from: one ``FetchPipeline`` per leader.

Why a module of its own: routing is the consumer's only cluster concern, and it changes at other
moments than fetching does: when the assignment changes, when the metadata changes, after a
``NOT_LEADER`` / ``UNKNOWN_TOPIC_OR_PARTITION`` answer or a fetch timeout, and every
``metadata_max_age_ms`` (the last one only when there is more than one broker; one broker is
one pipeline, as it always was).  A partition whose leader is unknown is read from the first
bootstrap broker, which then says what it knows.  A single bootstrap address may be one broker of
a cluster: its first NOT_LEADER answer is what says so, and it makes the consumer look the leaders
up (a consumer given one address of a cluster used to fetch every partition from that broker
forever, each fetch refused by return, since it took one address for one broker and never asked).
A partition moving to another pipeline is safe
at any time: the old pipeline drops data for partitions it no longer reads, and a standing fetch
for the old set is forgotten at its next ``fill``.

Runs on the consumer's thread.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import zmq

from ..protocol.errors import FabricError
from .admin import Admin
from .connection import ClientError, monotonic_ms
from .fetch_pipeline import FetchPipeline, PartitionState
from .group import TopicPartition

log = logging.getLogger("fabric.consumer")

REFRESH_INTERVAL_MS_MIN = 1000  # leaders are looked up at most this often


class FetchRouter:
    def __init__(self, endpoints: Sequence[str], admin: Admin, make_pipeline: Callable[[str], FetchPipeline],
                 metadata_max_age_ms: int) -> None:
        self.endpoints = list(endpoints)
        self.admin = admin
        self.meta = admin.cluster.cache
        self.make_pipeline = make_pipeline
        self.metadata_max_age_ms = metadata_max_age_ms
        self.by_endpoint: dict[str, FetchPipeline] = {}  # by the broker's address
        self._pipeline(self.endpoints[0])  # connecting at once, as the consumer always did
        self.pipelines = list(self.by_endpoint.values())
        self.routed_version = -1  # the metadata version partitions were routed for (-1: route again)
        self.next_route_ms: float = float("inf")  # several brokers: route again then (metadata age)
        self._refresh_at = 0  # no metadata refresh before then
        self._poller: zmq.Poller | None = None
        self._poller_sockets: tuple[Any, ...] = ()

    def _pipeline(self, endpoint: str) -> FetchPipeline:
        f = self.by_endpoint.get(endpoint)
        if f is None:
            f = self.by_endpoint[endpoint] = self.make_pipeline(endpoint)
        return f

    @property
    def several(self) -> bool:
        return len(self.endpoints) > 1 or len(self.meta.brokers) > 1

    def invalidate(self) -> None:
        """Route again before the next fetch (the assignment or the metadata changed)."""
        self.routed_version = -1

    def leaders_may_have_moved(self, refused: bool = True) -> None:
        """A fetch said NOT_LEADER / UNKNOWN_TOPIC_OR_PARTITION (``refused``), or timed out."""
        if refused or self.several:  # a refusal, even from the only address known: it may be one of several
            self.meta.invalidate()
            self.routed_version = -1

    def route(self, parts: dict[TopicPartition, PartitionState]) -> None:
        """Give each pipeline the partitions its broker leads."""
        meta = self.meta
        now = monotonic_ms()
        several = self.several
        if (several or meta.invalid) and now >= self._refresh_at and \
                (meta.stale(now) or any(meta.leader(*tp) is None for tp in parts)):
            self._refresh(now, sorted({tp.topic for tp in parts}))
        groups: dict[str, dict[TopicPartition, PartitionState]] = {e: {} for e in self.by_endpoint}
        first = self.endpoints[0]
        for tp, st in parts.items():
            endpoint = meta.endpoint(meta.leader(tp.topic, tp.partition)) or first
            if st.routed_to != endpoint:  # a new leader: no back-off left from the old one's errors
                st.routed_to, st.retry_at_ms = endpoint, 0
            group = groups.get(endpoint)
            if group is None:
                group = groups[endpoint] = {}
                self._pipeline(endpoint)
            group[tp] = st
        for endpoint, mine in groups.items():
            self.by_endpoint[endpoint].set_partitions(mine)
        self.pipelines = list(self.by_endpoint.values())
        self.routed_version = meta.version
        self.next_route_ms = now + self.metadata_max_age_ms if several else float("inf")

    def _refresh(self, now: int, topics: list[str]) -> None:
        self._refresh_at = now + min(self.metadata_max_age_ms, REFRESH_INTERVAL_MS_MIN)
        if not topics:
            return
        try:
            self.admin.metadata(topics)
        except (FabricError, ClientError) as exc:
            log.info("metadata refresh failed: %s", exc)

    def wait(self, timeout_ms: int, extra: zmq.Socket | None) -> list[FetchPipeline]:
        """Wait for a fetch reply or one on ``extra`` (the group's socket); the pipelines whose
        socket is readable.  The poller is kept while the sockets stay the same (``Socket.poll``
        builds one per call)."""
        pipelines = self.pipelines
        sockets = tuple(f.conn.socket for f in pipelines) + (extra,)
        if self._poller is None or self._poller_sockets != sockets:
            self._poller = zmq.Poller()
            for s in sockets:
                if s is not None:
                    self._poller.register(s, zmq.POLLIN)
            self._poller_sockets = sockets
        ready = self._poller.poll(timeout_ms)
        if not ready:
            return []
        if len(pipelines) == 1:
            return pipelines if any(s is sockets[0] for s, _ in ready) else []
        readable = {id(s) for s, _ in ready}
        return [f for f in pipelines if id(f.conn.socket) in readable]

    def close(self) -> None:
        for f in self.by_endpoint.values():
            f.close()
