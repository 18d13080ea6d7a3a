"""A real broker under a low descriptor limit (``ulimit -n``) with more partitions than descriptors.

The fault-injection report: a 10,000-partition create under the usual limits failed with EMFILE
halfway, kept every descriptor it had opened, and left the broker unable to roll segments, fsync
or accept clients.  Here: 3,000 partitions under a limit of 1,024 (same shape, faster), rolls on
every partition, new clients, a clean restart; and a create that fails midway is answered with a
clear error and leaves nothing behind.
"""

from __future__ import annotations

import os
import time

import pytest

from fabric.client import Admin, Consumer, Producer
from fabric.errors import StorageErrorError
from fabric.testing import BrokerProcess

pytestmark = pytest.mark.process

PARTITIONS = 3000
NOFILE = 1024

needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def consume(bootstrap: str, partitions: list[int], expected: int, timeout: float = 30.0) -> list:
    with Consumer(bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([("wide", p) for p in partitions])
        got: list = []
        deadline = time.monotonic() + timeout
        while len(got) < expected and time.monotonic() < deadline:
            got.extend(consumer.poll(timeout_ms=500))
    return sorted((r.partition, r.offset, r.value) for r in got)


@needs_proc
def test_thousands_of_partitions_under_a_low_descriptor_limit(tmp_path):
    data = tmp_path / "data"
    with BrokerProcess(data, nofile=NOFILE) as broker:
        with Admin(broker.bootstrap, timeout_ms=300_000) as admin:
            admin.create_topic("wide", partitions=PARTITIONS, configs={"segment_bytes": 1024})
        assert descriptors(broker.pid) < NOFILE - 200  # room left for clients, rolls and fsyncs

        # Two rounds, one batch per partition each: the second batch does not fit the first
        # segment (1,024 bytes), so every partition rolls, opening a new segment file.
        with Producer(broker.bootstrap, acks=1, linger_ms=5) as producer:
            for round_ in range(2):
                futures = [producer.send("wide", b"%d-%d|" % (p, round_) + b"x" * 600, partition=p)
                           for p in range(PARTITIONS)]
                producer.flush()
                assert [f.result(60).offset for f in futures] == [round_] * PARTITIONS
        assert all(len(list((data / f"wide-{p}").glob("*.log"))) == 2 for p in range(0, PARTITIONS, 97))

        clients = [Admin(broker.bootstrap, timeout_ms=10_000) for _ in range(40)]  # new connections
        try:
            for client in clients:
                assert client.api_versions()["broker"]["node_id"] == 0
        finally:
            for client in clients:
                client.close()
        sample = [0, 1, 1500, PARTITIONS - 1]
        want = [(p, r, b"%d-%d|" % (p, r) + b"x" * 600) for p in sample for r in range(2)]
        assert consume(broker.bootstrap, sample, len(want)) == want
        assert descriptors(broker.pid) < NOFILE - 200

        # A create that fails midway (partition 5's directory is blocked by a file): a clear
        # error, nothing created, the broker goes on.
        (data / "blocked-5").write_text("in the way")
        with Admin(broker.bootstrap, timeout_ms=60_000) as admin:
            with pytest.raises(StorageErrorError, match="partition 5.*nothing was created"):
                admin.create_topic("blocked", partitions=10)
            assert not [d for d in data.iterdir() if d.is_dir() and d.name.startswith("blocked-")]
            assert "blocked" not in [t["name"] for t in admin.list_topics()]
            admin.create_topic("after", partitions=3)

        broker.restart()  # load 3,000 partitions under the same limit
        assert descriptors(broker.pid) < NOFILE - 200
        with Admin(broker.bootstrap) as admin:
            offsets = admin.topic_offsets("wide")
        assert [o["latest"] for o in offsets] == [2] * PARTITIONS
        assert consume(broker.bootstrap, sample, len(want)) == want
