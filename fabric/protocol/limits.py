"""Every hard limit of the protocol and the broker, in one place, unit last in the name.

Why: a limit that lives next to the code that enforces it is a limit nobody can find.  The broker
copies these into its config (some are overridable, see ``configs/broker.yaml``); SPEC.md lists the
defaults; ``api_versions`` replies with the values in force so clients can size their batches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

# Integers on the wire.  CBOR has 64-bit integers, but JavaScript numbers are float64: a JS
# client sends any integer above 2^32 with cbor-x as a float64.  Rule (SPEC.md "Integers"): a
# float is accepted for an integer field when it is integral and its magnitude is at most
# 2^53; otherwise INVALID_FIELD names the field.
INT_FLOAT_EXACT_MAX = 2**53
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
# Containers nested inside a request header, the header map itself counted (SPEC.md §3 rule 2).
# Not a ``Limits`` field: it is part of the wire format, the same for every broker.
HEADER_NESTING_MAX = 400


@dataclass(frozen=True, slots=True)
class Limits:
    """Protocol and broker ceilings.  Defaults are the embedded single-node defaults."""

    header_frame_bytes_max: int = 1 << 20  # CBOR header frame of a request
    request_frames_max: int = 1025  # header + up to 1024 payload frames
    batch_bytes_max: int = 16 << 20  # one record batch (also the per-topic default cap)
    request_bytes_max: int = 64 << 20  # all frames of one request together
    batch_records_max: int = 1_000_000  # records in one batch
    fetch_bytes_max: int = 64 << 20  # total bytes one fetch reply may carry
    fetch_wait_ms_max: int = 60_000  # longest long-poll
    request_timeout_ms_max: int = 300_000
    topics_max: int = 10_000
    partitions_per_topic_max: int = 10_000
    partitions_total_max: int = 100_000
    topic_name_chars_max: int = 200
    list_items_max: int = 10_000  # entries in any request array (partitions, topics…)
    config_entries_max: int = 100
    inflight_requests_max: int = 10_000  # parked (long-poll / acks) requests, broker-wide
    connections_max: int = 1_000  # client TCP connections open at once; more are closed at accept
    # Descriptors for many partitions (files task): segment files the broker keeps open at once;
    # the least recently used idle one is closed to open another.  The broker lowers it to fit
    # its RLIMIT_NOFILE (see fabric/broker/descriptors.py).
    segment_files_open_max: int = 10_000
    # Backpressure and connection fairness (fault-injection issue, items 2 and 4; broker/flow.py)
    connection_reply_bytes_max: int = 64 << 20  # reply bytes queued toward one connection, not yet sent
    reply_bytes_max: int = 256 << 20  # reply bytes queued toward all connections together
    connection_requests_queued_max: int = 32  # requests read ahead from one connection (ROUTER RCVHWM)
    connection_replies_queued_max: int = 1_000  # replies queued toward one connection (ROUTER SNDHWM)
    connection_idle_ms_max: int = 600_000  # a connection without a request this long is closed
    connection_replace_idle_ms: int = 500  # at connections_max, a new connection replaces one idle this long
    # cluster (issue 15; SPEC.md section 13): the controller port and replication
    controller_header_bytes_max: int = 20 << 20  # frame 0 on the controller port (Raft entries, snapshots inline)
    raft_entry_bytes_max: int = 1 << 20  # one metadata record (one Raft entry's data)
    raft_append_entries_max: int = 1_000  # entries in one AppendRequest
    metadata_snapshot_bytes_max: int = 16 << 20  # a metadata snapshot sent in one SnapshotRequest / metadata_fetch
    metadata_fetch_records_max: int = 10_000  # records one metadata_fetch reply may carry

    def to_wire(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> "Limits":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown limits: {sorted(unknown)}")
        for k, v in values.items():
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"limit {k} must be a positive integer, got {v!r}")
        return cls(**values)


DEFAULT_LIMITS = Limits()
