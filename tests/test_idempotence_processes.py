"""The idempotent producer against real broker processes: a leader restarted after SIGKILL (and,
on a cluster, the leader elected after it) still answers a retried batch it acknowledged before
the kill with the original offsets and appends nothing (SPEC 14.3), on a single node and on a
3-broker cluster.  Batches are built and sent by hand, as a client in another language would."""

from __future__ import annotations

import pytest

from fabric.client.admin import Admin
from fabric.protocol.errors import OutOfOrderSequenceError
from fabric.protocol.messages import BatchTarget, ProduceRequest
from fabric.records.batch import encode_batch
from fabric.testing.cluster import wait_until

pytestmark = pytest.mark.process

TOPIC = "idem"


def batch(pid: int, epoch: int, seq: int, n: int, tag: str) -> bytes:
    return encode_batch([1_700_000_000_000 + i for i in range(n)], [None] * n,
                        [f"{tag}-{i}".encode() for i in range(n)], producer_id=pid, producer_epoch=epoch,
                        base_sequence=seq)


def produce(admin: Admin, data: bytes, endpoint_index: int | None = None, conn=None) -> dict:
    """One produce of ``data`` to ``TOPIC``/0 with acks=all; the partition's result."""
    conn = conn or admin.cluster.bootstrap(endpoint_index or 0)
    header, _ = conn.request("produce", ProduceRequest(acks=-1, timeout_ms=10_000,
                                                      batches=(BatchTarget(topic=TOPIC, partition=0),)),
                             frames=[data], timeout_ms=15_000)
    return header["results"][0]


def log_end(admin: Admin) -> int:
    return admin.list_offsets([(TOPIC, 0, "latest")])[0]["offset"]


def test_single_node_restarted_after_sigkill_still_recognises_acknowledged_batches(brokers, tmp_path):
    b = brokers(data_dir=tmp_path / "data")
    with Admin(b.bootstrap, timeout_ms=10_000) as admin:
        admin.create_topic(TOPIC, partitions=1)
        pid, epoch = admin.init_producer_id()
        first, second = batch(pid, epoch, 0, 3, "a"), batch(pid, epoch, 3, 2, "b")
        assert produce(admin, first)["base_offset"] == 0
        assert produce(admin, second)["base_offset"] == 3
    b.stop()  # a clean stop writes the producer-state snapshot ...
    b.start()
    with Admin(b.bootstrap, timeout_ms=10_000) as admin:
        third = batch(pid, epoch, 5, 4, "c")
        assert produce(admin, third)["base_offset"] == 5  # ... and this batch is only in the log
    b.kill()  # SIGKILL: the state comes back from the snapshot plus a scan of the log after it
    b.start()
    with Admin(b.bootstrap, timeout_ms=10_000) as admin:
        assert log_end(admin) == 9
        for data, offset in ((second, 3), (third, 5), (first, 0)):
            result = produce(admin, data)
            assert "error" not in result and result["base_offset"] == offset
        assert log_end(admin) == 9, "a retried batch was written again"
        gap = produce(admin, batch(pid, epoch, 20, 1, "gap"))
        assert gap["error"]["name"] == OutOfOrderSequenceError.error_name
        assert produce(admin, batch(pid, epoch, 9, 1, "d"))["base_offset"] == 9
        again, _ = admin.init_producer_id()
        assert again > pid  # ids are never handed out twice, even across a SIGKILL


def test_cluster_leader_failover_and_restart_after_sigkill_still_recognise_acknowledged_batches(cluster):
    c = cluster(3, config={"broker_session_timeout_ms": 1500, "broker_heartbeat_ms": 250,
                           "min_insync_replicas": 2})
    c.start()
    wait_until(lambda: c.registered(3), 30, "three registered brokers")
    with Admin(c.bootstrap, timeout_ms=10_000) as admin:
        admin.create_topic(TOPIC, partitions=1, replication_factor=3)
        wait_until(lambda: c.in_sync(), 30, "the new topic in sync")
        pid, epoch = admin.init_producer_id()
        pids = {pid} | {admin.init_producer_id()[0] for _ in range(3)}
        assert len(pids) == 4
        sent = [batch(pid, epoch, 0, 3, "a"), batch(pid, epoch, 3, 2, "b")]

        def leader() -> int:
            meta = admin.metadata([TOPIC])
            return meta["topics"][0]["partitions"][0]["leader"]

        def to_leader(data: bytes) -> dict:
            node = wait_until(lambda: (lambda n: n if n in c.node_ids and c.running(n) else None)(leader()),
                              30, "a live leader")
            return produce(admin, data, conn=admin.cluster.broker(node))

        offsets = [to_leader(d)["base_offset"] for d in sent]
        assert offsets == [0, 3]
        old = leader()
        c.kill(old)  # the followers have the batches and their producer state (acks=all)
        admin.cluster.cache.invalidate()
        wait_until(lambda: leader() not in (old, -1), 30, "a new leader")
        for data, offset in zip(sent, offsets):
            result = wait_until(lambda: (lambda r: r if "error" not in r or r["error"]["name"] != "NOT_LEADER"
                                         else None)(to_leader(data)), 30, "an answer from the new leader")
            assert "error" not in result and result["base_offset"] == offset, result
        assert log_end(admin) == 5
        for n in c.node_ids:  # every broker SIGKILLed and restarted: the state comes from disk
            if c.running(n):
                c.kill(n)
        c.start()
        admin.cluster.cache.invalidate()
        wait_until(lambda: c.in_sync(), 60, "the cluster back in sync")
        for data, offset in zip(sent, offsets):
            result = wait_until(lambda: (lambda r: r if "error" not in r or not r["error"]["name"] in
                                         ("NOT_LEADER", "NOT_ENOUGH_REPLICAS", "LEADER_NOT_AVAILABLE")
                                         else None)(to_leader(data)), 30, "an answer after the restart")
            assert "error" not in result and result["base_offset"] == offset, result
        assert to_leader(batch(pid, epoch, 5, 1, "c"))["base_offset"] == 5
        assert log_end(admin) == 6, "a retried batch was written again"
