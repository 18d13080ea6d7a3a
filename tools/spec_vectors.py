"""Print (or rewrite) the test vectors of ``fabric/protocol/SPEC.md`` with the real code.

Why generated: a vector typed by hand is a vector nobody trusts.  Every request header here is
``codec.encode(request_header(op, cid, body))`` -- exactly what the Python client sends -- and
every reply is what a real ``BrokerCore`` answers, on a throw-away data directory, with the setup
that SPEC.md states (fixed ``cluster_id``, fixed clock, sequential topic ids).  ``tests/test_spec.py``
replays the vectors from SPEC.md against the implementation, so SPEC.md and the code cannot drift
apart silently: when a reply changes on purpose, run ``--write`` and review the diff.

Three generated regions: section 10 (the core operations), section 13.6 (the cluster operations,
from ``spec_vectors_cluster.py``) and section 12.5 (the consumer-group
operations, on a second broker with the setup of 10.1 plus ``group-vector-setup``: a topic to
subscribe to, sequential member ids and a clock that moves past the initial rebalance delay).

Usage::

    python tools/spec_vectors.py            # print the generated sections to stdout
    python tools/spec_vectors.py --write    # replace them in fabric/protocol/SPEC.md, between
                                            # the BEGIN/END GENERATED [GROUP] VECTORS markers
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))  # spec_vectors_cluster, also when imported from elsewhere

import cbor2  # noqa: E402

from fabric.protocol import codec  # noqa: E402
from fabric.protocol.messages import (AlterTopicConfigsRequest, ApiVersionsRequest, BatchTarget,  # noqa: E402
                                      CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
                                      DescribeTopicsRequest, FetchPartition, FetchRequest, ListOffsetsRequest,
                                      ListTopicsRequest, MetadataRequest, NewTopic, OffsetQuery, ProduceRequest,
                                      InitProducerIdRequest, StatsRequest, request_header)
from fabric.groups.messages import (CommitOffset, DeleteGroupsRequest, DescribeGroupsRequest,  # noqa: E402
                                    FetchTopic, FindCoordinatorRequest, HeartbeatRequest, JoinGroupRequest,
                                    LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
                                    OffsetFetchRequest, SyncGroupRequest)
from fabric.records.batch import HEADER, HEADER_SIZE, encode_batch, parse_header  # noqa: E402
from spec_vectors_cluster import BEGIN as CLUSTER_BEGIN, END as CLUSTER_END, render_cluster  # noqa: E402

SPEC = ROOT / "fabric" / "protocol" / "SPEC.md"
BEGIN = "<!-- BEGIN GENERATED VECTORS (tools/spec_vectors.py --write) -->"
END = "<!-- END GENERATED VECTORS -->"
GROUP_BEGIN = "<!-- BEGIN GENERATED GROUP VECTORS (tools/spec_vectors.py --write) -->"
GROUP_END = "<!-- END GENERATED GROUP VECTORS -->"

# The setup every reply vector was produced with (SPEC.md prints it as the `vector-setup` block).
SETUP = {
    "cluster_id": "spec-cluster-0001",
    "node_id": 0,
    "host": "127.0.0.1",
    "port": 7171,
    "now_ms": 1_700_000_000_100,
    "wall_ms": 1_700_000_000_100,
    "topic_ids": "sequential",
    "peer": "spec-peer",
    "latency_clock": "frozen",
}

# What the group vectors (SPEC.md 12.5) add to SETUP (printed as the `group-vector-setup` block).
GROUP_SETUP = {
    "group_initial_rebalance_delay_ms": 3000,
    "member_ids": "sequential",
    "peer_host": "192.0.2.10",
    "topics": [{"name": "orders", "partitions": 2}],
}
GROUP = "spec-group"
CLIENT_ID = "spec-consumer"

# Batch A: one record, null key.  Batch B: three records (key, null key with a header, tombstone).
BATCH_A = {"timestamps": [1_699_999_999_000], "keys": [None], "values": [b"first"], "headers": None,
           "compression": 0}
BATCH_B = {"timestamps": [1_700_000_000_000, 1_700_000_000_001, 1_700_000_000_005],
           "keys": [b"user-1", None, b"user-1"], "values": [b"hello", b"world", None],
           "headers": [None, [["trace-id", b"\x01\x02"]], None], "compression": 0}
BATCH_Z = dict(BATCH_B, compression=1)
# Batch I: an idempotent producer's first batch (producer 0, epoch 0, sequences 0-1); batch J
# skips sequences 2-4 (SPEC 14).
BATCH_I = {"timestamps": [1_700_000_001_000, 1_700_000_001_001], "keys": [b"k", b"k"], "values": [b"once", b"only"],
           "headers": None, "compression": 0, "producer_id": 0, "producer_epoch": 0, "base_sequence": 0}
BATCH_J = dict(BATCH_I, values=[b"gap", b"gap"], base_sequence=5)

HEADER_FIELDS = ("base_offset", "batch_length", "leader_epoch", "magic", "crc", "attributes", "last_offset_delta",
                 "base_timestamp", "max_timestamp", "producer_id", "producer_epoch", "base_sequence",
                 "record_count")


def build_batch(spec: dict[str, Any]) -> bytes:
    headers = None if spec["headers"] is None else [None if h is None else [tuple(x) for x in h]
                                                    for h in spec["headers"]]
    return encode_batch(spec["timestamps"], spec["keys"], spec["values"], headers, compression=spec["compression"],
                        producer_id=spec.get("producer_id", -1), producer_epoch=spec.get("producer_epoch", -1),
                        base_sequence=spec.get("base_sequence", -1))


# ------------------------------------------------------------------ diagnostic notation
def diag_flat(v: Any) -> str:
    """RFC 8949 section 8 diagnostic notation, one line (JSON plus h'..' for byte strings)."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (bytes, bytearray)):
        return f"h'{bytes(v).hex()}'"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(diag_flat(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{diag_flat(k)}: {diag_flat(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no diagnostic notation for {type(v).__name__}")


def diag(v: Any, indent: int = 0, width: int = 100) -> str:
    """Diagnostic notation, broken over lines where one line would be too long."""
    flat = diag_flat(v)
    if len(flat) + indent <= width or not isinstance(v, (list, tuple, dict)) or not v:
        return flat
    pad = " " * (indent + 2)
    if isinstance(v, dict):
        items = [f"{pad}{diag_flat(k)}: {diag(x, indent + 2, width)}" for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + diag(x, indent + 2, width) for x in v]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def hex_lines(data: bytes, per_line: int = 32) -> str:
    h = data.hex()
    step = per_line * 2
    return "\n".join(h[i:i + step] for i in range(0, len(h), step)) or ""


def block(kind: str, name: str, text: str, extra: str = "") -> str:
    info = f"{kind} name={name}" + (f" {extra}" if extra else "")
    return f"```{info}\n{text}\n```\n"


# ------------------------------------------------------------------ a deterministic broker
@contextlib.contextmanager
def _sequential_uuids(module: Any) -> Iterator[None]:
    """Replace ``module.uuid`` with one whose ``uuid4()`` yields 00..01, 00..02, ... for the block."""
    counter = itertools.count(1)

    class _Ids:
        @staticmethod
        def uuid4() -> uuid.UUID:
            return uuid.UUID(int=next(counter))

    saved = module.uuid
    module.uuid = _Ids
    try:
        yield
    finally:
        module.uuid = saved


def sequential_topic_ids() -> contextlib.AbstractContextManager[None]:
    """Topic ids are uuid4 in production; the vectors use 00000000000000000000000000000001, ..."""
    import fabric.broker.topics as topics_mod
    return _sequential_uuids(topics_mod)


def sequential_member_ids() -> contextlib.AbstractContextManager[None]:
    """Member ids are ``client_id + "-" + uuid4().hex`` in production; the vectors use the uuids
    00000000000000000000000000000001, ... (patched where the coordinator draws them)."""
    import fabric.groups.coordinator as coordinator_mod
    return _sequential_uuids(coordinator_mod)


@contextlib.contextmanager
def spec_broker(setup: dict[str, Any] = SETUP, **extra: Any) -> Iterator[Any]:
    from fabric.broker.config import BrokerConfig
    from fabric.broker.core import BrokerCore

    with tempfile.TemporaryDirectory() as tmp, sequential_topic_ids():
        cfg = BrokerConfig(data_dir=str(Path(tmp) / "data"), cluster_id=setup["cluster_id"],
                           node_id=setup["node_id"], host=setup["host"], port=setup["port"], **extra)
        # "latency_clock": "frozen": the handlers' latency clock stands still, so every latency is 0
        core = BrokerCore(cfg, setup["now_ms"], monotonic_ns=lambda: 0)
        try:
            yield core
        finally:
            core.close()


# ------------------------------------------------------------------ the scenario
def scenario() -> list[dict[str, Any]]:
    """The requests, in the order they are replayed against one broker."""
    a, b = build_batch(BATCH_A), build_batch(BATCH_B)
    steps: list[dict[str, Any]] = []

    def add(name: str, title: str, header: Any, frames: tuple[bytes, ...] = (), note: str = "") -> None:
        raw = header if isinstance(header, bytes) else codec.encode(header)
        steps.append({"name": name, "title": title, "header": raw, "frames": list(frames), "note": note})

    add("api-versions", "api_versions",
        request_header("api_versions", 1, ApiVersionsRequest(client="spec-example/1.0")))
    add("create-topics", "create_topics (one topic created, one refused)",
        request_header("create_topics", 2, CreateTopicsRequest(topics=(
            NewTopic(name="orders", partitions=2, configs={"retention_ms": 86_400_000, "segment_ms": 3_600_000}),
            NewTopic(name="bad/name")))))
    add("metadata", "metadata (one known, one unknown topic)",
        request_header("metadata", 3, MetadataRequest(topics=("orders", "missing"))))
    add("list-topics", "list_topics", request_header("list_topics", 4, ListTopicsRequest()))
    add("alter-topic-configs", "alter_topic_configs",
        request_header("alter_topic_configs", 5, AlterTopicConfigsRequest(
            topic="orders", set={"retention_ms": 172_800_000}, delete=("segment_ms",))))
    add("create-partitions", "create_partitions",
        request_header("create_partitions", 6, CreatePartitionsRequest(topic="orders", count=3)))
    add("produce-acks0", "produce with acks=0 (batch A to orders/1; no reply)",
        request_header("produce", 7, ProduceRequest(acks=0, batches=(BatchTarget(topic="orders", partition=1),))),
        (a,), "Batch A is appended to `orders/1` at offset 0; the broker sends nothing back.")
    add("produce", "produce (batch B to orders/1, batch A to the missing partition orders/7)",
        request_header("produce", 8, ProduceRequest(batches=(BatchTarget(topic="orders", partition=1),
                                                             BatchTarget(topic="orders", partition=7)))),
        (b, a), "Batch B gets offsets 1-3 (`base_offset` 1); the second batch fails on its own with a "
                "per-batch error, which does not affect the first.")
    fetched = (FetchPartition(topic="orders", partition=1, offset=2),  # by fetch 9 and its follow-on
               FetchPartition(topic="orders", partition=0, offset=0))
    add("fetch", "fetch (orders/1 from offset 2, orders/0 from offset 0)",
        request_header("fetch", 9, FetchRequest(partitions=fetched)),
        note="Frame 1 is batch B as stored: `base_offset` 1 (bytes 0-7) and `leader_epoch` 0 (bytes 12-15) "
             "were written by the broker; every other byte, the CRC included, is as produced. It holds "
             "offsets 1, 2, 3; the client asked for 2, so it skips the record at offset 1 (`hello`) and "
             "delivers offset 2 (`world`, header `trace-id`) and offset 3 (key `user-1`, null value: a "
             "tombstone). Its next fetch offset is 4. Frame 2 is empty: `orders/0` has no records "
             "(offset 0 = high watermark 0), which is not an error. Data was available, so the broker "
             "answered at once despite `max_wait_ms` 500.")
    add("list-offsets", "list_offsets (earliest, latest, by timestamp)",
        request_header("list_offsets", 10, ListOffsetsRequest(partitions=(
            OffsetQuery(topic="orders", partition=1, at="earliest"),
            OffsetQuery(topic="orders", partition=1, at="latest"),
            OffsetQuery(topic="orders", partition=1, at=1_700_000_000_002)))),
        note="The first record of `orders/1` with a timestamp >= 1700000000002 is offset 3 "
             "(timestamp 1700000000005).")
    add("describe-topics", "describe_topics",
        request_header("describe_topics", 11, DescribeTopicsRequest(topics=("orders",))))
    add("error-invalid-field", "error reply: a field out of range",
        {"op": "fetch", "v": 1, "cid": 12, "partitions": [{"topic": "orders", "partition": 1, "offset": -1}]})
    add("error-unsupported-version", "error reply: unsupported version", {"op": "metadata", "v": 2, "cid": 13})
    add("error-unknown-operation", "error reply: unknown operation", {"op": "frobnicate", "v": 1, "cid": 14})
    add("error-malformed", "error reply: the header is not a map (cid unknown: null)",
        codec.encode(["op", "metadata"]),
        note="The header could not be read, so neither `op` nor `cid` is known: both are null.")
    add("broker-stats", "broker_stats", request_header("broker_stats", 16))
    idem, gap = build_batch(BATCH_I), build_batch(BATCH_J)
    to_2 = ProduceRequest(acks=-1, batches=(BatchTarget(topic="orders", partition=2),))
    add("init-producer-id", "init_producer_id (a new producer id)",
        request_header("init_producer_id", 21, InitProducerIdRequest()),
        note="This broker (node id 0) hands out producer ids 0, 1, 2, ... (section 14.2).")
    add("produce-idempotent", "produce an idempotent batch (batch I: producer 0, epoch 0, sequences 0-1)",
        request_header("produce", 22, to_2), (idem,),
        note="Bytes 43-56 of batch I: `producer_id` 0, `producer_epoch` 0, `base_sequence` 0. It is "
             "appended to `orders/2` at offsets 0-1.")
    add("produce-duplicate", "produce batch I again (a retry: answered with its offsets, not written)",
        request_header("produce", 23, to_2), (idem,),
        note="Same producer, epoch and sequences as a batch among the producer's last 5 on this "
             "partition: the reply carries the original `base_offset` 0 and the log stays at 2 records.")
    add("produce-out-of-order", "produce batch J (sequence 5, but 2 is next: OUT_OF_ORDER_SEQUENCE)",
        request_header("produce", 24, to_2), (gap,))
    add("init-producer-id-bump", "init_producer_id (the next epoch of producer 0)",
        request_header("init_producer_id", 25, InitProducerIdRequest(producer_id=0, producer_epoch=0)),
        note="From now on `orders/2` refuses producer 0's epoch-0 batches with INVALID_PRODUCER_EPOCH once "
             "an epoch-1 batch (starting at sequence 0) was written there.")
    add("stats", "stats (one topic)", request_header("stats", 20, StatsRequest(topics=("orders",))),
        note="Counters since the broker started; `topics` narrows the topic, partition and group sections "
             "to `orders` (the other requests of this broker are still counted). The latency clock of "
             "these vectors stands still (setup `latency_clock`), so every latency is 0 µs; a real "
             "broker measures how long each handler ran. `records_out` 2 is fetch 9's offsets 2 and 3. "
             "No group has committed offsets here, so `groups` is empty; 12.5 shows a group's lag "
             "through `describe_groups`.")
    add("fetch-follows", "fetch following fetch 9 (pipelining: continues where its reply ended)",
        request_header("fetch", 18, FetchRequest(max_wait_ms=0, follows=9, partitions=fetched)),
        note="This connection's latest fetch was cid 9 (10.3.9; the refused cid 12 never became a fetch). "
             "Its reply held everything of `orders/1` up to the high watermark 4, and `orders/0` was at its "
             "high watermark 0, so this request reads `orders/1` from 4 and `orders/0` from 0, whatever "
             "offsets it names (the client sends its own, unchanged, as placeholders). Every partition of "
             "the reply says where it was read from (`offset`). Nothing new: both frames are empty, and "
             "`max_wait_ms` 0 answers at once; a consumer would send 500 and the request would park.")
    add("fetch-standing", "standing fetch (answered now, then waiting again)",
        request_header("fetch", 19, FetchRequest(answers=2, partitions=fetched)),
        note="`answers` 2: this fetch may have two replies. Data is there, so the first is sent at once "
             "(`answers_left` 1, and `offset` per partition as for a follow-on); then the fetch waits "
             "again from where that reply ended: `orders/1` from 4, `orders/0` from 0. Its second and "
             "last reply comes with the next vector: deleting the topic answers it.")
    add("delete-topics", "delete_topics (one deleted, one unknown)",
        request_header("delete_topics", 17, DeleteTopicsRequest(topics=("orders", "missing"))),
        note="Reply 2 goes to the standing fetch of the vector before, waiting on `orders`: its topic "
             "is gone, so it is answered with the error per partition, and that is its last reply "
             "(`answers_left` 0).")
    return steps


def run_scenario(steps: list[dict[str, Any]]) -> list[list[tuple[dict[str, Any], list[bytes]]]]:
    """Each step's replies: [(header, payload frames)], empty when the broker sends none."""
    out = []
    peer = SETUP["peer"].encode()
    with spec_broker() as core:
        for s in steps:
            replies = core.handle(peer, [s["header"], *s["frames"]], SETUP["now_ms"])
            out.append([(r.header, [bytes(f) for f in r.frames]) for _, r in replies])
    return out


# ------------------------------------------------------------------ the group scenario (section 12.5)
def group_times() -> tuple[int, int]:
    """The clock of the group scenario: the first requests at ``now_ms``, the rest once the initial
    rebalance delay has passed (when ``tick`` answers the parked join)."""
    t0 = SETUP["now_ms"]
    return t0, t0 + GROUP_SETUP["group_initial_rebalance_delay_ms"]


def group_scenario() -> list[dict[str, Any]]:
    """One member's life in a group, replayed in this order against one broker.  A step with
    ``tick`` gets no reply from ``handle``: its reply comes out of ``core.tick(tick)``."""
    t0, t1 = group_times()
    member = f"{CLIENT_ID}-{uuid.UUID(int=1).hex}"  # the first id the coordinator hands out
    steps: list[dict[str, Any]] = []

    def add(name: str, title: str, op: str, body: Any, now: int, tick: int | None = None, note: str = "") -> None:
        raw = codec.encode(request_header(op, len(steps) + 1, body))
        steps.append({"name": name, "title": title, "header": raw, "frames": [], "now": now, "tick": tick,
                      "note": note})

    join = JoinGroupRequest(group_id=GROUP, client_id=CLIENT_ID, topics=("orders",),
                            assignors=("cooperative-sticky", "range"))
    add("find-coordinator", "find_coordinator", "find_coordinator", FindCoordinatorRequest(group_id=GROUP), t0,
        note="A single broker leads every `__consumer_offsets` partition, so it coordinates every group.")
    add("join-group", "join_group, first join (`member_id` \"\": MEMBER_ID_REQUIRED)", "join_group", join, t0,
        note="The error reply carries the `member_id` to rejoin with (12.1 step 1). Member ids are "
             "`client_id + \"-\" + 32 hex digits`; in these vectors the hex digits are sequential.")
    add("join-group-rejoin", "join_group, the rejoin (deferred: answered by the initial rebalance delay)",
        "join_group", dataclasses.replace(join, member_id=member), t0, tick=t1,
        note="The group was empty, so its first join phase waits `initial_rebalance_delay_ms` "
             f"({GROUP_SETUP['group_initial_rebalance_delay_ms']}) for more members: nothing is sent back at once, and the reply "
             f"leaves when the broker's clock reaches {t1}. It has the request's `cid`. The group is now at generation 1, with the first "
             "assignor of the member's list (every member offers it).")
    add("sync-group", "sync_group", "sync_group",
        SyncGroupRequest(group_id=GROUP, member_id=member, generation=1), t1,
        note="The only member gets both partitions of `orders`; the group is now `STABLE`.")
    add("heartbeat", "heartbeat", "heartbeat",
        HeartbeatRequest(group_id=GROUP, member_id=member, generation=1, ms_since_poll=120), t1)
    add("offset-commit", "offset_commit", "offset_commit",
        OffsetCommitRequest(group_id=GROUP, generation=1, member_id=member,
                            offsets=(CommitOffset(topic="orders", partition=0, offset=0),)), t1,
        note="The reply is sent once the commit record is durable in `__consumer_offsets`.")
    add("offset-fetch", "offset_fetch (one committed partition, one not)", "offset_fetch",
        OffsetFetchRequest(group_id=GROUP, topics=(FetchTopic(topic="orders", partitions=(0, 1)),)), t1,
        note=f"`commit_timestamp` is the broker's clock when it took the commit ({t1}). `orders/1` has no "
             "commit: offset, commit timestamp and leader epoch -1.")
    add("list-groups", "list_groups", "list_groups", ListGroupsRequest(), t1)
    add("describe-groups", "describe_groups (one group, one unknown)", "describe_groups",
        DescribeGroupsRequest(group_ids=(GROUP, "other-group")), t1,
        note="`host` is the member's address as the broker saw the connection (`peer_host` of the setup; "
             "empty when unknown). An unknown group is `DEAD` with `GROUP_ID_NOT_FOUND`.")
    add("leave-group", "leave_group", "leave_group", LeaveGroupRequest(group_id=GROUP, member_id=member), t1,
        note="The last member left: the group is `EMPTY` (generation 2) and keeps its committed offsets.")
    add("delete-groups", "delete_groups (one deleted, one unknown)", "delete_groups",
        DeleteGroupsRequest(group_ids=(GROUP, "other-group")), t1,
        note="The reply is sent once the tombstones of the group's offsets are durable.")
    return steps


@contextlib.contextmanager
def group_broker() -> Iterator[Any]:
    """A broker with the setup of 10.1 plus GROUP_SETUP: its topics created, the peer's address known."""
    with spec_broker(group_initial_rebalance_delay_ms=GROUP_SETUP["group_initial_rebalance_delay_ms"]) as core, \
            sequential_member_ids():
        peer = SETUP["peer"].encode()
        topics = tuple(NewTopic(name=t["name"], partitions=t["partitions"]) for t in GROUP_SETUP["topics"])
        created = core.handle(peer, [codec.encode(request_header("create_topics", 0, CreateTopicsRequest(
            topics=topics)))], SETUP["now_ms"])
        assert all("error" not in t for t in created[0][1].header["topics"]), created
        core.peer_hosts[peer] = GROUP_SETUP["peer_host"]
        yield core


def run_group_scenario(steps: list[dict[str, Any]]) -> list[list[tuple[dict[str, Any], list[bytes]]]]:
    out = []
    peer = SETUP["peer"].encode()
    with group_broker() as core:
        for s in steps:
            replies = core.handle(peer, [s["header"]], s["now"])
            if s["tick"] is not None:
                assert replies == [], (s["name"], replies)
                assert core.tick(s["tick"] - 1) == [], s["name"]
                replies = core.tick(s["tick"])
            assert all(to == peer for to, _ in replies)
            out.append([(r.header, [bytes(f) for f in r.frames]) for _, r in replies])
    return out


# ------------------------------------------------------------------ equivalent and rejected encodings
def _indef_text(s: str) -> bytes:
    raw = s.encode()
    half = len(raw) // 2
    return b"\x7f" + cbor2.dumps(raw[:half].decode()) + cbor2.dumps(raw[half:].decode()) + b"\xff"


def equivalents(canonical: dict[str, Any]) -> list[tuple[str, str, bytes]]:
    """Other valid encodings of the metadata request; a broker must read each like the canonical one."""
    keys = list(canonical)
    body = b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in canonical.items())
    out = [("keys-sorted", "keys in canonical (length-first) order, as canonical encoders write them",
            cbor2.dumps(canonical, canonical=True)),
           ("map-length-32bit", "map length written as a 32-bit count (cbor-x)",
            bytes([0xBA]) + len(keys).to_bytes(4, "big") + body)]
    indef = b"\xbf"
    for k, v in canonical.items():
        indef += _indef_text(k)
        if isinstance(v, list):
            indef += b"\x9f" + b"".join(cbor2.dumps(x) for x in v) + b"\xff"
        else:
            indef += cbor2.dumps(v)
    out.append(("indefinite", "indefinite-length map, array and (chunked) text strings", indef + b"\xff"))
    nonmin = b"".join(cbor2.dumps(k) + (b"\x1b" + v.to_bytes(8, "big") if isinstance(v, int) and not
                                        isinstance(v, bool) else cbor2.dumps(v)) for k, v in canonical.items())
    out.append(("non-minimal-ints", "every unsigned integer as a 64-bit argument (0x1b ...)",
                bytes([0xA0 + len(keys)]) + nonmin))
    floats = b"".join(cbor2.dumps(k) + (b"\xfb" + cbor2.dumps(float(v))[1:] if k == "cid" else cbor2.dumps(v))
                      for k, v in canonical.items())
    out.append(("cid-float64", "cid as an integral float64 (how JavaScript numbers travel)",
                bytes([0xA0 + len(keys)]) + floats))
    return out


def rejects() -> list[tuple[str, str, str, str, bytes]]:
    """(name, expected error, a text the message must contain, what it shows, bytes)."""
    ok = codec.encode({"op": "metadata", "v": 1, "cid": 21})

    def fetch(offset: Any) -> bytes:
        return codec.encode({"op": "fetch", "v": 1, "cid": 22,
                             "partitions": [{"topic": "orders", "partition": 0, "offset": offset}]})

    return [
        ("reject-trailing-bytes", "MALFORMED_REQUEST", "after the CBOR item", "a byte after the header map", ok + b"\x00"),
        ("reject-not-a-map", "MALFORMED_REQUEST", "must be a CBOR map", "the header is an array",
         codec.encode([1, 2])),
        ("reject-integer-key", "MALFORMED_REQUEST", "keys must be text", "a map key that is not text",
         codec.encode({"op": "metadata", "v": 1, "cid": 23, 1: 2})),
        ("reject-fractional-float", "INVALID_FIELD", "partitions[0].offset", "an offset of 1.5", fetch(1.5)),
        ("reject-float-above-2p53", "INVALID_FIELD", "partitions[0].offset", "an offset of 2^53 + 2 as a float64",
         fetch(float(2**53 + 2))),
        ("reject-bool-as-int", "INVALID_FIELD", "partitions[0].offset", "true where an integer is expected",
         fetch(True)),
        ("reject-tag", "MALFORMED_REQUEST", "tag 1", "a tagged value (tag 1, epoch time) as an offset",
         fetch(cbor2.CBORTag(1, 5))),
        ("reject-bignum", "MALFORMED_REQUEST", "tag 2", "a cid as a bignum (tag 2), even one of 1 byte",
         codec.encode({"op": "metadata", "v": 1, "cid": cbor2.CBORTag(2, b"\x01")})),
        ("reject-beyond-int64", "INVALID_FIELD", "partitions[0].offset",
         "an offset of 2^64 - 1: a valid CBOR integer, but outside int64", fetch(2**64 - 1)),
        ("reject-missing-field", "INVALID_FIELD", "cid", "a header without cid",
         codec.encode({"op": "metadata", "v": 1})),
    ]


# ------------------------------------------------------------------ rendering
def batch_table(batch: bytes) -> str:
    h = parse_header(batch)
    offsets = [0, 8, 12, 16, 17, 21, 23, 27, 35, 43, 51, 53, 57]
    sizes = [8, 4, 4, 1, 4, 2, 4, 8, 8, 8, 2, 4, 4]
    rows = ["| offset | size | field | bytes (hex) | value |", "|---|---|---|---|---|"]
    for name, off, size in zip(HEADER_FIELDS, offsets, sizes):
        value = getattr(h, name)
        shown = f"{value} (0x{value:08x})" if name == "crc" else str(value)
        rows.append(f"| {off} | {size} | `{name}` | `{batch[off:off + size].hex()}` | {shown} |")
    rows.append(f"| 61 | {len(batch) - HEADER_SIZE} | `records` | (see below) | CBOR, {len(batch) - HEADER_SIZE} bytes |")
    assert HEADER.size == HEADER_SIZE == 61
    return "\n".join(rows) + "\n"


def render_steps(w: Any, number: str, steps: list[dict[str, Any]],
                 results: list[list[tuple[dict[str, Any], list[bytes]]]], batches: dict[bytes, str]) -> None:
    """One subsection per step: request and reply, hex and diagnostic notation.  Steps of the group
    scenario carry their clock (``now``: the ``now=`` attribute of the request vector) and, for a
    deferred reply, the ``tick`` that produced it (the ``tick=`` attribute of the reply vector)."""
    for i, (s, replies) in enumerate(zip(steps, results), 1):
        w(f"#### {number}.{i} {s['title']}\n\n")
        name = s["name"]
        now = s.get("now")
        w("Request, frame 0" + (f" (clock {now})" if now is not None else "") + ":\n\n")
        w(block("hex", f"{name}-request", hex_lines(s["header"]), f"now={now}" if now is not None else ""))
        try:
            value = codec.decode_map(s["header"], 1 << 20)
            w(block("diag", f"{name}-request", diag(value)))
        except Exception:
            w(block("diag", f"{name}-request", diag(cbor2.loads(s["header"]))))
        for n, f in enumerate(s["frames"], 1):
            which = batches.get(f, "")
            w(f"\nRequest, frame {n} ({which}, `record-batch{'-a' if which == 'batch A' else ''}` above):\n\n")
            w(block("hex", f"{name}-request-frame{n}", hex_lines(f)))
        if not replies:
            w("\nNo reply (acks=0).\n\n")
            if s["note"]:
                w(s["note"] + "\n\n")
            continue
        tick = s.get("tick")
        assert tick is None or len(replies) == 1, (name, replies)
        for k, (header, frames) in enumerate(replies):
            # a request may answer others too (a deletion answers the fetches parked on the topic)
            label, vec = ("Reply", f"{name}-reply") if k == 0 else \
                (f"Reply {k + 1}, to cid {header.get('cid')}", f"{name}-reply-{k + 1}")
            if tick is None:
                w(f"\n{label}, frame 0:\n\n")
            else:
                w(f"\nNo immediate reply. Reply, frame 0 (sent when the broker's clock reaches {tick}):\n\n")
            w(block("hex", vec, hex_lines(codec.encode(header)), f"tick={tick}" if tick is not None else ""))
            w(block("diag", vec, diag(header)))
            for n, f in enumerate(frames, 1):
                w(f"\n{label}, frame {n}" + (" (empty)" if not f else "") + ":\n\n")
                w(block("hex", f"{vec}-frame{n}", hex_lines(f)))
        if s["note"]:
            w("\n" + s["note"] + "\n")
        w("\n")


def render() -> str:
    a, b, z = build_batch(BATCH_A), build_batch(BATCH_B), build_batch(BATCH_Z)
    out: list[str] = [BEGIN, "\n"]
    w = out.append

    w("### 10.1 Setup\n\n")
    w("Every reply vector below was produced by the reference broker on an "
      "empty data directory with this setup; `tests/test_spec.py` replays the requests in document order "
      "against a fresh broker with the same setup and checks every reply byte for byte. Topic ids are "
      "normally random (`uuid4().hex`); for the vectors they are sequential (`000…001`, `000…002`, …). "
      "A broker keeps two clocks: a monotonic one for deadlines (long polls, group sessions and rebalance "
      "timers), `now_ms`, and the wall clock for dates (log-append and commit timestamps, `stats`), "
      "`wall_ms`. For the vectors both read the same and move together (a `now=` or `tick=` attribute "
      "in 12.5 sets both).\n\n")
    w(block("json", "vector-setup", json.dumps(SETUP, indent=2)))

    w("\n### 10.2 Record batches\n\n")
    w("**Batch B** (three records, no compression), exactly as a client sends it (`base_offset` 0, "
      "`leader_epoch` -1). Its inputs:\n\n")
    w(block("diag", "record-batch-input", diag(BATCH_B)))
    w("\n")
    w(block("hex", "record-batch", hex_lines(b)))
    w("\nField by field:\n\n<!-- batch-fields: record-batch -->\n")
    w(batch_table(b))
    w("\nThe records section (bytes 61..end) is this CBOR array of four columns "
      "(timestamp deltas, keys, values, headers):\n\n")
    w(block("hex", "record-batch-records", hex_lines(b[HEADER_SIZE:])))
    w(block("diag", "record-batch-records", diag(cbor2.loads(b[HEADER_SIZE:]))))
    w("\nRecord offsets are `base_offset + i`; timestamps are `base_timestamp + delta[i]` "
      "(here 1700000000000, 1700000000001, 1700000000005).\n\n")
    w("**Batch A** (one record, null key, value `first`):\n\n")
    w(block("diag", "record-batch-a-input", diag(BATCH_A)))
    w(block("hex", "record-batch-a", hex_lines(a)))
    w("\n**Batch B compressed** (`attributes` = 1, zlib). The deflate stream depends on the zlib "
      "implementation and level, so this vector is checked by decoding, not byte for byte; a client's "
      "compressed batch need not equal it:\n\n")
    w(block("diag", "record-batch-zlib-input", diag(BATCH_Z)))
    w(block("hex", "record-batch-zlib", hex_lines(z), "check=decode"))

    w("\n### 10.3 One request and one reply per operation\n\n")
    w("Requests are replayed in this order against one broker (the state carries over: the topic "
      "`orders` created first is used by the later requests). `name-request-frameN` is payload frame N "
      "of a request, `name-reply-frameN` of a reply. A request without a reply vector gets no reply.\n\n")
    steps = scenario()
    render_steps(w, "10.3", steps, run_scenario(steps), {a: "batch A", b: "batch B"})

    w("### 10.4 Equivalent encodings\n\n")
    canonical = codec.decode_map(steps[2]["header"], 1 << 20)
    w("Each of these is another valid CBOR encoding of the `metadata-request` header above; a broker "
      "must read each exactly like it (and so must a client reading replies).\n\n")
    for name, what, raw in equivalents(canonical):
        w(f"- {what}:\n\n")
        w(block("hex", f"equiv-{name}", hex_lines(raw), "same-as=metadata-request"))
        w("\n")

    w("### 10.5 Rejected requests\n\n")
    w("Each gets an error reply with the code shown (`expect=`) whose message contains the `message=` "
      "text (for `INVALID_FIELD`, the path of the field).\n\n")
    for name, expect, field, what, raw in rejects():
        w(f"- {what}:\n\n")
        w(block("hex", name, hex_lines(raw), f'expect={expect} message="{field}"'))
        w("\n")
    out.append(END)
    return "".join(out)


def render_groups() -> str:
    t0, t1 = group_times()
    out: list[str] = [GROUP_BEGIN, "\n"]
    w = out.append
    w("These vectors were produced like those of section 10 (10.1), by a second reference broker, fresh, with "
      "the setup of 10.1 (`vector-setup`) plus this: the initial rebalance delay is stated, the topics "
      "listed were created (`create_topics`) before the first request, the requests come from a client "
      "whose address the broker saw as `peer_host`, and member ids, normally "
      "`client_id + \"-\" + uuid4().hex`, use sequential uuids (`000…001`, `000…002`, …). "
      "`tests/test_spec.py` replays the requests in document order against such a broker and checks every "
      "reply byte for byte.\n\n")
    w(block("json", "group-vector-setup", json.dumps(GROUP_SETUP, indent=2)))
    w(f"\nThe clock matters here: a request vector's `now=` attribute is the broker's clock when it "
      f"handled the request ({t0}, then {t1} once the initial rebalance delay has passed; the offset "
      f"commit timestamp comes from it), and a reply vector with a `tick=` attribute is a deferred reply: "
      f"nothing is sent when the request arrives, and this reply leaves when the broker's clock reaches "
      f"that value (not a millisecond earlier). The member "
      f"is `{CLIENT_ID}` in group `{GROUP}`.\n\n")
    steps = group_scenario()
    render_steps(w, "12.5", steps, run_group_scenario(steps), {})
    out.append(GROUP_END)
    return "".join(out)


def _replace(spec: str, begin: str, end_marker: str, text: str) -> str:
    start, end = spec.find(begin), spec.find(end_marker)
    if start < 0 or end < start:
        sys.exit(f"{SPEC}: markers {begin!r} ... {end_marker!r} not found")
    return spec[:start] + text + spec[end + len(end_marker):]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="replace the generated sections of SPEC.md")
    args = ap.parse_args()
    text, groups = render(), render_groups()
    cluster = render_cluster(block, hex_lines, diag)
    if not args.write:
        print(text)
        print(groups)
        print(cluster)
        return
    spec = _replace(SPEC.read_text(), BEGIN, END, text)
    spec = _replace(spec, GROUP_BEGIN, GROUP_END, groups)
    spec = _replace(spec, CLUSTER_BEGIN, CLUSTER_END, cluster)
    SPEC.write_text(spec)
    print(f"rewrote the generated vectors in {SPEC}")


if __name__ == "__main__":
    main()
