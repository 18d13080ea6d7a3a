"""A real broker process: produce/consume round trips, per-key order, restart, SIGKILL durability."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time

import pytest

from fabric.client import Admin, Consumer, Producer
from fabric.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError
from fabric.records.partitioner import partition_for_key


def consume_all(bootstrap, topic, expected, timeout=30.0):
    out = []
    with Consumer(bootstrap, auto_offset_reset="earliest") as c:
        c.assign_topic(topic)
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            out.extend(c.poll(500))
    return out


def test_round_trip_with_headers_and_timestamps(broker):
    with Admin(broker.bootstrap) as admin:
        admin.create_topic("rt", partitions=2)
        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topic("rt", partitions=2)
    with Producer(broker.bootstrap, linger_ms=1) as p:
        futs = [p.send("rt", f"v{i}".encode(), key=f"k{i % 5}".encode(), timestamp_ms=1_700_000_000_000 + i,
                       headers=[("n", str(i).encode())]) for i in range(500)]
        p.flush(10)
        metas = [f.result(5) for f in futs]
    assert all(m.offset >= 0 for m in metas)
    recs = consume_all(broker.bootstrap, "rt", 500)
    assert len(recs) == 500
    by_value = {r.value: r for r in recs}
    for i in range(500):
        r = by_value[f"v{i}".encode()]
        assert r.key == f"k{i % 5}".encode()
        assert r.timestamp == 1_700_000_000_000 + i
        assert r.headers == [("n", str(i).encode())]
        assert r.partition == partition_for_key(r.key, 2) == metas[i].partition
        assert r.offset == metas[i].offset


def test_per_key_order_across_three_partitions(broker):
    with Admin(broker.bootstrap) as admin:
        admin.create_topic("ordered", partitions=3)
    n = 6000
    with Producer(broker.bootstrap, linger_ms=2, batch_bytes=16 << 10) as p:
        for i in range(n):
            p.send("ordered", str(i).encode(), key=f"key-{i % 37}".encode())
    recs = consume_all(broker.bootstrap, "ordered", n)
    assert len(recs) == n
    per_key = collections.defaultdict(list)
    for r in sorted(recs, key=lambda r: (r.partition, r.offset)):
        per_key[r.key].append(int(r.value))
        assert r.partition == partition_for_key(r.key, 3)
    for key, values in per_key.items():
        assert values == sorted(values), key
    assert sorted(int(r.value) for r in recs) == list(range(n))


def test_restart_keeps_topics_and_data(brokers, tmp_path):
    b = brokers()
    with Producer(b.bootstrap) as p:
        for i in range(1000):
            p.send("durable", f"{i}".encode())
    with Admin(b.bootstrap) as admin:
        admin.create_topic("empty-one", partitions=4, configs={"retention_ms": 60_000})
    assert b.stop() == 0  # graceful SIGTERM exits 0
    b.start()
    with Admin(b.bootstrap) as admin:
        names = {t["name"]: t["partitions"] for t in admin.list_topics()}
        assert names == {"durable": 1, "empty-one": 4}
        assert admin.describe_topic("empty-one")["configs"] == {"retention_ms": 60_000}
    recs = consume_all(b.bootstrap, "durable", 1000)
    assert [r.value for r in recs] == [str(i).encode() for i in range(1000)]


def test_long_poll_consumer_sees_new_records_quickly(broker):
    with Admin(broker.bootstrap) as admin:
        admin.create_topic("live")
    with Consumer(broker.bootstrap, auto_offset_reset="latest", fetch_max_wait_ms=5000) as c:
        c.assign([("live", 0)])
        assert c.poll(200) == []
        with Producer(broker.bootstrap, linger_ms=0) as p:
            t0 = time.monotonic()
            p.send("live", b"now").result(5)
        got = []
        while not got and time.monotonic() - t0 < 5:
            got = c.poll(100)
        assert [r.value for r in got] == [b"now"]
        assert time.monotonic() - t0 < 2  # woken by the append, not by the 5 s max wait


def test_seek_to_offset_and_timestamp(broker):
    with Producer(broker.bootstrap) as p:
        for i in range(100):
            p.send("seek", str(i).encode(), timestamp_ms=10_000 + i * 10)
    with Consumer(broker.bootstrap) as c:
        c.assign([("seek", 0)])
        c.seek(("seek", 0), 42)
        assert c.poll(2000, max_records=1)[0].value == b"42"
        c.seek_to_timestamp(10_555)
        first = c.poll(2000, max_records=1)[0]
        assert (first.offset, first.timestamp) == (56, 10_560)
        c.seek_to_end()
        assert c.position(("seek", 0)) == 100


def test_unknown_topic_errors_are_typed(brokers):
    b = brokers(["--no-auto-create"])
    with Admin(b.bootstrap) as admin:
        with pytest.raises(UnknownTopicOrPartitionError):
            admin.partitions_for("missing")
    with Producer(b.bootstrap, auto_create_topics=False) as p:
        with pytest.raises(UnknownTopicOrPartitionError):
            p.send("missing", b"x")


WRITER = r"""
import json, sys
from fabric.client import Producer
p = Producer(sys.argv[1], acks=1, linger_ms=1, batch_bytes=4096, max_in_flight=1)
i = 0
while True:
    futs = [(i + j, p.send("crash", str(i + j).encode(), key=str((i + j) % 7).encode())) for j in range(50)]
    i += 50
    for n, f in futs:
        md = f.result(30)
        sys.stdout.write(json.dumps([n, md.partition, md.offset]) + "\n")
    sys.stdout.flush()
"""


def test_sigkill_during_acks1_produce_loses_no_acknowledged_record(brokers, tmp_path):
    b = brokers(["--flush-every-batch"])
    with Admin(b.bootstrap) as admin:
        admin.create_topic("crash", partitions=3)
    acked_file = tmp_path / "acked.jsonl"
    with open(acked_file, "w") as out:
        writer = subprocess.Popen([sys.executable, "-c", WRITER, b.bootstrap], stdout=out,
                                  stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and acked_file.stat().st_size < 40_000:
                time.sleep(0.02)  # polling a condition: the writer has acknowledged enough records
            b.kill()  # SIGKILL mid-stream
        finally:
            writer.kill()
            writer.wait()
    acked = [json.loads(line) for line in acked_file.read_text().splitlines() if line.endswith("]")]
    assert len(acked) > 1000
    b.start()
    recs = consume_all(b.bootstrap, "crash", len(acked), timeout=30)
    stored = {(r.partition, r.offset): int(r.value) for r in recs}
    for n, partition, offset in acked:
        assert stored.get((partition, offset)) == n, (n, partition, offset)
    # offsets are dense and the log is usable after recovery
    with Producer(b.bootstrap) as p:
        md = p.send("crash", b"after", partition=0).result(10)
    assert md.offset == max(o for (part, o) in stored if part == 0) + 1


def test_compacted_topic_keeps_latest_value_per_key(brokers, tmp_path):
    cfg = tmp_path / "broker.yaml"
    cfg.write_text("compaction_check_interval_ms: 100\n")
    b = brokers(["--config", str(cfg)])
    with Admin(b.bootstrap) as admin:
        admin.create_topic("table", partitions=1, configs={"cleanup_policy": "compact", "segment_bytes": 4096})
        with Producer(b.bootstrap, linger_ms=0, batch_bytes=512) as p:
            for round_ in range(20):
                for k in range(10):
                    p.send("table", f"{k}:{round_}:".encode() + b"x" * 200, key=f"k{k}".encode())
                p.flush(10)
        before = admin.describe_topic("table")["partitions"][0]["size_bytes"]
        deadline = time.monotonic() + 20
        while admin.describe_topic("table")["partitions"][0]["size_bytes"] >= before / 2:
            assert time.monotonic() < deadline, "compaction did not run"
            time.sleep(0.1)  # polling a condition (the compactor thread's progress)
        end = admin.list_offsets([("table", 0, "latest")])[0]["offset"]
    recs = []
    with Consumer(b.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([("table", 0)])
        while not recs or recs[-1].offset < end - 1:
            got = c.poll(5000)
            assert got, "consumer stalled"
            recs.extend(got)
    assert len(recs) < 200  # compaction removed superseded records
    latest = {}
    offsets = [r.offset for r in recs]
    assert offsets == sorted(offsets)
    for r in recs:
        latest[r.key] = r.value.split(b":")[1]
    assert latest == {f"k{k}".encode(): b"19" for k in range(10)}


def test_send_batch_columnar_fast_path(broker):
    with Admin(broker.bootstrap) as admin:
        admin.create_topic("bulk", partitions=3)
    values = [f"v{i}".encode() for i in range(20_000)]
    keys = [f"k{i % 11}".encode() for i in range(20_000)]
    with Producer(broker.bootstrap, batch_bytes=64 << 10) as p:
        metas = p.send_batch("bulk", values, keys).result(30)
        unkeyed = p.send_batch("bulk", values[:100], partition=2).result(10)
    assert len(metas) == 20_000
    assert [m.partition for m in unkeyed] == [2] * 100
    recs = consume_all(broker.bootstrap, "bulk", 20_100)
    assert len(recs) == 20_100
    for r in recs:
        if r.key is not None:
            assert r.partition == partition_for_key(r.key, 3)
    by_offset = {(m.partition, m.offset) for m in metas}
    assert by_offset <= {(r.partition, r.offset) for r in recs}


def test_poll_batches_columnar_matches_poll(broker):
    with Producer(broker.bootstrap, batch_bytes=4096) as p:
        for i in range(3000):
            p.send("cols", f"v{i}".encode(), key=f"k{i}".encode(), headers=[("h", b"1")] if i % 100 == 0 else None)
    with Consumer(broker.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([("cols", 0)])
        c.seek(("cols", 0), 5)
        first = c.poll(5000, max_records=10)  # poll() splits a batch; poll_batches() takes the rest
        cols = []
        while sum(len(x) for x in cols) < 3000 - 15:
            got = c.poll_batches(5000)
            assert got, "stalled"
            cols.extend(got)
    rest = [r for col in cols for r in col]
    allrecs = first + rest
    assert [r.offset for r in allrecs] == list(range(5, 3000))
    assert [r.value for r in allrecs] == [f"v{i}".encode() for i in range(5, 3000)]
    assert all(list(r.headers) == ([("h", b"1")] if r.offset % 100 == 0 else []) for r in allrecs)
    flat_values = [v for col in cols for v in col.values]
    assert flat_values == [r.value for r in rest]
