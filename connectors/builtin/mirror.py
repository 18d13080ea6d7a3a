"""Mirror source: copies topics from another Fabric cluster into the worker's cluster.

Each record keeps its key, value, headers, timestamp and partition number (the target topic is
created with the source's partition count if it does not exist; a target with fewer partitions is
an error, since records would change partition).  Use the ``bytes`` converters (enforced by the
config check): the payload is copied as is.

Offsets: the source partition is ``{"cluster": source_bootstrap, "topic": t, "partition": p}`` and
its offset ``{"offset": next upstream offset}``, checkpointed in the worker's offsets topic after
the target acknowledged the records, like every source.  After a restart each partition resumes at
its checkpoint (at-least-once).  With ``offset_header`` every copy also carries
``mirror.offset = "topic/partition@offset"`` (its upstream position) so a consumer can translate
its upstream committed offset to the target.
"""

from __future__ import annotations

from typing import Any

from fabric.client import Admin, Consumer
from fabric.errors import FabricError

from ..api import ConnectError, Field, SourceConnector, SourceRecord, SourceTask

POLL_MS = 500


class MirrorSourceTask(SourceTask):
    def start(self, config: dict[str, Any]) -> None:
        self.src = config["source_bootstrap"]
        self.prefix = config["topic_prefix"]
        self.offset_header = config["offset_header"]
        self.batch = config["batch_size"]
        self.consumer = Consumer(self.src, auto_offset_reset="earliest", client_id="connect-mirror",
                                 fetch_max_wait_ms=200, max_poll_records=self.batch)
        with Admin(self.src) as src_admin, Admin(self.context.bootstrap) as dst_admin:
            assign = []
            for topic in config["topics"]:
                n = src_admin.partitions_for(topic)
                target = self.prefix + topic
                try:
                    dst_admin.create_topic(target, partitions=n)
                except FabricError as exc:
                    if exc.name != "TOPIC_ALREADY_EXISTS":
                        raise
                    have = dst_admin.partitions_for(target)
                    if have < n:
                        raise ConnectError(f"target topic {target!r} has {have} partitions, the source {n}: "
                                           "records would change partition") from None
                assign += [(topic, p) for p in range(n)]
        self.consumer.assign(assign)
        self.parts: dict[tuple[str, int], dict[str, Any]] = {}
        for topic, p in assign:
            sp = {"cluster": self.src, "topic": topic, "partition": p}
            self.parts[(topic, p)] = sp
            committed = self.context.offset(sp)
            if committed is not None:
                self.consumer.seek((topic, p), committed["offset"])
            else:
                self.consumer.seek_to_beginning((topic, p))

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
        return out

    def close(self) -> None:
        if hasattr(self, "consumer"):
            self.consumer.close()


class MirrorSourceConnector(SourceConnector):
    CONFIG = {
        "source_bootstrap": Field("str", required=True, doc="HOST:PORT of the cluster to copy from"),
        "topics": Field("list", required=True),
        "topic_prefix": Field("str", default="", doc="target topic = prefix + source topic"),
        "offset_header": Field("bool", default=False, doc="add mirror.offset = topic/partition@offset"),
        "batch_size": Field("int", default=10_000, min=1),
    }
    CONVERTERS = "bytes"
    task_class = MirrorSourceTask

    def task_configs(self, config: dict[str, Any], tasks_max: int) -> list[dict[str, Any]]:
        topics = list(config["topics"])
        n = min(tasks_max, len(topics))
        return [{**config, "topics": topics[i::n]} for i in range(n)]
