"""murmur2 partitioner against Kafka's own results (560+ vectors computed by kafka-python)."""

from __future__ import annotations

import random

import pytest

from fabric.records.partitioner import KeyPartitioner, murmur2, partition_for_key

from .conftest import DATA


def _vectors():
    rows = [line.rstrip("\n").split("\t") for line in (DATA / "murmur2-kafka.tsv").read_text().splitlines()
            if line and not line.startswith("#")]
    header, body = rows[0], rows[1:]
    return header, body


def test_all_kafka_vectors():
    header, body = _vectors()
    assert len(body) >= 560
    counts = [(i, int(h[1:])) for i, h in enumerate(header) if h.startswith("p") and h[1:].isdigit()]
    for row in body:
        key = bytes.fromhex(row[0])
        assert murmur2(key) == int(row[1]), row
        assert murmur2(key) & 0x7FFFFFFF == int(row[2])
        for col, n in counts:
            assert partition_for_key(key, n) == int(row[col]), (row[0], n)


@pytest.mark.parametrize("key,expected", [(b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107),
                                          (b"123456789", 566)])
def test_issue_vectors_1000_partitions(key, expected):
    assert partition_for_key(key, 1000) == expected


def test_key_partitioner_cache_agrees_and_is_bounded():
    kp = KeyPartitioner(cache_max=10)
    for i in range(100):
        key = f"key-{i}".encode()
        assert kp.partition("t", key, 7) == partition_for_key(key, 7)
        assert kp.partition("t", key, 7) == partition_for_key(key, 7)
    assert len(kp._cache) <= 10


def test_sticky_partitioner_sticks_then_moves():
    kp = KeyPartitioner(rng=random.Random(1))
    first = kp.partition("t", None, 5)
    assert all(kp.partition("t", None, 5) == first for _ in range(50))
    kp.batch_done("t", first, 5)
    second = kp.partition("t", None, 5)
    assert second != first and 0 <= second < 5
    assert kp.partition("one", None, 1) == 0
