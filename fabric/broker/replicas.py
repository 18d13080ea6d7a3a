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
   ``outgoing`` collects follower messages per leader broker id; the shell sends them at the end
   of the loop turn (``take_outgoing``).  Both are bounded by what one loop turn produces.
4. A produce is appended only by an open leader replica of a broker whose lease is valid
   (``produce_leader``: NOT_LEADER otherwise, see ``controller_link`` rule 4); ``acks=all`` with
   an ISR below ``min_insync_replicas`` is refused before anything is appended
   (``append_produced``: NOT_ENOUGH_REPLICAS).  Here, not in the request handler, so the
   simulation (``fabric.testing.cluster_sim``) runs the very decisions the broker makes.
5. A partition that goes offline (no leader) is OFFLINE here too, whatever this broker was: a
   dropped leader's state must not stay LEADER, or ``Leadership.leading`` would go on serving
   fetches (with a stale high watermark) for a partition nobody leads (cluster simulation seed 545).
6. Of a partition's acks in one turn only the last is sent, in the place of the last: an ack
   only raises the follower's log end on the leader (``LeaderReplica.on_ack``), so the earlier
   ones say nothing the last does not.  Why: a follower draining a burst of pushes acked each
   one, and the leader handled every ack (HW, waiters, consumers) to learn the last log end.
7. Incarnations (KIP-903): ``note_brokers`` takes every broker's registered incarnation from each
   image before ``assign``; a leader learns its followers' (``LeaderReplica.set_incarnations``:
   progress of an older process is forgotten, its messages refused), and followers stamp their
   messages with this broker's own registered incarnation.
"""

from __future__ import annotations

import logging
from typing import Any, Hashable

from ..replication.config import ReplicationConfig
from ..replication.follower import FollowerReplica
from ..replication.image import NO_LEADER, MetadataImage, PartitionAssignment, TopicImage
from ..replication.leader import IsrChange, LeaderReplica
from ..replication.messages import Push, ReplicaAck, ReplicaFetch
from ..protocol.errors import FabricError
from ..replication.state import PartitionState, Role

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
        self.outgoing: dict[int, list[ReplicaFetch | ReplicaAck | None]] = {}  # None: a superseded ack
        self._ack_at: dict[tuple[int, str, int], int] = {}  # (leader, topic id, partition) -> its ack's index
        self.closing: list[Hashable] = []
        self.incarnations: dict[int, int] = {}  # broker -> registered incarnation (rule 7)
        self.incarnation = 0  # this broker's registered incarnation

    def note_brokers(self, image: MetadataImage) -> None:
        """Rule 7: the registered incarnations of the image about to be assigned."""
        self.incarnations = {b: info.incarnation for b, info in image.brokers.items()}
        self.incarnation = self.incarnations.get(self.node_id, 0)

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
                leader.set_incarnations(self.incarnations)
                return
            self._drop(key)
            min_isr = int(topic.configs.get("min_insync_replicas", self.default_min_isr))
            self.leaders[key] = LeaderReplica(plog, state, topic.topic_id, p, leader_epoch=a.leader_epoch,
                                              replicas=a.replicas, isr=a.isr, now_ms=now_ms,
                                              min_insync_replicas=max(1, min(min_isr, len(a.replicas))),
                                              partition_epoch=a.partition_epoch, config=self.config)
            self.leaders[key].set_incarnations(self.incarnations)
            log.info("leading %s-%d at epoch %d (replicas %s, ISR %s)", name, p, a.leader_epoch, list(a.replicas),
                     list(a.isr))
            return
        follower = self.followers.get(key)
        if a.leader == NO_LEADER:
            self._drop(key)
            state.role, state.leader = Role.OFFLINE, None  # rule 5: no fetch is served as its leader any more
            return
        throttle = self.throttle_of(topic) if self.node_id in a.adding else 0
        if follower is not None and follower.leader == a.leader and follower.leader_epoch == a.leader_epoch \
                and follower.log is plog:
            follower.throttle.rate = throttle
            follower.incarnation = self.incarnation
            return
        self._drop(key)
        self.followers[key] = FollowerReplica(plog, state, topic.topic_id, p, leader=a.leader,
                                              leader_epoch=a.leader_epoch, replicas=a.replicas, now_ms=now_ms,
                                              config=self.config, incarnation=self.incarnation)
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

    # ------------------------------------------------------------------ produce (rule 4)
    def produce_leader(self, key: Key, lease_valid: bool) -> LeaderReplica | None:
        """The leader replica that may append a produce to ``key`` now; None when this broker
        does not lead it (or that leadership ended): the caller says who does.  NOT_LEADER when
        it leads but its lease ran out: the controller may have moved the partition already."""
        leader = self.leaders.get(key)
        if leader is None or leader.closed:
            return None
        if not lease_valid:
            raise FabricError("NOT_LEADER", "this broker lost contact with the controller: its leaderships "
                                            "may have moved; refresh metadata")
        return leader

    def append_produced(self, leader: LeaderReplica, batch: bytearray, now_ms: int, acks_all: bool
                        ) -> tuple[int, int]:
        """Append a validated produced batch through ``leader`` and queue its push; returns
        ``(base_offset, last_offset)``.  ``acks_all``: NOT_ENOUGH_REPLICAS, nothing appended,
        when the ISR is below ``min_insync_replicas`` (the caller then parks the reply on a token
        with ``leader.wait``)."""
        if acks_all and len(leader.isr) < leader.min_insync_replicas:
            name, p = self.key_of(leader.topic_id, leader.partition) or (leader.topic_id, leader.partition)
            raise FabricError("NOT_ENOUGH_REPLICAS",
                              f"{name}-{p}: ISR {sorted(leader.isr)} is below "
                              f"min_insync_replicas {leader.min_insync_replicas}; nothing was written")
        base, last = leader.append(batch, now_ms)
        self.pushes.append(leader.push(base, batch))
        return base, last

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
        """Queue follower messages for ``leader`` (rule 6: a newer ack replaces an older one)."""
        if not messages:
            return
        out = self.outgoing.setdefault(leader, [])
        for m in messages:
            if isinstance(m, ReplicaAck):
                key = (leader, m.topic_id, m.partition)
                i = self._ack_at.get(key)
                if i is not None:
                    out[i] = None
                self._ack_at[key] = len(out)
            out.append(m)

    def take_outgoing(self) -> dict[int, list[ReplicaFetch | ReplicaAck]]:
        """This turn's follower messages per leader, in order (rule 6), and forget them."""
        taken = {leader: [m for m in messages if m is not None] for leader, messages in self.outgoing.items()}
        self.outgoing.clear()
        self._ack_at.clear()
        return taken

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

    def alter_partition(self, change: IsrChange) -> dict[str, Any]:
        """The ``alter_partition`` request (SPEC 13.5) proposing ``change``: each member's
        incarnation as this leader knows it (rule 7), this broker's own for itself."""
        isr = sorted(change.isr)
        return {"op": "alter_partition", "broker_id": self.node_id, "topic_id": change.topic_id,
                "partition": change.partition, "leader_epoch": change.leader_epoch,
                "partition_epoch": change.partition_epoch, "isr": isr,
                "isr_incarnations": [change.incarnations.get(r, self.incarnation) if r != self.node_id
                                     else self.incarnation for r in isr]}

    def image_partitions(self, image: MetadataImage) -> set[Key]:
        return set(image.partitions_on(self.node_id))
