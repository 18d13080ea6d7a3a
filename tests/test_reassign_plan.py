"""``fabric.client.reassign``'s pure parts: the balanced plan proposal and plan files."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from fabric.client.reassign import load_plan, plan_json, propose


def _loads(plan):
    return Counter(b for reps in plan.values() for b in reps)


def test_moving_off_a_broker_replaces_only_its_replicas_and_balances():
    current = {("orders", p): [1 + (p + i) % 3 for i in range(3)] for p in range(6)}  # on brokers 1-3
    plan = propose(current, [2, 3, 4])
    assert all(1 not in reps and len(set(reps)) == 3 for reps in plan.values())
    assert all(set(plan[k]) == {2, 3, 4} for k in plan)
    firsts = Counter(reps[0] for reps in plan.values())
    assert max(firsts.values()) - min(firsts.values()) <= 1  # preferred leaders spread (rule 3)


def test_adding_a_broker_moves_a_share_of_replicas_onto_it_and_keeps_the_rest():
    current = {("orders", p): [1 + (p + i) % 3 for i in range(2)] for p in range(8)}  # RF 2 on 1-3
    plan = propose(current, [1, 2, 3, 4])
    loads = _loads(plan)
    assert max(loads.values()) - min(loads.values()) <= 1 and loads[4] >= 3
    kept = sum(len(set(plan[k]) & set(current[k])) for k in current)
    assert kept >= 16 - loads[4]  # only what had to move moved


def test_a_replication_factor_above_the_brokers_is_refused():
    with pytest.raises(ValueError):
        propose({("t", 0): [1, 2, 3]}, [1, 2])


def test_plan_files_round_trip_and_bad_ones_are_named(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(plan_json({("orders", 1): [2, 3], ("orders", 0): [3, 4]}))
    assert load_plan(path) == {("orders", 0): [3, 4], ("orders", 1): [2, 3]}
    path.write_text(json.dumps({"partitions": [{"topic": "orders"}]}))
    with pytest.raises(ValueError, match="partitions\\[0\\]"):
        load_plan(path)
