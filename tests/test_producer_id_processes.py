"""Producer ids on a real 3-broker cluster (SPEC 14.2, 13.5 ``allocate_producer_ids``): producers
that ask different brokers get different ids, and the ids stay unique after the controller leader
is SIGKILLed (the new leader allocates past every block the old one committed) and after the
killed broker comes back (its blocks were in memory only: it gets a new one)."""

from __future__ import annotations

import pytest

from fabric.client.admin import Admin
from fabric.protocol.errors import FabricError
from fabric.client.connection import ClientError
from fabric.testing.cluster import ClusterProcesses, wait_until

pytestmark = pytest.mark.process

SETTINGS = {"broker_session_timeout_ms": 1500, "broker_heartbeat_ms": 250}


def ids_from(cluster: ClusterProcesses, node: int, count: int) -> list[int]:
    """``count`` new producer ids asked of broker ``node`` alone (each a new producer)."""
    out: list[int] = []
    with Admin(cluster.specs[node].bootstrap, timeout_ms=3000) as admin:
        for _ in range(count):
            def one() -> int | None:
                try:
                    pid, epoch = admin.init_producer_id()
                except (ClientError, FabricError):  # REQUEST_TIMED_OUT while its first block is on its way
                    return None
                assert epoch == 0
                return pid
            out.append(wait_until(one, 30, f"a producer id from broker {node}"))
    return out


def controller_leader(cluster: ClusterProcesses, skip: tuple[int, ...] = ()) -> int | None:
    st = cluster.status(skip=skip)
    ctl = (st or {}).get("controller") or {}
    return ctl.get("node_id") if ctl.get("role") == "leader" else None


def test_producer_ids_are_unique_across_brokers_and_a_controller_failover(cluster):
    c = cluster(3, config=SETTINGS)
    c.start()
    wait_until(lambda: c.registered(3), 30, "three registered brokers")
    seen: list[int] = []
    for node in c.node_ids:
        seen += ids_from(c, node, 5)
    assert len(set(seen)) == len(seen), seen
    blocks = {pid // 1000 for pid in seen}  # (each broker hands out ids from its own block)
    assert len(blocks) >= 3

    old = wait_until(lambda: controller_leader(c), 30, "a controller leader")
    c.kill(old)
    survivors = [n for n in c.node_ids if n != old]
    new = wait_until(lambda: (lambda n: n if n not in (None, old) else None)(controller_leader(c, skip=(old,))),
                     30, "a new controller leader")
    assert new in survivors
    for node in survivors:
        seen += ids_from(c, node, 5)
    c.restart(old, wait=True)  # its blocks died with it: the new leader allocates it a new one
    wait_until(lambda: c.registered(3), 30, "the killed broker registered again")
    fresh = ids_from(c, old, 5)
    assert min(fresh) > max(seen)  # the new leader's block starts past every block granted before
    seen += fresh
    assert len(set(seen)) == len(seen), seen


def test_a_decommission_survives_a_controller_failover(cluster):
    """The decommissioned mark is replicated metadata: after the controller leader is SIGKILLed
    (and comes back), new topics still avoid the broker, status shows it, and a cancel ends it."""
    from fabric.client import reassign as ra
    c = cluster(3, config=SETTINGS)
    c.start()
    wait_until(lambda: c.registered(3), 30, "three registered brokers")
    leader = wait_until(lambda: controller_leader(c), 30, "a controller leader")
    target = next(n for n in c.node_ids if n != leader)
    with Admin(c.bootstrap, timeout_ms=10_000) as admin:
        assert ra.decommission(admin, target) == 0  # (no topic yet: nothing moves)
    c.kill(leader)
    wait_until(lambda: controller_leader(c, skip=(leader,)) not in (None, leader), 30, "a new controller leader")
    c.restart(leader, wait=True)
    wait_until(lambda: c.registered(3), 30, "three registered brokers again")

    def replicas_of(admin: Admin, topic: str) -> set[int]:
        def described() -> set[int] | None:
            try:  # (a broker other than the one that forwarded the creation may not have it yet)
                return {r for p in admin.describe_topics([topic])[0]["partitions"] for r in p["replicas"]}
            except FabricError:
                return None
        return wait_until(described, 30, f"{topic} described")

    with Admin(c.bootstrap, timeout_ms=10_000) as admin:
        st = admin.cluster_status()
        assert [b["node_id"] for b in st["brokers"] if b["decommissioned"]] == [target]
        assert [b["id"] for b in st["controller"]["brokers"] if b["decommissioned"]] == [target]
        admin.create_topic("after", partitions=6, replication_factor=2)
        assert target not in replicas_of(admin, "after")
        assert ra.decommission(admin, target, cancel=True) == 0
        assert ra.decommissioned(admin) == set()
        admin.create_topic("back", partitions=6, replication_factor=2)
        assert target in replicas_of(admin, "back")
