"""Hostile frames on the controller port of a real cluster: every voter keeps serving.

Any process can connect to a voter's `controller_port`.  An outside fuzz of it found requests
that raised inside the controller thread (a traceback and no reply each) and 64 MiB frames read
whole; the controller must answer what it answers with an error, drop malformed Raft messages,
and go on electing and committing."""

import random

import cbor2
import pytest
import zmq

from fabric.client.admin import Admin
from fabric.testing.cluster import wait_until

pytestmark = pytest.mark.process

OPS = ["raft", "register", "heartbeat", "hello", "metadata_fetch", "create_topic", "alter_partition",
       "cluster_status", "allocate_producer_ids", "controlled_shutdown", "x", 5, None]
FIELDS = ["from", "msg", "broker_id", "incarnation", "host", "port", "topics", "offset", "term", "records"]
KINDS = ["vote", "vote_resp", "append", "append_resp", "snapshot", "snapshot_resp"]


def _value(rng: random.Random, depth: int = 0):
    r = rng.random()
    if depth > 3 or r < 0.3:
        return rng.choice([0, -1, 2**63, -2**64, 1.5, float("nan"), "", "a" * rng.randrange(50),
                           b"\0" * rng.randrange(20), None, True, 10**30])
    if r < 0.55:
        return {rng.choice(FIELDS + ["kind", "entries", "data", "last_index"]): _value(rng, depth + 1)
                for _ in range(rng.randrange(6))}
    if r < 0.75:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return rng.choice(KINDS)


def _frames(rng: random.Random) -> list[bytes]:
    if rng.random() < 0.2:
        return [rng.randbytes(rng.randrange(200))]
    header = {"op": rng.choice(OPS), "cid": rng.choice([1, -1, "x", 2**70]), "v": 1}
    for _ in range(rng.randrange(6)):
        header[rng.choice(FIELDS)] = _value(rng)
    if header["op"] == "raft" and rng.random() < 0.7:
        extra = _value(rng, 1)
        header["from"] = rng.choice([1, 2, 3, 9])
        header["msg"] = {"kind": rng.choice(KINDS), "term": rng.choice([0, 1, 2**40, -1]),
                         **(extra if isinstance(extra, dict) else {})}
    return [cbor2.dumps(header)] + [b"x"] * rng.randrange(2)


def test_hostile_frames_on_every_controller_port_leave_the_cluster_serving(cluster):
    c = cluster(3).start()
    wait_until(c.registered, 30, "every broker registered")
    rng = random.Random(20261206)
    ctx = zmq.Context()
    try:
        for node in c.node_ids:
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(f"tcp://127.0.0.1:{c.specs[node].controller_port}")
            for _ in range(700):
                sock.send_multipart(_frames(rng))
            sock.send(b"x" * (21 << 20))  # past controller_header_bytes_max: dropped unread
            sock.close()
    finally:
        ctx.term()
    with Admin(c.bootstrap, timeout_ms=10_000) as admin:
        wait_until(lambda: admin.cluster_status()["controller"]["leader_id"] in c.node_ids, 30, "a controller leader")
        admin.create_topic("after-the-fuzz", partitions=3, replication_factor=3)  # the quorum still commits
    wait_until(lambda: c.in_sync(3), 30, "every partition in sync")
    for node in c.node_ids:
        assert c.running(node)
        log = c.process(node).log_text()
        assert "Traceback" not in log and "controller request failed" not in log, log[-3000:]
