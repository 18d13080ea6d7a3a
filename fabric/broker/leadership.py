"""Who leads what, in one place: the broker's ``MetadataImage`` and one ``PartitionState`` per
partition it holds.

Why: every answer about leadership (metadata replies, the produce and fetch leader checks,
``describe_topics``, ``stats``) and the high watermark a fetch reads up to come from here, so when
the cluster arrives only the image's *source* changes.  Today the image is built from the local
topics (``MetadataImage.from_local_topics``: this node leads every partition at epoch 0) after
every topic change (``refresh``); later it is built by replaying the controller's metadata log and
swapped in with ``apply``.  The handlers never hard-code "me, epoch 0".

Rules:
1. The image is immutable; a change is a new image applied in one step (``apply``), after which
   every local partition's state agrees with it: the leader named by the image is LEADER at the
   image's epoch, a replica led by another broker is FOLLOWER, one with no leader OFFLINE.
2. A partition's state is keyed by topic id as well as name: a topic deleted and created again
   under the same name starts a fresh state (its log starts at 0 again).
3. On a single node the leader is the whole ISR, so its high watermark is its log end: every
   append reports the new log end (``appended``) and the watermark follows at once
   (``PartitionState.leader_appended``).  A fetch reads up to the watermark, never the log end.
4. A consumer never sees the high watermark go back: a new cluster leader's watermark starts at
   the one it had as a follower, which may be below the one its predecessor showed consumers, so
   until it reaches the offset where its epoch began a fetch is answered LEADER_NOT_AVAILABLE
   (``readable``; KRaft's rule).  Found by the cluster simulation (``fabric/testing/cluster_sim.py``).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

from ..protocol.errors import FabricError
from ..replication.image import NO_LEADER, BrokerInfo, MetadataImage, PartitionAssignment
from ..replication.state import PartitionState, Role
from .topics import TopicManager

log = logging.getLogger("fabric.broker.leadership")

Key = tuple[str, int]


class Leadership:
    def __init__(self, topics: TopicManager, node: Callable[[], BrokerInfo], now_ms: int) -> None:
        self.topics = topics
        self._node = node  # this broker as clients reach it (the port is known once bound)
        self.node_id = node().node_id
        self.image = MetadataImage.empty()
        # In a cluster: the replica objects that own each partition's leader/follower role
        # (``replicas.py``); the image then comes from the controller, never from local topics.
        self.replicas: Any = None
        self._states: dict[Key, tuple[str, PartitionState]] = {}  # key -> (topic id, state) (rule 2)
        self.refresh(now_ms)

    def follow_controller(self, replicas: Any) -> None:
        """This broker is a cluster member from now on: ``replicas`` (``ReplicaManager``) owns the
        roles, and the image comes only from the controller's metadata log.  The local image built
        at start (this node leading every local partition, its high watermark at its log end) is
        dropped with every state made from it: a restarted broker's unreplicated tail must neither
        be served below a high watermark nor count as committed when it follows the real leader."""
        self.replicas = replicas
        self._states = {}
        self.image = MetadataImage.empty()

    # ------------------------------------------------------------------ the image
    def refresh(self, now_ms: int) -> None:
        """The topics changed (or this broker's address): rebuild the image from them (a single
        node only: a cluster's image comes from the controller)."""
        if self.replicas is not None:
            return
        self.apply(MetadataImage.from_local_topics(self.topics.topics.values(), self._node(),
                                                   self.image.version + 1), now_ms)

    def node_moved(self) -> None:
        """This broker's address changed (the shell bound its port): the same assignments, the
        broker listed where clients reach it."""
        self.image = self.image.with_broker(self._node())

    def apply(self, image: MetadataImage, now_ms: int) -> None:
        """Rule 1.  ``now_ms`` (monotonic) starts a new leader's followers' lag clocks."""
        states: dict[Key, tuple[str, PartitionState]] = {}
        me = self.node_id
        if self.replicas is not None:
            self.replicas.note_brokers(image)
        for name, p in image.partitions_on(me):
            topic = image.topic(name)
            plog = self.topics.local(name, p)
            if plog is None and self.replicas is None:
                # A cluster broker's start-up image (before ``follow_controller``) lists every
                # partition of its local topics, also those moved off it: it holds no log of them
                # (a broker restarted after a reassignment refused to start with NOT_LEADER).
                continue
            held = self._states.get((name, p))
            state = held[1] if held is not None and held[0] == topic.topic_id else PartitionState(me)
            a = topic.partitions[p]
            if self.replicas is not None:
                if plog is not None:
                    self.replicas.assign(name, p, topic, a, plog, state, now_ms)
                states[(name, p)] = (topic.topic_id, state)
                continue
            if a.leader == me:
                if state.role is not Role.LEADER or state.leader_epoch != a.leader_epoch:
                    state.become_leader(a.leader_epoch, a.replicas, set(a.isr), plog.end_offset, now_ms)
            elif a.leader != NO_LEADER:
                if state.role is not Role.FOLLOWER or state.leader_epoch != a.leader_epoch or state.leader != a.leader:
                    state.become_follower(a.leader_epoch, a.leader, a.replicas, plog.end_offset)
            else:
                state.role, state.leader = Role.OFFLINE, None
            states[(name, p)] = (topic.topic_id, state)
        self.image, self._states = image, states
        if self.replicas is not None:
            self.replicas.retain(set(states))

    # ------------------------------------------------------------------ reads
    def check_leader(self, topic: str, p: int) -> PartitionAssignment:
        """The assignment if this broker leads ``topic``-``p``; NOT_LEADER (or
        UNKNOWN_TOPIC_OR_PARTITION) otherwise: what produce and fetch ask before touching a log."""
        return self.image.check_leader(topic, p, self.node_id)

    def leading(self, topic: str, p: int) -> PartitionState:
        """The partition's state if this broker leads it, else NOT_LEADER (or
        UNKNOWN_TOPIC_OR_PARTITION): ``check_leader`` in one lookup, for the fetch and produce
        paths (rule 1: the state is LEADER exactly when the image names this broker)."""
        held = self._states.get((topic, p))
        if held is not None and held[1].role is Role.LEADER:
            return held[1]
        self.check_leader(topic, p)  # raises, saying who leads
        raise FabricError("NOT_LEADER", f"{topic}-{p} is not led by broker {self.node_id}")

    def readable(self, topic: str, p: int) -> PartitionState:
        """The partition's state for a consumer's fetch (rule 4): ``leading``, and in a cluster
        LEADER_NOT_AVAILABLE (retriable) while this leader's high watermark is still below the
        offset where its leader epoch began (``LeaderReplica.visible_high_watermark``)."""
        state = self.leading(topic, p)
        if self.replicas is not None:
            leader = self.replicas.leaders.get((topic, p))
            if leader is not None and leader.visible_high_watermark is None:
                raise FabricError("LEADER_NOT_AVAILABLE",
                                  f"{topic}-{p}: the new leader (epoch {state.leader_epoch}) has not yet confirmed "
                                  f"what its predecessor committed; retry")
        return state

    def state(self, topic: str, p: int) -> PartitionState:
        held = self._states.get((topic, p))
        if held is None:
            raise FabricError("UNKNOWN_TOPIC_OR_PARTITION", f"{topic}-{p} has no replica on broker {self.node_id}")
        return held[1]

    def high_watermark(self, topic: str, p: int) -> int:
        """Where a consumer's reads stop (rule 3)."""
        return self.state(topic, p).high_watermark

    def appended(self, topic: str, p: int, log_end: int) -> int:
        """This broker's log of ``topic``-``p`` now ends at ``log_end``; returns the high watermark."""
        return self.state(topic, p).leader_appended(log_end)

    def brokers(self) -> list[dict[str, Any]]:
        return [{"node_id": b.node_id, "host": b.host, "port": b.port}
                for b in sorted(self.image.brokers.values(), key=lambda b: b.node_id)]

    def partition_meta(self, topic: str, p: int) -> dict[str, Any]:
        """``partition``, ``leader``, ``leader_epoch``, ``replicas``, ``isr``, as the metadata,
        describe and stats replies show them."""
        a = self.image.partition(topic, p)
        return {"partition": p, "leader": a.leader, "leader_epoch": a.leader_epoch, "replicas": list(a.replicas),
                "isr": list(a.isr)}

    def partitions_meta(self, topic: str) -> Iterator[dict[str, Any]]:
        for p in range(len(self.image.topic(topic).partitions)):
            yield self.partition_meta(topic, p)
