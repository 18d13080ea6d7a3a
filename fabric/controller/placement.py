"""Where a new topic's partitions live: replica lists spread over the live brokers.

Why greedy on current load rather than Kafka's round-robin from a random start: the controller
must be deterministic (every decision is a function of the committed state, so a test or a
simulation replays it), and counting what each broker already holds spreads several small topics
as evenly as one large one.

Rules, per partition, in partition order:
1. The first replica (the preferred leader) is the broker leading the fewest partitions, then
   holding the fewest replicas, then the lowest id.
2. Each further replica is the broker whose rack is used least so far by this partition (so
   replicas land on distinct racks while there are racks left), then holding the fewest replicas,
   then the lowest id.  A broker without a rack counts as a rack of its own.
3. The counts include what this call has placed already, so leaders and replicas of one topic
   differ by at most one between brokers when racks do not get in the way.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

__all__ = ["place_replicas"]


def place_replicas(brokers: Sequence[tuple[int, str | None]], partitions: int, replication_factor: int,
                   replica_load: Mapping[int, int] | None = None,
                   leader_load: Mapping[int, int] | None = None) -> list[list[int]]:
    """Replica lists (preferred leader first) for ``partitions`` new partitions over ``brokers``
    (``(id, rack)`` of the live brokers).  ``replica_load``/``leader_load``: what each broker
    already holds.  ValueError when ``replication_factor`` exceeds the brokers."""
    if partitions < 0:
        raise ValueError(f"partitions must be >= 0, not {partitions}")
    if not 1 <= replication_factor <= len(brokers):
        raise ValueError(f"replication factor {replication_factor} with {len(brokers)} live brokers")
    rack = {b: (r if r is not None else f"\0{b}") for b, r in brokers}
    replicas = Counter({b: (replica_load or {}).get(b, 0) for b in rack})
    leaders = Counter({b: (leader_load or {}).get(b, 0) for b in rack})
    placed: list[list[int]] = []
    for _ in range(partitions):
        first = min(rack, key=lambda b: (leaders[b], replicas[b], b))
        chosen = [first]
        racks_used = Counter([rack[first]])
        while len(chosen) < replication_factor:
            nxt = min((b for b in rack if b not in chosen), key=lambda b: (racks_used[rack[b]], replicas[b], b))
            chosen.append(nxt)
            racks_used[rack[nxt]] += 1
        leaders[first] += 1
        for b in chosen:
            replicas[b] += 1
        placed.append(chosen)
    return placed
