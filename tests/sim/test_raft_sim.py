"""The Raft quorum under random faults: a few hundred seeds of ``run_chaos`` (drops, delays,
reordering, duplication, partitions, crashes losing unsynced writes, restarts), invariants checked
after every step, and progress required once the cluster is healed.

Replay a failure with ``python -m pytest tests/sim/test_raft_sim.py --seed N`` or, event by event,
``python tools/sim.py --seed N --verbose``; hunt with ``python tools/sim.py --seeds 10000``.
"""

from __future__ import annotations

import pytest

from fabric.testing.raft_sim import PROGRESS_ENTRIES, RaftSim, run_chaos
from fabric.testing.seeds import seeds

pytestmark = pytest.mark.sim


@pytest.mark.parametrize("seed", seeds(range(400)))
def test_raft_stays_safe_and_makes_progress_through_faults(seed):
    sim = run_chaos(seed)
    final = [i for i, (_, data) in sim.check.committed.items() if data.startswith(b"final")]
    assert len(final) >= PROGRESS_ENTRIES, f"seed {seed}: {sim!r}"
    applied = set(sim.applied().values())
    assert len(applied) == 1 and applied.pop() >= max(final), f"seed {seed}: nodes did not converge: {sim!r}"
    assert len({sim.sms[i].digest for i in sim.nodes}) == 1, f"seed {seed}"


@pytest.mark.parametrize("seed", seeds(range(20)))
def test_a_five_node_quorum_survives_losing_two_voters_and_commits_with_three(seed):
    sim = RaftSim(seed, n=5, drop=0.05, delay_ms=(1, 30), reorder=True)
    sim.run(3000, propose_every_ms=50)
    leader = sim.leader()
    assert leader is not None, f"seed {seed}: {sim!r}"
    down = [i for i in sim.ids if i != leader.id][:2]
    for i in down:
        sim.crash(i)
    before = leader.commit_index
    sim.run(5000, propose_every_ms=50)
    assert leader.role.value == "leader" and leader.commit_index > before + 20, f"seed {seed}: {sim!r}"
    sim.crash(leader.id)  # now only two of five: nothing may commit
    stuck = max(sim.check.committed)
    sim.run(5000, propose_every_ms=50)
    assert max(sim.check.committed) == stuck and sim.leader() is None, f"seed {seed}: {sim!r}"
    for i in sim.ids:
        sim.restart(i)
    sim.run(6000, propose_every_ms=50)
    assert max(sim.check.committed) > stuck + 20, f"seed {seed}: {sim!r}"


def test_the_simulator_catches_a_node_that_speaks_before_it_syncs(monkeypatch):
    """The invariants have teeth: with ``sync`` a no-op, a crash forgets votes already sent and
    some seed elects two leaders in one term (or loses a committed entry)."""
    from fabric.controller.raft_storage import MemoryRaftStorage
    from fabric.testing.raft_sim import Violation

    monkeypatch.setattr(MemoryRaftStorage, "sync", lambda self: None)
    caught = []
    for seed in range(40):
        try:
            run_chaos(seed)
        except Violation as e:
            if "no progress" not in str(e):  # a safety invariant, not only liveness
                caught.append(str(e))
    assert caught, "no seed of 40 noticed that nothing is ever synced"
