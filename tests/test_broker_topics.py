"""TopicManager: a create is all or nothing, and many partitions fit a small descriptor limit."""

from __future__ import annotations

import os
import resource

import pytest

from fabric.broker.topics import TopicManager
from fabric.log import LogConfig
from fabric.log.handles import FilePool
from fabric.protocol.errors import FabricError
from fabric.protocol.limits import Limits
from fabric.records.batch import encode_batch

needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def partition_dirs(data_dir, topic: str) -> list[str]:
    return sorted(p.name for p in data_dir.iterdir() if p.is_dir() and p.name.startswith(topic + "-"))


def manager(data_dir, files: FilePool | None = None) -> TopicManager:
    return TopicManager(data_dir, LogConfig(), Limits(), 0, files or FilePool(16))


@needs_proc
def test_a_create_that_fails_midway_leaves_nothing_behind(tmp_path):
    topics = manager(tmp_path)
    (tmp_path / "t-5").write_text("in the way")  # partition 5's directory cannot be made
    before = open_fds()
    with pytest.raises(FabricError) as info:
        topics.create("t", 10, {}, 0)
    assert info.value.name == "STORAGE_ERROR"
    assert "partition 5" in info.value.message and "nothing was created" in info.value.message
    assert open_fds() == before and topics.files.open_count == 0
    assert partition_dirs(tmp_path, "t") == [] and "t" not in topics.topics
    topics.close()
    topics = manager(tmp_path)  # the metadata never named it
    assert "t" not in topics.topics
    (tmp_path / "t-5").unlink()
    assert len(topics.create("t", 10, {}, 0).partitions) == 10
    topics.close()


@needs_proc
def test_add_partitions_that_fails_midway_adds_nothing(tmp_path):
    topics = manager(tmp_path)
    topics.create("t", 2, {}, 0)
    (tmp_path / "t-4").write_text("in the way")
    before = open_fds()
    with pytest.raises(FabricError, match="partition 4"):
        topics.add_partitions("t", 6, 0)
    assert open_fds() == before
    assert partition_dirs(tmp_path, "t") == ["t-0", "t-1"] and len(topics.get("t").partitions) == 2
    topics.close()


@needs_proc
def test_a_create_whose_metadata_write_fails_is_undone(tmp_path):
    topics = manager(tmp_path)
    (tmp_path / "meta" / "topics.tmp").mkdir()  # the metadata's temporary file cannot be written
    before = open_fds()
    with pytest.raises(FabricError, match="metadata"):
        topics.create("t", 4, {}, 0)
    assert open_fds() == before and partition_dirs(tmp_path, "t") == [] and "t" not in topics.topics
    topics.close()


@needs_proc
def test_descriptor_limit_many_partitions_and_emfile_midway(tmp_path):
    """Under a soft RLIMIT_NOFILE a few dozen above what the process holds: 200 partitions are
    created, appended to and read through a pool of 16; and a create that does run out of
    descriptors (a pool larger than the limit allows) fails cleanly and gives every one back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    base = open_fds()
    resource.setrlimit(resource.RLIMIT_NOFILE, (base + 40, hard))
    try:
        topics = manager(tmp_path / "ok", FilePool(16))
        topic = topics.create("many", 200, {"segment_bytes": 200}, 0)
        for round_ in range(2):
            for p, plog in enumerate(topic.partitions):
                plog.append(bytearray(encode_batch([1000], [None], [b"%d-%d" % (p, round_) + b"x" * 90])), round_)
        assert all(plog.segment_count >= 2 for plog in topic.partitions)  # rolled: opened new files
        assert all(plog.end_offset == 2 for plog in topic.partitions)
        assert topic.partitions[123].read(0, 1 << 20)
        assert open_fds() - base <= 16
        topics.close()

        topics = manager(tmp_path / "emfile", FilePool(1000))  # a budget the limit cannot honour
        before = open_fds()
        with pytest.raises(FabricError) as info:
            topics.create("big", 150, {}, 0)
        assert "Too many open files" in info.value.message and "nothing was created" in info.value.message
        assert open_fds() == before and partition_dirs(tmp_path / "emfile", "big") == []
        assert topics.create("small", 2, {}, 0)  # the broker's descriptors are back: it goes on
        topics.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ---------------------------------------------------------------- a cluster's log manager
def _image(assignments: dict[str, tuple[str, list[tuple[int, ...]]]], configs=None):
    from fabric.replication.image import BrokerInfo, MetadataImage, PartitionAssignment, TopicImage
    topics = {}
    for name, (topic_id, replica_lists) in assignments.items():
        parts = tuple(PartitionAssignment(r[0], 1, r, r) for r in replica_lists)
        topics[name] = TopicImage(name, topic_id, dict((configs or {}).get(name, {})), False, parts)
    brokers = {i: BrokerInfo(i, "127.0.0.1", 9000 + i) for i in (1, 2, 3)}
    return MetadataImage(brokers, topics)


def test_sync_to_image_opens_only_the_partitions_assigned_here(tmp_path):
    topics = manager(tmp_path)
    image = _image({"t": ("id1", [(1, 2), (2, 3), (3, 1), (2, 1)])})
    changed = topics.sync_to_image(image, 1, 0)
    assert sorted(changed) == [("t", 0), ("t", 2), ("t", 3)]
    assert topics.get("t").local_partitions() == [0, 2, 3]
    assert partition_dirs(tmp_path, "t") == ["t-0", "t-2", "t-3"]
    with pytest.raises(FabricError) as info:
        topics.partition("t", 1)
    assert info.value.name == "NOT_LEADER"
    assert topics.local("t", 1) is None and topics.local("t", 0) is not None
    assert [p for _, p, _ in topics.all_logs()] == [0, 2, 3]
    assert topics.sync_to_image(image, 1, 0) == []  # the same image again: nothing to do


def test_sync_to_image_survives_a_restart_and_follows_moves_and_deletes(tmp_path):
    topics = manager(tmp_path)
    topics.sync_to_image(_image({"t": ("id1", [(1, 2), (2, 3)]), "u": ("id2", [(1,)])}), 1, 0)
    topics.partition("t", 0).append(bytearray(encode_batch([1], [b"k"], [b"v"])), 0)
    topics.close()
    again = manager(tmp_path)  # the local metadata remembers which partitions live here
    assert again.get("t").local_partitions() == [0]
    assert again.partition("t", 0).end_offset == 1
    # partition 0 moves away, partition 1 moves here, u is deleted, t is recreated under a new id
    changed = again.sync_to_image(_image({"t": ("id1", [(2, 3), (1, 3)])}), 1, 0)
    assert sorted(changed) == [("t", 0), ("t", 1), ("u", 0)]
    assert "u" not in again.topics and partition_dirs(tmp_path, "u") == []
    assert partition_dirs(tmp_path, "t") == ["t-1"]
    again.sync_to_image(_image({"t": ("id9", [(1,), (1,)])}), 1, 0)
    assert again.get("t").topic_id == "id9" and again.partition("t", 0).end_offset == 0
    again.close()


def test_sync_to_image_applies_the_image_configs(tmp_path):
    topics = manager(tmp_path)
    topics.sync_to_image(_image({"t": ("id1", [(1,)])}), 1, 0)
    topics.sync_to_image(_image({"t": ("id1", [(1,)])}, {"t": {"retention_ms": 60000}}), 1, 0)
    assert topics.get("t").config.retention_ms == 60000
    assert topics.partition("t", 0).config.retention_ms == 60000


def test_start_up_removes_leftover_partition_dirs_but_never_a_voters_raft_storage(tmp_path):
    """A broker that is also a controller voter keeps its Raft term, vote and log in
    ``data_dir/controller``.  Start-up used to delete every directory that was not a partition of
    a known topic, that one included: a SIGKILLed voter came back with no log and no vote, the
    leader (whose match index for it never goes back) could not replicate to it again, and with
    one more voter down the metadata quorum committed nothing (failover stalled for good)."""
    raft = tmp_path / "controller"
    raft.mkdir()
    (raft / "log").write_bytes(b"entries")
    (raft / "hardstate").write_bytes(b"term and vote")
    (tmp_path / "gone-3").mkdir()  # a partition of a topic no longer listed: a real leftover
    (tmp_path / "gone-3" / "00000000000000000000.log").write_bytes(b"")
    (tmp_path / "notes").mkdir()  # not shaped like a partition directory: not ours
    manager(tmp_path).close()
    assert (raft / "log").read_bytes() == b"entries"
    assert (raft / "hardstate").read_bytes() == b"term and vote"
    assert not (tmp_path / "gone-3").exists()
    assert (tmp_path / "notes").is_dir()


def test_a_restart_keeps_the_controller_directory(tmp_path):
    """A clustered broker's Raft state lives in ``<data_dir>/controller``; the start-up sweep of
    stray partition directories once removed it, so every restart wiped the voter's vote and log
    (a full cluster restart lost every topic)."""
    manager(tmp_path).create("t", 1, {}, 0)
    raft = tmp_path / "controller"
    raft.mkdir()
    (raft / "hardstate").write_bytes(b"term and vote")
    (tmp_path / "stray-0").mkdir()  # a real leftover is still swept
    manager(tmp_path)
    assert (raft / "hardstate").read_bytes() == b"term and vote"
    assert not (tmp_path / "stray-0").exists() and (tmp_path / "t-0").is_dir()
