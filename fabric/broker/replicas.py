"""Which partitions this broker leads or follows in a cluster, and their replication objects,
without sockets: the bridge between the metadata image and ``fabric.replication``.

Why a manager: the image says *who* (leader, epoch, replicas, ISR); a ``LeaderReplica`` or
``FollowerReplica`` per partition does the replicating.  Something must create, replace and close
them as images arrive, find them by the topic id the wire carries, and collect what they want sent
(pushes to publish, fetches and acks for leaders, ISR proposals for the controller).

Rules:
1. ``assign`` is called for every partition with a replica here whenever an image is applied.  A
   replica object is replaced only when the role, the leader or the leader epoch changed; the same
   epoch with another ISR or partition epoch is a ``set_isr`` on the leader (the controller's
   answer to its proposal, or its own change such as fencing a follower).
2. A leader replaced or dropped gives back its ``acks=all`` tokens (``closing``): they fail with
   NOT_LEADER (a new leader may truncate their batches).
3. ``pushes`` collects what leaders appended this turn; the shell publishes and clears it.
   ``outgoing`` collects follower messages per leader broker id.  Both are bounded by what one
   loop turn produces.
"""

from __future__ import annotations

import logging
from typing import Any, Hashable

from ..replication.config import ReplicationConfig
from ..replication.follower import FollowerReplica
from ..replication.image import NO_LEADER, MetadataImage, PartitionAssignment, TopicImage
from ..replication.leader import IsrChange, LeaderReplica
from ..replication.messages import Push, ReplicaAck, ReplicaFetch
from ..replication.state import PartitionState

log = logging.getLogger("fabric.broker.replicas")

__all__ = ["ReplicaManager"]

Key = tuple[str, int]


class ReplicaManager:
    def __init__(self, node_id: int, config: ReplicationConfig, default_min_isr: int = 1) -> None:
        self.node_id = node_id
        self.config = config
        self.default_min_isr = default_min_isr
        self.default_throttle = 0  # bytes/s for reassignment copies (the broker's replication_throttle_bytes)
        self.leaders: dict[Key, LeaderReplica] = {}
        self.followers: dict[Key, FollowerReplica] = {}
        self._by_id: dict[tuple[str, int], Key] = {}  # (topic id, partition) -> (name, partition)
        self.pushes: list[Push] = []
        self.outgoing: dict[int, list[ReplicaFetch | ReplicaAck]] = {}
        self.closing: list[Hashable] = []

    # ------------------------------------------------------------------ the image
    def assign(self, name: str, p: int, topic: TopicImage, a: PartitionAssignment, plog: Any,
               state: PartitionState, now_ms: int) -> None:
        """Rule 1."""
        key = (name, p)
        self._by_id[(topic.topic_id, p)] = key
        leader = self.leaders.get(key)
        if a.leader == self.node_id:
            if leader is not None and not leader.closed and leader.leader_epoch == a.leader_epoch \
                    and leader.log is plog:
                if tuple(a.replicas) != leader.state.replicas:  # a reassignment (same epoch): new followers
                    leader.set_replicas(a.replicas, a.isr, a.partition_epoch)
                elif frozenset(a.isr) != leader.isr or a.partition_epoch != leader.partition_epoch:
                    leader.set_isr(a.isr, a.partition_epoch)
                min_isr = int(topic.configs.get("min_insync_replicas", self.default_min_isr))
                leader.min_insync_replicas = max(1, min(min_isr, len(a.replicas)))  # (the config may have changed)
                return
            self._drop(key)
            min_isr = int(topic.configs.get("min_insync_replicas", self.default_min_isr))
            self.leaders[key] = LeaderReplica(plog, state, topic.topic_id, p, leader_epoch=a.leader_epoch,
                                              replicas=a.replicas, isr=a.isr, now_ms=now_ms,
                                              min_insync_replicas=max(1, min(min_isr, len(a.replicas))),
                                              partition_epoch=a.partition_epoch, config=self.config)
            log.info("leading %s-%d at epoch %d (replicas %s, ISR %s)", name, p, a.leader_epoch, list(a.replicas),
                     list(a.isr))
            return
        follower = self.followers.get(key)
        if a.leader == NO_LEADER:
            self._drop(key)
            return
        throttle = self.throttle_of(topic) if self.node_id in a.adding else 0
        if follower is not None and follower.leader == a.leader and follower.leader_epoch == a.leader_epoch \
                and follower.log is plog:
            follower.throttle.rate = throttle
            return
        self._drop(key)
        self.followers[key] = FollowerReplica(plog, state, topic.topic_id, p, leader=a.leader,
                                              leader_epoch=a.leader_epoch, replicas=a.replicas, now_ms=now_ms,
                                              config=self.config)
        self.followers[key].throttle.rate = throttle
        log.info("following %s-%d: leader %d, epoch %d", name, p, a.leader, a.leader_epoch)

    def throttle_of(self, topic: TopicImage) -> int:
        """Bytes/s a replica joining ``topic`` by reassignment may copy (0: unlimited): the topic's
        ``replication_throttle_bytes``, else this broker's ``replication_throttle_bytes``."""
        value = topic.configs.get("replication_throttle_bytes")
        return int(value) if isinstance(value, int) and value > 0 else self.default_throttle

    def retain(self, keys: set[Key]) -> None:
        """Drop every replica object not in ``keys`` (partitions no longer held here)."""
        for key in [k for k in list(self.leaders) + list(self.followers) if k not in keys]:
            self._drop(key)
        self._by_id = {i: k for i, k in self._by_id.items() if k in keys}

    def _drop(self, key: Key) -> None:
        leader = self.leaders.pop(key, None)
        if leader is not None:
            self.closing.extend(leader.close())
        self.followers.pop(key, None)

    # ------------------------------------------------------------------ lookups
    def key_of(self, topic_id: str, partition: int) -> Key | None:
        return self._by_id.get((topic_id, partition))

    def leader_by_id(self, topic_id: str, partition: int) -> LeaderReplica | None:
        key = self._by_id.get((topic_id, partition))
        return None if key is None else self.leaders.get(key)

    def follower_by_id(self, topic_id: str, partition: int) -> FollowerReplica | None:
        key = self._by_id.get((topic_id, partition))
        return None if key is None else self.followers.get(key)

    def subscriptions(self) -> dict[int, set[tuple[str, int]]]:
        """Leader broker id -> (topic id, partition) followed from it."""
        out: dict[int, set[tuple[str, int]]] = {}
        for f in self.followers.values():
            out.setdefault(f.leader, set()).add((f.topic_id, f.partition))
        return out

    # ------------------------------------------------------------------ follower traffic
    def send(self, leader: int, messages: list[ReplicaFetch | ReplicaAck]) -> None:
        if messages:
            self.outgoing.setdefault(leader, []).extend(messages)

    def on_push(self, push: Push, now_ms: int) -> None:
        f = self.follower_by_id(push.topic_id, push.partition)
        if f is not None:
            self.send(f.leader, f.on_push(push, now_ms))

    def tick(self, now_ms: int) -> list[IsrChange]:
        """Followers' idle fetches and timeouts; leaders' ISR proposals."""
        for f in self.followers.values():
            self.send(f.leader, f.tick(now_ms))
        changes = []
        for leader in self.leaders.values():
            change = leader.tick(now_ms)
            if change is not None:
                changes.append(change)
        return changes

    def image_partitions(self, image: MetadataImage) -> set[Key]:
        return set(image.partitions_on(self.node_id))
