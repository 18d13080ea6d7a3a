"""Consumer groups on a real 3-broker cluster (issue 15): ``__consumer_offsets`` is created by the
controller with RF 3, its partitions' leaders coordinate the groups, and commits are replicated
before they are acknowledged.  So when the coordinator broker is SIGKILLed the group finds the
new coordinator (the new leader of its offsets partition), the committed offsets read from a
surviving broker are exactly those committed before, and the members resume from them: no
record is skipped (duplicates are allowed: at-least-once).
"""

from __future__ import annotations


import pytest

from fabric.client import Admin, Consumer, Producer
from fabric.groups.offsets import OFFSETS_TOPIC
from fabric.testing.cluster import ClusterProcesses, wait_until

pytestmark = pytest.mark.process

TOPIC = "events"
GROUP = "billing"
PARTITIONS = 4
RECORDS = 400
SETTINGS = {"broker_session_timeout_ms": 1500, "broker_heartbeat_ms": 250, "default_replication_factor": 3,
            "min_insync_replicas": 2, "group_initial_rebalance_delay_ms": 200}
MEMBER = {"session_timeout_ms": 3000, "heartbeat_interval_ms": 200, "auto_offset_reset": "earliest",
          "fetch_max_wait_ms": 100, "enable_auto_commit": False}


def poll(condition, timeout: float, what: str, members=()):
    """``wait_until``; with ``members`` the condition polls them (their group work runs in poll)."""
    return wait_until(condition, timeout, what, every=0 if members else 0.1)


class Members:
    """Two group members polled from this thread; every record seen is kept as (tp, offset)."""

    def __init__(self, bootstrap: str) -> None:
        self.consumers = [Consumer(bootstrap, group_id=GROUP, **MEMBER) for _ in range(2)]
        for c in self.consumers:
            c.subscribe([TOPIC])
        self.seen: set[tuple[int, int]] = set()
        self.count = 0

    def step(self) -> None:
        """Poll each member, then commit what it consumed (commit failures during a rebalance or
        a coordinator move are retried by the next step: the records are simply seen again)."""
        for c in self.consumers:
            try:
                records = c.poll(100)
                for r in records:
                    self.seen.add((r.partition, r.offset))
                self.count += len(records)
                if records:
                    c.commit(timeout_ms=5000)
            except Exception:
                continue

    def close(self) -> None:
        for c in self.consumers:
            try:
                c.close()
            except Exception:
                pass


def committed_from(bootstrap: str) -> dict[int, int] | None:
    """The group's committed offsets as one broker's coordinator lookup gives them."""
    reader = Consumer(bootstrap, group_id=GROUP, **MEMBER)
    try:
        got = reader.committed([(TOPIC, p) for p in range(PARTITIONS)], timeout_ms=3000)
        return {tp[1]: off for tp, off in got.items() if off is not None}
    except Exception:
        return None
    finally:
        reader.close()


def test_the_group_survives_sigkill_of_its_coordinator(tmp_path):
    with ClusterProcesses(tmp_path / "cluster", 3, config=SETTINGS) as cluster:
        cluster.start()
        poll(lambda: cluster.registered(3), 30,
             "three registered brokers")
        with Admin(cluster.bootstrap, timeout_ms=10_000) as admin:
            admin.create_topic(TOPIC, partitions=PARTITIONS, replication_factor=3)
        producer = Producer(cluster.bootstrap, acks="all", request_timeout_ms=3000, delivery_timeout_ms=30_000)
        for i in range(RECORDS):
            producer.send(TOPIC, f"v{i}".encode(), key=f"k{i}".encode())
        producer.flush(30)
        producer.close()
        with Admin(cluster.bootstrap, timeout_ms=5000) as admin:
            ends = {row["partition"]: row["latest"] for row in admin.topic_offsets(TOPIC)}
        assert sum(ends.values()) == RECORDS

        members = Members(cluster.bootstrap)
        try:
            # Both members share the topic and commit about half of it.
            poll(lambda: members.step() or members.count >= RECORDS // 2, 60, "half of the records consumed")
            for c in members.consumers:
                c.commit(timeout_ms=5000)
            before = committed_from(cluster.bootstrap)
            assert before and sum(before.values()) >= RECORDS // 2
            with Admin(cluster.bootstrap, timeout_ms=5000) as admin:
                meta = admin.metadata([OFFSETS_TOPIC])["topics"][0]
                assert {len(p["replicas"]) for p in meta["partitions"]} == {3}
                victim = admin.find_coordinator(GROUP)["node_id"]
            cluster.kill(victim)

            # From a surviving broker: the new coordinator answers exactly what was committed.
            survivor = next(n for n in cluster.node_ids if n != victim)
            after = poll(lambda: committed_from(cluster.specs[survivor].bootstrap), 30,
                         "committed offsets from the new coordinator")
            assert after == before
            with Admin(cluster.specs[survivor].bootstrap, timeout_ms=5000) as admin:
                assert poll(lambda: admin.find_coordinator(GROUP)["node_id"] != victim, 30, "a new coordinator")

            # The members move to it and finish the topic: nothing skipped.
            poll(lambda: members.step() or all((p, o) in members.seen for p, end in ends.items()
                                               for o in range(end)), 90, "every record consumed", members.consumers)
            final = poll(lambda: (got := committed_from(cluster.specs[survivor].bootstrap)) == ends and got, 60,
                         "the final commits at the end of every partition")
            assert final == ends
        finally:
            members.close()
