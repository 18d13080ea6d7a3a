"""Glue between the broker and the sans-I/O group ``Coordinator``.

What it owns: the internal compacted topic ``__consumer_offsets`` (created on first start,
replayed into the coordinator's memory on every start), the map from coordinator tokens to the
``(peer, cid)`` a reply must go to (a join may be answered much later, from another member's
request or from ``tick``), and the translation of coordinator actions into broker replies:

* ``Reply`` -> an outbox entry for the token's peer;
* ``AppendOffsets`` -> one record batch per ``__consumer_offsets`` partition, appended to the
  log; the records are applied to memory and the reply is queued with those logs in its
  ``flush`` list, so the commit is acknowledged once the flusher has synced them (group commit).

Single node: this broker leads every offsets partition, so it coordinates every group.  In a
cluster (``clustered=True``) the topic is the controller's and nothing is loaded here at start:
``cluster_groups.ClusterGroups`` loads and unloads partitions as leadership moves and replaces
``_append`` (``append_hook``) with an append through the partition's leader replica.
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from typing import Any, Callable, Hashable

from ..clock import Now
from ..groups.coordinator import Coordinator
from ..groups.state import AppendOffsets, GroupConfig, Reply as GroupReply
from ..groups.messages import GROUP_OPERATIONS
from ..groups.offsets import OFFSETS_TOPIC, OffsetRecord
from ..log.errors import LogError
from ..log.partition_log import PartitionLog
from ..protocol.errors import FabricError
from ..protocol.messages import error_reply, ok_reply
from ..records.batch import encode_batch, records_in
from .log_errors import wire_error
from .replies import Outbox, Reply
from .topics import TopicManager

log = logging.getLogger("fabric.broker.groups")

OFFSETS_TOPIC_CONFIG = {"cleanup_policy": "compact", "flush_every_batch": True, "segment_bytes": 64 << 20}
REPLAY_CHUNK_BYTES = 8 << 20


class GroupService:
    """The group coordinator's shell.  It sees only what it needs of the broker: the topics (to
    create, replay and append to ``__consumer_offsets`` and to count a topic's partitions), the
    address clients reach this broker at (``find_coordinator``), and who a peer is (the member's
    host for ``describe_groups``)."""

    def __init__(self, topics: TopicManager, now_ms: int, *, node_id: int, offsets_topic_partitions: int,
                 initial_rebalance_delay_ms: int, advertised: Callable[[], tuple[str, int]],
                 host_of: Callable[[bytes], str], clustered: bool = False) -> None:
        self.topics = topics
        self.node_id = node_id
        self._advertised = advertised
        self._host_of = host_of
        self._tokens: dict[Hashable, tuple[bytes, int]] = {}
        self._seq = itertools.count()
        # A cluster stores commits through the partition's leader replica instead (cluster_groups).
        self.append_hook: Callable[[AppendOffsets, int], Outbox] | None = None
        config = GroupConfig(initial_rebalance_delay_ms=initial_rebalance_delay_ms)
        if clustered:
            # The controller creates the replicated topic; ``cluster_groups`` loads the partitions
            # this broker leads as the metadata image says so (nothing is led yet).
            self.offsets_topic = None
            self.coordinator = Coordinator(self._partitions_for, offsets_partitions=offsets_topic_partitions,
                                           config=config)
            return
        if OFFSETS_TOPIC not in topics.topics:
            topics.create(OFFSETS_TOPIC, offsets_topic_partitions, OFFSETS_TOPIC_CONFIG, now_ms, internal=True)
        self.offsets_topic = topics.get(OFFSETS_TOPIC)
        n = len(self.offsets_topic.partitions)
        self.coordinator = Coordinator(self._partitions_for, offsets_partitions=n, config=config)
        for p, plog in enumerate(self.offsets_topic.partitions):
            self.coordinator.begin_loading(p)
            skipped = self.coordinator.load_partition(p, self._replay(plog))
            if skipped:
                log.warning("%s-%d: skipped %d unreadable records", OFFSETS_TOPIC, p, skipped)
        log.info("group coordinator ready: %d groups with committed offsets", len(self.coordinator.offsets.groups()))

    @staticmethod
    def operations() -> list[str]:
        return list(GROUP_OPERATIONS)

    def _partitions_for(self, topic: str) -> int | None:
        t = self.topics.topics.get(topic)
        return None if t is None else len(t.partitions)

    @staticmethod
    def _replay(plog: PartitionLog):
        offset = plog.start_offset
        while offset < plog.end_offset:
            data = plog.read(offset, REPLAY_CHUNK_BYTES, upto_offset=plog.end_offset)
            if not data:
                break
            recs = records_in(OFFSETS_TOPIC, 0, data, offset)
            if not recs:
                break
            for r in recs:
                yield r.key, r.value
            offset = recs[-1].offset + 1

    # ------------------------------------------------------------------ requests
    def handle(self, peer: bytes, env: Any, req: Any, frames: list, now: Now) -> Outbox:
        """Sessions and rebalance timers run on ``now.mono_ms``; commit timestamps and the offset
        records' timestamps are dates (``now.wall_ms``)."""
        if env.op == "find_coordinator":
            host, port = self._advertised()
            return self._outbox_reply(peer, ok_reply(env.op, env.cid, node_id=self.node_id, host=host, port=port))
        token = next(self._seq)
        self._tokens[token] = (peer, env.cid)
        try:
            actions = self.coordinator.handle(token, env.op, req, now.mono_ms,
                                              host=self._host_of(peer), wall_ms=now.wall_ms)
        except Exception:
            self._tokens.pop(token, None)
            raise
        return self._apply(actions, now.wall_ms)

    def tick(self, now: Now) -> Outbox:
        return self._apply(self.coordinator.tick(now.mono_ms), now.wall_ms)

    def metadata_changed(self, now: Now) -> Outbox:
        return self._apply(self.coordinator.metadata_changed(now.mono_ms), now.wall_ms)

    def parked(self) -> int:
        return len(self._tokens)

    # ------------------------------------------------------------------ actions
    @staticmethod
    def _outbox_reply(peer: bytes, header: dict[str, Any],
                      flush: list[tuple[str, int, PartitionLog]] | None = None) -> Outbox:
        return [(peer, Reply(header, flush=flush or []))]

    def _apply(self, actions: list, wall_ms: int) -> Outbox:
        out: Outbox = []
        for action in actions:
            if isinstance(action, AppendOffsets):
                out.extend(self._append(action, wall_ms))
            else:
                out.extend(self._reply(action))
        return out

    def _reply(self, reply: GroupReply, flush: list[tuple[str, int, PartitionLog]] | None = None) -> Outbox:
        target = self._tokens.pop(reply.token, None)
        if target is None:
            log.warning("group reply for an unknown request token %r dropped", reply.token)
            return []
        peer, cid = target
        return self._outbox_reply(peer, reply.header(cid), flush)

    def _append(self, action: AppendOffsets, wall_ms: int) -> Outbox:
        if self.append_hook is not None:
            return self.append_hook(action, wall_ms)
        by_partition: dict[int, list[OffsetRecord]] = defaultdict(list)
        for rec in action.records:
            by_partition[rec.partition].append(rec)
        logs: list[tuple[str, int, PartitionLog]] = []
        try:
            for p, recs in sorted(by_partition.items()):
                plog = self.offsets_topic.partitions[p]
                batch = encode_batch([wall_ms] * len(recs), [r.key for r in recs], [r.value for r in recs])
                plog.append(bytearray(batch), wall_ms, defer_flush=True)
                logs.append((OFFSETS_TOPIC, p, plog))
        except (FabricError, LogError) as exc:
            err = wire_error(exc)
            target = self._tokens.pop(action.token, None)
            if target is None:
                return []
            log.error("cannot store offsets: %s", err)
            return self._outbox_reply(target[0], error_reply(action.reply.op, target[1], err))
        self.coordinator.offsets_appended(action.records)
        return self._reply(action.reply, logs)
