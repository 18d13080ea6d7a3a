"""``ClusterGroups`` without processes: the broker core, controller link and leader replicas are
stand-ins, so each rule of cluster_groups.py is checked on its own (the process tier runs it all)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fabric.broker.cluster_groups import COMMIT_TIMEOUT_MS, ClusterGroups
from fabric.broker.group_service import GroupService
from fabric.clock import Now
from fabric.groups.offsets import OFFSETS_TOPIC, partition_for_group
from fabric.protocol.errors import FabricError
from fabric.protocol.messages import parse_request
from fabric.replication.image import BrokerInfo, MetadataImage, PartitionAssignment, TopicImage

pytestmark = pytest.mark.unit

N = 4
GROUP = "billing"
P = partition_for_group(GROUP, N)


class FakeLeader:
    """A leader replica whose high watermark the test moves."""

    def __init__(self) -> None:
        self.closed = False
        self.batches: list[bytes] = []
        self.waiters: dict = {}
        self.hw = 0
        self.log = SimpleNamespace(start_offset=0, end_offset=0)

    def append(self, batch, now_ms, token=None):
        self.batches.append(bytes(batch))
        self.waiters[token] = len(self.batches) - 1
        return len(self.batches) - 1, len(self.batches) - 1

    def push(self, base, batch):
        return ("push", base)

    def hw_moved(self):
        done = [t for t, last in self.waiters.items() if last < self.hw]
        for t in done:
            del self.waiters[t]
        return done


def image(leaders: dict[int, int], with_topic: bool = True) -> MetadataImage:
    brokers = {n: BrokerInfo(n, "127.0.0.1", 9000 + n) for n in (1, 2, 3)}
    topics = {"events": TopicImage("events", "e1", {}, False, (PartitionAssignment(1, 1, (1, 2, 3), (1, 2, 3)),) * 2)}
    if with_topic:
        parts = tuple(PartitionAssignment(leaders.get(p, 2), 1, (1, 2, 3), (1, 2, 3)) for p in range(N))
        topics[OFFSETS_TOPIC] = TopicImage(OFFSETS_TOPIC, "o1", {}, True, parts)
    return MetadataImage(brokers, topics)


def make(img: MetadataImage):
    forwarded = []
    core = SimpleNamespace(leadership=SimpleNamespace(image=img), cluster_groups=None)
    core.cluster = SimpleNamespace(forward=lambda header, done, now_ms: forwarded.append(header),
                                   replicas=SimpleNamespace(leaders={}, pushes=[]))
    core.groups = GroupService(None, 0, node_id=1, offsets_topic_partitions=N, initial_rebalance_delay_ms=0,
                               advertised=lambda: ("127.0.0.1", 9001), host_of=lambda peer: "h", clustered=True)
    return core, ClusterGroups(core), forwarded


def call(cg, op: str, now_ms: int = 0, **fields):
    env, req = parse_request({"op": op, "v": 1, "cid": 7, **fields})
    return cg.handle(b"peer", env, req, [b""], Now(now_ms, 1_700_000_000_000 + now_ms))


def lead(core, cg, p: int, now_ms: int = 0) -> FakeLeader:
    leader = FakeLeader()
    core.cluster.replicas.leaders[(OFFSETS_TOPIC, p)] = leader
    core.leadership.image = image({p: 1})
    cg.image_applied(Now(now_ms, 1_700_000_000_000))
    return leader


def commit(cg, offset: int, now_ms: int = 0):
    return call(cg, "offset_commit", now_ms, group_id=GROUP,
                offsets=[{"topic": "events", "partition": 0, "offset": offset}])


def test_without_the_topic_the_controller_is_asked_once_a_second_and_the_answer_is_retriable():
    core, cg, forwarded = make(image({}, with_topic=False))
    for now in (0, 500):
        with pytest.raises(FabricError) as exc:
            call(cg, "find_coordinator", now, group_id=GROUP)
        assert exc.value.name == "COORDINATOR_NOT_AVAILABLE"
    assert forwarded == [{"op": "ensure_internal_topic", "name": OFFSETS_TOPIC}]
    with pytest.raises(FabricError) as exc:
        call(cg, "offset_fetch", 1000, group_id=GROUP)
    assert exc.value.name == "COORDINATOR_NOT_AVAILABLE"
    assert len(forwarded) == 2


def test_list_groups_without_the_topic_lists_none_and_creates_nothing():
    core, cg, forwarded = make(image({}, with_topic=False))
    [(_, reply)] = call(cg, "list_groups")
    assert reply.header["groups"] == [] and forwarded == []


def test_find_coordinator_names_the_leader_of_the_groups_offsets_partition():
    core, cg, _ = make(image({P: 3}))
    [(peer, reply)] = call(cg, "find_coordinator", group_id=GROUP)
    assert (reply.header["node_id"], reply.header["port"]) == (3, 9003)


def test_a_commit_is_acknowledged_and_applied_only_once_the_high_watermark_passes_it():
    core, cg, _ = make(image({}))
    leader = lead(core, cg, P)
    assert commit(cg, 42) == []  # appended, waiting for the followers
    assert len(leader.batches) == 1 and core.cluster.replicas.pushes == [("push", 0)]
    assert cg.service.coordinator.offsets.get(GROUP, "events", 0) is None
    leader.hw = 1
    [(peer, reply)] = cg.settle(leader.hw_moved())
    assert reply.header.get("error") is None and peer == b"peer"
    assert cg.service.coordinator.offsets.get(GROUP, "events", 0).offset == 42


def test_a_commit_not_replicated_in_time_times_out_but_is_applied_if_it_commits_later():
    core, cg, _ = make(image({}))
    leader = lead(core, cg, P)
    commit(cg, 5, now_ms=100)
    assert cg.expire(Now(100 + COMMIT_TIMEOUT_MS - 1, 0)) == []
    [(_, reply)] = cg.expire(Now(100 + COMMIT_TIMEOUT_MS, 0))
    assert reply.header["error"]["name"] == "REQUEST_TIMED_OUT"
    leader.hw = 1
    assert cg.settle(leader.hw_moved()) == []
    assert cg.service.coordinator.offsets.get(GROUP, "events", 0).offset == 5


def test_losing_the_partition_fails_waiting_commits_and_makes_the_broker_not_coordinator():
    core, cg, _ = make(image({}))
    lead(core, cg, P)
    commit(cg, 9)
    core.cluster.replicas.leaders.clear()
    core.leadership.image = image({P: 2})
    [(_, reply)] = cg.image_applied(Now(10, 0))
    assert reply.header["error"]["name"] == "NOT_COORDINATOR"
    [(_, reply)] = commit(cg, 10)
    assert reply.header["error"]["name"] == "NOT_COORDINATOR"
    assert cg.pending() == 0
