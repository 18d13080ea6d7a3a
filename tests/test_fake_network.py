"""fabric/testing/network.py: the fake network is deterministic by seed and does exactly the
faults it is asked for."""

from __future__ import annotations

import pytest

from fabric.clock import ManualClock
from fabric.testing.network import FakeNetwork


def trace(seed: int, **faults) -> list[tuple]:
    clock = ManualClock(0)
    net = FakeNetwork(seed, clock, **faults)
    got: list[tuple] = []

    def echo(env):
        got.append((clock.monotonic_ms(), env.src, env.dst, env.message))
        if env.message < 200:
            net.send(env.dst, env.src, env.message + 100)

    for i in range(100):
        net.send("a", "b", i)
        clock.advance(1)
    net.run(echo)
    return got


def test_the_same_seed_replays_the_same_run():
    faults = dict(drop=0.2, delay_ms=(0, 30), reorder=True)
    assert trace(7, **faults) == trace(7, **faults)
    assert trace(7, **faults) != trace(8, **faults)


def test_no_faults_is_a_perfect_link():
    got = trace(1)
    assert [m for *_, m in got if m < 100] == list(range(100))
    assert len(got) == 300  # every message and both echoes


def test_fifo_per_link_unless_reordering_is_asked_for():
    fifo = [m for _, src, _, m in trace(3, delay_ms=(0, 50)) if src == "a"]  # 0-99, then the echoes' echoes
    assert fifo == sorted(fifo) and len(fifo) == 200
    shuffled = [m for _, src, _, m in trace(3, delay_ms=(0, 50), reorder=True) if src == "a" and m < 100]
    assert shuffled != sorted(shuffled) and sorted(shuffled) == list(range(100))


def test_delays_stay_within_bounds_and_time_is_the_manual_clock():
    clock = ManualClock(1000)
    net = FakeNetwork(5, clock, delay_ms=(10, 20), reorder=True)
    for i in range(200):
        net.send("a", "b", i)
    assert net.deliver() == []  # nothing is due before its delay
    envelopes = []
    net.run(envelopes.append)
    assert all(10 <= e.due_ms - e.sent_ms <= 20 for e in envelopes) and len(envelopes) == 200
    assert clock.monotonic_ms() == max(e.due_ms for e in envelopes)


def test_drops_happen_at_about_the_asked_rate():
    clock = ManualClock()
    net = FakeNetwork(11, clock, drop=0.3)
    kept = sum(net.send("a", "b", i) for i in range(2000))
    assert net.dropped == 2000 - kept and 0.25 < net.dropped / 2000 < 0.35, net
    assert len(net.deliver()) == kept and net.delivered == kept


def test_a_cut_link_loses_messages_both_ways_until_healed():
    clock = ManualClock()
    net = FakeNetwork(2, clock, delay_ms=(5, 5))
    assert net.send("a", "b", "in flight")
    net.isolate("a", ["a", "b", "c"])
    assert not net.send("a", "b", 1) and not net.send("b", "a", 2) and not net.send("c", "a", 3)
    assert net.send("b", "c", 4)  # other links work
    net.heal("a", "b")
    assert net.send("b", "a", 5)
    delivered = []
    net.run(lambda e: delivered.append(e.message))
    assert delivered == ["in flight", 4, 5]  # what was already on the wire still arrives


def test_run_stops_at_until_and_refuses_a_run_that_never_goes_quiet():
    clock = ManualClock()
    net = FakeNetwork(4, clock, delay_ms=(1, 1))
    net.send("a", "b", 0)
    with pytest.raises(RuntimeError, match="going quiet"):
        net.run(lambda e: net.send(e.dst, e.src, e.message + 1), max_messages=50)
    net2 = FakeNetwork(4, ManualClock(), delay_ms=(100, 100))
    net2.send("a", "b", 0)
    assert net2.run(lambda e: None, until_ms=50) == 0 and net2.clock.monotonic_ms() == 50
    assert net2.in_flight() == 1 and net2.run(lambda e: None) == 1


@pytest.mark.parametrize("bad", [dict(drop=1.5), dict(delay_ms=(5, 1)), dict(delay_ms=(-1, 1))])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        FakeNetwork(0, ManualClock(), **bad)
