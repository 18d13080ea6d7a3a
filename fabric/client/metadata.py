"""The client's metadata cache: partition -> leader broker, broker -> address (pure: no
sockets, time is ``now_ms``).  A group's coordinator is found by ``find_coordinator`` and kept by
its ``CoordinatorLink``, which takes the connection to it from a ``ConnectionPool``.

Why merge answers: a client may be given several bootstrap brokers that do not form one cluster
(independent brokers, each leading its own topics), and a cluster's brokers may each know only
part of it while metadata propagates.  So the cache takes ``metadata`` replies from any number of
brokers and keeps, per topic, the answer of a broker that knows it (no per-topic error);
``brokers`` of every reply are merged by ``node_id``.  A topic known to several brokers keeps the
newest answer with the highest leader epochs (SPEC §11 "Finding leaders").

A wildcard advertised host (``0.0.0.0``, ``::``, ``*`` or empty) is no address to connect to: the
host the reply came through is used instead; and a reply that lists a single broker names the one
that answered, which is reached at the address the reply came through.

Refresh rules (the shells apply them): the cache is *stale* after ``max_age_ms``, and a shell
``invalidate``\\ s it on ``NOT_LEADER`` / ``UNKNOWN_TOPIC_OR_PARTITION`` replies and lost
connections; ``version`` grows with every change so holders of a routing decision can tell it
may be outdated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WILDCARD_HOSTS = frozenset({None, "", "0.0.0.0", "*", "::"})
# the route may be wrong: refresh metadata before retrying
REFRESH_ERRORS = frozenset({"NOT_LEADER", "UNKNOWN_TOPIC_OR_PARTITION", "LEADER_NOT_AVAILABLE",
                            "FENCED_LEADER_EPOCH", "UNKNOWN_LEADER_EPOCH", "BROKER_FENCED", "BROKER_SHUTTING_DOWN"})


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """One topic as a broker described it."""

    name: str
    leaders: tuple[int, ...]  # node id of each partition's leader, by partition
    epochs: tuple[int, ...]  # leader epoch of each partition
    internal: bool = False

    @property
    def partitions(self) -> int:
        return len(self.leaders)


def host_of(endpoint: str) -> str:
    """``tcp://host:port`` -> ``host``."""
    return endpoint.split("://")[-1].rsplit(":", 1)[0]


class MetadataCache:
    def __init__(self, max_age_ms: int = 300_000) -> None:
        self.max_age_ms = max_age_ms
        self.brokers: dict[int, str] = {}  # node id -> endpoint (tcp://host:port)
        self.topics: dict[str, TopicInfo] = {}
        self.version = 0
        self.updated_ms: int | None = None  # last full refresh
        self.invalid = False

    # ------------------------------------------------------------------ updates
    def update(self, reply: dict[str, Any], via: str, now_ms: int) -> list[str]:
        """Merge one broker's ``metadata`` reply (received through endpoint ``via``); returns
        the names of the topics it described without error."""
        changed = False
        brokers = reply.get("brokers") or ()
        for b in brokers:
            host = b.get("host")
            if host in WILDCARD_HOSTS:
                host = host_of(via)
            # A reply listing one broker describes the broker that answered: reach it the way we
            # did (its advertised name may not resolve here; one broker behaves as it always did).
            endpoint = via if len(brokers) == 1 else f"tcp://{host}:{b['port']}"
            if self.brokers.get(b["node_id"]) != endpoint:
                self.brokers[b["node_id"]] = endpoint
                changed = True
        known = []
        for t in reply.get("topics") or ():
            if "error" in t:
                continue
            parts = sorted(t.get("partitions") or (), key=lambda p: p["partition"])
            info = TopicInfo(t["name"], tuple(p["leader"] for p in parts),
                             tuple(p.get("leader_epoch", 0) for p in parts), bool(t.get("internal")))
            old = self.topics.get(info.name)
            if old != info and (old is None or _not_older(info, old)):
                self.topics[info.name] = info
                changed = True
            known.append(info.name)
        if changed:
            self.version += 1
        return known

    def refreshed(self, now_ms: int) -> None:
        """A full refresh (every bootstrap broker asked) ended."""
        self.updated_ms = now_ms
        self.invalid = False

    def invalidate(self, topic: str | None = None) -> None:
        """The routes may be wrong (a NOT_LEADER answer, a lost connection): refresh before the
        next use.  With ``topic``, that topic is forgotten too (its partition count may change)."""
        self.invalid = True
        if topic is not None and self.topics.pop(topic, None) is not None:
            self.version += 1

    # ------------------------------------------------------------------ queries
    def stale(self, now_ms: int) -> bool:
        return self.invalid or self.updated_ms is None or now_ms - self.updated_ms >= self.max_age_ms

    def leader(self, topic: str, partition: int) -> int | None:
        """The node id leading the partition, or None if unknown."""
        info = self.topics.get(topic)
        if info is None or not 0 <= partition < len(info.leaders):
            return None
        return info.leaders[partition]

    def endpoint(self, node_id: int | None) -> str | None:
        return None if node_id is None else self.brokers.get(node_id)

    def partitions(self, topic: str) -> int | None:
        info = self.topics.get(topic)
        return None if info is None else info.partitions


def _not_older(new: TopicInfo, old: TopicInfo) -> bool:
    """Keep ``old`` only if every one of its leader epochs is newer (a lagging broker's answer)."""
    if len(new.epochs) != len(old.epochs):
        return True  # partitions were added (or the topic was made again): the new shape wins
    return any(n >= o for n, o in zip(new.epochs, old.epochs))
