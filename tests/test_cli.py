"""The `fabric` command as a user runs it, against a real broker process."""

from __future__ import annotations

import collections
import json
import subprocess
import sys

import pytest

from fabric.records.partitioner import partition_for_key
from fabric.testing import free_port

pytestmark = pytest.mark.process


def fabric(*args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fabric", *args], input=input, capture_output=True, timeout=timeout)


def test_topic_lifecycle(broker):
    bs = ["--bootstrap", broker.bootstrap]
    r = fabric("topic", "create", "clicks", "--partitions", "3", "--config", "retention_ms=3600000", *bs)
    assert r.returncode == 0 and b"created topic clicks with 3 partitions" in r.stdout
    r = fabric("topic", "create", "clicks", *bs)
    assert r.returncode == 1 and b"TOPIC_ALREADY_EXISTS" in r.stderr and b"Traceback" not in r.stderr
    assert fabric("topic", "create", "clicks", "--if-not-exists", *bs).returncode == 0
    r = fabric("topic", "list", "--json", *bs)
    assert json.loads(r.stdout) == [{"name": "clicks", "partitions": 3, "internal": False}]
    r = fabric("topic", "describe", "clicks", *bs)
    assert r.returncode == 0 and b"retention_ms=3600000" in r.stdout
    r = fabric("topic", "alter", "clicks", "--partitions", "4", "--set", "retention_bytes=1000000", *bs)
    assert r.returncode == 0 and b"now has 4 partitions" in r.stdout
    r = fabric("topic", "delete", "clicks", *bs)
    assert r.returncode == 0 and b"deleted topic clicks" in r.stdout
    r = fabric("topic", "delete", "clicks", *bs)
    assert r.returncode == 1 and b"UNKNOWN_TOPIC_OR_PARTITION" in r.stderr


def test_produce_and_consume_10k_keyed_lines(broker):
    bs = ["--bootstrap", broker.bootstrap]
    assert fabric("topic", "create", "orders", "--partitions", "3", *bs).returncode == 0
    lines = [f"user-{i % 50}:order-{i}" for i in range(10_000)]
    r = fabric("produce", "orders", "--key-separator", ":", *bs, input="\n".join(lines).encode() + b"\n")
    assert r.returncode == 0, r.stderr
    assert b"produced 10000 records" in r.stderr
    r = fabric("consume", "orders", "--from-beginning", "--max", "10000", "--format", "json", *bs)
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert len(recs) == 10_000
    assert sorted(x["value"] for x in recs) == sorted(line.split(":", 1)[1] for line in lines)
    per_key = collections.defaultdict(list)
    for x in sorted(recs, key=lambda x: (x["partition"], x["offset"])):
        assert x["partition"] == partition_for_key(x["key"].encode(), 3)
        per_key[x["key"]].append(int(x["value"].split("-")[1]))
    assert all(v == sorted(v) for v in per_key.values())
    r = fabric("offsets", "orders", "--json", *bs)
    assert sum(p["records"] for p in json.loads(r.stdout)) == 10_000
    r = fabric("consume", "orders", "--partition", "1", "--offset", "5", "--max", "1", "--print-key", *bs)
    assert r.returncode == 0 and r.stdout.count(b"\t") == 1


def test_produce_print_metadata_and_headers(broker):
    bs = ["--bootstrap", broker.bootstrap]
    r = fabric("produce", "meta", "--print-metadata", "-H", "src=test", *bs, input=b"a\nb\nc\n")
    assert r.returncode == 0, r.stderr
    acks = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [a["offset"] for a in acks] == [0, 1, 2]
    r = fabric("consume", "meta", "--from-beginning", "--max", "3", "--format", "json", *bs)
    assert [json.loads(x)["headers"] for x in r.stdout.decode().splitlines()] == [{"src": "test"}] * 3


def test_clear_errors_without_tracebacks(broker):
    dead = f"127.0.0.1:{free_port()}"
    r = fabric("topic", "list", "--bootstrap", dead, "--timeout-ms", "500")
    assert r.returncode == 1 and b"error:" in r.stderr and b"is the broker running" in r.stderr
    assert b"Traceback" not in r.stderr
    r = fabric("consume", "nope", "--bootstrap", broker.bootstrap, "--max", "1")
    assert r.returncode == 1 and b"unknown topic 'nope'" in r.stderr and b"Traceback" not in r.stderr
    r = fabric("consume", "nope", "--offset", "3", "--bootstrap", broker.bootstrap)
    assert r.returncode == 2 and b"--offset needs --partition" in r.stderr  # a usage error
    r = fabric("topic", "create", "bad name!", "--bootstrap", broker.bootstrap)
    assert r.returncode == 1 and b"INVALID_TOPIC_NAME" in r.stderr
    r = fabric("broker", "--config", "/nonexistent.yaml")
    assert r.returncode == 1 and b"cannot read config file" in r.stderr


def test_help_has_examples():
    for args in (["--help"], ["topic", "create", "--help"], ["consume", "--help"], ["produce", "--help"],
                 ["broker", "--help"]):
        r = fabric(*args)
        assert r.returncode == 0 and b"examples:" in r.stdout, args


def test_perf_tools_report_what_they_measured(broker):
    """``fabric perf`` is what the benchmark harness and the README's figures run: each mode
    moves the records it was asked for and reports them as JSON the harness can read."""
    bs = ["--bootstrap", broker.bootstrap]
    r = fabric("perf", "produce", "--topic", "perf", "--records", "5000", "--record-size", "100",
               "--batch", "1000", "--json", *bs)
    assert r.returncode == 0, r.stderr
    produced = json.loads(r.stdout)
    assert produced["records"] == 5000 and produced["seconds"] > 0
    assert set(produced["latency_ms"]) >= {"p50", "p99", "p999", "max"}
    r = fabric("perf", "consume", "--topic", "perf", "--records", "5000", "--columnar", "--json", *bs)
    assert r.returncode == 0, r.stderr
    consumed = json.loads(r.stdout)
    assert consumed["records"] == 5000 and round(consumed["mb_per_sec"] * consumed["seconds"], 3) == 0.5
    r = fabric("perf", "e2e", "--topic", "perf-e2e", "--rate", "2000", "--seconds", "1", "--json", *bs)
    assert r.returncode == 0, r.stderr
    e2e = json.loads(r.stdout)
    assert e2e["records"] == 2000 and e2e["target_rate"] == 2000
    lat = e2e["latency_ms"]
    assert lat["samples"] == 2000 and 0 < lat["p50"] <= lat["p99"] <= lat["p999"] <= lat["max"]
