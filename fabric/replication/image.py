"""The metadata image: an immutable snapshot of the cluster as the broker believes it to be.

Why an image: today the broker answers "who leads topic-p?" with "me, epoch 0" in several places
(metadata replies, produce and fetch checks, the group coordinator's offsets partition).  Each of
those reads this one object instead, so when the cluster arrives only its *source* changes: today
it is built from the local topic metadata (``from_local_topics``); later it is built by replaying
the controller's metadata log (Kafka's KRaft ``MetadataImage``, made of ``TopicsImage`` and
``ClusterImage``), and every reader keeps working.

Immutable, so a reader holds a consistent view for a whole request while a newer image is being
built; a change is a new image (``with_partition``, ``with_topic``, ``without_topic``) swapped in
by the shell in one assignment.  ``version`` orders images (later: the offset of the last metadata
record applied).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Protocol, Sized

from ..protocol.errors import FabricError

__all__ = ["BrokerInfo", "MetadataImage", "PartitionAssignment", "TopicImage", "NO_LEADER"]

NO_LEADER = -1


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    node_id: int
    host: str
    port: int
    rack: str | None = None
    pub_port: int = 0  # where it publishes the batches it leads (0: not known, a single node)
    fenced: bool = False  # the controller fenced it: it leads nothing and clients should not use it
    incarnation: int = 0  # the registered incarnation (a leader refuses its older ones' messages: KIP-903)
    decommissioned: bool = False  # an operator decommissioned it: no new replicas are placed on it

    @property
    def address(self) -> str:
        return f"tcp://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PartitionAssignment:
    """Who holds a partition and who leads it (the controller's record of it, not a replica's
    progress: that is ``PartitionState``)."""

    leader: int  # NO_LEADER while the partition is offline
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    partition_epoch: int = 0  # bumped by every controller change of this partition (leader, ISR, replicas)
    adding: tuple[int, ...] = ()  # a reassignment in progress: replicas joining (they copy the log, throttled)
    removing: tuple[int, ...] = ()  # ... and replicas leaving once every target replica is in the ISR

    def __post_init__(self) -> None:
        if self.leader != NO_LEADER and self.leader not in self.isr:
            raise ValueError(f"leader {self.leader} is not in the ISR {self.isr}")
        if not set(self.isr) <= set(self.replicas):
            raise ValueError(f"ISR {self.isr} is not a subset of the replicas {self.replicas}")
        if len(set(self.replicas)) != len(self.replicas) or not self.replicas:
            raise ValueError(f"replicas {self.replicas} must be distinct and not empty")
        if self.leader_epoch < 0:
            raise ValueError(f"leader epoch {self.leader_epoch} < 0")
        if self.partition_epoch < 0:
            raise ValueError(f"partition epoch {self.partition_epoch} < 0")


@dataclass(frozen=True, slots=True)
class TopicImage:
    name: str
    topic_id: str
    configs: Mapping[str, Any]  # the topic's overrides (read-only)
    internal: bool
    partitions: tuple[PartitionAssignment, ...]

    def partition(self, p: int) -> PartitionAssignment:
        if not 0 <= p < len(self.partitions):
            raise FabricError("UNKNOWN_TOPIC_OR_PARTITION",
                              f"topic {self.name!r} has partitions 0-{len(self.partitions) - 1}, not {p}")
        return self.partitions[p]


class LocalTopic(Protocol):
    """What ``from_local_topics`` reads of a topic (``fabric.broker.topics.Topic`` has it)."""

    name: str
    topic_id: str
    configs: dict[str, Any]
    internal: bool
    partitions: Sized


@dataclass(frozen=True)
class MetadataImage:
    brokers: Mapping[int, BrokerInfo]
    topics: Mapping[str, TopicImage]
    version: int = 0
    _by_id: Mapping[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "brokers", MappingProxyType(dict(self.brokers)))
        object.__setattr__(self, "topics", MappingProxyType(dict(self.topics)))
        object.__setattr__(self, "_by_id", MappingProxyType({t.topic_id: t.name for t in self.topics.values()}))

    # ================================================================== building
    @classmethod
    def empty(cls) -> "MetadataImage":
        return cls({}, {})

    @classmethod
    def from_local_topics(cls, topics: Iterable[LocalTopic], node: BrokerInfo, version: int = 0) -> "MetadataImage":
        """The single-node image: every partition led by ``node`` at epoch 0, replicas = ISR = [node].
        Call it with ``TopicManager.topics.values()`` after each topic change."""
        images = {}
        for t in topics:
            only = (node.node_id,)
            parts = tuple(PartitionAssignment(node.node_id, 0, only, only) for _ in range(len(t.partitions)))
            images[t.name] = TopicImage(t.name, t.topic_id, MappingProxyType(dict(t.configs)), t.internal, parts)
        return cls({node.node_id: node}, images, version)

    def with_topic(self, topic: TopicImage) -> "MetadataImage":
        return replace(self, topics={**self.topics, topic.name: topic}, version=self.version + 1)

    def without_topic(self, name: str) -> "MetadataImage":
        self.topic(name)
        return replace(self, topics={k: v for k, v in self.topics.items() if k != name}, version=self.version + 1)

    def with_partition(self, topic: str, p: int, assignment: PartitionAssignment) -> "MetadataImage":
        t = self.topic(topic)
        t.partition(p)
        parts = t.partitions[:p] + (assignment,) + t.partitions[p + 1:]
        return self.with_topic(replace(t, partitions=parts))

    def with_broker(self, broker: BrokerInfo) -> "MetadataImage":
        return replace(self, brokers={**self.brokers, broker.node_id: broker}, version=self.version + 1)

    # ================================================================== lookups
    def topic(self, name: str) -> TopicImage:
        t = self.topics.get(name)
        if t is None:
            raise FabricError("UNKNOWN_TOPIC_OR_PARTITION", f"unknown topic {name!r}")
        return t

    def topic_by_id(self, topic_id: str) -> TopicImage:
        name = self._by_id.get(topic_id)
        if name is None:
            raise FabricError("UNKNOWN_TOPIC_OR_PARTITION", f"unknown topic id {topic_id!r}")
        return self.topics[name]

    def partition(self, topic: str, p: int) -> PartitionAssignment:
        return self.topic(topic).partition(p)

    def leader_of(self, topic: str, p: int) -> BrokerInfo | None:
        """The leader's broker, or None if the partition has none (offline) or its broker is unknown."""
        leader = self.partition(topic, p).leader
        return None if leader == NO_LEADER else self.brokers.get(leader)

    def partitions_led_by(self, node_id: int) -> list[tuple[str, int]]:
        """(topic, partition) pairs that ``node_id`` leads, sorted."""
        return sorted((t.name, p) for t in self.topics.values()
                      for p, a in enumerate(t.partitions) if a.leader == node_id)

    def partitions_on(self, node_id: int) -> list[tuple[str, int]]:
        """(topic, partition) pairs that ``node_id`` holds a replica of, sorted."""
        return sorted((t.name, p) for t in self.topics.values()
                      for p, a in enumerate(t.partitions) if node_id in a.replicas)

    def check_leader(self, topic: str, p: int, node_id: int) -> PartitionAssignment:
        """The assignment if ``node_id`` leads ``topic``-``p``; NOT_LEADER otherwise (what a
        produce or fetch handler asks before touching the log)."""
        a = self.partition(topic, p)
        if a.leader != node_id:
            raise FabricError("NOT_LEADER", f"{topic}-{p} is led by {a.leader if a.leader != NO_LEADER else 'no one'}, "
                                            f"not by {node_id}")
        return a
