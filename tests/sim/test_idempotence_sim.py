"""The idempotent producer through retries, lost requests and replies, leader changes, crashes
and lost producer state (an epoch bump: KIP-360) (``fabric.testing.idempotence_sim``): every
record sent is in the final log at most once and in send order, and every one but those that may
have been written before a state loss is in it.  ``python tools/sim.py --idempotence --seeds 5000`` runs thousands of seeds;
``--seed N`` (here or there) replays one."""

from __future__ import annotations

import pytest

from fabric.testing.idempotence_sim import run_idempotence
from fabric.testing.seeds import seeds

pytestmark = pytest.mark.sim


@pytest.mark.parametrize("seed", seeds(range(200)))
def test_idempotent_producer_writes_every_record_once_in_order(seed):
    sim = run_idempotence(seed)
    # every record acknowledged, but those failed as maybe written before a state loss (epoch_bump rule 3)
    assert sim.acked and len(sim.acked) + len(sim.maybe_written) == len(sim.sent), repr(sim)


def test_the_simulation_exercises_every_fault():
    """Over a handful of seeds every fault happened and duplicates were recognised, so a green
    run means something."""
    totals: dict[str, int] = {}
    for seed in range(10):
        for k, v in run_idempotence(seed).stats.items():
            totals[k] = totals.get(k, 0) + v
    assert all(totals[k] > 0 for k in ("elections", "crashes", "lost_requests", "lost_replies", "timeouts",
                                       "duplicates", "state_losses", "bumps")), totals
