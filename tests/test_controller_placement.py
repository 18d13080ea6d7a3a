"""Replica placement (fabric/controller/placement.py): even, rack-aware, deterministic."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from fabric.controller.placement import place_replicas
from fabric.testing.seeds import seeds


def test_leaders_and_replicas_spread_evenly():
    placed = place_replicas([(1, None), (2, None), (3, None)], 6, 3)
    assert all(len(set(r)) == 3 for r in placed)
    assert Counter(r[0] for r in placed) == {1: 2, 2: 2, 3: 2}


def test_existing_load_is_counted():
    placed = place_replicas([(1, None), (2, None), (3, None)], 1, 1, replica_load={1: 5, 2: 5},
                            leader_load={1: 5, 2: 5})
    assert placed == [[3]]


def test_replicas_land_on_distinct_racks():
    brokers = [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")]
    for replicas in place_replicas(brokers, 12, 3):
        assert len({dict(brokers)[b] for b in replicas}) == 3


def test_replication_factor_beyond_brokers():
    with pytest.raises(ValueError, match="replication factor"):
        place_replicas([(1, None)], 1, 2)


@pytest.mark.parametrize("seed", seeds(range(20)))
def test_random_clusters_stay_balanced_and_deterministic(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 7)
    brokers = [(b, rng.choice([None, "x", "y"])) for b in rng.sample(range(1, 50), n)]
    parts, rf = rng.randint(1, 30), rng.randint(1, n)
    placed = place_replicas(brokers, parts, rf)
    assert placed == place_replicas(list(brokers), parts, rf), f"seed {seed}"
    assert all(len(r) == rf and len(set(r)) == rf for r in placed), f"seed {seed}"
    rack_of = {b: (rack if rack is not None else f"own-{b}") for b, rack in brokers}
    racks = len(set(rack_of.values()))
    for r in placed:  # no two replicas share a rack while there are racks enough
        assert len({rack_of[b] for b in r}) == min(rf, racks), f"seed {seed}: {r} over racks {rack_of}"
    leaders = Counter(r[0] for r in placed)
    counts = [leaders.get(b, 0) for b, _ in brokers]
    assert max(counts) - min(counts) <= 1, f"seed {seed}: leaders {leaders}"
    if all(rack is None for _, rack in brokers):
        replicas = Counter(b for r in placed for b in r)
        counts = [replicas.get(b, 0) for b, _ in brokers]
        assert max(counts) - min(counts) <= 1, f"seed {seed}: replicas {replicas}"
