"""Assignors: examples, then properties over random groups (hypothesis)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fabric.groups.assignors import (ASSIGNORS, CooperativeStickyAssignor, RangeAssignor, RoundRobinAssignor,
                                     Subscription, cooperative_plan, resolve_owned)

STICKY = CooperativeStickyAssignor()


def subs(topics_by_member, owned=None, generation=-1):
    owned = owned or {}
    return {m: Subscription(frozenset(ts), tuple(owned.get(m, ())), generation) for m, ts in topics_by_member.items()}


def test_range_example():
    # Kafka's documented example: 2 consumers, 2 topics of 3 partitions.
    out = RangeAssignor().assign(subs({"c0": ["t0", "t1"], "c1": ["t0", "t1"]}), {"t0": 3, "t1": 3})
    assert out == {"c0": [("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1)], "c1": [("t0", 2), ("t1", 2)]}


def test_roundrobin_example_with_unequal_subscriptions():
    # Kafka's RoundRobinAssignor javadoc: C0 {t0}, C1 {t0, t1}, C2 {t0, t1, t2}; t0/t1/t2 of 1/2/3.
    out = RoundRobinAssignor().assign(subs({"c0": ["t0"], "c1": ["t0", "t1"], "c2": ["t0", "t1", "t2"]}),
                                      {"t0": 1, "t1": 2, "t2": 3})
    assert out == {"c0": [("t0", 0)], "c1": [("t1", 0)],
                   "c2": [("t1", 1), ("t2", 0), ("t2", 1), ("t2", 2)]}


def test_static_members_order_by_instance_id():
    members = {"zzz": Subscription(frozenset({"t"}), instance_id="a"),
               "aaa": Subscription(frozenset({"t"}), instance_id="b")}
    assert RangeAssignor().assign(members, {"t": 2}) == {"zzz": [("t", 0)], "aaa": [("t", 1)]}


def test_sticky_third_member_takes_one_from_each():
    before = {"a": [("t", p) for p in range(3)], "b": [("t", p) for p in range(3, 6)]}
    members = subs({"a": ["t"], "b": ["t"], "c": ["t"]}, owned=before)
    out = STICKY.assign(members, {"t": 6})
    assert {m: len(v) for m, v in out.items()} == {"a": 2, "b": 2, "c": 2}
    assert set(out["a"]) < set(before["a"]) and set(out["b"]) < set(before["b"])
    assigned, revoked = cooperative_plan(out, members, resolve_owned(members, {"t": 6}))
    assert assigned["c"] == []  # withheld until a and b revoke
    assert assigned["a"] == out["a"] and assigned["b"] == out["b"]
    assert set(revoked["a"]) | set(revoked["b"]) == set(out["c"])


def test_conflicting_claims_go_to_the_newer_generation():
    members = {"a": Subscription(frozenset({"t"}), (("t", 0),), generation=3),
               "b": Subscription(frozenset({"t"}), (("t", 0),), generation=4)}
    assert resolve_owned(members, {"t": 1}) == {("t", 0): "b"}
    out = STICKY.assign(members, {"t": 1})
    assert out == {"a": [], "b": [("t", 0)]}
    assigned, revoked = cooperative_plan(out, members, resolve_owned(members, {"t": 1}))
    assert assigned == {"a": [], "b": [("t", 0)]} and revoked == {"a": [("t", 0)], "b": []}


def test_invalid_claims_are_ignored():
    members = subs({"a": ["t"]}, owned={"a": [("t", 9), ("gone", 0), ("u", 0)]})
    assert resolve_owned(members, {"t": 2, "u": 1}) == {}  # out of range, no such topic, not subscribed


# ------------------------------------------------------------------ properties

@st.composite
def groups(draw, equal: bool | None = None):
    topics = {f"t{i}": draw(st.integers(0, 12)) for i in range(draw(st.integers(1, 4)))}
    names = [f"m{i:02d}" for i in range(draw(st.integers(1, 8)))]
    eq = draw(st.booleans()) if equal is None else equal
    if eq:
        chosen = draw(st.lists(st.sampled_from(sorted(topics)), min_size=1, unique=True))
        topics_by_member = {m: chosen for m in names}
    else:
        topics_by_member = {m: draw(st.lists(st.sampled_from(sorted(topics)), min_size=1, unique=True))
                            for m in names}
    all_tps = [(t, p) for t, n in topics.items() for p in range(n)]
    owned = {m: draw(st.lists(st.sampled_from(all_tps), unique=True, max_size=6)) if all_tps else []
             for m in names}
    gens = {m: draw(st.integers(-1, 3)) for m in names}
    members = {m: Subscription(frozenset(topics_by_member[m]), tuple(owned[m]), gens[m]) for m in names}
    return members, topics


def check_complete_and_valid(members, topics, out):
    assert set(out) == set(members)
    wanted = {(t, p) for s in members.values() for t in s.topics for p in range(topics.get(t, 0))}
    given_out = Counter(tp for tps in out.values() for tp in tps)
    assert set(given_out) == wanted and all(n == 1 for n in given_out.values())
    for m, tps in out.items():
        assert all(t in members[m].topics for t, _ in tps)
        assert tps == sorted(tps)


@pytest.mark.parametrize("name", sorted(ASSIGNORS))
@settings(max_examples=100, deadline=None)
@given(data=groups())
def test_every_partition_exactly_once_to_a_subscriber(name, data):
    members, topics = data
    out = ASSIGNORS[name].assign(members, topics)
    check_complete_and_valid(members, topics, out)
    assert ASSIGNORS[name].assign(members, topics) == out  # deterministic


@pytest.mark.parametrize("name", ["roundrobin", "cooperative-sticky"])
@settings(max_examples=100, deadline=None)
@given(data=groups(equal=True))
def test_balanced_within_one_when_subscriptions_are_equal(name, data):
    members, topics = data
    sizes = [len(v) for v in ASSIGNORS[name].assign(members, topics).values()]
    assert max(sizes) - min(sizes) <= 1


@settings(max_examples=120, deadline=None)
@given(data=groups())
def test_sticky_rerun_with_its_own_result_moves_nothing(data):
    members, topics = data
    first = STICKY.assign(members, topics)
    again = {m: Subscription(s.topics, tuple(first[m]), 5, s.instance_id) for m, s in members.items()}
    assert STICKY.assign(again, topics) == first
    assigned, revoked = cooperative_plan(first, again, resolve_owned(again, topics))
    assert assigned == first and all(not r for r in revoked.values())


@settings(max_examples=120, deadline=None)
@given(data=groups(equal=True))
def test_sticky_members_keep_what_they_own_up_to_their_share(data):
    members, topics = data
    owners = resolve_owned(members, topics)
    out = STICKY.assign(members, topics)
    total = sum(len(v) for v in out.values())
    floor = total // len(members)
    for m in members:
        mine = {tp for tp, o in owners.items() if o == m}
        assert len(mine & set(out[m])) >= min(len(mine), floor)


@settings(max_examples=120, deadline=None)
@given(data=groups())
def test_cooperative_plan_never_hands_out_a_partition_someone_else_owns(data):
    members, topics = data
    owners = resolve_owned(members, topics)
    target = STICKY.assign(members, topics)
    assigned, revoked = cooperative_plan(target, members, owners)
    for m in members:
        assert set(assigned[m]) <= set(target[m])
        assert all(owners.get(tp, m) == m for tp in assigned[m])
        assert not set(revoked[m]) & set(target[m])
        assert set(revoked[m]) <= set(members[m].owned)
    # whatever is withheld is being revoked by its owner
    withheld = {tp for m in members for tp in target[m] if tp not in assigned[m]}
    assert withheld <= {tp for m in members for tp in revoked[m]}


@settings(max_examples=100, deadline=None)
@given(data=groups(), extra=st.integers(1, 3))
def test_sticky_growing_group_only_moves_to_newcomers(data, extra):
    members, topics = data
    assume(all(s.topics == next(iter(members.values())).topics for s in members.values()))
    first = STICKY.assign(members, topics)
    grown = {m: Subscription(s.topics, tuple(first[m]), 1) for m, s in members.items()}
    topics_of = next(iter(members.values())).topics
    grown.update({f"n{i}": Subscription(topics_of) for i in range(extra)})
    second = STICKY.assign(grown, topics)
    for m in members:  # old members only lose partitions, never gain or swap
        assert set(second[m]) <= set(first[m])
