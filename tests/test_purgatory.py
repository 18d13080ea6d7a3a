"""fabric/broker/purgatory.py: its rules, and a seeded model test against a plain list oracle."""

from __future__ import annotations

import random

import pytest

from fabric.broker.purgatory import Purgatory, WaitFor, WaitKey
from fabric.testing.seeds import seeds

A = WaitKey(WaitFor.BYTES, "t", 0)
B = WaitKey(WaitFor.BYTES, "t", 1)
D = WaitKey(WaitFor.DURABLE, "t", 0)


def test_operations_are_found_by_what_they_wait_for():
    p: Purgatory[str] = Purgatory(10)
    fetch = p.park("fetch", [A, B], 100)
    produce = p.park("produce", [D], 50)
    assert len(p) == 2
    assert [e.op for e in p.watching([A])] == ["fetch"]
    assert [e.op for e in p.watching([D])] == ["produce"]  # an append (BYTES) does not wake it
    assert [e.op for e in p.watching([A, B, D])] == ["fetch", "produce"]  # each once, park order
    p.finish(fetch)
    p.finish(fetch)  # idempotent
    assert p.watching([A, B]) == [] and len(p) == 1
    assert p.next_deadline_ms() == 50
    assert [e.op for e in p.expired(49)] == [] and [e.op for e in p.expired(50)] == ["produce"]
    assert produce.done and len(p) == 0 and p.next_deadline_ms() is None


def test_capacity_and_bad_parks():
    p: Purgatory[int] = Purgatory(2)
    p.park(1, [A], 10)
    p.park(2, [A], 10)
    assert p.full()
    with pytest.raises(OverflowError):
        p.park(3, [A], 10)
    with pytest.raises(ValueError):
        Purgatory(0)
    q: Purgatory[int] = Purgatory(2)
    with pytest.raises(ValueError, match="no keys"):
        q.park(1, [], 10)


def test_rearm_moves_the_deadline_and_keeps_the_place():
    p: Purgatory[str] = Purgatory(10)
    first = p.park("standing", [A], 100)
    p.park("other", [A], 150)
    p.rearm(first, 300)
    assert [e.op for e in p.expired(200)] == ["other"]  # the old deadline (100) of "standing" is ignored
    assert [e.op for e in p.watching([A])] == ["standing"]
    assert p.next_deadline_ms() == 300
    assert [e.op for e in p.expired(300)] == ["standing"]
    with pytest.raises(ValueError):
        p.rearm(first, 400)


@pytest.mark.parametrize("seed", seeds(range(10)))
def test_model(seed):
    """Random parks, rearms, finishes, wake-ups and expiries against a list of live entries."""
    rng = random.Random(seed)
    keys = [WaitKey(kind, "t", i) for kind in WaitFor for i in range(3)]
    p: Purgatory[int] = Purgatory(20)
    live: list[tuple[int, set, int]] = []  # (op, keys, deadline) in park order
    entries = {}
    now = 0
    for step in range(1500):
        ctx = f"seed={seed} step={step}"
        op = rng.random()
        if op < 0.35 and not p.full():
            ks = set(rng.sample(keys, rng.randint(1, 3)))
            deadline = now + rng.randint(0, 50)
            entries[step] = p.park(step, ks, deadline)
            live.append((step, ks, deadline))
        elif op < 0.5 and live:
            i = rng.randrange(len(live))
            o, ks, _ = live[i]
            deadline = now + rng.randint(0, 50)
            p.rearm(entries[o], deadline)
            live[i] = (o, ks, deadline)
        elif op < 0.7:
            asked = set(rng.sample(keys, rng.randint(1, 4)))
            got = [e.op for e in p.watching(asked)]
            assert got == [o for o, ks, _ in live if ks & asked], ctx
            for o in got:
                if rng.random() < 0.5:
                    p.finish(entries[o])
                    live = [x for x in live if x[0] != o]
        else:
            now += rng.randint(0, 10)
            got = [e.op for e in p.expired(now)]
            due = sorted((d, o) for o, _, d in live if d <= now)
            assert sorted(got) == sorted(o for _, o in due), ctx
            assert [entries[o].deadline_ms for o in got] == sorted(d for d, _ in due), ctx
            live = [x for x in live if x[2] > now]
        assert len(p) == len(live) and p.full() == (len(live) >= 20), ctx
        assert [e.op for e in p.all()] == [o for o, _, _ in live], ctx
        assert p.next_deadline_ms() == min((d for _, _, d in live), default=None), ctx
