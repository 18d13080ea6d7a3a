"""Fault drills on a real 3-broker cluster: RF 3, ``min_insync_replicas`` 2, ``acks=all``, keyed
records, and a fault in the middle of the stream.  Afterwards every replica's data directory is
read from disk and ``fabric.testing.cluster_check`` must find no acknowledged record lost, none
reordered, no offset holding two different records across replicas, and (the default producer
being idempotent) no record written twice by a retry.

Why these faults (issue 15): SIGKILL is a machine dying; SIGSTOP longer than the session timeout
is a paused leader (GC, VM steal) that must not acknowledge writes the new leader never had; two
brokers down out of three must make ``acks=all`` fail rather than acknowledge what one copy holds.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from fabric.client.admin import Admin
from fabric.client.producer import Producer
from fabric.testing.cluster import ClusterProcesses, wait_until as poll
from fabric.testing.cluster_check import ack_line, check, read_acks, read_data_dir

pytestmark = pytest.mark.process

TOPIC = "orders"
SETTINGS = {"broker_session_timeout_ms": 1500, "broker_heartbeat_ms": 250, "default_replication_factor": 3,
            "min_insync_replicas": 2}


def leader_of(cluster: ClusterProcesses, partition: int) -> int:
    with Admin(cluster.bootstrap, timeout_ms=3000) as admin:
        meta = admin.metadata([TOPIC])
    return meta["topics"][0]["partitions"][partition]["leader"]


class KeyedLoad:
    """One producer thread: keyed ``acks=all`` records (the default, idempotent producer), every
    acknowledgement logged in order."""

    def __init__(self, bootstrap: str, ack_log: Path, delivery_timeout_ms: int = 60_000,
                 request_timeout_ms: int = 3000) -> None:
        self.producer = Producer(bootstrap, acks="all", linger_ms=2, request_timeout_ms=request_timeout_ms,
                                 delivery_timeout_ms=delivery_timeout_ms)
        self.lines: list[str] = []
        self.failed = 0
        self.sent = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.ack_log = ack_log
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def acked(self) -> int:
        with self.lock:
            return len(self.lines)

    def _done(self, key: bytes, value: bytes):
        def done(fut) -> None:
            try:
                md = fut.result()
            except Exception:
                with self.lock:
                    self.failed += 1
                return
            with self.lock:
                self.lines.append(ack_line(TOPIC, md.partition, md.offset, key, value))
        return done

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            key = f"k{i % 40}".encode()
            value = f"{key.decode()}:{i}".encode()
            self.producer.send(TOPIC, value, key=key).add_done_callback(self._done(key, value))
            self.sent = i = i + 1
            time.sleep(0.002)

    def __enter__(self) -> "KeyedLoad":
        self.thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.producer.flush(90)
        self.producer.close()
        self.ack_log.write_text("\n".join(self.lines) + "\n")

    def __exit__(self, *exc: object) -> None:
        if not self.stop.is_set():
            self.finish()


def start_cluster(tmp_path: Path) -> ClusterProcesses:
    cluster = ClusterProcesses(tmp_path / "cluster", 3, config=SETTINGS)
    try:
        _bring_up(cluster)
    except BaseException:
        cluster.close()
        raise
    return cluster


def _bring_up(cluster: ClusterProcesses) -> None:
    cluster.start()
    poll(lambda: cluster.registered(3), 30,
         "three registered brokers")
    with Admin(cluster.bootstrap, timeout_ms=10_000) as admin:
        admin.create_topic(TOPIC, partitions=3, replication_factor=3)
    poll(lambda: cluster.in_sync(), 30, "the topic in sync")


def verify(cluster: ClusterProcesses, ack_log: Path) -> dict:
    """Stop every broker and judge what is on disk."""
    for node in cluster.node_ids:
        if node in cluster.paused:
            cluster.resume(node)
        cluster.stop(node)
    replicas = {f"broker-{n}": read_data_dir(cluster.specs[n].data_dir) for n in cluster.node_ids}
    acks = read_acks(ack_log.read_text().splitlines())
    report = check(acks, replicas)
    summary = {kind: len(report.of(kind)) for kind in ("lost", "reordered", "divergent", "duplicate")}
    assert report.ok, f"{summary}: {[f for f in report.findings if f.kind != 'duplicate'][:5]}"
    assert summary["lost"] == summary["reordered"] == summary["divergent"] == 0
    # The default producer is idempotent: no retry wrote a record twice (SPEC 14).
    assert report.exactly_once and summary["duplicate"] == 0, f"{summary}: {report.of('duplicate')[:5]}"
    return {"acks": len(acks), **summary}


def test_sigkill_the_leader_mid_stream_then_restart_it(tmp_path):
    with start_cluster(tmp_path) as cluster, KeyedLoad(cluster.bootstrap, tmp_path / "acks.jsonl") as load:
        poll(lambda: load.acked >= 300, 30, "300 acknowledgements before the fault")
        victim = leader_of(cluster, 0)
        cluster.kill(victim)
        killed_at = load.acked
        poll(lambda: load.acked >= killed_at + 300, 30, "acknowledgements again after the leader died")
        with Admin(cluster.bootstrap, timeout_ms=3000) as admin:
            new_leader = admin.metadata([TOPIC])["topics"][0]["partitions"][0]["leader"]
        assert new_leader not in (victim, -1)
        cluster.restart(victim, kill=True)
        poll(lambda: cluster.in_sync(), 30, "the restarted broker back in every ISR")
        resumed = load.acked
        poll(lambda: load.acked >= resumed + 200, 30, "acknowledgements with the old leader back")
        load.finish()
        result = verify(cluster, tmp_path / "acks.jsonl")
    assert result["acks"] >= 800


def test_a_paused_leader_acknowledges_nothing_that_is_later_lost(tmp_path):
    with start_cluster(tmp_path) as cluster, KeyedLoad(cluster.bootstrap, tmp_path / "acks.jsonl") as load:
        poll(lambda: load.acked >= 300, 30, "300 acknowledgements before the fault")
        victim = leader_of(cluster, 1)
        cluster.pause(victim)
        paused_at = load.acked
        poll(lambda: leader_of(cluster, 1) not in (victim, -1), 30, "a new leader while the old one is paused")
        poll(lambda: load.acked >= paused_at + 300, 30, "acknowledgements from the new leader")
        cluster.resume(victim)  # it wakes up believing it leads: it must not acknowledge anything
        poll(lambda: cluster.in_sync(), 30, "the paused broker back in every ISR")
        resumed = load.acked
        poll(lambda: load.acked >= resumed + 200, 30, "acknowledgements after the pause")
        load.finish()
        verify(cluster, tmp_path / "acks.jsonl")


def test_with_two_of_three_replicas_down_acks_all_writes_fail(tmp_path):
    with start_cluster(tmp_path) as cluster:
        survivor = leader_of(cluster, 0)
        for node in cluster.node_ids:
            if node != survivor:
                cluster.kill(node)
        producer = Producer(f"127.0.0.1:{cluster.specs[survivor].port}", acks="all", request_timeout_ms=2000,
                            delivery_timeout_ms=6000)
        futures = [producer.send(TOPIC, f"v{i}".encode(), key=b"k", partition=0) for i in range(20)]
        producer.flush(30)
        producer.close()
        errors = [f.exception() for f in futures]
        assert all(e is not None for e in errors), "an acks=all write was acknowledged by a lone replica"
        (tmp_path / "acks.jsonl").write_text("")
        verify(cluster, tmp_path / "acks.jsonl")


def test_a_restarted_voter_keeps_its_raft_log_and_the_quorum_it_completes_commits(tmp_path):
    """Regression (tools/bench_cluster.py stalls): a SIGKILLed voter's start-up deleted its
    ``controller`` directory, so it came back with no Raft log or vote; the leader could never
    replicate to it again, and once a third voter was down no metadata change committed (no
    failover, no topic).  Here: restart a follower voter, then kill the other follower: the leader
    and the restarted voter must still commit a topic creation and a leader change."""
    with start_cluster(tmp_path) as cluster:
        st = cluster.status()
        leader = st["controller"]["leader_id"]
        restarted, other = [n for n in cluster.node_ids if n != leader]
        raft_log = cluster.specs[restarted].data_dir / "controller" / "log"
        poll(lambda: raft_log.exists() and raft_log.stat().st_size > 0, 30, "entries in the voter's Raft log")
        cluster.restart(restarted, kill=True)
        assert raft_log.stat().st_size > 0, "the restarted voter lost its Raft log"
        poll(lambda: cluster.in_sync(), 30, "the restarted broker back in sync")
        cluster.kill(other)
        survivors = ",".join(cluster.specs[n].bootstrap for n in (leader, restarted))
        with Admin(survivors, timeout_ms=10_000) as admin:
            admin.create_topic("after", partitions=1, replication_factor=2)
        partition_led_by_other = [p for p in range(3) if leader_of(cluster, p) == other]
        for p in partition_led_by_other:
            poll(lambda: leader_of(cluster, p) not in (other, -1), 30, f"a new leader of partition {p}")


def test_a_clean_stop_marks_the_data_directory_and_the_restart_rejoins_every_isr(tmp_path):
    """KIP-966 at the process level (``fabric/broker/restart.py``): SIGTERM flushes and closes
    every log, then writes ``meta/clean-shutdown`` naming the incarnation; the next start removes
    it before registering, records its own start, and (the marker vouching for the logs) the
    controller keeps the broker in the ISRs, so the cluster is whole again."""
    with start_cluster(tmp_path) as cluster:
        node = cluster.node_ids[-1]
        meta = cluster.specs[node].data_dir / "meta"
        incarnation = int((meta / "incarnation").read_text())
        cluster.stop(node)
        assert int((meta / "clean-shutdown").read_text()) == incarnation
        cluster.restart(node)
        poll(lambda: not (meta / "clean-shutdown").exists(), 30, "the marker removed at start")
        started = (meta / "last-start").read_text().split()
        assert int(started[0]) > incarnation and int(started[2]) <= incarnation  # intact since the old one
        poll(lambda: cluster.in_sync(), 30, "the restarted broker in every ISR")
