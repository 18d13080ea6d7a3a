"""Leadership through the broker's metadata image: the handlers answer what the image says, not
"this node, epoch 0" (no sockets).

The single-node image is built from the local topics; here a test swaps in an image where another
broker leads a partition, as the controller's image will, and checks every reader follows it.
"""

from __future__ import annotations

import cbor2
import pytest

from fabric.broker.config import BrokerConfig
from fabric.broker.core import BrokerCore
from fabric.log.config import LogConfig
from fabric.records.batch import encode_batch
from fabric.replication.image import BrokerInfo, MetadataImage, PartitionAssignment, TopicImage
from fabric.replication.state import Role

OTHER = BrokerInfo(7, "10.0.0.7", 9092)


@pytest.fixture
def core(tmp_path):
    c = BrokerCore(BrokerConfig(data_dir=str(tmp_path / "d"), topic_defaults=LogConfig(flush_interval_ms=0)), 1000)
    c.handle(b"p", [cbor2.dumps({"op": "create_topics", "v": 1, "cid": 1,
                                 "topics": [{"name": "t", "partitions": 2}]})], 1000)
    yield c
    c.close()


def call(core, header, frames=()):
    out = core.handle(b"p", [cbor2.dumps(header), *frames], 1000)
    assert len(out) == 1, out
    return out[0][1].header


def led_elsewhere(core):
    """The image of ``core`` with ``t``-1 led by broker 7 at epoch 3 (this node follows it)."""
    image = core.leadership.image.with_broker(OTHER).with_partition(
        "t", 1, PartitionAssignment(OTHER.node_id, 3, (OTHER.node_id, 0), (OTHER.node_id, 0)))
    core.leadership.apply(image, 1000)


def test_single_node_image_leads_everything_and_hw_follows_appends(core):
    n = core.config.offsets_topic_partitions
    assert core.leadership.image.partitions_led_by(0) == [("__consumer_offsets", p) for p in range(n)] + \
        [("t", 0), ("t", 1)]
    call(core, {"op": "produce", "v": 1, "cid": 2, "batches": [{"topic": "t", "partition": 0}]},
         [encode_batch([1, 2], [None, None], [b"a", b"b"])])
    assert core.leadership.high_watermark("t", 0) == 2
    fetched = call(core, {"op": "fetch", "v": 1, "cid": 3, "max_wait_ms": 0,
                          "partitions": [{"topic": "t", "partition": 0, "offset": 0}]})
    assert fetched["partitions"][0]["high_watermark"] == 2


def test_a_partition_led_elsewhere_answers_not_leader(core):
    led_elsewhere(core)
    assert core.leadership.state("t", 1).role is Role.FOLLOWER
    batch = encode_batch([1], [None], [b"v"])
    res = call(core, {"op": "produce", "v": 1, "cid": 2, "batches": [{"topic": "t", "partition": 1},
                                                                     {"topic": "t", "partition": 0}]},
               [batch, batch])["results"]
    assert res[0]["error"]["name"] == "NOT_LEADER" and res[0]["error"]["code"] == 18
    assert res[1]["base_offset"] == 0  # the partition it leads still takes the batch
    assert core.topics.partition("t", 1).end_offset == 0  # nothing written where it follows
    parts = call(core, {"op": "fetch", "v": 1, "cid": 3, "max_wait_ms": 0,
                        "partitions": [{"topic": "t", "partition": 1, "offset": 0},
                                       {"topic": "t", "partition": 0, "offset": 0}]})["partitions"]
    assert parts[0]["error"]["code"] == 18 and "error" not in parts[1]
    meta = call(core, {"op": "metadata", "v": 1, "cid": 4, "topics": ["t"]})
    assert {b["node_id"]: (b["host"], b["port"]) for b in meta["brokers"]}[7] == ("10.0.0.7", 9092)
    p1 = meta["topics"][0]["partitions"][1]
    assert (p1["leader"], p1["leader_epoch"], p1["replicas"], p1["isr"]) == (7, 3, [7, 0], [7, 0])
    described = call(core, {"op": "describe_topics", "v": 1, "cid": 5, "topics": ["t"]})
    assert described["topics"][0]["partitions"][1]["leader"] == 7
    stats = call(core, {"op": "stats", "v": 1, "cid": 6, "partitions": True, "topics": ["t"]})
    assert [(r["partition"], r["leader"]) for r in stats["partitions"]] == [(0, 0), (1, 7)]


def test_a_topic_created_again_starts_a_fresh_partition_state(core):
    call(core, {"op": "produce", "v": 1, "cid": 2, "batches": [{"topic": "t", "partition": 0}]},
         [encode_batch([1], [None], [b"v"])])
    call(core, {"op": "delete_topics", "v": 1, "cid": 3, "topics": ["t"]})
    call(core, {"op": "create_topics", "v": 1, "cid": 4, "topics": [{"name": "t"}]})
    assert core.leadership.high_watermark("t", 0) == 0
    res = call(core, {"op": "produce", "v": 1, "cid": 5, "batches": [{"topic": "t", "partition": 0}]},
               [encode_batch([1], [None], [b"v"])])["results"][0]
    assert res["base_offset"] == 0 and core.leadership.high_watermark("t", 0) == 1


def test_a_broker_joining_its_cluster_keeps_nothing_of_the_local_image(core):
    """A restarted cluster broker first builds the single-node image (it leads every local
    partition, high watermark = log end).  Once it follows the controller, no state of that image
    may survive: its unreplicated tail would be read below a high watermark, and when it follows
    the real leader that watermark would cover records the leader is about to truncate
    ("diverges below this replica's high watermark", seen in tools/bench_cluster.py kills)."""
    from fabric.broker.replicas import ReplicaManager
    from fabric.replication.config import ReplicationConfig

    call(core, {"op": "produce", "v": 1, "cid": 2, "batches": [{"topic": "t", "partition": 0}]},
         [encode_batch([1, 2], [None, None], [b"a", b"b"])])
    local_image = core.leadership.image
    assert core.leadership.high_watermark("t", 0) == 2

    core.leadership.follow_controller(ReplicaManager(0, ReplicationConfig()))
    assert core.leadership.image.topics == {}
    with pytest.raises(Exception, match="UNKNOWN_TOPIC_OR_PARTITION|not led|NOT_LEADER|unknown"):
        core.leadership.leading("t", 0)

    t = local_image.topics["t"]
    followed = PartitionAssignment(OTHER.node_id, 3, (OTHER.node_id, 0), (OTHER.node_id, 0))
    image = MetadataImage({OTHER.node_id: OTHER}, {"t": TopicImage("t", t.topic_id, t.configs, False, (followed,))}, 9)
    core.leadership.apply(image, 1000)
    state = core.leadership.state("t", 0)
    assert state.role is Role.FOLLOWER
    assert state.high_watermark == 0  # nothing is known committed until the leader says so
