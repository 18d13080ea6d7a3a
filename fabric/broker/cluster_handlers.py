"""The request handlers that differ when the broker is part of a cluster.

Why separate from ``core.py``: on a single node the broker's own topics are the truth; in a
cluster the controller's metadata image is, topic changes go to the controller, and a produce is
appended through the partition's ``LeaderReplica`` (published to followers, answered for
``acks=all`` only once the in-sync replicas hold it).  ``install`` swaps these handlers in; the
single-node handlers stay untouched.

Rules:
1. Metadata, list and describe answer from the image: every broker gives the same cluster view,
   so a client may bootstrap from any of them.  Brokers that are fenced are not listed.
2. A topic a client asks for and the image lacks is created through the controller when
   auto-creation is on; until the image has it the answer is LEADER_NOT_AVAILABLE (retriable).
3. ``create_topics``/``delete_topics`` (and, in ``cluster_admin.py``, ``create_partitions``,
   ``alter_topic_configs`` and the reassignment operations) are forwarded to the controller and
   answered once this broker's image includes the change.
4. Produce: only a leader with a valid lease appends (else NOT_LEADER); ``acks=all`` fails with
   NOT_ENOUGH_REPLICAS before appending when the ISR is below the topic's
   ``min_insync_replicas``; the reply waits in ``AcksAllReplies`` for the high watermark.
5. Group operations go to ``ClusterGroups`` (cluster_groups.py): the controller creates the
   replicated ``__consumer_offsets``, a broker coordinates the groups whose offsets partition it
   leads, and commits are replicated and acknowledged at the high watermark.
"""

from __future__ import annotations

from typing import Any

from ..clock import Now
from ..groups.messages import GROUP_OPERATIONS
from ..log.errors import LogError
from ..protocol.errors import FabricError
from ..protocol.messages import error_reply, ok_reply
from ..records.batch import validate_batch
from . import cluster_admin
from .cluster_groups import ClusterGroups
from .log_errors import wire_error
from .replies import Outbox, Reply


def install(core: Any) -> None:
    h = Handlers(core)
    core.handlers.update({"metadata": h.metadata, "list_topics": h.list_topics, "describe_topics": h.describe_topics,
                          "create_topics": h.create_topics, "delete_topics": h.delete_topics,
                          "produce": h.produce})
    cluster_admin.install(core)  # create_partitions, alter_topic_configs and SPEC 13.7's operations
    core.cluster_groups = ClusterGroups(core)
    for op in GROUP_OPERATIONS:
        if op in core.handlers:
            core.handlers[op] = core.cluster_groups.handle


class Handlers:
    def __init__(self, core: Any) -> None:
        self.core = core

    @property
    def node(self) -> Any:
        return self.core.cluster

    # ------------------------------------------------------------------ metadata (rules 1, 2)
    def _brokers(self) -> list[dict[str, Any]]:
        image = self.core.leadership.image
        return [{"node_id": b.node_id, "host": b.host, "port": b.port, "rack": b.rack}
                for b in sorted(image.brokers.values(), key=lambda b: b.node_id) if not getattr(b, "fenced", False)]

    def metadata(self, peer, env, req, frames, now: Now) -> Outbox:
        image = self.core.leadership.image
        names = [n for n, t in image.topics.items() if not t.internal] if req.topics is None else list(req.topics)
        topics = []
        for name in names:
            t = image.topics.get(name)
            if t is None:
                if req.topics is not None and req.allow_auto_create and self.core.config.auto_create_topics:
                    self._create(name, self.core.config.default_partitions, None, {}, now)
                    err = FabricError("LEADER_NOT_AVAILABLE", f"topic {name!r} is being created: retry")
                else:
                    err = FabricError("UNKNOWN_TOPIC_OR_PARTITION", f"unknown topic {name!r}")
                topics.append({"name": name, "error": err.to_wire(), "partitions": []})
                continue
            topics.append({"name": name, "internal": t.internal, "topic_id": t.topic_id,
                           "partitions": list(self.core.leadership.partitions_meta(name))})
        return [(peer, Reply(ok_reply(env.op, env.cid, cluster_id=self.core.cluster_id,
                                      controller_id=self.node.link.target, brokers=self._brokers(),
                                      topics=topics)))]

    def list_topics(self, peer, env, req, frames, now: Now) -> Outbox:
        image = self.core.leadership.image
        topics = [{"name": t.name, "partitions": len(t.partitions), "internal": t.internal}
                  for t in sorted(image.topics.values(), key=lambda t: t.name) if req.internal or not t.internal]
        return [(peer, Reply(ok_reply(env.op, env.cid, topics=topics)))]

    def describe_topics(self, peer, env, req, frames, now: Now) -> Outbox:
        """Per partition the image's view, plus this broker's own log figures where it holds a
        replica (``replica_of`` says whose figures they are: the leader's are authoritative)."""
        core = self.core
        image = core.leadership.image
        names = sorted(image.topics) if req.topics is None else list(req.topics)
        out = []
        for name in names:
            t = image.topics.get(name)
            if t is None:
                err = FabricError("UNKNOWN_TOPIC_OR_PARTITION", f"unknown topic {name!r}")
                out.append({"name": name, "error": err.to_wire()})
                continue
            parts = []
            for p in range(len(t.partitions)):
                meta = core.leadership.partition_meta(name, p)
                plog = core.topics.local(name, p)
                if plog is not None:
                    try:
                        meta.update(start_offset=plog.start_offset, end_offset=plog.end_offset,
                                    high_watermark=core.leadership.high_watermark(name, p),
                                    size_bytes=plog.size_bytes, segments=plog.segment_count,
                                    replica_of=core.config.node_id)
                    except (FabricError, LogError):
                        pass
                parts.append(meta)
            out.append({"name": name, "topic_id": t.topic_id, "internal": t.internal, "configs": dict(t.configs),
                        "partitions": parts})
        return [(peer, Reply(ok_reply(env.op, env.cid, topics=out)))]

    # ------------------------------------------------------------------ topic changes (rule 3)
    def _create(self, name: str, partitions: int, rf: int | None, configs: dict[str, Any], now: Now,
                done: Any = None) -> None:
        header = {"op": "create_topic", "name": name, "partitions": partitions, "configs": dict(configs)}
        if rf:
            header["replication_factor"] = rf
        self.node.forward(header, done, now.mono_ms)

    def create_topics(self, peer, env, req, frames, now: Now) -> Outbox:
        rows: list[dict[str, Any] | None] = [None] * len(req.topics)
        if not req.topics:
            return [(peer, Reply(ok_reply(env.op, env.cid, topics=[])))]
        if req.validate_only:
            err = FabricError("INVALID_CONFIG", "validate_only is not supported by a cluster yet")
            return [(peer, Reply(ok_reply(env.op, env.cid, topics=[{"name": nt.name, "error": err.to_wire()}
                                                                  for nt in req.topics])))]

        def collector(i: int, nt: Any):
            def done(answer: dict[str, Any]) -> Outbox:
                row: dict[str, Any] = {"name": nt.name}
                if answer.get("error"):
                    row["error"] = answer["error"]
                else:
                    row.update(partitions=answer.get("partitions", nt.partitions or self.core.config.default_partitions),
                               replication_factor=answer.get("replication_factor", nt.replication_factor or 1))
                rows[i] = row
                if all(r is not None for r in rows):
                    return [(peer, Reply(ok_reply(env.op, env.cid, topics=rows)))]
                return []
            return done

        for i, nt in enumerate(req.topics):
            configs = dict(nt.configs)
            if nt.min_insync_replicas is not None:  # (SPEC 13.1: the field wins over configs)
                configs["min_insync_replicas"] = nt.min_insync_replicas
            self._create(nt.name, nt.partitions or self.core.config.default_partitions, nt.replication_factor,
                         configs, now, collector(i, nt))
        return []

    def delete_topics(self, peer, env, req, frames, now: Now) -> Outbox:
        names = list(req.topics)
        if not names:
            return [(peer, Reply(ok_reply(env.op, env.cid, topics=[])))]
        rows: list[dict[str, Any] | None] = [None] * len(names)

        def collector(i: int, name: str):
            def done(answer: dict[str, Any]) -> Outbox:
                rows[i] = {"name": name, **({"error": answer["error"]} if answer.get("error") else {})}
                if all(r is not None for r in rows):
                    return [(peer, Reply(ok_reply(env.op, env.cid, topics=rows)))]
                return []
            return done

        for i, name in enumerate(names):
            if not self.core.config.delete_topic_enable:
                err = FabricError("POLICY_VIOLATION", "topic deletion is disabled on this broker")
                rows[i] = {"name": name, "error": err.to_wire()}
                continue
            self.node.forward({"op": "delete_topic", "name": name}, collector(i, name), now.mono_ms)
        if all(r is not None for r in rows):
            return [(peer, Reply(ok_reply(env.op, env.cid, topics=rows)))]
        return []

    # ------------------------------------------------------------------ produce (rule 4)
    def produce(self, peer, env, req, frames, now: Now) -> Outbox:
        core, node = self.core, self.node
        payload = frames[1:]
        if len(req.batches) != len(payload):
            raise FabricError("INVALID_FIELD", f"batches lists {len(req.batches)} targets but the request carries "
                                               f"{len(payload)} payload frames")
        if req.acks == -1 and node.acks.full():
            raise FabricError("THROTTLED", "too many acks=all replies wait for replicas: retry shortly")
        lease = node.lease_valid(now)
        limits = core.limits
        results: list[dict[str, Any]] = []
        waiting: list[tuple[int, str, int, Any, int]] = []
        touched = []
        for target, frame in zip(req.batches, payload):
            key = (target.topic, target.partition)
            try:
                leader = node.replicas.produce_leader(key, lease)
                if leader is None:
                    core.leadership.leading(target.topic, target.partition)  # raises, saying who leads
                    raise FabricError("NOT_LEADER", f"{target.topic}-{target.partition} has no leader here")
                if core.leadership.image.topics[target.topic].internal:
                    raise FabricError("POLICY_VIOLATION", f"{target.topic!r} is internal: only the broker writes it")
                plog = leader.log
                h = validate_batch(frame, min(plog.config.max_batch_bytes, limits.batch_bytes_max),
                                   limits.batch_records_max)
                if h.producer_id >= 0:  # an idempotent producer's batch (SPEC "Idempotent producer")
                    dup = plog.check_producer(h.producer_id, h.producer_epoch, h.base_sequence, h.record_count)
                    if dup is not None:  # written before: answered with its offsets once committed
                        core.metrics.duplicates += 1
                        results.append({"topic": target.topic, "partition": target.partition,
                                        "base_offset": dup.base_offset, "log_append_time": -1})
                        if req.acks == -1:
                            waiting.append((len(results) - 1, target.topic, target.partition, leader,
                                            dup.last_offset))
                            touched.append(key)  # (its original may be committed already: released below)
                        continue
                batch = bytearray(frame)
                base, last = node.replicas.append_produced(leader, batch, now.wall_ms, acks_all=req.acks == -1)
                c = core.metrics.partition(target.topic, target.partition)
                c.batches_in += 1
                c.records_in += h.record_count
                c.bytes_in += len(batch)
                core.metrics.records_in += h.record_count
                core.metrics.bytes_in += len(batch)
                results.append({"topic": target.topic, "partition": target.partition, "base_offset": base,
                                "log_append_time": now.wall_ms if plog.config.timestamp_type == "log_append_time"
                                else -1})
                if req.acks == -1:
                    waiting.append((len(results) - 1, target.topic, target.partition, leader, last))
                touched.append(key)
            except (FabricError, LogError) as exc:
                err = wire_error(exc)
                core.metrics.errors[err.name] += 1
                core.storage_faults.note(err)
                results.append({"topic": target.topic, "partition": target.partition, "base_offset": -1,
                                "error": err.to_wire()})
        out: Outbox = []
        if req.acks == -1 and waiting:
            tokens = node.acks.hold(peer, env.op, env.cid, results, [(i, t, p) for i, t, p, _, _ in waiting],
                                    now.mono_ms + req.timeout_ms)
            for token, (_, _, _, leader, last) in zip(tokens, waiting):
                leader.wait(token, last)
        # A lone in-sync replica commits at once (its waiters leave, its consumers wake); with
        # followers the HW moves on their acks, and nothing is woken here for nothing.
        leaders = node.replicas.leaders
        for key in dict.fromkeys(touched):
            leader = leaders.get(key)
            if leader is not None:
                out.extend(node.committed(leader, now))
        if req.acks == 0 or waiting:
            return out
        out.extend(node.acks.answer(peer, env.op, env.cid, results))  # (behind earlier acks=all replies)
        return out


def error_outbox(peer: bytes, op: str, cid: int, err: FabricError) -> Outbox:
    return [(peer, Reply(error_reply(op, cid, err)))]
