"""Mirror source: copies topics from another Fabric cluster into the worker's cluster.

Each record keeps its key, value, headers, timestamp and partition number (the target topic is
created with the source's partition count if it does not exist; a target with fewer partitions is
an error, since records would change partition).  Use the ``bytes`` converters (enforced by the
config check): the payload is copied as is.

Offsets: the source partition is ``{"cluster": source_bootstrap, "topic": t, "partition": p}`` and
its offset ``{"offset": next upstream offset}``, checkpointed in the worker's offsets topic after
the target acknowledged the records, like every source.  After a restart each partition resumes at
its checkpoint (at-least-once).  With ``offset_header`` every copy also carries
``mirror.offset = "topic/partition@offset"`` (its upstream position).

Consumer-group fail-over (MirrorMaker 2's offset syncs and checkpoints, ``mirror_offsets.py``):
after each commit of the worker the task records an offset sync per copied partition; every
``checkpoint_interval_ms`` it reads the committed offsets of the source cluster's groups (``groups``,
default: all but Connect's own ``connect-*`` groups) for the mirrored topics, translates each to
the target offset from which the group misses nothing, and writes a *checkpoint* record (JSON,
key ``group/target_topic/partition``) to ``checkpoint_topic`` in the target cluster.  With
``sync_group_offsets: true`` it also commits the translated offset for the group in the target
cluster, but only while the group has no members there (its consumers have not failed over yet:
once they run on the target, their own commits rule) and only forward (never below what the
group committed in the target).  A consumer that fails over resumes there: it may see a few
records again (those between the last sync and its commit), never a gap.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from fabric.client import Admin, Consumer
from fabric.errors import FabricError

from ..api import ConnectError, Field, SourceConnector, SourceRecord, SourceTask
from .mirror_offsets import OffsetSyncs

log = logging.getLogger("fabric.connect.mirror")

POLL_MS = 500


class MirrorSourceTask(SourceTask):
    def start(self, config: dict[str, Any]) -> None:
        self.src = config["source_bootstrap"]
        self.prefix = config["topic_prefix"]
        self.offset_header = config["offset_header"]
        self.batch = config["batch_size"]
        self.topics = list(config["topics"])
        self.groups = list(config["groups"])
        self.sync_groups = config["sync_group_offsets"]
        self.checkpoint_topic = config["checkpoint_topic"]
        self.interval_s = config["checkpoint_interval_ms"] / 1000
        self.consumer = Consumer(self.src, auto_offset_reset="earliest", client_id="connect-mirror",
                                 fetch_max_wait_ms=200, max_poll_records=self.batch)
        self.src_admin = Admin(self.src)
        self.dst_admin = Admin(self.context.bootstrap)
        assign = []
        for topic in self.topics:
            n = self.src_admin.partitions_for(topic)
            target = self.prefix + topic
            self._create(target, n)
            assign += [(topic, p) for p in range(n)]
        self._create(self.checkpoint_topic, 1, {"cleanup_policy": "compact"})
        self.consumer.assign(assign)
        self.parts: dict[tuple[str, int], dict[str, Any]] = {}
        self.syncs = OffsetSyncs()
        self.next_up: dict[tuple[str, int], int] = {}  # the next upstream offset, per copied partition
        self.dirty: set[tuple[str, int]] = set()  # copied since the last sync
        earliest = self.src_admin.list_offsets([(t, p, "earliest") for t, p in assign])
        for (topic, p), first in zip(assign, earliest):
            sp = {"cluster": self.src, "topic": topic, "partition": p}
            self.parts[(topic, p)] = sp
            committed = self.context.offset(sp)
            if committed is not None:
                self.consumer.seek((topic, p), committed["offset"])
                self.next_up[(topic, p)] = committed["offset"]
            else:
                self.consumer.seek_to_beginning((topic, p))
                self.next_up[(topic, p)] = first["offset"]
        self._record_syncs(assign)  # everything copied from here on lands after the target's end
        self.checkpointed: dict[tuple[str, str, int], tuple[int, int]] = {}
        self.next_checkpoint = time.monotonic() + self.interval_s
        self.checkpoint_sp = {"cluster": self.src, "checkpoints": self.checkpoint_topic}

    def _create(self, topic: str, partitions: int, configs: dict[str, Any] | None = None) -> None:
        try:
            self.dst_admin.create_topic(topic, partitions=partitions, configs=configs)
        except FabricError as exc:
            if exc.name != "TOPIC_ALREADY_EXISTS":
                raise
            have = self.dst_admin.partitions_for(topic)
            if have < partitions:
                raise ConnectError(f"target topic {topic!r} has {have} partitions, the source {partitions}: "
                                   "records would change partition") from None

    def poll(self) -> list[SourceRecord]:
        out = []
        for cols in self.consumer.poll_batches(POLL_MS, self.batch):
            sp = self.parts[(cols.topic, cols.partition)]
            target = self.prefix + cols.topic
            hdrs = cols.headers
            for i, (off, ts, k, v) in enumerate(zip(cols.offsets, cols.timestamps, cols.keys, cols.values)):
                h = list(hdrs[i]) if hdrs is not None else []
                if self.offset_header:
                    h.append(("mirror.offset", f"{cols.topic}/{cols.partition}@{off}".encode()))
                out.append(SourceRecord(sp, {"offset": off + 1}, target, v, key=k, partition=cols.partition,
                                        timestamp=ts, headers=h))
            if len(cols.offsets):
                self.next_up[(cols.topic, cols.partition)] = cols.offsets[-1] + 1
                self.dirty.add((cols.topic, cols.partition))
        if time.monotonic() >= self.next_checkpoint:
            try:
                out += self._checkpoint()
            except FabricError as exc:  # a cluster briefly unreachable: the next interval tries again
                log.warning("mirror: checkpoint of consumer groups failed: %s", exc)
            self.next_checkpoint = time.monotonic() + self.interval_s
        return out

    def commit(self) -> None:
        """Every record polled so far is in the target: record where the copies have got to."""
        if self.dirty:
            tps, self.dirty = sorted(self.dirty), set()
            self._record_syncs(tps)

    def _record_syncs(self, tps: list[tuple[str, int]]) -> None:
        ends = self.dst_admin.list_offsets([(self.prefix + t, p, "latest") for t, p in tps])
        for tp, end in zip(tps, ends):
            self.syncs.record(tp, self.next_up[tp], end["offset"])

    def _source_groups(self) -> list[str]:
        if self.groups:
            return self.groups
        return [g["group_id"] for g in self.src_admin.list_groups() if not g["group_id"].startswith("connect-")]

    def _checkpoint(self) -> list[SourceRecord]:
        """Checkpoint records for the groups' translated offsets (and, with ``sync_group_offsets``,
        the commits in the target cluster)."""
        out = []
        mirrored = set(self.topics)
        for group in self._source_groups():
            try:
                offsets = self.src_admin.describe_group(group).get("offsets", [])
            except FabricError as exc:
                if exc.name == "GROUP_ID_NOT_FOUND":
                    continue
                raise
            translated: dict[tuple[str, int], int] = {}
            for o in offsets:
                tp = (o["topic"], o["partition"])
                if o["topic"] not in mirrored or tp not in self.parts:
                    continue
                down = self.syncs.translate(tp, o["offset"])
                if down is None:
                    continue
                translated[(self.prefix + tp[0], tp[1])] = down
                key = (group, tp[0], tp[1])
                if self.checkpointed.get(key) != (o["offset"], down):
                    self.checkpointed[key] = (o["offset"], down)
                    value = {"group": group, "topic": tp[0], "partition": tp[1], "upstream_offset": o["offset"],
                             "target_topic": self.prefix + tp[0], "downstream_offset": down}
                    out.append(SourceRecord(self.checkpoint_sp, {"group": group}, self.checkpoint_topic,
                                            json.dumps(value).encode(),
                                            key=f"{group}/{self.prefix + tp[0]}/{tp[1]}".encode()))
            if self.sync_groups and translated:
                self._commit_in_target(group, translated)
        return out

    def _commit_in_target(self, group: str, translated: dict[tuple[str, int], int]) -> None:
        try:
            state = self.dst_admin.describe_group(group)
        except FabricError as exc:
            if exc.name != "GROUP_ID_NOT_FOUND":
                raise
            state = {"state": "DEAD", "offsets": []}
        if state["state"] not in ("EMPTY", "DEAD"):
            return  # its consumers run on the target now: their own commits rule
        current = {(o["topic"], o["partition"]): o["offset"] for o in state.get("offsets", [])}
        for tp, down in sorted(translated.items()):
            if current.get(tp) is not None and current[tp] >= down:
                continue  # only forward
            try:
                self.dst_admin.reset_group_offsets(group, [tp], "offset", down, execute=True)
            except FabricError as exc:
                if exc.name != "GROUP_NOT_EMPTY":
                    raise
                return  # a consumer joined meanwhile
            log.info("mirror: group %s now at %s[%d] offset %d in the target", group, tp[0], tp[1], down)

    def close(self) -> None:
        for name in ("consumer", "src_admin", "dst_admin"):
            if hasattr(self, name):
                getattr(self, name).close()


class MirrorSourceConnector(SourceConnector):
    CONFIG = {
        "source_bootstrap": Field("str", required=True, doc="HOST:PORT of the cluster to copy from"),
        "topics": Field("list", required=True),
        "topic_prefix": Field("str", default="", doc="target topic = prefix + source topic"),
        "offset_header": Field("bool", default=False, doc="add mirror.offset = topic/partition@offset"),
        "batch_size": Field("int", default=10_000, min=1),
        "groups": Field("list", default=[], doc="source consumer groups to checkpoint (default: all but connect-*)"),
        "checkpoint_topic": Field("str", default="mirror-checkpoints",
                                  doc="target-cluster topic of the groups' translated offsets"),
        "checkpoint_interval_ms": Field("int", default=5000, min=10, doc="how often groups are checkpointed"),
        "sync_group_offsets": Field("bool", default=False,
                                    doc="commit translated offsets for groups without members in the target"),
    }
    CONVERTERS = "bytes"
    task_class = MirrorSourceTask

    def task_configs(self, config: dict[str, Any], tasks_max: int) -> list[dict[str, Any]]:
        topics = list(config["topics"])
        n = min(tasks_max, len(topics))
        return [{**config, "topics": topics[i::n]} for i in range(n)]
