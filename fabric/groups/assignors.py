"""Partition assignors: range, round-robin and cooperative-sticky.

An assignor is a pure function from the members' subscriptions and the partition counts of the
subscribed topics to an assignment (member id -> sorted list of ``(topic, partition)``).  The
coordinator runs it when a rebalance's join phase completes (server-side assignment, see
coordinator.py), so these functions are the whole assignment policy of the cluster.

Determinism: members are ordered by ``order_key`` -- static members first by instance id (a
restarted static member gets a new member id but keeps its place), then dynamic members by member
id -- and partitions by ``(topic, partition)``.  The same input always gives the same output.

Eager and cooperative.  ``range`` and ``roundrobin`` are eager: members revoke everything before
they rejoin, and the assignment is used as computed.  ``cooperative-sticky`` (KIP-429) keeps what
members own: its result is a *target*, and ``cooperative_plan`` turns the target into what each
member may consume now -- a partition that moves between two live members is first revoked from
its owner and withheld from its new owner, who gets it in the follow-up rebalance that the
owner's rejoin (after revoking) starts.  So no partition is ever assigned while another member
still reports owning it.

Sticky algorithm (equal subscriptions: optimal movement, balanced within one):
  1. keep each member's valid owned partitions (subscribed topic, partition exists); a partition
     claimed by two members goes to the claim with the higher generation, then the first member;
  2. give each unowned partition to the least-loaded eligible member, partitions with the fewest
     eligible members first;
  3. while some member holds two more partitions than another that can take one of them, move one
     (a partition it did not own before if possible) from the most to the least loaded.
  Each move in step 3 lowers the sum of squared loads, so it ends; at the end no such pair
  exists, which for equal subscriptions means loads differ by at most one, and re-running on the
  result moves nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from heapq import heapify, heappop, heappush
from itertools import groupby
from typing import Mapping, Protocol

TopicPartition = tuple[str, int]
Assignment = dict[str, list[TopicPartition]]


@dataclass(frozen=True, slots=True)
class Subscription:
    topics: frozenset[str]
    owned: tuple[TopicPartition, ...] = ()  # what the member reports it consumes now
    generation: int = -1  # the generation in which it got ``owned``
    instance_id: str | None = None


def order_key(member_id: str, sub: Subscription) -> tuple[int, str]:
    return (0, sub.instance_id) if sub.instance_id is not None else (1, member_id)


def _ordered(members: Mapping[str, Subscription]) -> list[str]:
    return sorted(members, key=lambda m: order_key(m, members[m]))


def _subscribed_partitions(members: Mapping[str, Subscription],
                           partitions: Mapping[str, int]) -> list[TopicPartition]:
    topics = set().union(*(s.topics for s in members.values())) if members else set()
    return [(t, p) for t in sorted(topics) for p in range(partitions.get(t, 0))]


class Assignor(Protocol):
    name: str
    cooperative: bool

    def assign(self, members: Mapping[str, Subscription], partitions: Mapping[str, int]) -> Assignment:
        ...


class RangeAssignor:
    """Per topic, the subscribed members in order get consecutive ranges of partitions; the first
    ``n % m`` get one extra.  Co-partitioned topics land on the same member (joins stay local);
    the price is imbalance across many topics."""

    name = "range"
    cooperative = False

    def assign(self, members: Mapping[str, Subscription], partitions: Mapping[str, int]) -> Assignment:
        order = _ordered(members)
        out: Assignment = {m: [] for m in order}
        topics = sorted(set().union(*(s.topics for s in members.values()))) if members else []
        for topic in topics:
            subs = [m for m in order if topic in members[m].topics]
            n = partitions.get(topic, 0)
            per, extra = divmod(n, len(subs))
            start = 0
            for i, m in enumerate(subs):
                size = per + (1 if i < extra else 0)
                out[m].extend((topic, p) for p in range(start, start + size))
                start += size
        return out


class RoundRobinAssignor:
    """All partitions in order dealt round the members in order, skipping members not subscribed
    to the partition's topic (Kafka's RoundRobinAssignor).  Balanced within one when all members
    subscribe to the same topics."""

    name = "roundrobin"
    cooperative = False

    def assign(self, members: Mapping[str, Subscription], partitions: Mapping[str, int]) -> Assignment:
        order = _ordered(members)
        out: Assignment = {m: [] for m in order}
        i = 0
        for tp in _subscribed_partitions(members, partitions):
            for _ in range(len(order)):  # at least one member subscribes to tp's topic
                m = order[i % len(order)]
                i += 1
                if tp[0] in members[m].topics:
                    out[m].append(tp)
                    break
        return out


def resolve_owned(members: Mapping[str, Subscription],
                  partitions: Mapping[str, int]) -> dict[TopicPartition, str]:
    """Partition -> the member whose ownership claim stands (step 1 of the sticky algorithm)."""
    owners: dict[TopicPartition, str] = {}
    for m in _ordered(members):
        sub = members[m]
        for tp in sub.owned:
            topic, p = tp
            if topic not in sub.topics or not 0 <= p < partitions.get(topic, 0):
                continue
            current = owners.get(tp)
            if current is None or sub.generation > members[current].generation:
                owners[tp] = m
    return owners


class CooperativeStickyAssignor:
    """Balanced, and moves as few owned partitions as it can (see the module header)."""

    name = "cooperative-sticky"
    cooperative = True

    def assign(self, members: Mapping[str, Subscription], partitions: Mapping[str, int]) -> Assignment:
        order = _ordered(members)
        rank = {m: i for i, m in enumerate(order)}
        eligible = {t: [m for m in order if t in members[m].topics]
                    for t in set().union(*(s.topics for s in members.values()))} if members else {}
        owners = resolve_owned(members, partitions)
        out: dict[str, set[TopicPartition]] = {m: set() for m in order}
        for tp, m in owners.items():
            out[m].add(tp)
        kept = {m: frozenset(tps) for m, tps in out.items()}

        free = [tp for tp in _subscribed_partitions(members, partitions) if tp not in owners]
        free.sort(key=lambda tp: (len(eligible[tp[0]]), tp))
        for topic, tps in groupby(free, key=lambda tp: tp[0]):  # a heap per topic: O(P log M)
            heap = [(len(out[m]), rank[m], m) for m in eligible[topic]]
            heapify(heap)
            for tp in tps:
                load, r, m = heappop(heap)
                out[m].add(tp)
                heappush(heap, (load + 1, r, m))

        while True:
            heavy = sorted(order, key=lambda m: (-len(out[m]), rank[m]))
            light = sorted(order, key=lambda m: (len(out[m]), rank[m]))
            move = None
            for src in heavy:
                for dst in light:
                    if len(out[src]) - len(out[dst]) <= 1:
                        break
                    topics = members[dst].topics
                    movable = [tp for tp in out[src] if tp[0] in topics]
                    if movable:
                        move = src, dst, max(movable, key=lambda tp: (tp not in kept[src], tp))
                        break
                if move is not None:
                    break
            if move is None:
                break
            src, dst, tp = move
            out[src].remove(tp)
            out[dst].add(tp)
        return {m: sorted(tps) for m, tps in out.items()}


def cooperative_plan(target: Assignment, members: Mapping[str, Subscription],
                     owners: Mapping[TopicPartition, str]) -> tuple[Assignment, Assignment]:
    """``(assigned, revoked)`` per member: ``assigned`` is the target minus partitions another
    member still owns (withheld until that member revokes and rejoins); ``revoked`` is what the
    member reports owning but is not in its target.  With ``owners`` empty (eager assignors)
    ``assigned`` is the target."""
    assigned: Assignment = {}
    revoked: Assignment = {}
    for m, tps in target.items():
        assigned[m] = [tp for tp in tps if owners.get(tp, m) == m]
        keep = set(tps)
        revoked[m] = sorted(tp for tp in set(members[m].owned) if tp not in keep)
    return assigned, revoked


ASSIGNORS: dict[str, Assignor] = {a.name: a for a in (
    CooperativeStickyAssignor(), RangeAssignor(), RoundRobinAssignor())}
