"""PartitionState (fabric/replication/state.py): each rule of its header, then a seeded random run
checking the invariants at every step."""

from __future__ import annotations

import random

import pytest

from fabric.protocol.errors import FabricError
from fabric.replication import UNKNOWN_LOG_END, PartitionState, Role, StaleEpoch
from fabric.testing.seeds import seeds

LAG = 10_000


def leader(replicas=(1, 2, 3), isr=(1, 2, 3), log_end=0, epoch=1, now=0) -> PartitionState:
    s = PartitionState(1)
    s.become_leader(epoch, replicas, set(isr), log_end, now)
    return s


def test_a_lone_leader_commits_at_once():
    s = leader(replicas=(1,), isr=(1,))
    assert (s.role, s.leader, s.isr, s.high_watermark) == (Role.LEADER, 1, {1}, 0)
    assert s.leader_appended(5) == 5 and s.leader_appended(9) == 9
    with pytest.raises(ValueError):
        s.leader_appended(8)  # rule 3: the log does not shrink under a leader


def test_hw_is_the_smallest_isr_log_end_and_waits_for_unknown_followers():
    s = leader()
    s.leader_appended(10)
    assert s.high_watermark == 0  # rule 7: followers' log ends unknown since the election
    assert s.update_follower(2, 6, 1) == 0
    assert s.update_follower(3, 4, 1) == 4  # rule 3: min over the ISR
    assert s.update_follower(3, 10, 2) == 6
    assert s.update_follower(2, 10, 3) == 10


def test_hw_never_decreases_while_leader():
    s = leader(log_end=0)
    s.leader_appended(10)
    s.update_follower(2, 10, 0)
    s.update_follower(3, 10, 0)
    assert s.high_watermark == 10
    s.set_isr({1, 2, 3})
    assert s.high_watermark == 10
    s.leader_appended(20)
    s.update_follower(2, 15, 1)
    assert s.high_watermark == 10  # 3 is still at 10
    s.followers[3].log_end = 5  # (even if a report came back lower, HW would stay)
    s.update_follower(2, 20, 2)
    assert s.high_watermark == 10


def test_follower_ahead_of_the_leader_is_refused():
    s = leader()
    s.leader_appended(3)
    with pytest.raises(FabricError) as info:
        s.update_follower(2, 4, 0)
    assert info.value.name == "OFFSET_OUT_OF_RANGE"
    with pytest.raises(ValueError, match="not a follower"):
        s.update_follower(9, 0, 0)


def test_isr_shrinks_after_the_lag_and_hw_rises():
    s = leader(now=0)
    s.leader_appended(10)
    s.update_follower(2, 10, 1_000)
    s.update_follower(3, 2, 1_000)
    assert s.high_watermark == 2
    assert s.maybe_shrink_isr(LAG, LAG) == frozenset()  # 3 counted as caught up at the election (0)
    assert s.maybe_shrink_isr(LAG + 1, LAG) == {3}  # rule 6
    assert s.isr == {1, 2} and s.high_watermark == 10  # removing a member can only raise HW
    assert s.maybe_shrink_isr(1_000 + LAG + 1, LAG) == {2}
    assert s.isr == {1}  # rule 2: never the leader


def test_caught_up_at_the_previous_fetch_counts():
    """Rule 4, Kafka's rule: reaching the leader's log end as of the previous fetch means the
    follower was caught up at the time of that previous fetch."""
    s = leader(now=0)
    s.leader_appended(10)
    s.update_follower(2, 5, 100)  # behind; the leader was at 10
    s.leader_appended(20)
    s.update_follower(2, 10, 200)  # reaches 10: caught up as of t=100, not 200
    assert s.followers[2].last_caught_up_ms == 100
    s.update_follower(2, 20, 300)
    assert s.followers[2].last_caught_up_ms == 300


def test_isr_expands_when_the_follower_reaches_hw_and_the_epoch_start():
    s = leader(isr=(1,), log_end=10)
    assert s.high_watermark == 10 and s.isr == {1}  # a lone ISR member commits its whole log
    s.leader_appended(12)
    assert s.high_watermark == 12
    s.update_follower(2, 11, 0)
    assert 2 not in s.isr  # below HW (12)
    s.update_follower(2, 12, 1)
    assert s.isr == {1, 2}  # rule 5
    s.leader_appended(15)
    assert s.high_watermark == 12
    s.update_follower(3, 9, 2)
    assert 3 not in s.isr


def test_epochs_only_move_forward():
    s = leader(epoch=5)
    with pytest.raises(StaleEpoch):
        s.become_leader(4, (1, 2, 3), {1}, 0, 0)
    with pytest.raises(StaleEpoch):
        s.become_follower(4, 2, (1, 2, 3), 0)
    s.become_leader(5, (1, 2, 3), {1}, 0, 0)  # the same epoch again is a repeat, not stale
    with pytest.raises(ValueError):
        s.become_leader(6, (2, 3), {2}, 0, 0)  # the leader must be a replica
    with pytest.raises(ValueError):
        s.set_isr({2, 3})


def test_follower_side():
    s = PartitionState(2)
    s.become_follower(3, 1, (1, 2), log_end=0)
    assert (s.role, s.leader, s.leader_epoch) == (Role.FOLLOWER, 1, 3)
    with pytest.raises(FabricError) as info:
        s.update_follower(1, 0, 0)
    assert info.value.name == "NOT_LEADER"
    assert s.follower_fetched(8, 5) == 5  # rule 8
    assert s.follower_fetched(8, 12) == 8
    assert s.follower_fetched(4, 12) == 4  # after a truncation HW may go down
    s.become_leader(4, (1, 2), {2}, 4, 0)  # HW carried over (<= the log end)
    assert s.high_watermark == 4 and s.epoch_start_offset == 4
    with pytest.raises(FabricError):
        s.follower_fetched(4, 4)
    with pytest.raises(ValueError):
        s.become_follower(5, 2, (1, 2), 0)


@pytest.mark.parametrize("seed", seeds(range(20)))
def test_random_run_keeps_the_invariants(seed):
    """Replicas with true logs; the leader appends, followers fetch, time passes, the ISR shrinks,
    leaders change among ISR members.  At every step: the leader is in the ISR, ISR <= replicas,
    HW <= the true log end of every ISR member, and HW never decreases under one leadership."""
    rng = random.Random(seed)
    replicas = (1, 2, 3, 4)
    ends = {r: 0 for r in replicas}  # each replica's true log end
    states = {r: PartitionState(r) for r in replicas}
    now, epoch, lead = 0, 1, 1
    states[lead].become_leader(epoch, replicas, set(replicas), ends[lead], now)
    for r in replicas:
        if r != lead:
            states[r].become_follower(epoch, lead, replicas, ends[r])
    last_hw = 0
    for step in range(600):
        ctx = f"seed={seed} step={step}"
        s = states[lead]
        now += rng.randint(0, 3_000)
        op = rng.random()
        if op < 0.3:
            ends[lead] += rng.randint(1, 5)
            s.leader_appended(ends[lead])
        elif op < 0.75:
            r = rng.choice([x for x in replicas if x != lead])
            if rng.random() < 0.8:  # a follower stalls sometimes
                ends[r] = rng.randint(ends[r], ends[lead])
                hw = s.update_follower(r, ends[r], now)
                states[r].follower_fetched(ends[r], hw)
        elif op < 0.9:
            s.maybe_shrink_isr(now, LAG)
        else:  # the leader goes; the controller picks an ISR member (a clean election)
            candidates = sorted(s.isr - {lead})
            if candidates:
                old = lead
                lead = rng.choice(candidates)
                epoch += 1
                isr = set(s.isr) - {old}
                states[lead].become_leader(epoch, replicas, isr, ends[lead], now)
                for r in replicas:
                    if r != lead:
                        ends[r] = min(ends[r], ends[lead])  # followers truncate to agree
                        states[r].become_follower(epoch, lead, replicas, ends[r])
                last_hw = states[lead].high_watermark
        s = states[lead]
        assert s.role is Role.LEADER and lead in s.isr, ctx
        assert s.isr <= set(replicas), ctx
        assert all(s.high_watermark <= ends[r] for r in s.isr), (ctx, s, ends)
        assert s.high_watermark >= last_hw, (ctx, s.high_watermark, last_hw)
        last_hw = s.high_watermark
        assert all(st.high_watermark <= ends[r] for r, st in states.items()), ctx
    assert last_hw > 0  # the run committed something


def test_unknown_log_end_is_not_an_offset():
    s = leader()
    assert all(p.log_end == UNKNOWN_LOG_END for p in s.followers.values())
