"""The cluster checker (fabric/testing/cluster_check.py, tools/cluster_check.py) on hand-made
replicas: real PartitionLogs in tmp_path (and a MemoryLog), each containing one defect."""

import importlib.util
import json
from pathlib import Path

import pytest

from fabric.log.config import LogConfig
from fabric.log.memory import MemoryLog
from fabric.log.partition_log import PartitionLog
from fabric.records.batch import encode_batch
from fabric.testing.cluster_check import ack_line, check, read_acks, read_data_dir, read_store

pytestmark = pytest.mark.unit
CONFIG = LogConfig(segment_bytes=4096, flush_interval_ms=0)
TOOL = Path(__file__).resolve().parents[1] / "tools" / "cluster_check.py"


def _tool():
    spec = importlib.util.spec_from_file_location("cluster_check_tool", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def records(n, prefix="v"):
    """(key, value) per record: keys cycle over k0..k2, values unique."""
    return [(f"k{i % 3}".encode(), f"{prefix}{i}".encode() * 100) for i in range(n)]


def write_replica(data_dir: Path, recs, topic="orders", partition=0, per_batch=4) -> Path:
    d = data_dir / f"{topic}-{partition}"
    log = PartitionLog.open(d, CONFIG, 1000)
    try:
        for i in range(0, len(recs), per_batch):
            chunk = recs[i:i + per_batch]
            log.append(bytearray(encode_batch([1000] * len(chunk), [k for k, _ in chunk], [v for _, v in chunk])), 1000)
        log.flush(1000)
    finally:
        log.close()
    return data_dir


def acks_for(recs, topic="orders", partition=0):
    return [ack_line(topic, partition, o, k, v) for o, (k, v) in enumerate(recs)]


def run(tmp_path, acks, replicas):
    return check(read_acks(acks), {str(d): read_data_dir(d) for d in replicas})


def test_identical_replicas_holding_every_ack_pass_and_span_segments(tmp_path):
    recs = records(40)
    dirs = [write_replica(tmp_path / f"r{i}", recs) for i in range(3)]
    assert len(list((dirs[0] / "orders-0").glob("*.log"))) > 1  # several segments read in order
    report = run(tmp_path, acks_for(recs), dirs)
    assert report.ok and report.findings == [] and report.acks == 40 and report.replicas == 3
    ack_file = tmp_path / "acks.jsonl"
    ack_file.write_text("".join(acks_for(recs)))
    assert _tool().main(["--acks", str(ack_file), *map(str, dirs)]) == 0


def test_an_acknowledged_record_no_replica_holds_is_lost(tmp_path):
    recs = records(12)
    dirs = [write_replica(tmp_path / f"r{i}", recs[:8]) for i in range(2)]  # the last batch never replicated
    report = run(tmp_path, acks_for(recs), dirs)
    assert not report.ok and [f.offset for f in report.of("lost")] == list(range(8, 12))
    assert "no replica holds that offset" in report.of("lost")[0].detail
    ack_file = tmp_path / "acks.jsonl"
    ack_file.write_text("".join(acks_for(recs)))
    assert _tool().main(["--acks", str(ack_file), *map(str, dirs)]) == 1


def test_an_acknowledged_offset_holding_another_record_is_lost(tmp_path):
    recs = records(8)
    other = recs[:4] + records(4, prefix="other")
    dirs = [write_replica(tmp_path / f"r{i}", other) for i in range(2)]  # a new leader overwrote 4..7
    report = run(tmp_path, acks_for(recs), dirs)
    assert [f.offset for f in report.of("lost")] == [4, 5, 6, 7]
    assert "holds another record there" in report.of("lost")[0].detail
    assert not report.of("divergent")  # the replicas agree with each other


def test_per_key_offsets_going_backwards_in_ack_order_is_reordering(tmp_path):
    recs = records(6)
    dirs = [write_replica(tmp_path / "r0", recs)]
    acks = acks_for(recs)
    acks[0], acks[3] = acks[3], acks[0]  # key k0 acknowledged at offset 3, then at offset 0
    report = run(tmp_path, acks, dirs)
    assert [(f.kind, f.offset) for f in report.findings] == [("reordered", 0)]
    assert not report.ok


def test_replicas_differing_below_the_smallest_log_end_diverge(tmp_path):
    recs = records(8)
    bad = list(recs)
    bad[5] = (b"k2", b"something else")
    a = write_replica(tmp_path / "a", recs)
    b = write_replica(tmp_path / "b", bad)
    c = write_replica(tmp_path / "c", recs[:4])  # shorter: the check stops at its log end (4)...
    report = run(tmp_path, acks_for(recs[:4]), [a, b, c])
    assert report.ok  # ...so offset 5 is not compared with three replicas
    report = run(tmp_path, acks_for(recs[:4]), [a, b])
    assert [(f.kind, f.offset) for f in report.findings] == [("divergent", 5)]
    assert "replicas differ" in report.findings[0].detail and not report.ok


def test_the_same_key_and_value_at_two_offsets_is_a_duplicate_not_a_failure(tmp_path):
    recs = records(4)
    stored = recs + [recs[1]]  # a retried batch written twice
    dirs = [write_replica(tmp_path / "r0", stored, per_batch=1)]
    report = run(tmp_path, acks_for(recs), dirs)
    assert [(f.kind, f.offset) for f in report.findings] == [("duplicate", 4)]
    assert report.ok and not report.exactly_once
    assert report.ok and "same key and value as offset 1" in report.findings[0].detail


def test_a_torn_tail_stops_reading_without_failing(tmp_path):
    recs = records(8)
    d = write_replica(tmp_path / "r0", recs, per_batch=8)
    seg = sorted((d / "orders-0").glob("*.log"))[-1]
    with open(seg, "ab") as f:
        f.write(b"\x00\x00\x00\x00\x00\x00\x00\x08\x00\x00\x10\x00" + b"\x01" * 40)  # a batch cut short
    parts = read_data_dir(d)
    assert parts[("orders", 0)].log_end == 8 and len(parts[("orders", 0)].records) == 8


def test_memory_log_replicas_and_bad_ack_lines(tmp_path):
    recs = records(6)
    mem = MemoryLog(CONFIG)
    for k, v in recs:
        mem.append(bytearray(encode_batch([1], [k], [v])), 1)
    data = read_store(mem, "orders", 0)
    assert data.log_end == 6 and len(data.records) == 6
    report = check(read_acks(acks_for(recs)), {"mem": {("orders", 0): data}})
    assert report.ok and report.findings == []
    with pytest.raises(ValueError, match="ack log line 2"):
        read_acks([acks_for(recs)[0], json.dumps({"topic": "orders", "partition": "0", "offset": 1})])
    assert _tool().main(["--acks", str(tmp_path / "missing.jsonl"), str(tmp_path)]) == 2


def test_a_record_one_replica_compacted_away_is_no_divergence_in_a_compacted_topic():
    """Each replica compacts its own closed segments: a 10-minute soak found `__consumer_offsets`
    records the followers had compacted away and the leader (which had not rolled) still held.
    Two different records at one offset still diverge there."""
    from fabric.testing.cluster_check import PartitionData

    full = PartitionData({0: (b"g", b"1"), 1: (b"g", b"2"), 2: (b"g", b"3")}, log_end=3)
    compacted = PartitionData({2: (b"g", b"3")}, log_end=3)
    for topic, expected in (("__consumer_offsets", []), ("orders", [0, 1])):
        report = check([], {"a": {(topic, 0): full}, "b": {(topic, 0): compacted}})
        assert [f.offset for f in report.findings if f.kind == "divergent"] == expected
    other = PartitionData({0: (b"g", b"other"), 2: (b"g", b"3")}, log_end=3)
    report = check([], {"a": {("__consumer_offsets", 0): full}, "b": {("__consumer_offsets", 0): other}})
    assert [f.offset for f in report.findings] == [0] and not report.ok
