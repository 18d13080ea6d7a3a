"""Partition reassignment, decommission and topic growth on a real 4-broker cluster (issue 16),
while an ``acks=all`` keyed producer and a consumer group keep running.

Judged as the fault drills are: afterwards every replica's data directory is read from disk and
``fabric.testing.cluster_check`` must find no acknowledged record lost or reordered and no
offset holding two different records; the group must have seen every acknowledged offset, and
never waited longer than a failover for new records while the producer wrote.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from fabric.cli import main as cli
from fabric.client import Admin, Consumer
from fabric.client import reassign as ra
from fabric.client.producer import Producer
from fabric.testing.cluster import ClusterProcesses, wait_until as poll
from fabric.testing.cluster_check import check, read_acks, read_data_dir
from tests.test_cluster_faults import TOPIC, KeyedLoad

pytestmark = pytest.mark.process

SETTINGS = {"broker_session_timeout_ms": 1500, "broker_heartbeat_ms": 250, "default_replication_factor": 3,
            "min_insync_replicas": 2, "group_initial_rebalance_delay_ms": 200}
MEMBER = {"session_timeout_ms": 3000, "heartbeat_interval_ms": 200, "auto_offset_reset": "earliest",
          "fetch_max_wait_ms": 100, "enable_auto_commit": True, "auto_commit_interval_ms": 500}
STALL_MAX_S = 8.0  # a failover: session timeout 1.5 s + metadata refresh + the group's rebalance


class GroupReader:
    """One group member polled in its own thread; every record seen, and the longest gap between
    two polls that returned records while ``producing`` is set."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = Consumer(bootstrap, group_id="audit", **MEMBER)
        self.consumer.subscribe([TOPIC])
        self.seen: set[tuple[int, int]] = set()
        self.longest_gap = 0.0
        self.producing = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = None
        while not self.stop.is_set():
            try:
                records = self.consumer.poll(200)
            except Exception:  # (a coordinator or leader moving: the next poll retries)
                continue
            now = time.monotonic()
            if records:
                if last is not None and self.producing.is_set():
                    self.longest_gap = max(self.longest_gap, now - last)
                last = now
                self.seen.update((r.partition, r.offset) for r in records)
            elif not self.producing.is_set():
                last = None

    def __enter__(self) -> "GroupReader":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self.consumer.close()


def partition_dirs(cluster: ClusterProcesses, node: int) -> list[str]:
    return sorted(p.name for p in cluster.specs[node].data_dir.glob(f"{TOPIC}-*"))


def judge(cluster: ClusterProcesses, ack_log: Path, seen: set[tuple[int, int]]) -> dict:
    for node in cluster.node_ids:
        if cluster.running(node):
            cluster.stop(node)
    replicas = {f"broker-{n}": read_data_dir(cluster.specs[n].data_dir) for n in cluster.node_ids}
    acks = read_acks(ack_log.read_text().splitlines())
    report = check(acks, replicas)
    summary = {kind: len(report.of(kind)) for kind in ("lost", "reordered", "divergent", "duplicate")}
    assert report.ok, f"{summary}: {[f for f in report.findings if f.kind != 'duplicate'][:5]}"
    unseen = [(a.partition, a.offset) for a in acks if (a.partition, a.offset) not in seen]
    assert not unseen, f"{len(unseen)} acknowledged records the group never read, e.g. {unseen[:5]}"
    return {"acks": len(acks), **summary}


def test_reassignment_under_load_moves_every_partition_from_brokers_1_3_to_2_4(tmp_path):
    with ClusterProcesses(tmp_path / "cluster", 4, config=SETTINGS) as cluster:
        cluster.start([1, 2, 3])
        poll(lambda: cluster.registered(3), 30, "three registered brokers")
        with Admin(cluster.bootstrap, timeout_ms=10_000) as admin:
            admin.create_topic(TOPIC, partitions=3, replication_factor=3)
        poll(lambda: cluster.in_sync(3), 30, "the topic in sync on brokers 1-3")
        cluster.start([4])  # a new (non-voter) broker with its own config: registers, starts empty
        poll(lambda: cluster.registered(4), 30, "the fourth broker registered")
        assert partition_dirs(cluster, 4) == []
        with KeyedLoad(cluster.bootstrap, tmp_path / "acks.jsonl") as load, GroupReader(cluster.bootstrap) as group:
            poll(lambda: load.acked >= 300 and len(group.seen) >= 100, 30, "records produced and consumed")
            group.producing.set()
            with Admin(cluster.bootstrap, timeout_ms=10_000) as admin:
                current = ra.current_assignment(admin, [TOPIC])
                plan = ra.propose(current, [2, 3, 4])
            assert all(set(r) == {2, 3, 4} for r in plan.values())
            plan_file = tmp_path / "plan.json"
            plan_file.write_text(ra.plan_json(plan))
            started = time.monotonic()
            assert cli(["reassign", "--plan", str(plan_file), "--throttle", "50000000", "--wait",
                        "-b", cluster.bootstrap]) == 0
            moved_s = time.monotonic() - started
            with Admin(cluster.bootstrap, timeout_ms=10_000) as admin:
                after = ra.current_assignment(admin, [TOPIC])
                meta = admin.metadata([TOPIC])["topics"][0]["partitions"]
            assert after == plan
            assert [p["leader"] for p in meta] == [plan[(TOPIC, p["partition"])][0] for p in meta]  # preferred
            assert cli(["reassign", "--verify", "--plan", str(plan_file), "-b", cluster.bootstrap]) == 0
            poll(lambda: partition_dirs(cluster, 1) == [], 20, "broker 1's files of the topic deleted")
            at = load.acked
            poll(lambda: load.acked >= at + 300, 30, "acknowledgements after the move")
            load.finish()
            group.producing.clear()
            poll(lambda: len(group.seen) >= load.acked, 30, "the group caught up")
            assert group.longest_gap < STALL_MAX_S, f"the group stalled {group.longest_gap:.1f} s"
        result = judge(cluster, tmp_path / "acks.jsonl", group.seen)
        assert result["acks"] >= 600 and moved_s < 40


def test_decommission_then_grow_the_topic_while_a_keyed_producer_runs(tmp_path):
    with ClusterProcesses(tmp_path / "cluster", 4, config=SETTINGS) as cluster:
        cluster.start()
        poll(lambda: cluster.registered(4), 30, "four registered brokers")
        with Admin(cluster.bootstrap, timeout_ms=10_000) as admin:
            admin.create_topic(TOPIC, partitions=4, replication_factor=3)
        poll(lambda: cluster.in_sync(4), 30, "the topic in sync")
        poll(lambda: partition_dirs(cluster, 4), 10, "replicas on the fourth broker (placement uses it)")
        producer = Producer(cluster.bootstrap, acks="all", linger_ms=2, metadata_max_age_ms=500)
        try:
            futures = [producer.send(TOPIC, f"v{i}".encode(), key=f"k{i % 50}".encode()) for i in range(300)]
            assert cli(["cluster", "decommission", "4", "--wait", "-b", cluster.bootstrap]) == 0
            futures += [producer.send(TOPIC, f"v{i}".encode(), key=f"k{i % 50}".encode()) for i in range(300, 600)]
            with Admin(cluster.bootstrap, timeout_ms=10_000) as admin:
                assert all(4 not in r for r in ra.current_assignment(admin, [TOPIC]).values())
                poll(lambda: partition_dirs(cluster, 4) == [], 20, "broker 4's files deleted")
                cluster.stop(4)
                poll(lambda: cluster.in_sync(3), 30, "the three remaining brokers in sync")
                # Topic growth and configs on a cluster, placed on the brokers that remain.
                assert admin.create_partitions(TOPIC, 8) == 8
                admin.alter_topic_configs(TOPIC, set={"retention_ms": 3_600_000})
                described = admin.describe_topic(TOPIC)
                assert described["configs"]["retention_ms"] == 3_600_000
                assert all(4 not in p["replicas"] and len(p["replicas"]) == 3 for p in described["partitions"])
            # The keyed producer picks the new count up from its periodic metadata refresh.
            poll(lambda: producer.partitions_for(TOPIC) == 8, 10, "the producer seeing 8 partitions")
            late = [producer.send(TOPIC, f"late{i}".encode(), key=f"new{i}".encode()) for i in range(200)]
            producer.flush(30)
            assert all(f.result(0).offset >= 0 for f in futures)
            assert {f.result(0).partition for f in late} & {4, 5, 6, 7}, "no key went to a new partition"
        finally:
            producer.close()


def test_a_broker_restarted_after_one_of_its_partitions_moved_off_it_starts_and_rejoins(tmp_path):
    """The 'new user' drill found it: a broker SIGKILLed after a reassignment took one partition of
    a topic off it (keeping others) refused to start ("NOT_LEADER: this broker holds no replica of
    orders-0"): its start-up image listed every partition of its local topics."""
    with ClusterProcesses(tmp_path / "cluster", 4, config=SETTINGS) as cluster:
        cluster.start()
        poll(lambda: cluster.registered(4), 30, "four registered brokers")
        with Admin(cluster.bootstrap, timeout_ms=10_000) as admin:
            admin.create_topic(TOPIC, partitions=2, replication_factor=3)
            poll(lambda: cluster.in_sync(4), 30, "the topic in sync")
            current = ra.current_assignment(admin, [TOPIC])
            moved = next(tp for tp, r in current.items() if 1 in r)
            kept = next((tp for tp, r in current.items() if tp != moved and 1 in r), None)
            if kept is None:  # broker 1 must keep a partition of the topic: give it the other one
                other = next(tp for tp in current if tp != moved)
                ra.reassign(admin, {other: [1] + [b for b in current[other] if b != 1][:2]})
            target = [b for b in (2, 3, 4) if b not in current[moved]][:1] + [b for b in current[moved] if b != 1]
            ra.reassign(admin, {moved: target})
            poll(lambda: not ra.reassignments(admin) and 1 not in ra.current_assignment(admin, [TOPIC])[moved]
                 and any(1 in r for r in ra.current_assignment(admin, [TOPIC]).values()), 30, "the move done")
        cluster.kill(1)
        cluster.restart(1)  # (waits for the process to serve: it used to exit at once)
        poll(lambda: cluster.running(1) and cluster.in_sync(4), 30, "broker 1 back in every ISR")
