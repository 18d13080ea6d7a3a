"""Consumer groups on a cluster: the coordinator follows ``__consumer_offsets`` leadership.

Why a module of its own: on a single node the broker leads every offsets partition and commits
are fsynced locally (``group_service.py``); in a cluster the truth is the controller's image and
the partition's replicas, which this module bridges without touching the single-node path.

Rules:
1. The controller creates ``__consumer_offsets`` (``ensure_internal_topic``: RF min(3, live
   brokers)); a broker asks for it on the first group request while its image lacks the topic,
   and answers COORDINATOR_NOT_AVAILABLE (retriable) until the image has it (``list_groups``
   just lists none: admin tools ask every broker).  A broker never creates the topic locally.
2. ``find_coordinator`` answers, from any broker, the image's leader of partition
   ``partition_for_group(group_id, n)`` of the topic (the coordinator's own hash), with its host
   and port; no leader yet is COORDINATOR_NOT_AVAILABLE.
3. A broker coordinates exactly the groups whose offsets partition it leads: when an applied
   image makes it leader of one it replays that partition's log into the coordinator; when the
   leadership goes, the partition is unloaded (parked joins answer NOT_COORDINATOR, and every
   later request for those groups is NOT_COORDINATOR, so clients find the new coordinator).
4. An offset commit is appended through the partition's ``LeaderReplica`` (published to the
   followers like a produce) and acknowledged — and applied to the coordinator's memory — once
   the high watermark passes it (acks=all).  A commit whose leadership ends first fails with
   NOT_COORDINATOR: the new leader may have truncated it.  One not replicated within
   ``COMMIT_TIMEOUT_MS`` (the ISR fell below ``min_insync_replicas``) is answered
   REQUEST_TIMED_OUT, and still applied to memory if the high watermark passes it later (memory
   must match what a replay of the log gives).
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from typing import Any

from ..clock import Now
from ..groups.offsets import OFFSETS_TOPIC, OffsetRecord, partition_for_group
from ..groups.state import AppendOffsets
from ..log.errors import LogError
from ..protocol.errors import FabricError
from ..protocol.messages import error_reply, ok_reply
from ..records.batch import encode_batch
from .log_errors import wire_error
from .replies import Outbox, Reply

log = logging.getLogger("fabric.broker.cluster_groups")

ENSURE_RETRY_MS = 1000  # how often a broker re-asks the controller for the missing topic
COMMIT_TIMEOUT_MS = 5000  # a commit not replicated by then is answered REQUEST_TIMED_OUT (as Kafka's
# offsets.commit.timeout.ms); it is still applied to memory if it commits later


class GroupToken(tuple):
    """A commit's wait token at a ``LeaderReplica`` (told apart from ``acks=all`` produce tokens,
    which are ints, by ``ClusterNode.committed``)."""


class ClusterGroups:
    def __init__(self, core: Any) -> None:
        self.core = core
        self.service = core.groups
        self.service.append_hook = self._append
        self.service.coordinator.partitions_for = self._partitions_for
        self._seq = itertools.count(1)
        # token -> (partition, records, group reply (None once timed out), leader replica, deadline)
        self._pending: dict[GroupToken, tuple[int, list[OffsetRecord], Any, Any, int]] = {}
        self._asked_ms: int | None = None
        self._mono_ms = 0  # the latest request's monotonic time (commit deadlines)

    @property
    def image(self) -> Any:
        return self.core.leadership.image

    def _partitions_for(self, topic: str) -> int | None:
        t = self.image.topics.get(topic)
        return None if t is None else len(t.partitions)

    # ------------------------------------------------------------------ requests (rules 1, 2)
    def _offsets_topic(self, now: Now) -> Any:
        topic = self.image.topics.get(OFFSETS_TOPIC)
        if topic is None:
            if self._asked_ms is None or now.mono_ms - self._asked_ms >= ENSURE_RETRY_MS:
                self._asked_ms = now.mono_ms
                self.core.cluster.forward({"op": "ensure_internal_topic", "name": OFFSETS_TOPIC}, None, now.mono_ms)
            raise FabricError("COORDINATOR_NOT_AVAILABLE", f"{OFFSETS_TOPIC} is being created: retry")
        return topic

    def handle(self, peer: bytes, env: Any, req: Any, frames: list, now: Now) -> Outbox:
        self._mono_ms = now.mono_ms
        if env.op == "list_groups" and OFFSETS_TOPIC not in self.image.topics:
            return self.service.handle(peer, env, req, frames, now)  # (no topic: no groups, nothing to create)
        topic = self._offsets_topic(now)
        if env.op != "find_coordinator":
            return self.service.handle(peer, env, req, frames, now)
        p = partition_for_group(req.group_id, len(topic.partitions))
        leader = self.image.partition(OFFSETS_TOPIC, p).leader
        broker = self.image.brokers.get(leader)
        if broker is None or getattr(broker, "fenced", False):
            raise FabricError("COORDINATOR_NOT_AVAILABLE", f"{OFFSETS_TOPIC}-{p} has no leader yet: retry")
        return [(peer, Reply(ok_reply(env.op, env.cid, node_id=broker.node_id, host=broker.host,
                                      port=broker.port)))]

    # ------------------------------------------------------------------ leadership (rule 3)
    def image_applied(self, now: Now) -> Outbox:
        coord = self.service.coordinator
        topic = self.image.topics.get(OFFSETS_TOPIC)
        leaders = self.core.cluster.replicas.leaders
        led = set()
        if topic is not None:
            coord.offsets_partitions = len(topic.partitions)
            led = {p for (name, p), r in leaders.items() if name == OFFSETS_TOPIC and not r.closed}
        held = set(coord._led) | set(coord._loading)
        out: Outbox = []
        for p in sorted(held - led):
            log.info("no longer coordinating the groups of %s-%d", OFFSETS_TOPIC, p)
            out.extend(self._fail_pending(p))
            out.extend(self.service._apply(coord.unload_partition(p), now.wall_ms))
        for p in sorted(led - held):
            plog = leaders[(OFFSETS_TOPIC, p)].log
            coord.begin_loading(p)
            skipped = coord.load_partition(p, self.service._replay(plog))
            log.info("coordinating the groups of %s-%d (%d records skipped)", OFFSETS_TOPIC, p, skipped)
        for p in sorted(held & led):  # a new leader epoch: waits ended with the old replica
            leader = leaders[(OFFSETS_TOPIC, p)]
            if any(pend[0] == p and pend[3] is not leader for pend in self._pending.values()):
                out.extend(self._fail_pending(p, stale_only=leader))
        out.extend(self.service.metadata_changed(now))
        return out

    def _fail_pending(self, p: int, stale_only: Any = None) -> Outbox:
        out: Outbox = []
        for token, (part, _, reply, leader, _) in list(self._pending.items()):
            if part != p or (stale_only is not None and leader is stale_only):
                continue
            del self._pending[token]
            if reply is not None:
                out.extend(self._error(reply, FabricError("NOT_COORDINATOR", "offsets leadership moved before the "
                                                                         "commit was replicated: retry")))
        return out

    def expire(self, now: Now) -> Outbox:
        """Rule 4: commits past their deadline are answered REQUEST_TIMED_OUT."""
        out: Outbox = []
        for token, (part, recs, reply, leader, deadline) in list(self._pending.items()):
            if reply is not None and deadline <= now.mono_ms:
                self._pending[token] = (part, recs, None, leader, deadline)
                out.extend(self._error(reply, FabricError(
                    "REQUEST_TIMED_OUT", f"the in-sync replicas of {OFFSETS_TOPIC}-{part} did not confirm the commit "
                                         f"within {COMMIT_TIMEOUT_MS} ms; it may still be committed: retry")))
        return out

    def _error(self, reply: Any, err: FabricError) -> Outbox:
        target = self.service._tokens.pop(reply.token, None)
        if target is None:
            return []
        return [(target[0], Reply(error_reply(reply.op, target[1], err)))]

    # ------------------------------------------------------------------ commits (rule 4)
    def _append(self, action: AppendOffsets, wall_ms: int) -> Outbox:
        node = self.core.cluster
        by_partition: dict[int, list[OffsetRecord]] = defaultdict(list)
        for rec in action.records:
            by_partition[rec.partition].append(rec)
        if len(by_partition) != 1:  # (one group's records share its partition)
            err = FabricError("INVALID_FIELD", "an offset commit spans several offsets partitions")
            return self._error(action.reply, err)
        (p, recs), = by_partition.items()
        leader = node.replicas.leaders.get((OFFSETS_TOPIC, p))
        try:
            if leader is None or leader.closed:
                raise FabricError("NOT_COORDINATOR", f"this broker no longer leads {OFFSETS_TOPIC}-{p}")
            batch = bytearray(encode_batch([wall_ms] * len(recs), [r.key for r in recs], [r.value for r in recs]))
            token = GroupToken(("group", next(self._seq)))
            base, _ = leader.append(batch, wall_ms, token)
        except (FabricError, LogError) as exc:
            err = wire_error(exc)
            log.warning("cannot store offsets in %s-%d: %s", OFFSETS_TOPIC, p, err)
            return self._error(action.reply, err)
        self._pending[token] = (p, recs, action.reply, leader, self._mono_ms + COMMIT_TIMEOUT_MS)
        node.replicas.pushes.append(leader.push(base, batch))
        return self._settle(leader.hw_moved())  # (a lone replica commits at once)

    def settle(self, tokens: list) -> Outbox:
        """``ClusterNode.committed``'s group tokens: their commits passed the high watermark."""
        return self._settle(tokens)

    def _settle(self, tokens: list) -> Outbox:
        out: Outbox = []
        for token in tokens:
            pending = self._pending.pop(token, None)
            if pending is None:
                continue
            _, recs, reply, _, _ = pending
            self.service.coordinator.offsets_appended(recs)
            if reply is not None:
                out.extend(self.service._reply(reply))
        return out

    def pending(self) -> int:
        return len(self._pending)
