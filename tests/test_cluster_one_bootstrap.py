"""Clients given ONE address of a cluster: they must find every partition's leader from it.

A consumer given one bootstrap address of a 3-broker cluster used to fetch every partition from
that broker forever (it took "one address" for "one broker" and never asked for metadata), each
fetch answered NOT_LEADER by return, thousands a second: `fabric consume` and `fabric perf e2e`
read nothing from partitions other brokers lead.  The README's examples give one address."""

import subprocess
import sys
import time

import pytest

from fabric.client import Consumer, Producer
from fabric.client.admin import Admin
from fabric.testing.cluster import wait_until

pytestmark = pytest.mark.process

N = 300


def _leaders(bootstrap: str, topic: str) -> list[int]:
    with Admin(bootstrap) as admin:
        meta = admin.metadata([topic])
    return [p["leader"] for p in sorted(meta["topics"][0]["partitions"], key=lambda p: p["partition"])]


def test_a_consumer_and_the_cli_given_one_address_read_partitions_every_broker_leads(cluster):
    c = cluster(3).start()
    wait_until(c.registered, 30, "every broker registered")
    one = c.specs[1].bootstrap
    with Admin(one) as admin:
        admin.create_topic("spread", partitions=3, replication_factor=3)
    wait_until(lambda: sorted(_leaders(one, "spread")) == [1, 2, 3], 30, "one leader per broker", every=0.1)

    with Producer(one, linger_ms=1) as p:
        futures = [p.send("spread", f"v{i}".encode(), key=f"k{i}".encode()) for i in range(N)]
        p.flush(30)
        by_partition: dict[int, list[bytes]] = {}
        for i, f in enumerate(futures):
            by_partition.setdefault(f.result(0).partition, []).append(f"v{i}".encode())
    assert len(by_partition) == 3  # keys spread over all three leaders

    got: dict[int, list[bytes]] = {}
    with Consumer(one, auto_offset_reset="earliest") as consumer:
        consumer.assign_topic("spread")
        consumer.seek_to_beginning()
        deadline = time.monotonic() + 30
        while sum(map(len, got.values())) < N and time.monotonic() < deadline:
            for r in consumer.poll(200):
                got.setdefault(r.partition, []).append(r.value)
    assert got == by_partition  # everything, in order per partition

    for partition, values in by_partition.items():  # the CLI, one partition at a time
        out = subprocess.run([sys.executable, "-m", "fabric", "consume", "spread", "--partition", str(partition),
                              "--from-beginning", "--max", str(len(values)), "--idle-timeout-ms", "10000",
                              "-b", one], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [v.decode() for v in values]


def test_admin_requests_go_to_a_bootstrap_broker_that_answers_when_the_first_is_down(cluster):
    """`fabric reassign --verify -b B1,B2,B3` (any cluster-level admin request) went to B1 only:
    with broker 1 down it timed out although two brokers of the list were serving."""
    c = cluster(3).start()
    wait_until(c.registered, 30, "every broker registered")
    c.kill(1)
    start = time.monotonic()
    with Admin(c.bootstrap, timeout_ms=10_000) as admin:
        status = admin.cluster_status()
        assert status["brokers"] and admin.list_topics() is not None
    assert time.monotonic() - start < 5  # no request waited out its 10 s timeout on broker 1


def test_a_forwarded_request_follows_the_controller_when_its_leader_dies_unanswering(cluster):
    """A broker forwarded `cluster_status` (any controller request) to the controller's leader;
    when that leader was SIGKILLed the request waited out its whole 10 s deadline and the client
    got REQUEST_TIMED_OUT, although a new leader was elected within ~2 s.  It is now sent again
    to the voter the broker's link moves to."""
    c = cluster(3).start()
    wait_until(c.registered, 30, "every broker registered")
    with Admin(c.bootstrap, timeout_ms=10_000) as admin:
        leader = admin.cluster_status()["controller"]["leader_id"]
    c.kill(leader)
    survivor = next(n for n in c.node_ids if n != leader)
    start = time.monotonic()
    with Admin(c.specs[survivor].bootstrap, timeout_ms=10_000) as admin:
        status = admin.cluster_status()
    assert status["controller"]["leader_id"] not in (None, leader)
    assert time.monotonic() - start < 8, time.monotonic() - start
