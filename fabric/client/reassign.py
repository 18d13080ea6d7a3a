"""Partition reassignment from the client side: plans (Kafka's JSON format), a balanced plan
proposal, and the cluster operations of SPEC 13.7 over an ``Admin``.

Why a pure ``propose``: ``fabric reassign --generate`` must say what it would move before anything
moves, and a test must be able to check that a plan is balanced and moves as little as possible
without a cluster.

A plan is ``{"version": 1, "partitions": [{"topic", "partition", "replicas"}, ...]}``; the
``replicas`` list's first broker is the preferred leader.

``propose`` rules:
1. Replicas on brokers outside ``brokers`` (being removed) are dropped; a partition short of its
   replication factor gets the broker holding the fewest replicas (of the proposal so far) that it
   lacks.
2. Then, while one broker holds two or more replicas more than another, one replica moves from the
   most loaded to the least loaded broker (on a partition holding the first and not the second),
   so the result is balanced to within one replica per broker and replicas that can stay, stay.
3. Preferred leaders are balanced greedily: each partition's first replica is the one of its
   replicas that is first so far for the fewest partitions (the current first when tied).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..protocol.cluster_admin import (AlterPartitionReassignmentsRequest, DecommissionBrokerRequest,
                                      ElectLeadersRequest, ListPartitionReassignmentsRequest, Reassignment)
from ..protocol.errors import exception_for

__all__ = ["Plan", "current_assignment", "load_plan", "plan_json", "propose", "reassign", "reassignments",
           "decommission", "decommissioned", "elect_leaders"]

Key = tuple[str, int]
Plan = dict[Key, list[int]]


def propose(current: Mapping[Key, Sequence[int]], brokers: Iterable[int]) -> Plan:
    """A balanced assignment of the ``current`` partitions over ``brokers`` (rules 1-3)."""
    brokers = sorted(set(brokers))
    if not brokers:
        raise ValueError("no brokers to place replicas on")
    keys = sorted(current)
    plan: Plan = {k: [r for r in current[k] if r in brokers] for k in keys}
    load: Counter[int] = Counter({b: 0 for b in brokers})
    for reps in plan.values():
        load.update(reps)
    for k in keys:  # rule 1
        rf = len(current[k])
        if rf > len(brokers):
            raise ValueError(f"{k[0]}-{k[1]} has {rf} replicas but only {len(brokers)} brokers are given")
        while len(plan[k]) < rf:
            b = min((b for b in brokers if b not in plan[k]), key=lambda b: (load[b], b))
            plan[k].append(b)
            load[b] += 1
    while True:  # rule 2
        hi = max(brokers, key=lambda b: (load[b], -b))
        lo = min(brokers, key=lambda b: (load[b], b))
        if load[hi] - load[lo] <= 1:
            break
        k = next((k for k in keys if hi in plan[k] and lo not in plan[k]), None)
        if k is None:
            break
        plan[k] = [lo if r == hi else r for r in plan[k]]
        load[hi] -= 1
        load[lo] += 1
    firsts: Counter[int] = Counter()
    for k in keys:  # rule 3
        reps = plan[k]
        best = min(reps, key=lambda b: (firsts[b], b != reps[0]))
        plan[k] = [best] + [r for r in reps if r != best]
        firsts[best] += 1
    return plan


def plan_json(plan: Mapping[Key, Sequence[int]]) -> str:
    rows = [{"topic": t, "partition": p, "replicas": list(r)} for (t, p), r in sorted(plan.items())]
    return json.dumps({"version": 1, "partitions": rows}, indent=2)


def load_plan(path: str | Path) -> Plan:
    """A plan file; ValueError naming what is wrong."""
    try:
        body = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the plan {path}: {exc}") from None
    rows = body.get("partitions") if isinstance(body, dict) else None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: a plan is {{\"version\": 1, \"partitions\": [{{topic, partition, replicas}}...]}}")
    plan: Plan = {}
    for i, row in enumerate(rows):
        try:
            topic, p, reps = row["topic"], row["partition"], row.get("replicas")
        except (KeyError, TypeError):
            raise ValueError(f"{path}: partitions[{i}] needs topic and partition") from None
        if not isinstance(topic, str) or not isinstance(p, int) or \
                (reps is not None and (not isinstance(reps, list) or not all(isinstance(r, int) for r in reps))):
            raise ValueError(f"{path}: partitions[{i}] must be {{topic: text, partition: int, replicas: [int]}}")
        plan[(topic, p)] = reps
    return plan


def current_assignment(admin: Any, topics: Iterable[str]) -> Plan:
    out: Plan = {}
    for t in admin.describe_topics(list(topics)):
        for p in t["partitions"]:
            out[(t["name"], p["partition"])] = list(p["replicas"])
    return out


def _checked(reply: dict[str, Any]) -> dict[str, Any]:
    if reply.get("error"):
        raise exception_for(reply["error"])
    return reply


def reassign(admin: Any, plan: Mapping[Key, Sequence[int] | None]) -> list[dict[str, Any]]:
    """Start (or, with ``None`` replicas, cancel) the reassignments; one result row per partition
    (``error`` set where it was refused)."""
    body = AlterPartitionReassignmentsRequest(reassignments=tuple(
        Reassignment(topic=t, partition=p, replicas=None if r is None else tuple(r)) for (t, p), r in sorted(plan.items())))
    return _checked(admin._call("alter_partition_reassignments", body))["results"]


def reassignments(admin: Any) -> list[dict[str, Any]]:
    """The reassignments in progress: topic, partition, replicas, adding, removing, isr, leader."""
    return _checked(admin._call("list_partition_reassignments", ListPartitionReassignmentsRequest()))["reassignments"]


def decommission(admin: Any, broker_id: int, cancel: bool = False) -> int:
    """Start moving every replica off ``broker_id`` (marked decommissioned in the cluster's metadata:
    no new replicas go there); how many partitions move.  ``cancel``: clear the mark (0)."""
    body = DecommissionBrokerRequest(broker_id=broker_id, cancel=cancel)
    return int(_checked(admin._call("decommission_broker", body)).get("moving", 0))


def decommissioned(admin: Any) -> set[int]:
    """The brokers marked decommissioned, from ``cluster_status``'s broker rows."""
    return {b["node_id"] for b in admin.cluster_status().get("brokers", []) if b.get("decommissioned")}


def elect_leaders(admin: Any, topics: Sequence[str] | None = None) -> int:
    """Preferred-leader election; how many leaderships moved."""
    body = ElectLeadersRequest(topics=None if topics is None else tuple(topics))
    return int(_checked(admin._call("elect_leaders", body)).get("elected", 0))
