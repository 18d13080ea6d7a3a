"""The whole cluster under random faults: three combined-mode processes running the real Raft,
metadata state machine, controller logic, controller link, replica manager and leader/follower
replicas together (``fabric.testing.cluster_sim``), with drops, delays, reordering, duplication,
network partitions, kills and power losses (unsynced Raft writes and unflushed partition-log
bytes lost) and restarts; invariants after every step (``cluster_sim_check.py``) and convergence
once healed.

Replay a failure with ``python -m pytest tests/sim/test_cluster_sim.py --seed N`` or, event by
event, ``python tools/sim.py --model cluster --seed N --verbose``; hunt with
``python tools/sim.py --model cluster --seeds 3000``.
"""

from __future__ import annotations

import pytest

from fabric.protocol.errors import FabricError
from fabric.replication.config import ReplicationConfig
from fabric.testing.cluster_sim import PARTITIONS, TOPIC, ClusterSim, ClusterViolation, run_cluster_chaos
from fabric.testing.cluster_sim_node import SimConfig
from fabric.testing.seeds import seeds

pytestmark = pytest.mark.sim


@pytest.mark.parametrize("seed", seeds(range(100)))
def test_the_cluster_keeps_acknowledged_records_and_heals_through_faults(seed):
    sim = run_cluster_chaos(seed)
    assert sim.converged() is None, f"seed {seed}: {sim!r}"
    assert sim.stats["acked"] > 0 and sum(map(len, sim.check.acked.values())) == sim.stats["acked"], sim
    ends = {n.id: [n.logs.local(TOPIC, p).end_offset for p in range(PARTITIONS)] for n in sim.nodes.values()}
    assert len({tuple(e) for e in ends.values()}) == 1, f"seed {seed}: replicas differ at the end: {ends}"


def test_the_simulation_exercises_every_fault():
    """Over a handful of seeds every fault happened and partition leadership moved (so a green
    run means something)."""
    totals = {"acked": 0, "refused": 0, "kills": 0, "power_losses": 0, "partitions": 0, "dropped": 0,
              "leader_epochs": 0, "raft_terms": 0}
    for seed in range(12):
        sim = run_cluster_chaos(seed)
        for k in ("acked", "refused", "kills", "power_losses", "partitions"):
            totals[k] += sim.stats[k]
        totals["dropped"] += sum(net.dropped for net in sim.nets.values())
        totals["leader_epochs"] += max(sim.check._top_epoch.values())
        totals["raft_terms"] += max(sim.check.leaders)
    assert all(v > 0 for v in totals.values()), totals


def test_seed_0_a_consumer_never_sees_the_high_watermark_go_back_after_a_failover(monkeypatch):
    """The bug this simulation found first (seed 0 then; seeds 2, 8, 11... since pauses and quick
    restarts joined the faults): the partition leader dies, a follower whose HW still lagged the
    leader's by a push becomes leader, and a consumer fetching from it saw the high watermark go
    back (52 -> 50).  The broker now answers such a fetch LEADER_NOT_AVAILABLE until the new
    leader's HW reaches its epoch start (Leadership rule 4); with the old behaviour (the raw HW)
    those seeds fail."""
    run_cluster_chaos(2)
    from fabric.broker.leadership import Leadership

    monkeypatch.setattr(Leadership, "readable", Leadership.leading)
    caught = []
    for seed in range(16):
        try:
            run_cluster_chaos(seed)
        except ClusterViolation as e:
            caught.append(str(e))
    assert caught and all("saw the high watermark go back" in c for c in caught), caught


def test_seeds_29_and_33_a_restarted_broker_does_not_lead_from_its_previous_incarnations_metadata(monkeypatch):
    """Found with the metadata read a few records per fetch (as a restarted broker meets a log of
    up to 10,000 records since the last snapshot, 2,000 per fetch): the restarted process applied
    the intermediate images and led partitions at its previous incarnation's epochs with a log that
    had lost its tail; an acknowledged batch was missing from that leader, and elsewhere followers
    truncated committed records to match it.  ``ControllerLink`` rule 5 reports no image before the
    broker's own registration is applied; without it these seeds fail again."""
    run_cluster_chaos(29)
    run_cluster_chaos(33)
    from fabric.broker.controller_link import ControllerLink

    monkeypatch.setattr(ControllerLink, "caught_up", property(lambda self: True))
    for seed in (29, 33):
        # (either symptom: the schedule of a seed moves when the processes' traffic changes, e.g. the
        # producer-id block requests: seed 29 now meets the second first)
        with pytest.raises(ClusterViolation,
                           match=r"acknowledged batch at \d+ is missing|committed data changed|high watermark go back"):
            run_cluster_chaos(seed)


def test_seed_5430_a_power_cut_replica_left_last_in_the_isr_is_not_elected(monkeypatch):
    """Found by ``tools/sim.py --model cluster``: broker 2 lost power (its unflushed tail, which
    held acknowledged records, with it) while it was the controller, so nobody fenced it; brokers 3
    and 1 were killed (their page cache kept every write).  When a controller came back, 3 and 1
    re-registered first and each new incarnation was taken out of the ISRs where others remained;
    2, left the last ISR member, re-registered and was elected with an empty log, and the
    acknowledged batch at 0 was truncated everywhere.  Now a broker registers with ``intact_since``
    (``fabric/broker/restart.py``: the power loss rebooted 2, the kills did not reboot 1 and 3) and
    the controller (rule 7) takes only 2 out of every ISR, keeping 1 and 3, which lead.  With the
    old registration (every restart out of the ISRs but the last member) the same loss comes back
    (on seed 5617 now: the producer-id block requests moved seed 5430's schedule).

    Seed 5617 also shows what this costs without KIP-966's eligible leader replicas: the ISR had
    shrunk to [2] (1 and 3 fenced, so with min ISR 2 nothing was acknowledged after), then 2 lost
    power; 3 holds every acknowledged record, yet the partition stays offline (safe, not live)
    until an operator allows an unclean election.  Asserted here so the gap is not forgotten:
    when ELR lands, this seed must converge."""
    run_cluster_chaos(5430)
    with pytest.raises(ClusterViolation, match="no convergence after healing: the ISRs are not full"):
        run_cluster_chaos(5617)  # (no invariant broken: nothing acknowledged is lost)
    from fabric.controller import logic

    original = logic.ControllerLogic._reconcile
    monkeypatch.setattr(logic.ControllerLogic, "_reconcile",
                        lambda self, excluded=(), lost=(), stay=(): original(self, excluded))
    with pytest.raises(ClusterViolation, match="acknowledged batch at 0 is missing"):
        run_cluster_chaos(5617)


def test_the_simulator_catches_an_unclean_election(monkeypatch):
    """The acknowledged-record invariant has teeth: a controller that elects any live replica,
    in sync or not, loses acknowledged batches on some seed."""
    from fabric.controller import logic

    original = logic.ControllerLogic._decide

    def unclean(self, topic, p, gone, *rest):
        cur = self._part(topic, p)
        if cur.leader != -1 and not gone(cur.leader):
            return original(self, topic, p, gone, *rest)
        live = [r for r in cur.replicas if not gone(r)]
        return self._change(topic, p, cur, live[0], [live[0]]) if live else original(self, topic, p, gone, *rest)

    monkeypatch.setattr(logic.ControllerLogic, "_decide", unclean)
    caught = []
    for seed in range(40):
        try:
            run_cluster_chaos(seed)
        except ClusterViolation as e:
            if "no convergence" not in str(e):
                caught.append(str(e))
    assert caught, "no seed of 40 noticed unclean elections"


def test_seed_545_scenario_an_offline_partition_is_not_served_by_its_last_leader():
    """Found by ``tools/sim.py --model cluster`` at seed 545 (before pauses and quick restarts
    joined the faults): every ISR member was fenced, the partition went offline, and its last
    leader (replica dropped, state still LEADER) went on answering fetches with a high watermark
    below one a consumer had seen.  The same state reached by hand, deterministically: the
    leader's followers fall out of its ISR, then the leader, the last in-sync replica, asks for a
    controlled shutdown, so the controller takes the partition offline; while the leader's own
    metadata says so, its fetch path must answer NOT_LEADER (``ReplicaManager`` rule 5)."""
    config = SimConfig(replication=ReplicationConfig(replica_lag_ms=1_000, replica_fetch_idle_ms=100,
                                                     replica_fetch_timeout_ms=300))
    sim = ClusterSim(545, config=config)
    sim.run(3000)
    sim.create_topic()
    sim.run(2000, produce_every_ms=50)
    key = (TOPIC, 0)
    lead = next(n.id for n in sim.nodes.values() if key in sim.nodes[n.id].replicas.leaders)

    def committed_partition():
        state = max((n.service.state for n in sim.nodes.values()), key=lambda s: s.offset)
        return state.topics[TOPIC].partitions[0]

    for other in sim.ids:  # replication from the leader stops: its followers leave its ISR
        if other != lead:
            for channel in ("repl", "pub"):
                sim.nets[channel].cut(lead, other)
    for _ in range(800):
        sim.step()
        if committed_partition().isr == [lead]:
            break
    assert committed_partition().isr == [lead], sim
    sim.nodes[lead].link.request_shutdown()  # no other ISR member can lead: the partition goes offline
    offline_seen = 0
    for _ in range(500):
        sim.step()
        node = sim.nodes[lead]
        if node.link.state.topics[TOPIC].partitions[0].leader == -1:
            offline_seen += 1
            with pytest.raises(FabricError) as info:
                node.leadership.readable(*key)
            assert info.value.name == "NOT_LEADER"
    assert offline_seen, "the old leader never applied the offline partition"
    sim.check.check_partition(key, sim.nodes.values())
