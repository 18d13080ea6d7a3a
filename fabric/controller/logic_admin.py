"""The controller's operator decisions: growing topics, altering their configs, moving replicas
(reassignment, decommission) and preferred-leader elections.

A mixin of ``ControllerLogic`` (``logic.py``): the same pure rules (methods take ``now_ms``, return
``(records, error, reply)``, read the committed state overlaid with the pending records), kept apart
because they are what an operator asks for, not what keeps the cluster alive.

Rules (numbered after logic.py's):
7. ``create_partitions`` appends partitions placed like a new topic's (over the live brokers not
   being decommissioned, counting what each holds) with the replication factor of partition 0;
   the count only grows.  ``alter_topic_configs`` writes the topic's whole new override map
   (``topic_config``), validated like a new topic's.
8. Reassignment (Kafka KIP-455): ``replicas`` becomes the target set followed by the old replicas
   leaving (``removing``); ``adding`` are the target replicas that were not replicas.  The leader
   and ISR are untouched: the new replicas fetch the log from the leader (throttled) and the leader
   proposes them for the ISR as any follower.  A new target while one is in progress is computed
   from the original replicas (the old set without ``adding``); adding replicas no longer wanted
   are dropped (rule 10).  A target that only reorders the replicas is written at once and its
   first replica made leader (rule 12's conditions).
9. A reassignment completes as soon as every target replica is in the ISR: ``replicas`` becomes the
   target, the ISR keeps only target members, and leadership goes to the preferred (first) target
   replica if it is in the ISR and available (else the current leader if it stays, else the first
   available target member of the ISR).  Checked on every ISR change and every scan.
10. A replica leaves at once only if it is not in the ISR: an in-sync replica not in the new target
    (one that was being added and caught up, say) becomes ``removing``, so the ISR never empties
    and the leader stays a replica.  Cancel is the original replicas as a new target: it completes
    at once when they are all in the ISR, and waits for them otherwise.
11. Decommission: a ``decommission_broker`` record marks the broker decommissioned in the
    replicated metadata (so every later controller leader, and every snapshot, keeps it out of
    the placement of new topics and partitions and out of decommission targets), then every
    partition holding it is reassigned to replace it by the available broker holding the fewest
    replicas (a rack not yet used by the partition first).  Asking again writes no second record
    but moves what still holds it (partitions created before the first request committed).
    ``cancel`` writes the record clearing the mark (the broker takes new replicas again; moves
    already started go on: cancel those with a reassignment cancel).  A re-registration, even of a
    broker whose data directory was wiped, keeps the mark: the controller cannot tell a wiped
    broker from a restarted one, and placing data on a broker an operator is emptying is the
    surprise to avoid.
12. Preferred-leader election: a partition whose first target replica is in the ISR, available and
    not the leader gets it as leader (leader epoch bumped).  ``elect_leaders`` does it on request;
    ``leader_imbalance_check_ms`` (0: off) does it automatically for every broker whose share of
    partitions led elsewhere exceeds ``leader_imbalance_percent`` of those it is preferred for
    (Kafka's ``auto.leader.rebalance.enable``), e.g. after a broker came back.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from ..protocol.errors import FabricError
from ..protocol.limits import DEFAULT_LIMITS
from .metadata import PartitionRecord, TopicRecord
from .placement import place_replicas
from .topic_configs import check_topic_configs

log = logging.getLogger("fabric.controller.logic")

__all__ = ["AdminDecisions", "REASSIGNMENTS_MAX"]

REASSIGNMENTS_MAX = 10_000  # partitions in one alter_partition_reassignments request
Decision = tuple[list[dict[str, Any]], str | None, dict[str, Any]]


class AdminDecisions:
    """Mixed into ``ControllerLogic``; uses its pending view (``_topic``, ``_part``, ``_live``...)."""

    _decommissioning: dict[int, bool]
    _grown: dict[str, tuple[str, int, list[PartitionRecord]]]
    _imbalance_ms: int

    def _admin_init(self) -> None:
        self._decommissioning = {}  # broker -> decommissioned, decided and not yet applied (rule 11)
        self._grown = {}  # topic -> (topic id, committed count, partitions added and not yet applied)
        self._imbalance_ms = 0

    # ================================================================== views
    def _decommissioned(self, b: int) -> bool:
        """Rule 11: the committed mark, overlaid with a pending ``decommission_broker`` record."""
        cur = self.state.brokers.get(b)  # type: ignore[attr-defined]
        committed = cur is not None and cur.decommissioned
        pending = self._decommissioning.get(b)
        if pending is not None:
            if pending != committed:
                return pending
            del self._decommissioning[b]
        return committed

    @property
    def _retiring(self) -> set[int]:
        """The brokers decommissioned (rule 11): no new replicas go there."""
        return {b for b in self._broker_ids() if self._decommissioned(b)}  # type: ignore[attr-defined]

    def _partitions(self, topic: TopicRecord) -> list[PartitionRecord]:
        return [self._part(topic, p) for p in range(len(topic.partitions))]  # type: ignore[attr-defined]

    def _grown_view(self, topic: TopicRecord | None) -> TopicRecord | None:
        """``topic`` with the partitions a pending ``create_partitions`` adds (``ControllerLogic._topic``
        returns this), so elections, fencing and placement see them before they commit."""
        if topic is None:
            return None
        grown = self._grown.get(topic.name)
        if grown is None:
            return topic
        tid, base, added = grown
        if tid == topic.topic_id and len(topic.partitions) == base:
            return TopicRecord(topic.name, topic.topic_id, topic.configs, topic.internal, topic.partitions + added)
        del self._grown[topic.name]  # (applied, or the topic was deleted and created again)
        return topic

    def _loads(self) -> tuple[dict[int, int], dict[int, int]]:
        replicas: Counter[int] = Counter()
        leaders: Counter[int] = Counter()
        for t in self._topic_views():  # type: ignore[attr-defined]
            for cur in self._partitions(t):
                replicas.update(cur.replicas)
                leaders[cur.leader] += 1
        return dict(replicas), dict(leaders)

    def _placement_brokers(self) -> list[tuple[int, str | None]]:
        """Where new replicas may go: live, not shutting down, not being decommissioned."""
        return [(b.id, b.rack) for b in self._live() if b.id not in self._retiring]  # type: ignore[attr-defined]

    def _move(self, topic: TopicRecord, p: int, cur: PartitionRecord, replicas: list[int], leader: int,
              isr: list[int], adding: list[int], removing: list[int]) -> dict[str, Any]:
        epoch = cur.leader_epoch + (1 if leader != cur.leader else 0)
        new = PartitionRecord(list(replicas), leader, epoch, cur.partition_epoch + 1, list(isr), list(adding),
                              list(removing))
        self._parts[(topic.topic_id, p)] = new  # type: ignore[attr-defined]
        return {"type": "partition_change", "topic_id": topic.topic_id, "partition": p, "leader": leader,
                "leader_epoch": epoch, "partition_epoch": new.partition_epoch, "isr": list(isr),
                "replicas": list(replicas), "adding": list(adding), "removing": list(removing)}

    # ================================================================== rule 7: growth and configs
    def create_partitions(self, topic: str, count: int, now_ms: int) -> Decision:
        name = topic
        t = self._topic(name) if isinstance(name, str) else None  # type: ignore[attr-defined]
        if t is None:
            return [], "UNKNOWN_TOPIC_OR_PARTITION", {}
        if t.internal:
            return [], "POLICY_VIOLATION", {}
        if isinstance(count, bool) or not isinstance(count, int):
            raise FabricError("INVALID_FIELD", f"count must be an integer, not {count!r:.60}")
        have = len(self._partitions(t))
        if count <= have:
            raise FabricError("INVALID_PARTITIONS", f"topic {name!r} has {have} partitions; the new count must "
                                                    f"be larger")
        if count > DEFAULT_LIMITS.partitions_per_topic_max:
            raise FabricError("INVALID_PARTITIONS", f"{count} partitions exceed the limit "
                                                    f"{DEFAULT_LIMITS.partitions_per_topic_max}")
        rf = len(self._part(t, 0).target) if t.partitions else 1  # type: ignore[attr-defined]
        brokers = self._placement_brokers()
        if rf > len(brokers):
            return [], "INVALID_REPLICATION_FACTOR", {"live_brokers": len(brokers)}
        replica_load, leader_load = self._loads()
        placed = place_replicas(brokers, count - have, rf, replica_load, leader_load)
        added = [PartitionRecord(list(r), r[0], 0, 0, list(r)) for r in placed]
        grown = self._grown.get(name)  # (valid: ``_topic`` just checked it)
        base, before = (grown[1], grown[2]) if grown is not None else (len(t.partitions), [])
        self._grown[name] = (t.topic_id, base, before + added)
        log.info("topic %s grows from %d to %d partitions", name, have, count)
        return [{"type": "create_partitions", "name": name, "topic_id": t.topic_id,
                 "partitions": [p.to_dict() for p in added]}], None, {"name": name, "partitions": count}

    def alter_topic_configs(self, topic: str, now_ms: int, set: dict[str, Any] | None = None,
                            delete: list[str] | None = None) -> Decision:
        name = topic
        t = self._topic(name) if isinstance(name, str) else None  # type: ignore[attr-defined]
        if t is None:
            return [], "UNKNOWN_TOPIC_OR_PARTITION", {}
        if not isinstance(set or {}, dict) or not isinstance(delete or [], (list, tuple)):
            raise FabricError("INVALID_FIELD", "set must be a map and delete a list of config names")
        merged = {k: v for k, v in t.configs.items() if k not in (delete or [])}
        merged.update(set or {})
        rf = min(len(p.target) for p in t.partitions)
        configs = check_topic_configs(merged, rf, self.config.min_insync_replicas)  # type: ignore[attr-defined]
        return [{"type": "topic_config", "name": name, "configs": configs}], None, {"name": name, "configs": configs}

    # ================================================================== rules 8-10: reassignment
    def alter_partition_reassignments(self, reassignments: list[Any], now_ms: int) -> Decision:
        """Each entry ``{topic, partition, replicas}`` (``replicas`` null: cancel); the reply's
        ``results`` say, per entry, ``error`` or nothing."""
        if not isinstance(reassignments, list) or len(reassignments) > REASSIGNMENTS_MAX:
            raise FabricError("INVALID_FIELD", f"reassignments must be a list of at most {REASSIGNMENTS_MAX}")
        records: list[dict[str, Any]] = []
        results = []
        for entry in reassignments:
            if not isinstance(entry, dict):
                raise FabricError("INVALID_FIELD", "each reassignment must be a map {topic, partition, replicas}")
            row = {"topic": entry.get("topic"), "partition": entry.get("partition")}
            try:
                records += self._reassign_one(entry.get("topic"), entry.get("partition"), entry.get("replicas"))
            except FabricError as err:
                row["error"] = err.to_wire()
            results.append(row)
        return records, None, {"results": results}

    def _reassign_one(self, name: Any, p: Any, target: Any) -> list[dict[str, Any]]:
        topic = self._topic(name) if isinstance(name, str) else None  # type: ignore[attr-defined]
        if topic is None or isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < len(topic.partitions):
            raise FabricError("UNKNOWN_TOPIC_OR_PARTITION", f"{name!r:.60}-{p!r:.20}: no such partition")
        cur = self._part(topic, p)  # type: ignore[attr-defined]
        original = [r for r in cur.replicas if r not in cur.adding]
        cancel = target is None
        if target is None:
            if not cur.adding and not cur.removing:
                raise FabricError("NO_REASSIGNMENT_IN_PROGRESS", f"{name}-{p} is not being reassigned")
            target = original
        if not isinstance(target, list) or not target or len(target) > 16 or len(set(target)) != len(target) or \
                not all(isinstance(r, int) and not isinstance(r, bool) for r in target):
            raise FabricError("INVALID_REPLICA_ASSIGNMENT", f"replicas {target!r:.80} must be 1-16 distinct broker ids")
        unknown = [r for r in target if self._broker(r) is None]  # type: ignore[attr-defined]
        if unknown:
            raise FabricError("INVALID_REPLICA_ASSIGNMENT", f"brokers {unknown} are not registered")
        if target == original and not cur.adding and not cur.removing:
            return []
        if target == cur.replicas and not cur.removing:  # (a cancel of a move whose additions all left)
            return []
        # Leaving: the original replicas not in the target, and any in-sync replica not in it (one
        # that was being added and caught up): data in sync leaves only once the target is in sync.
        removing = [r for r in cur.replicas if r not in target and (r in original or r in cur.isr)]
        replicas = list(target) + removing
        adding = [r for r in target if r not in original]
        isr = [r for r in cur.isr if r in replicas]
        leader = cur.leader  # (in the ISR or -1, so still a replica)
        log.info("reassigning %s-%d: %s -> %s (adding %s, removing %s)", name, p, original, target, adding, removing)
        records = [self._move(topic, p, cur, replicas, leader, isr, adding, removing)]
        if adding or removing:
            done = self._maybe_complete(topic, p)
        else:  # a cancel keeps its leader; a reorder of the same replicas makes the new first one lead
            done = None if cancel else self._preferred(topic, p)
        return records + ([done] if done else [])

    def _maybe_complete(self, topic: TopicRecord, p: int) -> dict[str, Any] | None:
        """Rule 9."""
        cur = self._part(topic, p)  # type: ignore[attr-defined]
        if not cur.adding and not cur.removing:
            return None
        target = cur.target
        if not set(target) <= set(cur.isr):
            return None
        isr = [r for r in cur.isr if r in target]
        if self._electable(target[0]):  # type: ignore[attr-defined]
            leader = target[0]
        elif cur.leader in target:
            leader = cur.leader
        else:
            leader = next((r for r in target if r in isr and self._electable(r)), -1)  # type: ignore[attr-defined]
        log.info("reassignment of %s-%d complete: replicas %s, leader %d", topic.name, p, target, leader)
        return self._move(topic, p, cur, target, leader, isr, [], [])

    def list_partition_reassignments(self, now_ms: int) -> Decision:
        rows = []
        for t in self._topic_views():  # type: ignore[attr-defined]
            for p, cur in enumerate(self._partitions(t)):
                if cur.adding or cur.removing:
                    rows.append({"topic": t.name, "partition": p, "replicas": list(cur.replicas),
                                 "adding": list(cur.adding), "removing": list(cur.removing), "isr": list(cur.isr)})
        return [], None, {"reassignments": rows}

    # ================================================================== rule 11: decommission
    def decommission_broker(self, broker_id: int, now_ms: int, cancel: bool = False) -> Decision:
        if not isinstance(cancel, bool):
            raise FabricError("INVALID_FIELD", f"cancel must be true or false, not {cancel!r:.60}")
        if self._broker(broker_id) is None:  # type: ignore[attr-defined]
            return [], "UNKNOWN_BROKER", {}
        records: list[dict[str, Any]] = []
        if self._decommissioned(broker_id) == cancel:  # (a repeated request writes no record)
            self._decommissioning[broker_id] = not cancel
            records.append({"type": "decommission_broker", "id": broker_id, "decommissioned": not cancel})
        if cancel:
            log.info("broker %d is no longer decommissioned: new replicas may go there again", broker_id)
            return records, None, {"moving": 0}
        rack = {b: r for b, r in self._placement_brokers()}
        loads, _ = self._loads()
        moving = 0
        for t in self._topic_views():  # type: ignore[attr-defined]
            for p in range(len(t.partitions)):
                cur = self._part(t, p)  # type: ignore[attr-defined]
                target = cur.target
                if broker_id not in target:
                    continue
                used = Counter(rack.get(r, f"\0{r}") for r in target if r != broker_id)
                spare = [b for b in rack if b not in target]
                if not spare:
                    log.warning("decommission of %d: %s-%d has no broker to move to", broker_id, t.name, p)
                    continue
                repl = min(spare, key=lambda b: (used[rack[b] if rack[b] is not None else f"\0{b}"], loads.get(b, 0), b))
                loads[repl] = loads.get(repl, 0) + 1
                new = [repl if r == broker_id else r for r in target]
                records += self._reassign_one(t.name, p, new)
                moving += 1
        log.info("decommissioning broker %d: %d partitions move off it", broker_id, moving)
        return records, None, {"moving": moving}

    # ================================================================== rule 12: preferred leaders
    def _preferred(self, topic: TopicRecord, p: int) -> dict[str, Any] | None:
        cur = self._part(topic, p)  # type: ignore[attr-defined]
        first = cur.target[0]
        if cur.leader == first or first not in cur.isr or not self._electable(first):  # type: ignore[attr-defined]
            return None
        return self._change(topic, p, cur, first, list(cur.isr))  # type: ignore[attr-defined]

    def elect_leaders(self, now_ms: int, topics: list[str] | None = None) -> Decision:
        if topics is not None and (not isinstance(topics, list) or not all(isinstance(n, str) for n in topics)):
            raise FabricError("INVALID_FIELD", "topics must be null or a list of topic names")
        records = []
        for t in self._topic_views():  # type: ignore[attr-defined]
            if topics is not None and t.name not in topics:
                continue
            for p in range(len(t.partitions)):
                rec = self._preferred(t, p)
                if rec is not None:
                    records.append(rec)
        if records:
            log.info("preferred-leader election moves %d leaderships", len(records))
        return records, None, {"elected": len(records)}

    def _admin_tick(self, now_ms: int) -> list[dict[str, Any]]:
        """Rules 9 (completions) and 12 (automatic preferred-leader election)."""
        records = []
        for t in self._topic_views():  # type: ignore[attr-defined]
            for p in range(len(t.partitions)):
                done = self._maybe_complete(t, p)
                if done is not None:
                    records.append(done)
        every = self.config.leader_imbalance_check_ms  # type: ignore[attr-defined]
        if every <= 0 or now_ms - self._imbalance_ms < every:
            return records
        self._imbalance_ms = now_ms
        preferred: Counter[int] = Counter()
        elsewhere: Counter[int] = Counter()
        for t in self._topic_views():  # type: ignore[attr-defined]
            for p in range(len(t.partitions)):
                cur = self._part(t, p)  # type: ignore[attr-defined]
                first = cur.target[0]
                preferred[first] += 1
                if cur.leader != first:
                    elsewhere[first] += 1
        pct = self.config.leader_imbalance_percent  # type: ignore[attr-defined]
        imbalanced = {b for b in preferred if elsewhere[b] * 100 > pct * preferred[b]}
        for t in self._topic_views():  # type: ignore[attr-defined]
            for p in range(len(t.partitions)):
                if self._part(t, p).target[0] in imbalanced:  # type: ignore[attr-defined]
                    rec = self._preferred(t, p)
                    if rec is not None:
                        records.append(rec)
        return records
