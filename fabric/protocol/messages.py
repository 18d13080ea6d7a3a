"""Every request of the wire protocol, as a small frozen dataclass that validates itself.

The envelope (``op``, ``v``, ``cid``) is common to all requests; the rest of the header map holds
the operation's fields listed here.  SPEC.md documents each field with its CBOR type; a test
checks that the two agree.  Replies are plain maps built by the ``*_reply`` helpers at the end of
this module, so that the whole wire vocabulary lives in one file.

Versioning: each operation has a version range (``OPERATIONS``).  A new optional field does not
need a new version (brokers ignore unknown keys, absent optional keys take their defaults); a
changed meaning does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import FabricError
from .limits import DEFAULT_LIMITS, INT64_MAX
from .schema import parse, unparse, wire

_L = DEFAULT_LIMITS
U32 = 2**32 - 1
FETCH_ANSWERS_MAX = 64  # replies one standing fetch may have (SPEC 5.10)
TOPIC_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,%d}$" % _L.topic_name_chars_max)


def check_topic_name(name: str, *, allow_internal: bool = False) -> None:
    """Topic names become directory names: keep them portable and unambiguous."""
    if not TOPIC_NAME_RE.match(name) or name in (".", ".."):
        raise FabricError("INVALID_TOPIC_NAME",
                          f"invalid topic name {name[:60]!r}: use 1-{_L.topic_name_chars_max} characters of "
                          "A-Z a-z 0-9 . _ - (not '.' or '..')")
    if name.startswith("__") and not allow_internal:
        raise FabricError("INVALID_TOPIC_NAME", f"topic names starting with '__' are internal: {name!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    op: str = wire("text", max_len=64)
    v: int = wire("int", min=0, max=U32)
    cid: int = wire("int", min=0, max=INT64_MAX)


# ---------------------------------------------------------------- cluster and topics

@dataclass(frozen=True, slots=True, kw_only=True)
class ApiVersionsRequest:
    client: str = wire("text", "", max_len=256)  # free-form client name/version, for logs


@dataclass(frozen=True, slots=True, kw_only=True)
class MetadataRequest:
    topics: tuple[str, ...] | None = wire("list", None, nullable=True, items=wire("text", max_len=256),
                                          max_len=_L.list_items_max)
    # create missing topics (broker's auto_create_topics permitting), as producers do
    allow_auto_create: bool = wire("bool", False)


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerStatsRequest:
    """Counters for the CLI and dashboard (no fields)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsRequest:
    """Everything an operator watches (SPEC 5.14): per operation, partition and group.  ``topics``
    narrows the partition and group sections so a dashboard can poll a big broker cheaply."""

    topics: tuple[str, ...] | None = wire("list", None, nullable=True, items=wire("text", max_len=256),
                                          max_len=1000)
    partitions: bool = wire("bool", True)  # include the per-partition section
    groups: bool = wire("bool", True)  # include the consumer-group section (with lag)
    histograms: bool = wire("bool", False)  # add each latency histogram's buckets


@dataclass(frozen=True, slots=True, kw_only=True)
class NewTopic:
    name: str = wire("text", max_len=256)
    partitions: int | None = wire("int", None, nullable=True, min=1, max=_L.partitions_per_topic_max)
    replication_factor: int | None = wire("int", None, nullable=True, min=1, max=16)
    # acks=all needs this many in-sync replicas (cluster, SPEC 13.1); null: the broker's default
    min_insync_replicas: int | None = wire("int", None, nullable=True, min=1, max=16)
    configs: dict[str, Any] = wire("map", {}, max_len=_L.config_entries_max)


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateTopicsRequest:
    topics: tuple[NewTopic, ...] = wire("list", items=NewTopic, max_len=1000)
    validate_only: bool = wire("bool", False)
    timeout_ms: int = wire("int", 30_000, min=0, max=_L.request_timeout_ms_max)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteTopicsRequest:
    topics: tuple[str, ...] = wire("list", items=wire("text", max_len=256), max_len=1000)
    timeout_ms: int = wire("int", 30_000, min=0, max=_L.request_timeout_ms_max)


@dataclass(frozen=True, slots=True, kw_only=True)
class ListTopicsRequest:
    internal: bool = wire("bool", False)


@dataclass(frozen=True, slots=True, kw_only=True)
class DescribeTopicsRequest:
    topics: tuple[str, ...] | None = wire("list", None, nullable=True, items=wire("text", max_len=256),
                                          max_len=1000)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlterTopicConfigsRequest:
    topic: str = wire("text", max_len=256)
    set: dict[str, Any] = wire("map", {}, max_len=_L.config_entries_max)
    delete: tuple[str, ...] = wire("list", (), items=wire("text", max_len=256), max_len=_L.config_entries_max)


@dataclass(frozen=True, slots=True, kw_only=True)
class CreatePartitionsRequest:
    topic: str = wire("text", max_len=256)
    count: int = wire("int", min=1, max=_L.partitions_per_topic_max)


# ---------------------------------------------------------------- data path

@dataclass(frozen=True, slots=True, kw_only=True)
class BatchTarget:
    topic: str = wire("text", max_len=256)
    partition: int = wire("int", min=0, max=_L.partitions_per_topic_max - 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProduceRequest:
    """``batches[i]`` says where payload frame ``i + 1`` goes."""

    acks: int = wire("int", 1, choices=(-1, 0, 1))
    timeout_ms: int = wire("int", 30_000, min=0, max=_L.request_timeout_ms_max)
    batches: tuple[BatchTarget, ...] = wire("list", items=BatchTarget, max_len=_L.request_frames_max - 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchPartition:
    topic: str = wire("text", max_len=256)
    partition: int = wire("int", min=0, max=_L.partitions_per_topic_max - 1)
    offset: int = wire("int", min=0)
    max_bytes: int = wire("int", 1 << 20, min=1, max=_L.fetch_bytes_max)


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchRequest:
    max_wait_ms: int = wire("int", 500, min=0, max=_L.fetch_wait_ms_max)
    min_bytes: int = wire("int", 1, min=0, max=_L.fetch_bytes_max)
    max_bytes: int = wire("int", 16 << 20, min=1, max=_L.fetch_bytes_max)
    partitions: tuple[FetchPartition, ...] = wire("list", items=FetchPartition,
                                                  max_len=_L.request_frames_max - 1)
    # cid of this connection's previous fetch: read from where its reply ended (pipelining)
    follows: int = wire("int", -1, min=-1)
    # how many replies this fetch may have: after each one it waits again from where that one
    # ended, so a consumer at the tail sends one request per this many replies (standing fetch)
    answers: int = wire("int", 1, min=1, max=FETCH_ANSWERS_MAX)


@dataclass(frozen=True, slots=True, kw_only=True)
class OffsetQuery:
    topic: str = wire("text", max_len=256)
    partition: int = wire("int", min=0, max=_L.partitions_per_topic_max - 1)
    # "earliest", "latest", or a timestamp in ms (first offset whose timestamp is >= it)
    at: Any = wire("any", "latest")

    def validate(self) -> None:
        if isinstance(self.at, str):
            if self.at not in ("earliest", "latest"):
                raise FabricError("INVALID_FIELD", f"at: {self.at!r} is not 'earliest', 'latest' or a timestamp")
        else:
            from .schema import as_int
            object.__setattr__(self, "at", as_int(self.at, "at", 0))


@dataclass(frozen=True, slots=True, kw_only=True)
class ListOffsetsRequest:
    partitions: tuple[OffsetQuery, ...] = wire("list", items=OffsetQuery, max_len=_L.list_items_max)


@dataclass(frozen=True, slots=True, kw_only=True)
class InitProducerIdRequest:
    """SPEC 14.2: a new producer id (both fields -1), or the next epoch of ``producer_id``."""
    producer_id: int = wire("int", -1, min=-1, max=INT64_MAX)
    producer_epoch: int = wire("int", -1, min=-1, max=32767)


# Operation name -> (request class, min version, max version)
OPERATIONS: dict[str, tuple[type, int, int]] = {
    "api_versions": (ApiVersionsRequest, 1, 1),
    "metadata": (MetadataRequest, 1, 1),
    "create_topics": (CreateTopicsRequest, 1, 1),
    "delete_topics": (DeleteTopicsRequest, 1, 1),
    "list_topics": (ListTopicsRequest, 1, 1),
    "describe_topics": (DescribeTopicsRequest, 1, 1),
    "alter_topic_configs": (AlterTopicConfigsRequest, 1, 1),
    "create_partitions": (CreatePartitionsRequest, 1, 1),
    "produce": (ProduceRequest, 1, 1),
    "fetch": (FetchRequest, 1, 1),
    "list_offsets": (ListOffsetsRequest, 1, 1),
    "broker_stats": (BrokerStatsRequest, 1, 1),
    "stats": (StatsRequest, 1, 1),
    "init_producer_id": (InitProducerIdRequest, 1, 1),
}


def register_operation(name: str, cls: type, min_v: int = 1, max_v: int = 1) -> None:
    """Feature packages (groups, cluster) add their operations here at import time."""
    OPERATIONS[name] = (cls, min_v, max_v)


def parse_request(header: dict[str, Any]) -> tuple[Envelope, Any]:
    """Check the envelope, then the operation's own fields."""
    env = parse(Envelope, header)
    entry = OPERATIONS.get(env.op)
    if entry is None:
        raise FabricError("UNKNOWN_OPERATION", f"unknown operation {env.op!r}")
    cls, lo, hi = entry
    if not lo <= env.v <= hi:
        raise FabricError("UNSUPPORTED_VERSION", f"{env.op} supports versions {lo}-{hi}, not {env.v}")
    return env, parse(cls, header)


def request_header(op: str, cid: int, body: Any = None, v: int = 1) -> dict[str, Any]:
    """The header map a client sends: envelope first (readable hex dumps), then the fields."""
    out: dict[str, Any] = {"op": op, "v": v, "cid": cid}
    if body is not None:
        out.update(unparse(body))
    return out


# ---------------------------------------------------------------- replies

def ok_reply(op: str, cid: int | None, **result: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"op": op, "cid": cid}
    out.update(result)
    return out


def error_reply(op: str | None, cid: int | None, err: FabricError) -> dict[str, Any]:
    return {"op": op, "cid": cid, "error": err.to_wire()}
