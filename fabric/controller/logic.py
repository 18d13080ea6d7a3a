"""The controller's decisions: broker sessions, fencing, leader election, topics and ISR changes.

Runs only on the Raft leader, and is pure: every method takes ``now_ms`` and returns
``(records, error_name_or_None, reply_fields)``.  It never changes the ``MetadataState`` itself: the
records it returns are proposed to Raft and applied to the state (on every voter) once committed.
Malformed requests (wrong field types, invalid names or configs) raise ``FabricError``.

Rules:
1. Soft state, kept here and lost with leadership: broker sessions (last heartbeat), brokers in
   controlled shutdown, and *pending* records (proposed, not yet applied).  Decisions read the
   committed state overlaid with the pending records, so a tick never decides the same change twice
   before it commits.  A pending entry is dropped once the state has caught up with it (not after a
   time: a record committed late must not be decided again, with the same epochs).
   ``on_became_leader`` starts every session afresh at ``now_ms`` and forgets the rest: the caller
   must call it (and decide anything) only once the state has applied every entry committed before
   this leader's term began, so no decision rests on a state the old leader's records will change.
2. Registration: a new incarnation replaces the old one (whose leaderships move first, rule 7)
   and is unfenced; an older incarnation is STALE_BROKER_EPOCH.  A heartbeat from a fenced broker unfences it once it has applied the
   metadata up to its own registration (``metadata_offset`` >= its ``epoch``).
3. A broker not heard from for ``session_timeout_ms`` is fenced: first each partition it leads
   gets a new leader, the first live ISR member in replica order, with the leader epoch bumped and
   the broker out of the ISR; it also leaves the ISRs it follows in (KIP-841).  The
   ``partition_change`` records come before the ``fence_broker`` record, so no committed prefix
   ever shows a fenced leader.
4. When a partition's last live ISR member goes, the partition goes offline (leader -1) keeping its
   ISR (those members still hold every acknowledged record); it is led again as soon as an ISR
   member is unfenced.  The ISR empties only by rule 7.  Only a topic with
   ``unclean_leader_election`` true elects a live replica outside the ISR, logged as a warning.
5. Every partition change bumps the partition epoch; every leader change (to -1 too) bumps the
   leader epoch.  A leader's ``alter_partition`` must carry both current epochs
   (FENCED_LEADER_EPOCH / INVALID_UPDATE_VERSION otherwise); its new ISR is a subset of the
   replicas holding the leader, and fenced or departing brokers are not added to it, nor a
   broker whose incarnation the leader names (``isr_incarnations``) is not the registered one
   (KIP-903: it saw a process that a restart has replaced catch up).
6. Controlled shutdown (heartbeat ``wants_shutdown``): the broker is treated as gone for elections
   (its leaderships move, it leaves ISRs where others remain); ``shutdown_ready`` once it leads
   nothing, at which point it is fenced.
7. Unclean restarts (KIP-966).  A follower acknowledges what it wrote to the OS, not what it
   fsynced, so a power loss can cut acknowledged records from its log.  ``register`` carries
   ``intact_since`` (``fabric/broker/restart.py``): the oldest incarnation since which the broker's
   logs hold every write.  When it does not cover the registered incarnation (None, or newer), the
   restart was unclean: before the registration record, the broker leaves every ISR, as its last
   member too (an ISR may then be empty and the partition stays offline: nothing is elected from
   a log that may lack acknowledged records, unless the topic allows unclean elections); it
   rejoins an ISR only when a leader proposes it after it caught up.  After a clean restart its
   leaderships move (a new process holds no leader state) but it stays in the ISRs: its log holds
   all it acknowledged (cluster simulation seed 5430: brokers killed, whose page cache kept their
   writes, had been dropped from the ISR, and the power-cut one left last in it was elected).
"""

from __future__ import annotations

import copy
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..protocol.errors import FabricError
from ..protocol.limits import DEFAULT_LIMITS
from ..protocol.messages import check_topic_name
from .logic_admin import AdminDecisions
from .logic_brokers import BrokerDecisions, check_int as _int
from .logic_producer_ids import ProducerIdDecisions
from .codes import FENCED_LEADER_EPOCH, INVALID_UPDATE_VERSION
from .metadata import BrokerRecord, MetadataState, PartitionRecord, TopicRecord
from .placement import place_replicas
from .topic_configs import check_topic_configs

log = logging.getLogger("fabric.controller.logic")

__all__ = ["ControllerLogic", "Decision", "LogicConfig", "OFFSETS_TOPIC"]

Decision = tuple[list[dict[str, Any]], str | None, dict[str, Any]]
OFFSETS_TOPIC = "__consumer_offsets"
REPLICATION_FACTOR_MAX = 16


@dataclass(frozen=True)
class LogicConfig:
    session_timeout_ms: int = 1500
    heartbeat_ms: int = 250
    default_replication_factor: int = 3  # capped at the live brokers when a request names none
    default_partitions: int = 1
    min_insync_replicas: int = 1  # written into a topic's configs unless given (capped at its RF)
    offsets_topic_partitions: int = 16
    offsets_topic_min_insync_replicas: int = 2  # capped at its RF
    offsets_topic_configs: dict[str, Any] = field(default_factory=lambda: {
        "cleanup_policy": "compact", "flush_every_batch": True, "segment_bytes": 64 << 20})
    leader_imbalance_check_ms: int = 10_000  # automatic preferred-leader election (logic_admin rule 12); 0: off
    leader_imbalance_percent: int = 10  # a broker leading elsewhere more than this share of its partitions


class ControllerLogic(AdminDecisions, BrokerDecisions, ProducerIdDecisions):
    def __init__(self, state: MetadataState, config: LogicConfig = LogicConfig(),
                 new_topic_id: Callable[[], str] | None = None) -> None:
        self.state = state
        self.config = config
        self._new_topic_id = new_topic_id or (lambda: uuid.uuid4().hex)
        self._sessions: dict[int, int] = {}  # broker -> last heartbeat (or registration) ms
        self._shutting_down: set[int] = set()
        self._brokers: dict[int, BrokerRecord] = {}  # pending broker views
        self._parts: dict[tuple[str, int], PartitionRecord] = {}  # pending partitions
        self._topics: dict[str, TopicRecord | None] = {}  # pending create (None: a pending delete)
        self._scanned = False  # a full reconcile ran (again every heartbeat_ms: 10,000 partitions take ~25 ms)
        self._scanned_ms = 0
        self._admin_init()
        self._pid_init()

    # ================================================================== the projected view (rule 1)
    def on_became_leader(self, now_ms: int) -> None:
        self._sessions = {b: now_ms for b in self.state.brokers}
        self._shutting_down.clear()
        self._brokers.clear()
        self._parts.clear()
        self._topics.clear()
        self._scanned = False
        self._admin_init()
        self._pid_init()

    def _broker(self, b: int) -> BrokerRecord | None:
        pending = self._brokers.get(b)
        cur = self.state.brokers.get(b)
        if pending is not None:
            view = pending
            if cur is None or (cur.incarnation, cur.fenced) != (view.incarnation, view.fenced):
                return view
            del self._brokers[b]
        return cur

    def _part(self, topic: TopicRecord, p: int) -> PartitionRecord:
        cur = topic.partitions[p]
        pending = self._parts.get((topic.topic_id, p))
        if pending is not None:
            if pending.partition_epoch > cur.partition_epoch:
                return pending
            del self._parts[(topic.topic_id, p)]
        return cur

    def _topic_exists(self, name: str) -> bool:
        return self._topic(name) is not None

    def _topic(self, name: str) -> TopicRecord | None:
        """The topic as it will be once the pending creates and deletes apply."""
        if name in self._topics:
            created = self._topics[name]
            if (created is not None) != (name in self.state.topics):
                return self._grown_view(created)
            del self._topics[name]
        return self._grown_view(self.state.topics.get(name))  # (with partitions being added: logic_admin)

    def _topic_views(self) -> list[TopicRecord]:
        names = sorted(set(self.state.topics) | set(self._topics))
        return [t for t in (self._topic(n) for n in names) if t is not None]

    def _broker_ids(self) -> list[int]:
        return sorted(set(self.state.brokers) | set(self._brokers))

    def _electable(self, b: int) -> bool:
        view = self._broker(b)
        return view is not None and not view.fenced and b not in self._shutting_down

    def _admissible(self, b: int, known: dict[int, int] | None) -> bool:
        """Whether a leader may add ``b`` to an ISR (rule 5): electable (no fenced or departing
        newcomers, KIP-841) and, when the leader says which incarnation of ``b`` caught up, the
        registered one: a proposal built on what a replaced process reported (it may have lost its
        tail since: rule 7) is not applied (KIP-903)."""
        if not self._electable(b):
            return False
        view = self._broker(b)
        return known is None or view is None or known.get(b) == view.incarnation

    def _live(self) -> list[BrokerRecord]:
        views = (self._broker(b) for b in self._broker_ids() if self._electable(b))
        return [v for v in views if v is not None]

    def _broker_record(self, kind: str, view: BrokerRecord) -> dict[str, Any]:
        pending = copy.copy(view)
        pending.fenced = kind == "fence_broker"
        self._brokers[view.id] = pending
        return {"type": kind, "id": view.id, "incarnation": view.incarnation}

    # ================================================================== elections (rules 3-5)
    def _change(self, topic: TopicRecord, p: int, cur: PartitionRecord, leader: int, isr: list[int]) -> dict[str, Any]:
        epoch = cur.leader_epoch + (1 if leader != cur.leader else 0)
        new = PartitionRecord(list(cur.replicas), leader, epoch, cur.partition_epoch + 1, list(isr), list(cur.adding),
                              list(cur.removing))
        self._parts[(topic.topic_id, p)] = new
        return {"type": "partition_change", "topic_id": topic.topic_id, "partition": p, "leader": leader,
                "leader_epoch": epoch, "partition_epoch": new.partition_epoch, "isr": list(isr)}

    def _decide(self, topic: TopicRecord, p: int, gone: Callable[[int], bool], lost: frozenset[int] = frozenset(),
                stay: frozenset[int] = frozenset()) -> dict[str, Any] | None:
        """The change partition ``p`` needs when the brokers ``gone`` says are unavailable, if any.
        ``lost``: brokers that restarted uncleanly, out of the ISR even as its last member;
        ``stay``: brokers that restarted cleanly, whose leaderships move but who stay in the ISR
        (rule 7)."""
        cur = self._part(topic, p)
        isr = [r for r in cur.isr if (not gone(r) or r in stay) and r not in lost]
        if cur.leader != -1 and not gone(cur.leader) and cur.leader not in lost:
            return None if isr == cur.isr else self._change(topic, p, cur, cur.leader, isr)
        candidates = [r for r in cur.replicas if r in isr and not gone(r)]
        if candidates:
            return self._change(topic, p, cur, candidates[0], isr)
        outside = [r for r in cur.replicas if not gone(r)]
        if outside and topic.configs.get("unclean_leader_election") is True:
            log.warning("UNCLEAN leader election: %s-%d had no live in-sync replica (ISR %s); broker %d leads it "
                        "at epoch %d and records it did not hold may be lost", topic.name, p, cur.isr, outside[0],
                        cur.leader_epoch + 1)
            return self._change(topic, p, cur, outside[0], [outside[0]])
        kept = [r for r in cur.isr if r not in lost]  # (offline: the ISR is kept, but for what restarts lost)
        if cur.leader == -1 and kept == cur.isr:
            return None
        if kept:
            log.warning("%s-%d is offline: no live in-sync replica (ISR %s)", topic.name, p, kept)
        else:
            log.warning("%s-%d is offline: its last in-sync replica %s restarted uncleanly and may have lost "
                        "acknowledged records; it stays offline until a replica that holds them is back (or the "
                        "topic enables unclean_leader_election)", topic.name, p, cur.isr)
        return self._change(topic, p, cur, -1, kept)

    def _reconcile(self, excluded: Iterable[int] = (), lost: Iterable[int] = (),
                   stay: Iterable[int] = ()) -> list[dict[str, Any]]:
        """Changes for every partition whose leader or ISR names an unavailable broker (or one in
        ``lost``, rule 7), and for every offline partition that can be led again."""
        out, lost, kept = set(excluded), frozenset(lost), frozenset(stay)

        def gone(b: int) -> bool:
            return b in out or not self._electable(b)
        records = []
        for topic in self._topic_views():
            for p in range(len(topic.partitions)):
                rec = self._decide(topic, p, gone, lost, kept)
                if rec is not None:
                    records.append(rec)
        return records

    def tick(self, now_ms: int) -> Decision:
        """Session expiry (rule 3) and re-election of what can be led again (rule 4)."""
        expired = []
        for b in self._broker_ids():
            view = self._broker(b)
            if view is None or view.fenced:
                continue
            last = self._sessions.setdefault(b, now_ms)
            if now_ms - last > self.config.session_timeout_ms:
                log.info("broker %d missed its session (%d ms since its last heartbeat): fencing it", b, now_ms - last)
                expired.append(view)
        if not expired and self._scanned and now_ms - self._scanned_ms < self.config.heartbeat_ms:
            return [], None, {}  # requests reconcile as they change liveness; this is the safety net
        self._scanned, self._scanned_ms = True, now_ms
        records = self._reconcile([v.id for v in expired])
        records += [self._broker_record("fence_broker", v) for v in expired]
        records += self._admin_tick(now_ms)
        return records, None, {}

    # ================================================================== topics
    def create_topic(self, name: str, now_ms: int, partitions: int | None = None,
                     replication_factor: int | None = None, configs: dict[str, Any] | None = None,
                     validate_only: bool = False) -> Decision:
        if not isinstance(name, str):
            raise FabricError("INVALID_FIELD", f"name must be a string, not {name!r:.60}")
        check_topic_name(name)
        return self._create(name, partitions, replication_factor, configs or {}, False, validate_only)

    def ensure_internal_topic(self, now_ms: int, name: str = OFFSETS_TOPIC) -> Decision:
        """``__consumer_offsets`` with RF min(3, live brokers), created once."""
        if name != OFFSETS_TOPIC:
            raise FabricError("INVALID_TOPIC_NAME", f"{name!r} is not an internal topic")
        topic = self._topic(name)
        if topic is not None:
            return [], None, {"topic_id": topic.topic_id}
        rf = min(3, len(self._live()))
        configs = {**self.config.offsets_topic_configs,
                   "min_insync_replicas": max(1, min(self.config.offsets_topic_min_insync_replicas, rf))}
        return self._create(name, self.config.offsets_topic_partitions, rf, configs, True, False)

    def _create(self, name: str, partitions: int | None, rf: int | None, configs: dict[str, Any], internal: bool,
                validate_only: bool) -> Decision:
        if self._topic_exists(name) or name in self.state.topics:  # (a delete not yet applied too)
            return [], "TOPIC_ALREADY_EXISTS", {}
        if len(self.state.topics) >= DEFAULT_LIMITS.topics_max:
            raise FabricError("LIMIT_EXCEEDED", f"the cluster already holds {len(self.state.topics)} topics (limit)")
        partitions = self.config.default_partitions if partitions is None else partitions
        partitions = _int("partitions", partitions, 1, DEFAULT_LIMITS.partitions_per_topic_max)
        live = self._live()
        if rf is None:
            rf = min(self.config.default_replication_factor, len(live))
        rf = _int("replication_factor", rf, 0, REPLICATION_FACTOR_MAX)
        if not 1 <= rf <= len(live):
            return [], "INVALID_REPLICATION_FACTOR", {"live_brokers": len(live)}
        configs = check_topic_configs(configs, rf, self.config.min_insync_replicas)
        loads: dict[str, dict[int, int]] = {"replicas": {}, "leaders": {}}
        for t in self._topic_views():
            for p in range(len(t.partitions)):
                cur = self._part(t, p)
                for r in cur.replicas:
                    loads["replicas"][r] = loads["replicas"].get(r, 0) + 1
                loads["leaders"][cur.leader] = loads["leaders"].get(cur.leader, 0) + 1
        staying = [(b.id, b.rack) for b in live if b.id not in self._retiring]  # (logic_admin rule 11)
        placed = place_replicas(staying if len(staying) >= rf else [(b.id, b.rack) for b in live], partitions, rf,
                                loads["replicas"], loads["leaders"])
        topic_id = self._new_topic_id()
        reply = {"topic_id": topic_id, "partitions": partitions, "replication_factor": rf, "configs": configs}
        if validate_only:
            return [], None, reply
        parts = [{"replicas": r, "leader": r[0], "leader_epoch": 0, "partition_epoch": 0, "isr": list(r)}
                 for r in placed]
        self._topics[name] = TopicRecord(name, topic_id, dict(configs), internal,
                                         [PartitionRecord(list(r), r[0], 0, 0, list(r)) for r in placed])
        log.info("creating topic %s: %d partitions, replication factor %d", name, partitions, rf)
        return [{"type": "create_topic", "name": name, "topic_id": topic_id, "configs": configs, "internal": internal,
                 "partitions": parts}], None, reply

    def delete_topic(self, name: str, now_ms: int) -> Decision:
        topic = self._topic(name) if isinstance(name, str) else None
        if topic is None:
            return [], "UNKNOWN_TOPIC_OR_PARTITION", {}
        if topic.internal:
            return [], "POLICY_VIOLATION", {}
        self._topics[name] = None
        log.info("deleting topic %s", name)
        return [{"type": "delete_topic", "name": name}], None, {}

    # ================================================================== ISR changes (rule 5)
    def alter_partition(self, broker_id: int, partition: int, leader_epoch: int, partition_epoch: int,
                        isr: list[int], now_ms: int, topic_id: str | None = None, topic: str | None = None,
                        isr_incarnations: list[int] | None = None) -> Decision:
        """Rule 5; ``isr_incarnations`` (KIP-903): each member's incarnation as the leader knows it."""
        broker_id, partition = _int("broker_id", broker_id), _int("partition", partition)
        leader_epoch, partition_epoch = _int("leader_epoch", leader_epoch), _int("partition_epoch", partition_epoch)
        if not isinstance(isr, list) or not isr:
            raise FabricError("INVALID_FIELD", f"isr must be a non-empty list of broker ids, not {isr!r:.60}")
        isr = [_int("isr[]", r) for r in isr]
        known: dict[int, int] | None = None
        if isr_incarnations is not None:
            if not isinstance(isr_incarnations, list) or len(isr_incarnations) != len(isr):
                raise FabricError("INVALID_FIELD", "isr_incarnations must be a list with one incarnation per isr member")
            known = dict(zip(isr, (_int("isr_incarnations[]", i) for i in isr_incarnations)))
        if topic_id is not None:
            name = self.state.by_id.get(topic_id)
            t = self._topic(name) if name is not None else next(
                (v for v in self._topics.values() if v is not None and v.topic_id == topic_id), None)
        else:
            t = self._topic(topic) if isinstance(topic, str) else None
        if t is None or not 0 <= partition < len(t.partitions):
            return [], "UNKNOWN_TOPIC_OR_PARTITION", {}
        cur = self._part(t, partition)
        current = {"leader": cur.leader, "leader_epoch": cur.leader_epoch, "partition_epoch": cur.partition_epoch,
                   "isr": list(cur.isr)}
        if leader_epoch != cur.leader_epoch or broker_id != cur.leader:
            return [], FENCED_LEADER_EPOCH, current
        if partition_epoch != cur.partition_epoch:
            return [], INVALID_UPDATE_VERSION, current
        if len(set(isr)) != len(isr) or not set(isr) <= set(cur.replicas) or cur.leader not in isr:
            raise FabricError("INVALID_FIELD", f"isr {isr} must be distinct replicas of {cur.replicas} "
                                               f"holding the leader {cur.leader}")
        new = [r for r in isr if r in cur.isr or self._admissible(r, known)]
        if sorted(new) == sorted(cur.isr):
            return [], None, current
        record = self._change(t, partition, cur, cur.leader, new)
        done = self._maybe_complete(t, partition)  # (a reassignment whose new replicas all joined: logic_admin)
        return [record] + ([done] if done else []), None, {"leader": cur.leader, "leader_epoch": record["leader_epoch"],
                                "partition_epoch": record["partition_epoch"], "isr": new}
