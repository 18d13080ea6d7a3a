"""A real network partition of a partition leader (issue 15): three brokers, each in its own network
namespace (``fabric.testing.netns``), RF 3, ``min_insync_replicas`` 2, keyed ``acks=all`` load.
The leader of partition 0 has its link cut -- it still runs, but reaches neither its peers nor the
client -- for longer than the session timeout, then the link is healed.

Why beyond SIGSTOP: a paused broker does nothing, a partitioned one keeps running and believes it
still leads; its followers' fetches and its controller heartbeats hang instead of failing.  It must
acknowledge nothing the new leader never had, and after the heal truncate to the new leader's log
and rejoin every ISR.  Judged from every replica's data directory by ``cluster_check``.
"""

from __future__ import annotations

import time

import pytest

from fabric.client.admin import Admin
from fabric.testing import netns
from fabric.testing.cluster import ClusterProcesses
from fabric.testing.cluster_check import read_acks
from fabric.testing.netns import NetworkLab
from tests.test_cluster_faults import SETTINGS, TOPIC, KeyedLoad, poll, verify

pytestmark = pytest.mark.process

PARTITION = 0
# The cut broker is usually also the controller's Raft leader (node 1 wins the first election), so
# until a new controller is elected and fences it, the other partitions' ISRs still name it and
# their acks=all writes wait: longer than 3 s here.  A producer timing out meanwhile re-sends
# batches the leader already appended; without idempotence those retries land after later batches
# of the same partition and the checker (rightly) counts acknowledgements out of order.  The
# client waits past that failover instead -- the subject here is the isolated leader, not retries.
REQUEST_TIMEOUT_MS = 12_000


@pytest.fixture
def lab():
    reason = netns.unavailable_reason()
    if reason is not None:  # a limit of the environment (no root, no iproute2), not a failure
        pytest.skip(f"network namespaces cannot be used here: {reason}")
    lab = NetworkLab(3)
    try:
        yield lab.setup()
    finally:
        lab.close()
        assert lab.names() == [], "namespaces left behind"


def leader_of(cluster: ClusterProcesses, cut: set[int]) -> int | None:
    bootstrap = ",".join(cluster.specs[n].bootstrap for n in cluster.node_ids if n not in cut)
    try:
        with Admin(bootstrap, timeout_ms=1500) as admin:
            return admin.metadata([TOPIC])["topics"][0]["partitions"][PARTITION]["leader"]
    except Exception:
        return None


def acked_on_partition(load: KeyedLoad) -> int:
    with load.lock:
        lines = list(load.lines)
    return sum(a.partition == PARTITION for a in read_acks(lines))


def test_a_partitioned_leader_loses_nothing_and_rejoins_after_heal(lab, tmp_path):
    session_s = SETTINGS["broker_session_timeout_ms"] / 1000
    with ClusterProcesses(tmp_path / "cluster", 3, config=SETTINGS, network=lab) as cluster:
        cluster.start()
        poll(lambda: cluster.registered(3), 30,
             "three registered brokers")
        with Admin(cluster.bootstrap, timeout_ms=10_000) as admin:
            admin.create_topic(TOPIC, partitions=3, replication_factor=3)
        poll(lambda: cluster.in_sync(), 30, "the topic in sync")
        with KeyedLoad(cluster.bootstrap, tmp_path / "acks.jsonl",
                                                  request_timeout_ms=REQUEST_TIMEOUT_MS) as load:
            poll(lambda: acked_on_partition(load) >= 100, 30, "acknowledgements on the partition before the cut")
            victim = leader_of(cluster, set())
            assert victim in cluster.node_ids
            lab.cut(victim)
            cut_at = time.monotonic()
            new_leader = poll(lambda: (lead := leader_of(cluster, {victim})) not in (None, -1, victim) and lead,
                              30, "a new leader while the old one is cut off")
            before = acked_on_partition(load)
            poll(lambda: acked_on_partition(load) >= before + 100, 30,
                 "acknowledgements on the partition from the new leader")
            # hold the cut past the session timeout, counted from the cut (it usually is already)
            poll(lambda: time.monotonic() - cut_at > 2 * session_s, 10, "the cut outlasting the session")
            assert cluster.running(victim), "the isolated broker must still be running"
            lab.heal(victim)
            poll(lambda: cluster.in_sync(), 45, "the healed broker back in every ISR")
            resumed = load.acked
            poll(lambda: load.acked >= resumed + 200, 30, "acknowledgements after the heal")
            load.finish()
        assert new_leader != victim
        result = verify(cluster, tmp_path / "acks.jsonl")
    assert result["lost"] == result["reordered"] == result["divergent"] == 0
    assert result["acks"] >= 400
