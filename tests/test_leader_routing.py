"""Leader routing in the clients, against two independent broker processes.

Broker A (node 1) leads topic ``xa``, broker B (node 2) leads ``yb``; neither knows the other's
topic.  Clients bootstrapped with "A,B" merge both brokers' metadata (``pool.Cluster``) and must
send each partition's requests to its own leader: the data is checked on each broker alone.
"""

from __future__ import annotations

import time

import pytest

from fabric.client import Admin, Consumer, Producer
from fabric.errors import UnknownTopicOrPartitionError

pytestmark = pytest.mark.process

N = 300


@pytest.fixture
def pair(brokers):
    a = brokers(extra_args=["--node-id", "1", "--no-auto-create"])
    b = brokers(extra_args=["--node-id", "2"])
    with Admin(a.bootstrap) as admin:
        admin.create_topic("xa", partitions=2)
    with Admin(b.bootstrap) as admin:
        admin.create_topic("yb", partitions=3)
    return a, b


def _count(bootstrap: str, topic: str) -> int:
    with Admin(bootstrap) as admin:
        return sum(row["records"] for row in admin.topic_offsets(topic))


def test_producer_and_consumer_follow_the_metadata_to_each_leader(pair):
    a, b = pair
    both = f"{a.bootstrap},{b.bootstrap}"
    with Producer(both, linger_ms=1) as p:
        futures = [p.send("xa", f"x{i}".encode(), key=f"k{i}".encode()) for i in range(N)]
        futures += [p.send("yb", f"y{i}".encode(), key=f"k{i}".encode()) for i in range(N)]
        p.flush(30)
        assert all(f.result(0).offset >= 0 for f in futures)
    # each topic's records are on its own leader only
    assert _count(a.bootstrap, "xa") == N and _count(b.bootstrap, "yb") == N
    with Admin(a.bootstrap) as admin, pytest.raises(UnknownTopicOrPartitionError):
        admin.partitions_for("yb")
    with Admin(b.bootstrap) as admin, pytest.raises(UnknownTopicOrPartitionError):
        admin.partitions_for("xa")

    got: dict[str, set[bytes]] = {"xa": set(), "yb": set()}
    with Consumer(both, auto_offset_reset="earliest") as c:
        assert len(c.assign_topic("xa")) == 2 and len(c.assign_topic("yb")) == 3
        deadline = time.monotonic() + 30
        while sum(map(len, got.values())) < 2 * N and time.monotonic() < deadline:
            for r in c.poll(500):
                got[r.topic].add(r.value)
    assert got["xa"] == {f"x{i}".encode() for i in range(N)}
    assert got["yb"] == {f"y{i}".encode() for i in range(N)}


def test_admin_merges_listings_and_sends_topic_requests_to_a_broker_that_knows_the_topic(pair):
    a, b = pair
    with Admin(f"{a.bootstrap},{b.bootstrap}") as admin:
        assert {t["name"] for t in admin.list_topics()} >= {"xa", "yb"}
        meta = admin.metadata(["xa", "yb"])
        assert [t["name"] for t in meta["topics"]] == ["xa", "yb"]
        assert [p["leader"] for p in meta["topics"][0]["partitions"]] == [1, 1]
        assert [p["leader"] for p in meta["topics"][1]["partitions"]] == [2, 2, 2]
        assert sorted(x["node_id"] for x in meta["brokers"]) == [1, 2]
        assert admin.describe_topic("yb")["name"] == "yb"
        assert admin.partitions_for("yb") == 3
        assert [r["offset"] for r in admin.list_offsets([("xa", 0, "latest"), ("yb", 2, "latest")])] == [0, 0]


def test_an_auto_created_topic_is_made_once_on_a_broker_that_allows_it(pair):
    a, b = pair
    with Producer(f"{a.bootstrap},{b.bootstrap}", linger_ms=1) as p:  # A refuses to auto-create
        assert p.send("zz", b"v").result(10).offset == 0
    assert _count(b.bootstrap, "zz") == 1
    with Admin(a.bootstrap) as admin, pytest.raises(UnknownTopicOrPartitionError):
        admin.partitions_for("zz")


def test_a_topic_that_moves_to_the_other_broker_is_followed_by_the_producer(pair):
    a, b = pair
    # (not idempotent: the idempotent producer's reaction to a recreated topic is the next test)
    with Producer(f"{a.bootstrap},{b.bootstrap}", linger_ms=1, retry_backoff_ms=20, acks=1) as p:
        assert p.send("xa", b"before", partition=0).result(10).offset == 0
        with Admin(a.bootstrap) as admin:
            admin.delete_topic("xa")
        with Admin(b.bootstrap) as admin:
            admin.create_topic("xa", partitions=2)
        # A answers UNKNOWN_TOPIC_OR_PARTITION: the producer looks the leader up again and
        # delivers to B within the delivery timeout
        assert p.send("xa", b"after", partition=0).result(20).offset == 0
    assert _count(b.bootstrap, "xa") == 1


def test_an_idempotent_producer_follows_a_recreated_topic_by_bumping_its_epoch(pair):
    """The recreated partition on B has no state of the producer, whose next sequence there is 1:
    the leader refuses it (``UNKNOWN_PRODUCER_ID``, nothing written).  With no older batch
    outstanding the producer asks for its next epoch (Kafka's KIP-360), restarts the partition at
    sequence 0 under it and re-sends the record, whose attempts were all refused before anything
    was appended (A's UNKNOWN_TOPIC_OR_PARTITION, B's UNKNOWN_PRODUCER_ID): nothing is lost,
    nothing written twice, and the order holds."""
    a, b = pair
    with Producer(f"{a.bootstrap},{b.bootstrap}", linger_ms=1, retry_backoff_ms=20) as p:
        assert p.send("xa", b"before", partition=0).result(10).offset == 0
        pid, epoch, _ = p._idem.next(("xa", 0))
        with Admin(a.bootstrap) as admin:
            admin.delete_topic("xa")
        with Admin(b.bootstrap) as admin:
            admin.create_topic("xa", partitions=2)
        assert p.send("xa", b"again", partition=0).result(20).offset == 0
        assert p.send("xa", b"after", partition=0).result(20).offset == 1
        assert p._idem.next(("xa", 0))[:2] == (pid, epoch + 1)
    with Consumer(b.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([("xa", 0)])
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            got += c.poll(200)
    assert [r.value for r in got] == [b"again", b"after"]


def test_a_topic_that_moves_to_the_other_broker_is_followed_by_the_consumer(pair):
    a, b = pair
    with Consumer(f"{a.bootstrap},{b.bootstrap}", auto_offset_reset="earliest", fetch_max_wait_ms=100) as c:
        c.assign([("xa", 0)])
        assert c.poll(200) == [] and c.position(("xa", 0)) == 0  # reading A, which has nothing yet
        with Admin(a.bootstrap) as admin:
            admin.delete_topic("xa")
        with Admin(b.bootstrap) as admin:
            admin.create_topic("xa", partitions=2)
        with Producer(b.bootstrap) as p:
            p.send("xa", b"moved", partition=0).result(10)
        # A answers UNKNOWN_TOPIC_OR_PARTITION: the consumer looks the leader up again, reads B
        got = []
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            got = c.poll(200)
        assert [(r.topic, r.offset, r.value) for r in got] == [("xa", 0, b"moved")]
