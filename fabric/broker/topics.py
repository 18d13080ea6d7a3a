"""The broker's topics: their metadata (persisted) and their partition logs (opened).

Why a metadata file separate from the logs: a topic's partition count and config must survive a
restart even when a partition is empty, and the cluster issue will replace this file with the
Raft metadata log; keeping all metadata writes behind ``TopicManager`` makes that swap local.

Crash safety of create/delete: create opens the partition directories first and persists the
metadata second; delete persists first and removes directories second.  On start, any partition
directory that the metadata does not name is a leftover of one of those and is removed.

A create (or ``add_partitions``) is all or nothing while the broker runs, too: if any partition
cannot be opened, or the metadata cannot be written, every partition it opened is closed and its
directory removed before the error is answered, so a failed create leaves no descriptor, no
directory and no topic behind.  (It used to leave every opened partition open: a create that hit
``EMFILE`` kept the broker's descriptors until restart.)  Partition logs borrow their descriptors
from the broker's ``FilePool``, so a partition costs none while idle.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import cbor2

from ..log.config import LogConfig
from ..log.errors import LogError
from ..log.handles import FilePool
from ..log.partition_log import PartitionLog
from ..protocol.errors import FabricError
from ..protocol.limits import Limits
from ..protocol.messages import check_topic_name

log = logging.getLogger("fabric.broker.topics")

META_DIR = "meta"
CONTROLLER_DIR = "controller"  # a controller voter's Raft storage beside the partitions (not a partition)
TOPICS_FILE = "topics.cbor"
META_VERSION = 1
# Topic settings a cluster's controller keeps for replication, not for the log itself
REPLICATION_CONFIGS = frozenset({"min_insync_replicas", "unclean_leader_election"})


def _log_configs(configs: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(configs).items() if k not in REPLICATION_CONFIGS}


@dataclass
class Topic:
    name: str
    topic_id: str
    configs: dict[str, Any]  # the topic's overrides, as given (what describe shows)
    config: LogConfig  # effective: broker defaults + overrides
    internal: bool
    created_ms: int
    # One entry per partition; None where this broker holds no replica (a cluster's image assigns
    # it elsewhere: ``sync_to_image``).  A single node holds every partition.
    partitions: list[PartitionLog | None] = field(default_factory=list)

    def meta(self) -> dict[str, Any]:
        meta = {"topic_id": self.topic_id, "partitions": len(self.partitions), "configs": self.configs,
                "internal": self.internal, "created_ms": self.created_ms}
        local = self.local_partitions()
        if len(local) != len(self.partitions):  # (absent: every partition is local, as before)
            meta["local"] = local
        return meta

    def local_partitions(self) -> list[int]:
        return [p for p, plog in enumerate(self.partitions) if plog is not None]


def _canonical(overrides: dict[str, Any], config: LogConfig) -> dict[str, Any]:
    """The overrides as the validated config spells them (ints, not floats; one policy spelling)."""
    effective = config.to_mapping()
    return {k: effective[k] for k in overrides}


def _partition_dir_name(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


class TopicManager:
    def __init__(self, data_dir: Path, defaults: LogConfig, limits: Limits, now_ms: int,
                 files: FilePool | None = None,
                 open_log: Callable[[Path, LogConfig, int, FilePool | None], Any] = PartitionLog.open) -> None:
        # How a partition's log opens: a plain ``PartitionLog`` on a single node; a cluster's
        # replicas pass ``EpochLog.open`` (the leader-epoch table that replication truncates by).
        self.open_log = open_log
        self.data_dir = data_dir
        self.defaults = defaults
        self.limits = limits
        self.files = files  # lends every partition log its segment descriptors (None: the shared pool)
        self.topics: dict[str, Topic] = {}
        self._partition_total = 0
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / META_DIR).mkdir(exist_ok=True)
        self._load(now_ms)

    # ------------------------------------------------------------------ persistence
    def _meta_path(self) -> Path:
        return self.data_dir / META_DIR / TOPICS_FILE

    def _load(self, now_ms: int) -> None:
        path = self._meta_path()
        stored: dict[str, Any] = {}
        if path.exists():
            raw = cbor2.loads(path.read_bytes())
            if not isinstance(raw, dict) or raw.get("version") != META_VERSION:
                raise RuntimeError(f"{path}: unknown metadata format")
            stored = raw["topics"]
        wanted: set[str] = set()
        for name, meta in sorted(stored.items()):
            config = LogConfig.from_mapping(_log_configs(meta["configs"]), self.defaults)
            topic = Topic(name, meta["topic_id"], dict(meta["configs"]), config, meta["internal"], meta["created_ms"])
            local = set(meta.get("local", range(meta["partitions"])))
            for p in range(meta["partitions"]):
                if p not in local:
                    topic.partitions.append(None)
                    continue
                d = self.data_dir / _partition_dir_name(name, p)
                wanted.add(d.name)
                plog = self.open_log(d, config, now_ms, self.files)
                if not plog.recovery.clean:
                    log.warning("recovered %s-%d: %s", name, p, plog.recovery)
                topic.partitions.append(plog)
            self.topics[name] = topic
            self._partition_total += len(local)
        for entry in self.data_dir.iterdir():
            # (``controller``: a voter's Raft storage, cluster_node.py; removing it at a restart
            # lost the metadata log, and with every voter restarted, every topic)
            if entry.is_dir() and entry.name not in (META_DIR, CONTROLLER_DIR) and entry.name not in wanted:
                log.warning("removing %s: not a partition of any topic (left by an interrupted create/delete)",
                            entry.name)
                shutil.rmtree(entry, ignore_errors=True)
        log.info("loaded %d topics, %d partitions from %s", len(self.topics), self._partition_total, self.data_dir)

    def _persist(self) -> None:
        path = self._meta_path()
        tmp = path.with_suffix(".tmp")
        data = cbor2.dumps({"version": META_VERSION, "topics": {n: t.meta() for n, t in self.topics.items()}})
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    # ------------------------------------------------------------------ queries
    def get(self, name: str) -> Topic:
        topic = self.topics.get(name)
        if topic is None:
            raise FabricError("UNKNOWN_TOPIC_OR_PARTITION", f"unknown topic {name!r}")
        return topic

    def partition(self, name: str, partition: int) -> PartitionLog:
        topic = self.topics.get(name)
        if topic is None:
            raise FabricError("UNKNOWN_TOPIC_OR_PARTITION", f"unknown topic {name!r}")
        if not 0 <= partition < len(topic.partitions):
            raise FabricError("UNKNOWN_TOPIC_OR_PARTITION",
                              f"topic {name!r} has partitions 0-{len(topic.partitions) - 1}, not {partition}")
        plog = topic.partitions[partition]
        if plog is None:
            raise FabricError("NOT_LEADER", f"this broker holds no replica of {name}-{partition}: refresh metadata")
        return plog

    def local(self, name: str, partition: int) -> PartitionLog | None:
        """The log of ``name``-``partition`` if this broker holds it, else None (no error)."""
        topic = self.topics.get(name)
        if topic is None or not 0 <= partition < len(topic.partitions):
            return None
        return topic.partitions[partition]

    def all_logs(self) -> Iterator[tuple[str, int, PartitionLog]]:
        for topic in list(self.topics.values()):
            for p, plog in enumerate(list(topic.partitions)):
                if plog is not None:
                    yield topic.name, p, plog

    # ------------------------------------------------------------------ changes
    def check_new(self, name: str, partitions: int, configs: dict[str, Any], internal: bool = False) -> LogConfig:
        """Everything create would check, without creating (``validate_only``)."""
        check_topic_name(name, allow_internal=internal)
        if name in self.topics:
            raise FabricError("TOPIC_ALREADY_EXISTS", f"topic {name!r} already exists")
        if len(self.topics) >= self.limits.topics_max:
            raise FabricError("LIMIT_EXCEEDED", f"the broker already holds {len(self.topics)} topics (limit)")
        if not 1 <= partitions <= self.limits.partitions_per_topic_max:
            raise FabricError("INVALID_PARTITIONS",
                              f"partitions must be 1-{self.limits.partitions_per_topic_max}, not {partitions}")
        if self._partition_total + partitions > self.limits.partitions_total_max:
            raise FabricError("LIMIT_EXCEEDED",
                              f"{partitions} more partitions would exceed the broker limit of "
                              f"{self.limits.partitions_total_max}")
        return LogConfig.from_mapping(configs, self.defaults)

    def create(self, name: str, partitions: int, configs: dict[str, Any], now_ms: int,
               internal: bool = False) -> Topic:
        config = self.check_new(name, partitions, configs, internal)
        topic = Topic(name, uuid.uuid4().hex, _canonical(configs, config), config, internal, now_ms)
        topic.partitions = self._open_partitions(name, range(partitions), config, now_ms, "create topic")
        self.topics[name] = topic
        self._partition_total += partitions
        try:
            self._persist()
        except OSError as exc:
            del self.topics[name]
            self._partition_total -= partitions
            self._discard(name, range(partitions), topic.partitions)
            raise FabricError("STORAGE_ERROR", f"cannot create topic {name!r}: writing the metadata failed: "
                                               f"{exc}; nothing was created") from None
        log.info("created topic %s with %d partitions %s", name, partitions, configs or "")
        return topic

    def _open_partitions(self, name: str, indexes: range, config: LogConfig, now_ms: int,
                         action: str) -> list[PartitionLog]:
        """Open (creating) the logs of partitions ``indexes``: all of them, or none (``_discard``)."""
        opened: list[PartitionLog] = []
        p = indexes.start
        try:
            for p in indexes:
                opened.append(self.open_log(self.data_dir / _partition_dir_name(name, p), config, now_ms,
                                            self.files))
        except BaseException as exc:
            self._discard(name, range(indexes.start, p + 1), opened)
            if isinstance(exc, (FabricError, LogError, OSError)):
                why = exc.message if isinstance(exc, (FabricError, LogError)) else str(exc)
                log.error("cannot %s %r: partition %d: %s; undone", action, name, p, why)
                raise FabricError("STORAGE_ERROR", f"cannot {action} {name!r}: partition {p}: {why}; "
                                                   f"nothing was created") from None
            raise
        return opened

    def _discard(self, name: str, indexes: range, opened: list[PartitionLog]) -> None:
        """Undo ``_open_partitions``: close the logs and remove the partitions' directories (every
        one in ``indexes``, including one whose open failed halfway; no metadata names them)."""
        for plog in opened:
            try:
                plog.delete()
            except LogError as exc:
                log.error("undoing a create: %s (the directory is removed on next start)", exc.message)
        for p in indexes:
            d = self.data_dir / _partition_dir_name(name, p)
            if d.is_dir():
                shutil.rmtree(d, ignore_errors=True)

    def delete(self, name: str) -> None:
        topic = self.get(name)
        del self.topics[name]
        self._partition_total -= len(topic.local_partitions())
        self._persist()
        for plog in topic.partitions:
            if plog is None:
                continue
            try:
                plog.delete()
            except OSError as exc:
                log.error("deleting %s: %s (the directory is removed on next start)", plog.directory, exc)
        log.info("deleted topic %s", name)

    def add_partitions(self, name: str, count: int, now_ms: int) -> Topic:
        topic = self.get(name)
        have = len(topic.partitions)
        if count <= have:
            raise FabricError("INVALID_PARTITIONS", f"topic {name!r} has {have} partitions; the new count must be larger")
        if count > self.limits.partitions_per_topic_max or \
                self._partition_total + count - have > self.limits.partitions_total_max:
            raise FabricError("LIMIT_EXCEEDED", f"{count} partitions exceed the broker's limits")
        new = self._open_partitions(name, range(have, count), topic.config, now_ms, "add partitions to")
        topic.partitions.extend(new)
        self._partition_total += count - have
        try:
            self._persist()
        except OSError as exc:
            del topic.partitions[have:]
            self._partition_total -= count - have
            self._discard(name, range(have, count), new)
            raise FabricError("STORAGE_ERROR", f"cannot add partitions to {name!r}: writing the metadata "
                                               f"failed: {exc}; nothing was added") from None
        return topic

    def sync_to_image(self, image: Any, node_id: int, now_ms: int) -> list[tuple[str, int]]:
        """Make the local logs what a cluster's metadata image assigns to ``node_id``: open the
        partitions it holds a replica of, delete those it no longer holds, drop topics the image
        lacks (or holds under another topic id: deleted and created again), with the image's
        configs.  Returns the (topic, partition) pairs whose log was opened or removed.

        Why here: the controller decides what exists; a broker only follows (issue 14: the topic
        manager becomes a log manager).  A partition that fails to open stays absent (logged) and
        is tried again at the next image: one bad disk directory must not stop the others."""
        changed: list[tuple[str, int]] = []
        for name in [n for n, t in self.topics.items()
                     if n not in image.topics or image.topics[n].topic_id != t.topic_id]:
            topic = self.topics.pop(name)
            self._partition_total -= len(topic.local_partitions())
            for p, plog in enumerate(topic.partitions):
                if plog is not None:
                    self._remove_log(name, p, plog)
                    changed.append((name, p))
            log.info("deleted topic %s (not in the cluster's metadata)", name)
        for name, timage in image.topics.items():
            wanted = {p for p, a in enumerate(timage.partitions) if node_id in a.replicas}
            topic = self.topics.get(name)
            if topic is None:
                if not wanted:
                    continue  # nothing of it lives here
                try:
                    config = LogConfig.from_mapping(_log_configs(timage.configs), self.defaults)
                except (ValueError, FabricError) as exc:
                    log.error("topic %s: its configs %s are invalid here: %s; not opened", name, dict(timage.configs),
                              exc)
                    continue
                topic = Topic(name, timage.topic_id, dict(timage.configs), config, timage.internal, now_ms)
                self.topics[name] = topic
            elif dict(timage.configs) != topic.configs:
                topic.configs = dict(timage.configs)
                topic.config = LogConfig.from_mapping(_log_configs(topic.configs), self.defaults)
                for plog in topic.partitions:
                    if plog is not None:
                        plog.reconfigure(topic.config)
            while len(topic.partitions) < len(timage.partitions):
                topic.partitions.append(None)
            for p, plog in enumerate(topic.partitions):
                if p in wanted and plog is None:
                    try:
                        topic.partitions[p] = self.open_log(self.data_dir / _partition_dir_name(name, p),
                                                            topic.config, now_ms, self.files)
                    except (LogError, OSError) as exc:
                        log.error("cannot open %s-%d assigned to this broker: %s", name, p, exc)
                        continue
                    self._partition_total += 1
                    changed.append((name, p))
                elif p not in wanted and plog is not None:
                    topic.partitions[p] = None
                    self._partition_total -= 1
                    self._remove_log(name, p, plog)
                    changed.append((name, p))
        for name in [n for n, t in self.topics.items() if not t.local_partitions() and n in image.topics
                     and not any(node_id in a.replicas for a in image.topics[n].partitions)]:
            del self.topics[name]  # (held nothing here any more)
        if changed:
            self._persist()
        return changed

    def _remove_log(self, name: str, p: int, plog: PartitionLog) -> None:
        try:
            plog.delete()
        except (LogError, OSError) as exc:
            log.error("deleting %s-%d: %s (the directory is removed on next start)", name, p, exc)

    def alter_configs(self, name: str, set_: dict[str, Any], delete: tuple[str, ...]) -> Topic:
        topic = self.get(name)
        merged = {k: v for k, v in topic.configs.items() if k not in delete}
        merged.update(set_)
        config = LogConfig.from_mapping(merged, self.defaults)
        topic.configs, topic.config = _canonical(merged, config), config
        for plog in topic.partitions:
            if plog is not None:
                plog.reconfigure(config)
        self._persist()
        return topic

    def close(self) -> None:
        for _, _, plog in self.all_logs():
            try:
                plog.close()
            except Exception:  # keep closing the others
                log.exception("closing %s", plog.directory)
