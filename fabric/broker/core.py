"""The broker's request processing, without sockets: frames in, replies out.

Theory of operation.  The I/O shell (``server.py``) receives ``[peer, frame0, frame1, ...]`` from
its ROUTER and calls ``handle(peer, frames, now)``, which returns the replies to send now as
``(peer, Reply)`` pairs (none for ``acks=0`` produce, none for a fetch that parks).  Parked
fetches complete later through ``handle`` (an append wakes them) or ``expire(now)``.

Durability.  A reply that lists logs to fsync first (``Reply.flush``: a produce to a
``flush_every_batch`` topic, a group commit) is held by the shell until the flusher thread has
synced them, and the shell then calls ``synced``: only then does the partition's high watermark
pass those batches (so no consumer reads what a crash could still take back) and the fetches
waiting for them wake.  Elsewhere the high watermark follows each append at once.

Time.  The core reads no clock: every entry point takes ``now``, a ``clock.Now`` (both clocks,
read once by the shell) or a bare int meaning both (tests and the SPEC vectors).  Deadlines (long
polls, group sessions and rebalances) use ``now.mono_ms``; dates written anywhere (record and
log-append timestamps, ``created_ms``, commit timestamps, retention, ``stats``) use ``now.wall_ms``.
So a step of the system time changes dates, never a deadline.  A reply
lists the logs that must be fsynced before it is sent (``flush``; see Durability below).

Rules:
1. Any failure is an error reply to the peer that caused it; nothing a client sends can stop
   the loop.  Unknown exceptions become UNKNOWN_ERROR and are logged with a traceback.
2. Nothing is written before a request is fully validated at the level it addresses: a produce
   request checks its header before any batch; each batch is checked (CRC, length, count)
   before it is appended; a bad batch fails its own partition only.
3. Records are never decoded here; batches are handled as bytes plus their 61-byte header.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

from .. import __version__
from ..clock import Now, as_now
from ..log.epoch_log import EpochLog
from ..log.producer_log import ProducerLog
from .producer_ids import ProducerIds, bump
from ..log.errors import LogError
from ..log.handles import FilePool, nofile_limit
from ..log.partition_log import PartitionLog
from ..protocol import codec
from ..protocol.cluster import BROKER_OPERATIONS
from ..protocol.errors import FabricError
from ..protocol.schema import as_int
from ..replication.image import BrokerInfo
from ..protocol.messages import (OPERATIONS, InitProducerIdRequest, AlterTopicConfigsRequest, CreatePartitionsRequest,
                                 CreateTopicsRequest, DeleteTopicsRequest, DescribeTopicsRequest, FetchRequest,
                                 ListOffsetsRequest, ListTopicsRequest, MetadataRequest, ProduceRequest, StatsRequest,
                                 error_reply, ok_reply, parse_request)
from ..records.batch import validate_batch
from .config import BrokerConfig, exposure_warning
from .group_service import GroupService
from .metrics import Metrics
from . import stats
from .topics import META_DIR, TopicManager
from .bounded import BoundedDict
from .connections import ConnectionGate
from .descriptors import segment_file_budget
from .fetching import Fetcher
from .leadership import Leadership
from .log_errors import wire_error
from .flow import ReplyBudget
from .replies import Outbox, Reply
from .storage_faults import StorageFaults

log = logging.getLogger("fabric.broker")


def _readable_cid(raw: Any) -> int | None:
    """The cid to echo in an error reply, if the request's cid is usable at all."""
    try:
        return as_int(raw, "cid", 0)
    except Exception:  # FabricError, or anything else: an error path must not fail (rule 1)
        return None


def _echoed(header: dict[str, Any]) -> tuple[str | None, int | None]:
    """The op and cid an error reply echoes, read from a header that failed before (or while)
    it was parsed; only error replies need them this way, so valid requests skip it."""
    op = header.get("op")
    return (op if isinstance(op, str) else None), _readable_cid(header.get("cid"))


def _safe_text(exc: BaseException) -> str:
    """``type: message`` of an unexpected exception, for an UNKNOWN_ERROR reply; formatting an
    exception can itself raise (the huge integer of issue item 1 did), so this cannot."""
    try:
        text = str(exc)
    except Exception:
        text = "(unprintable)"
    if len(text) > 500:
        text = text[:500] + "..."
    return f"{type(exc).__name__}: {text}"


class BrokerCore:
    """One broker node's state and request handlers.  Who leads what is ``self.leadership``'s
    answer (its metadata image: on a single node, built from the local topics)."""

    def __init__(self, config: BrokerConfig, now: int | Now,
                 monotonic_ns: Callable[[], int] = time.perf_counter_ns) -> None:
        now = as_now(now)
        self.config = config
        # Only for the latency histograms of ``stats``: how long a handler ran (deadlines and
        # timestamps use the ``now`` the shell passes in).  Tests freeze it.
        self.monotonic_ns = monotonic_ns
        self.limits = config.limits
        data_dir = Path(config.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.cluster_id = self._cluster_id(data_dir)
        nofile = nofile_limit()[0]
        self.files = FilePool(segment_file_budget(config.limits, nofile))
        log.info("segment files: at most %d open at once (open-files limit %d)", self.files.capacity, nofile)
        self.clustered = bool(getattr(config, "clustered", False))
        # A cluster's replicas keep a leader-epoch table beside each log (truncation by epoch)
        self.topics = TopicManager(data_dir, config.topic_defaults, config.limits, now.wall_ms, self.files,
                                   open_log=EpochLog.open if self.clustered else ProducerLog.open)
        self.cluster: Any = None  # the ClusterNode (cluster_node.py), set by the shell when clustered
        self.cluster_groups: Any = None  # ClusterGroups (cluster_groups.py), set with the cluster handlers
        self.metrics = Metrics(started_ms=now.wall_ms)
        self.storage_faults = StorageFaults()  # storage errors told to clients, logged (rate-limited)
        self._advertised_port = config.port  # the shell sets the real one when it bound port 0
        self.leadership = Leadership(self.topics, self._node_info, now.mono_ms)
        self.fetcher = Fetcher(self.topics, self.metrics, config.limits, self.storage_faults.note, self.leadership)
        self.waiters = self.fetcher.waiters
        self.shutting_down = False
        # ROUTER identity -> client address, filled by the shell (bounded: forgotten when full)
        self.peer_hosts: dict[bytes, str] = BoundedDict(config.limits.inflight_requests_max)
        self.connections = ConnectionGate(config.limits.connections_max, config.limits.connection_replace_idle_ms,
                                          config.limits.connection_idle_ms_max)  # fed by the I/O shell
        # Reply bytes ZeroMQ still holds per peer (flow.py): the shell counts them, we refuse work
        self.flow = ReplyBudget(config.limits.connection_reply_bytes_max, config.limits.reply_bytes_max,
                                config.limits.inflight_requests_max)
        self.fetcher.congested = self.flow.congested
        self.handlers: dict[str, Callable[[bytes, Any, Any, list, Now], Outbox]] = {
            "api_versions": self._api_versions,
            "metadata": self._metadata,
            "create_topics": self._create_topics,
            "delete_topics": self._delete_topics,
            "list_topics": self._list_topics,
            "describe_topics": self._describe_topics,
            "alter_topic_configs": self._alter_topic_configs,
            "create_partitions": self._create_partitions,
            "produce": self._produce,
            "fetch": self._fetch,
            "list_offsets": self._list_offsets,
            "broker_stats": self._broker_stats,
            "stats": self._stats,
            "init_producer_id": self._init_producer_id,
        }
        # Producer ids on a single node: node id in the high bits, a durable counter in the low
        # (producer_ids.py); a cluster's come in blocks from the controller (producer_id_blocks.py)
        self.producer_ids: ProducerIds | None = None
        if not self.clustered:
            self.producer_ids = ProducerIds(data_dir / META_DIR, config.node_id)
        self.groups = GroupService(
            self.topics, now.wall_ms, node_id=config.node_id, offsets_topic_partitions=config.offsets_topic_partitions,
            initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
            advertised=lambda: (config.advertised, self.advertised_port),
            host_of=lambda peer: self.peer_hosts.get(peer, ""), clustered=self.clustered)
        self.leadership.refresh(now.mono_ms)  # (the group service may have created its offsets topic)
        for op in self.groups.operations():
            self.handlers[op] = self.groups.handle
        warning = exposure_warning(config)
        if warning:
            log.warning("%s", warning)

    @property
    def advertised_port(self) -> int:
        return self._advertised_port

    @advertised_port.setter
    def advertised_port(self, port: int) -> None:
        """The shell bound its port (maybe an ephemeral one): the image names this broker there."""
        self._advertised_port = port
        self.leadership.node_moved()

    def _node_info(self) -> BrokerInfo:
        return BrokerInfo(self.config.node_id, self.config.advertised, self._advertised_port)

    def _cluster_id(self, data_dir: Path) -> str:
        path = data_dir / "meta" / "cluster_id"
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.config.cluster_id:
            return self.config.cluster_id
        if path.exists():
            return path.read_text().strip()
        cid = uuid.uuid4().hex
        path.write_text(cid + "\n")
        return cid

    # ------------------------------------------------------------------ entry points
    def handle(self, peer: bytes, frames: list, now: int | Now) -> Outbox:
        now = as_now(now)
        op: str | None = None
        cid: int | None = None
        header: dict[str, Any] | None = None  # decoded: an error reply echoes what it can of it
        try:
            if not frames:
                raise FabricError("MALFORMED_REQUEST", "request has no frames")
            # Header first, so that even frame-limit errors carry the request's cid.
            header = codec.decode_map(frames[0], self.limits.header_frame_bytes_max)
            codec.check_frames(frames, self.limits)
            if self.cluster is not None and header.get("op") in ("replica_fetch", "replica_ack"):
                if len(frames) > 1:
                    raise FabricError("MALFORMED_REQUEST", f"{header['op']} takes no payload frames, got {len(frames) - 1}")
                return self.cluster.handle_replica(peer, header, as_now(now))  # brokers only (SPEC: Cluster)
            if header.get("op") == "cluster_status":
                if self.cluster is None:
                    raise FabricError("POLICY_VIOLATION", "this broker is a single node, not part of a cluster")
                return self.cluster.status(peer, header, as_now(now))
            env, req = parse_request(header)
            op, cid = env.op, env.cid
            handler = self.handlers.get(op)
            if handler is None:
                if op in BROKER_OPERATIONS:  # (issue 15: the lead wires these once clustered)
                    raise FabricError("UNKNOWN_OPERATION", f"{op} is a broker-to-broker operation of a replicated "
                                                           "cluster; this broker is not clustered")
                raise FabricError("UNKNOWN_OPERATION", f"operation {op!r} is not served by this broker")
            if op not in ("produce",) and len(frames) > 1:
                raise FabricError("MALFORMED_REQUEST", f"{op} takes no payload frames, got {len(frames) - 1}")
            if self.shutting_down and op in ("produce", "fetch"):
                raise FabricError("BROKER_SHUTTING_DOWN", "the broker is stopping")
            if op != "fetch" and self.flow.over(peer):  # (a fetch is throttled per partition: fetching.py)
                raise FabricError("THROTTLED", f"{self.flow.queued(peer)} reply bytes wait unread for this "
                                               "connection: read them, then retry")
            self.metrics.requests[op] += 1
            started = self.monotonic_ns()
            out = handler(peer, env, req, frames, now)
            self.metrics.observe_request(op, (self.monotonic_ns() - started) // 1000)
            return out
        except FabricError as err:
            return self._error_outbox(peer, header, op, cid, err)
        except LogError as exc:  # storage trouble no handler took as its own: its wire error
            return self._error_outbox(peer, header, op, cid, wire_error(exc))
        except Exception as exc:  # rule 1: never let a request kill the loop
            try:
                log.exception("unexpected error handling %s", op)
            except Exception:
                pass
            return self._error_outbox(peer, header, op, cid, FabricError("UNKNOWN_ERROR", _safe_text(exc)))

    def _error_outbox(self, peer: bytes, header: dict[str, Any] | None, op: str | None, cid: int | None,
                      err: FabricError) -> Outbox:
        """The error reply to a request that failed: this path cannot fail itself (rule 1), so
        anything odd in what the request echoes costs it the echo, never the reply."""
        try:
            if header is None:
                header = err.details.get("header")  # decoded, but refused by the decoder itself
            if op is None and isinstance(header, dict):
                op, cid = _echoed(header)
            self.metrics.errors[err.name] += 1
            self.storage_faults.note(err)
            log.debug("error reply to %s: %s", peer.hex(), err)
            return [(peer, Reply(error_reply(op, cid, err)))]
        except Exception:
            return [(peer, Reply(error_reply(None, None, FabricError(err.name, "the request failed"))))]

    def peer_gone(self, peer: bytes) -> Outbox:
        """``peer``'s connection ended: its parked fetches are answered now, not at their
        deadlines (``Fetcher.release`` says why answered and not dropped), and the broker forgets
        its host.  (Group members keep their sessions: a consumer may reconnect, and the session
        timeout decides, as in Kafka.)"""
        self.peer_hosts.pop(peer, None)
        self.flow.forget(peer)
        if self.cluster is not None:
            self.cluster.acks.forget(peer)
        return self.fetcher.release(peer)

    def refuse(self, peer: bytes, frames: list, err: FabricError) -> Outbox:
        """An error reply to a request not handled at all (e.g. from a connection over
        ``connections_max``), echoing its op and cid when its header is readable."""
        op: str | None = None
        cid: int | None = None
        try:
            op, cid = _echoed(codec.decode_map(frames[0], self.limits.header_frame_bytes_max))
        except (FabricError, IndexError):
            pass
        self.metrics.errors[err.name] += 1
        return [(peer, Reply(error_reply(op, cid, err)))]

    def apply_image(self, image: Any, now: Now) -> Outbox:
        """A cluster's new metadata image: local logs first (``sync_to_image``), then leadership
        and the replica objects; produce replies whose leadership ended fail with NOT_LEADER, and
        parked fetches of every local partition are re-checked (a lost leadership answers them)."""
        self.topics.sync_to_image(image, self.config.node_id, now.wall_ms)
        self.leadership.apply(image, now.mono_ms)
        out: Outbox = []
        replicas = self.cluster.replicas
        if replicas.closing:
            tokens, replicas.closing = replicas.closing, []
            out.extend(self.cluster.acks.failed(tokens, FabricError(
                "NOT_LEADER", "leadership moved before the in-sync replicas confirmed the batch: retry")))
        for leader in list(replicas.leaders.values()):  # a smaller ISR may commit what waits, now
            out.extend(self.cluster.committed(leader, now))
        if len(self.waiters):
            out.extend(self.fetcher.wake([(n, p) for n, p, _ in self.topics.all_logs()], now.mono_ms))
        if self.cluster_groups is not None:
            out.extend(self.cluster_groups.image_applied(now))
        return out

    def synced(self, logs: Iterable[tuple[str, int, PartitionLog, int]], now: int | Now) -> Outbox:
        """The logs a held reply waited for are fsynced up to the given ends: the high watermark
        passes them, and the fetches waiting for those partitions are answered."""
        touched = []
        for topic, p, plog, end in logs:
            try:
                if self.topics.partition(topic, p) is not plog:
                    continue  # deleted (and maybe created again) since
                self.leadership.appended(topic, p, end)
            except (FabricError, LogError):
                continue
            touched.append((topic, p))
        return self.fetcher.wake(touched, as_now(now).mono_ms) if touched and len(self.waiters) else []

    def expire(self, now: int | Now) -> Outbox:
        """Answer parked fetches whose wait is over (monotonic) with whatever they can have."""
        return self.fetcher.expire(as_now(now).mono_ms)

    def tick(self, now: int | Now) -> Outbox:
        """Time-driven work: expired long-polls, group session/rebalance timeouts."""
        now = as_now(now)
        return self.expire(now) + self.groups.tick(now)

    def next_deadline_ms(self) -> int | None:
        """The earliest parked fetch's deadline, on the monotonic clock."""
        return self.fetcher.next_deadline_ms()

    def drain_waiters(self) -> Outbox:
        """On shutdown: answer every parked fetch now."""
        return self.fetcher.drain()

    def housekeeping(self, now: int | Now) -> None:
        """Retention and age-based segment rolls (dates: the wall clock); called every
        ``retention_check_interval_ms`` (of the monotonic clock)."""
        now_ms = as_now(now).wall_ms
        for name, p, plog in self.topics.all_logs():
            try:
                plog.maybe_roll(now_ms)
                deleted = plog.apply_retention(now_ms)
                plog.producer_housekeeping(now_ms, self.config.producer_id_expiration_ms)
                if deleted:
                    log.info("retention deleted %d segments of %s-%d; log starts at %d", deleted, name, p,
                             plog.start_offset)
            except Exception:
                log.exception("housekeeping of %s-%d", name, p)

    def close(self) -> None:
        self.topics.close()

    # ------------------------------------------------------------------ cluster / topics
    def _api_versions(self, peer, env, req, frames, now: Now) -> Outbox:
        if req.client:
            log.debug("client %s: %s", peer.hex(), req.client)
        ops = {name: [lo, hi] for name, (_, lo, hi) in sorted(OPERATIONS.items()) if name in self.handlers}
        return [(peer, Reply(ok_reply(env.op, env.cid, ops=ops, limits=self.limits.to_wire(),
                                      broker={"version": __version__, "node_id": self.config.node_id,
                                              "cluster_id": self.cluster_id})))]

    def _metadata(self, peer, env, req: MetadataRequest, frames, now: Now) -> Outbox:
        names = list(self.topics.topics) if req.topics is None else list(req.topics)
        topics = []
        for name in names:
            topic = self.topics.topics.get(name)
            if topic is None and req.topics is not None and req.allow_auto_create and self.config.auto_create_topics:
                try:
                    topic = self.topics.create(name, self.config.default_partitions, {}, now.wall_ms)
                    self.leadership.refresh(now.mono_ms)
                except (FabricError, LogError) as exc:
                    err = wire_error(exc)
                    self.storage_faults.note(err)
                    topics.append({"name": name, "error": err.to_wire(), "partitions": []})
                    continue
            if topic is None:
                err = FabricError("UNKNOWN_TOPIC_OR_PARTITION", f"unknown topic {name!r}")
                topics.append({"name": name, "error": err.to_wire(), "partitions": []})
                continue
            topics.append({"name": name, "internal": topic.internal, "topic_id": topic.topic_id,
                           "partitions": list(self.leadership.partitions_meta(name))})
        return [(peer, Reply(ok_reply(env.op, env.cid, cluster_id=self.cluster_id,
                                      controller_id=self.config.node_id, brokers=self.leadership.brokers(),
                                      topics=topics)))]

    def _create_topics(self, peer, env, req: CreateTopicsRequest, frames, now: Now) -> Outbox:
        results = []
        for nt in req.topics:
            partitions = nt.partitions or self.config.default_partitions
            try:
                if (nt.replication_factor or 1) > 1:
                    raise FabricError("INVALID_REPLICATION_FACTOR",
                                      f"replication factor {nt.replication_factor} exceeds the 1 live broker")
                if req.validate_only:
                    self.topics.check_new(nt.name, partitions, nt.configs)
                else:
                    self.topics.create(nt.name, partitions, nt.configs, now.wall_ms)
                    self.leadership.refresh(now.mono_ms)
                results.append({"name": nt.name, "partitions": partitions, "replication_factor": 1})
            except (FabricError, LogError) as exc:
                err = wire_error(exc)
                self.storage_faults.note(err)
                results.append({"name": nt.name, "error": err.to_wire()})
        out: Outbox = [(peer, Reply(ok_reply(env.op, env.cid, topics=results)))]
        return out + self.groups.metadata_changed(now)

    def _delete_topics(self, peer, env, req: DeleteTopicsRequest, frames, now: Now) -> Outbox:
        results = []
        out: Outbox = []
        for name in req.topics:
            try:
                topic = self.topics.get(name)
                if not self.config.delete_topic_enable:
                    raise FabricError("POLICY_VIOLATION", "topic deletion is disabled on this broker")
                if topic.internal:
                    raise FabricError("POLICY_VIOLATION", f"{name!r} is an internal topic")
                keys = [(name, p) for p in range(len(topic.partitions))]
                self.topics.delete(name)
                self.leadership.refresh(now.mono_ms)
                self.metrics.forget_topic(name)
                out.extend(self.fetcher.wake(keys, now.mono_ms))
                results.append({"name": name})
            except (FabricError, LogError) as exc:
                err = wire_error(exc)
                results.append({"name": name, "error": err.to_wire()})
        return [(peer, Reply(ok_reply(env.op, env.cid, topics=results)))] + out + self.groups.metadata_changed(now)

    def _list_topics(self, peer, env, req: ListTopicsRequest, frames, now: Now) -> Outbox:
        topics = [{"name": t.name, "partitions": len(t.partitions), "internal": t.internal}
                  for t in sorted(self.topics.topics.values(), key=lambda t: t.name)
                  if req.internal or not t.internal]
        return [(peer, Reply(ok_reply(env.op, env.cid, topics=topics)))]

    def _describe_topics(self, peer, env, req: DescribeTopicsRequest, frames, now: Now) -> Outbox:
        names = sorted(self.topics.topics) if req.topics is None else list(req.topics)
        out = []
        for name in names:
            topic = self.topics.topics.get(name)
            if topic is None:
                err = FabricError("UNKNOWN_TOPIC_OR_PARTITION", f"unknown topic {name!r}")
                out.append({"name": name, "error": err.to_wire()})
                continue
            parts = []
            for p, plog in enumerate(topic.partitions):
                meta = self.leadership.partition_meta(name, p)
                if plog is not None:  # (a partition held only by other brokers: their describe says more)
                    meta.update(start_offset=plog.start_offset, end_offset=plog.end_offset,
                                high_watermark=self.leadership.high_watermark(name, p), size_bytes=plog.size_bytes,
                                segments=plog.segment_count)
                parts.append(meta)
            out.append({"name": name, "topic_id": topic.topic_id, "internal": topic.internal,
                        "configs": topic.configs, "effective_configs": topic.config.to_mapping(),
                        "partitions": parts})
        return [(peer, Reply(ok_reply(env.op, env.cid, topics=out)))]

    def _alter_topic_configs(self, peer, env, req: AlterTopicConfigsRequest, frames, now: Now) -> Outbox:
        topic = self.topics.alter_configs(req.topic, req.set, req.delete)
        return [(peer, Reply(ok_reply(env.op, env.cid, name=topic.name, configs=topic.configs)))]

    def _create_partitions(self, peer, env, req: CreatePartitionsRequest, frames, now: Now) -> Outbox:
        topic = self.topics.add_partitions(req.topic, req.count, now.wall_ms)
        self.leadership.refresh(now.mono_ms)
        return ([(peer, Reply(ok_reply(env.op, env.cid, name=topic.name, partitions=len(topic.partitions))))]
                + self.groups.metadata_changed(now))

    def _broker_stats(self, peer, env, req, frames, now: Now) -> Outbox:
        snap = self.metrics.snapshot(now.wall_ms)
        snap["parked_fetches"] = len(self.waiters)
        snap["parked_group_requests"] = self.groups.parked()
        snap["topics"] = len(self.topics.topics)
        snap["connections"] = self.connections.open_connections
        snap["connections_refused"] = self.connections.refused_total
        snap["connections_closed_idle"] = self.connections.closed_idle_total
        snap["reply_bytes_queued"] = self.flow.marked_bytes
        return [(peer, Reply(ok_reply(env.op, env.cid, **snap)))]

    def _stats(self, peer, env, req: StatsRequest, frames, now: Now) -> Outbox:
        return [(peer, Reply(ok_reply(env.op, env.cid, **self.stats_body(req, now))))]

    def stats_body(self, req: StatsRequest, now: int | Now) -> dict[str, Any]:
        """The ``stats`` reply without its envelope (also what the Prometheus endpoint renders);
        its times (``now_ms``, uptime, lag in seconds) are dates: the wall clock."""
        return stats.build(req, metrics=self.metrics, topics=self.topics, leadership=self.leadership,
                           group_overview=self.groups.coordinator.overview(), node_id=self.config.node_id,
                           cluster_id=self.cluster_id, version=__version__,
                           connections_open=self.connections.open_connections,
                           connections_refused=self.connections.refused_total,
                           parked_fetches=len(self.waiters), parked_group_requests=self.groups.parked(),
                           now_ms=as_now(now).wall_ms)

    # ------------------------------------------------------------------ data path
    def _log_for_produce(self, topic: str, partition: int, now: Now) -> PartitionLog:
        t = self.topics.topics.get(topic)
        if t is None and self.config.auto_create_topics:
            self.topics.create(topic, self.config.default_partitions, {}, now.wall_ms)
            self.leadership.refresh(now.mono_ms)
        plog = self.topics.partition(topic, partition)
        self.leadership.leading(topic, partition)
        if (t or self.topics.topics[topic]).internal:
            raise FabricError("POLICY_VIOLATION", f"{topic!r} is internal: only the broker writes it")
        return plog

    def _produce(self, peer, env, req: ProduceRequest, frames, now: Now) -> Outbox:
        payload = frames[1:]
        if len(req.batches) != len(payload):
            raise FabricError("INVALID_FIELD",
                              f"batches lists {len(req.batches)} targets but the request carries "
                              f"{len(payload)} payload frames")
        results = []
        flush: list[tuple[str, int, PartitionLog]] = []
        touched: list[tuple[str, int]] = []
        limits = self.limits
        appended = self.leadership.appended
        now_ms = now.wall_ms  # a date: the log-append time and the segment's age
        for target, frame in zip(req.batches, payload):
            try:
                plog = self._log_for_produce(target.topic, target.partition, now)
                h = validate_batch(frame, min(plog.config.max_batch_bytes, limits.batch_bytes_max),
                                   limits.batch_records_max)
                if h.producer_id >= 0:  # an idempotent producer's batch (SPEC "Idempotent producer")
                    dup = plog.check_producer(h.producer_id, h.producer_epoch, h.base_sequence, h.record_count)
                    if dup is not None:  # written before: its original offsets, nothing appended
                        self.metrics.duplicates += 1
                        if plog.config.flush_every_batch and req.acks != 0 \
                                and not any([held is plog for _, _, held in flush]):
                            flush.append((target.topic, target.partition, plog))  # (the original's fsync)
                        results.append({"topic": target.topic, "partition": target.partition,
                                        "base_offset": dup.base_offset, "log_append_time": -1})
                        continue
                res = plog.append(bytearray(frame), now_ms, defer_flush=True)
                c = self.metrics.partition(target.topic, target.partition)
                c.batches_in += 1
                c.records_in += h.record_count
                c.bytes_in += res.size
                self.metrics.records_in += h.record_count
                self.metrics.bytes_in += res.size
                if plog.config.flush_every_batch and req.acks != 0:  # the watermark follows the fsync
                    if not any([held is plog for _, _, held in flush]):
                        flush.append((target.topic, target.partition, plog))
                else:  # the watermark follows at once (acks=0: nobody waits for the fsync)
                    appended(target.topic, target.partition, res.last_offset + 1)
                    touched.append((target.topic, target.partition))
                results.append({"topic": target.topic, "partition": target.partition,
                                "base_offset": res.base_offset, "log_append_time": now_ms
                                if plog.config.timestamp_type == "log_append_time" else -1})
            except (FabricError, LogError) as exc:
                err = wire_error(exc)
                self.metrics.errors[err.name] += 1
                self.storage_faults.note(err)
                results.append({"topic": target.topic, "partition": target.partition, "base_offset": -1,
                                "error": err.to_wire()})
        # Waiting consumers first, then the producer's ack: the replies leave in this order within
        # the same loop turn (after the same fsync), and the event reaches its readers one
        # send earlier, which is what end-to-end latency measures.
        out: Outbox = self.fetcher.wake(touched, now.mono_ms) if touched and len(self.waiters) else []
        if req.acks != 0:
            out.append((peer, Reply(ok_reply(env.op, env.cid, results=results), flush=flush)))
        return out

    def _init_producer_id(self, peer, env, req: InitProducerIdRequest, frames, now: Now) -> Outbox:
        """SPEC 14.2: a new id at epoch 0, or ``producer_id`` at its next epoch (a new id once its
        epochs are used up).  A cluster's new ids come from the controller's blocks (the reply may
        wait for one: ``producer_id_blocks.py``)."""
        if (req.producer_id < 0) != (req.producer_epoch < 0):
            raise FabricError("INVALID_FIELD", "producer_id and producer_epoch are both -1 or both set")
        bumped = bump(req.producer_id, req.producer_epoch) if req.producer_id >= 0 else None
        if bumped is None and self.producer_ids is None:
            if self.cluster is None:
                raise FabricError("REQUEST_TIMED_OUT", "the broker is joining its cluster: retry")
            return self.cluster.producer_ids.new_id(peer, env.cid, now)
        pid, epoch = bumped if bumped is not None else (self.producer_ids.next_id(), 0)
        return [(peer, Reply(ok_reply(env.op, env.cid, producer_id=pid, producer_epoch=epoch)))]

    def _fetch(self, peer, env, req: FetchRequest, frames, now: Now) -> Outbox:
        return self.fetcher.fetch(peer, env.cid, req, now.mono_ms)

    def _list_offsets(self, peer, env, req: ListOffsetsRequest, frames, now: Now) -> Outbox:
        results = []
        for q in req.partitions:
            entry: dict[str, Any] = {"topic": q.topic, "partition": q.partition}
            try:
                plog = self.topics.partition(q.topic, q.partition)
                if q.at == "earliest":
                    entry.update(offset=plog.start_offset, timestamp=-1)
                elif q.at == "latest":
                    entry.update(offset=plog.end_offset, timestamp=-1)
                else:
                    found = plog.offset_for_timestamp(q.at)
                    if found is None:
                        entry.update(offset=-1, timestamp=-1)
                    else:
                        entry.update(offset=found[0], timestamp=found[1])
            except (FabricError, LogError) as exc:
                err = wire_error(exc)
                self.storage_faults.note(err)
                entry["error"] = err.to_wire()
            results.append(entry)
        return [(peer, Reply(ok_reply(env.op, env.cid, partitions=results)))]

