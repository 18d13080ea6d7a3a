"""Committed offsets: the in-memory store and its records in the compacted topic ``__consumer_offsets``.

Strategy: the log is the truth, memory is a cache of it.  A commit does not touch memory; it
returns the records to append, and the broker calls ``OffsetStore.apply`` with them only once they
are durable in ``__consumer_offsets``.  On start (or when this broker becomes the leader of an
offsets partition) replaying that partition's records through the same ``apply`` rebuilds memory:
records are applied in log order, so the latest record per key wins and a tombstone (value
``None``) deletes.  Compaction keeps exactly what replay needs, which is why the topic is
compacted and why every key names one (group, topic, partition).

Record format (SPEC.md, "Offsets topic")::

    key    CBOR array  [1, group_id: text, topic: text, partition: uint]      (1 = key version)
    value  CBOR map    {"offset": int, "metadata": text, "commit_timestamp": int,
                        "leader_epoch": int}                                  or  null (tombstone)

Key version 2 is reserved for group metadata records, should membership ever be persisted.
Records with an unknown key version are skipped (an older broker replaying a newer log), and so
are malformed ones; ``apply`` returns how many it skipped so the broker can log it.

A group's records live in partition ``partition_for_group(group_id, n)`` of the topic, and the
leader of that partition is the group's coordinator (DESIGN.md section 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import cbor2

from ..records.partitioner import murmur2

OFFSETS_TOPIC = "__consumer_offsets"
KEY_VERSION_OFFSET = 1
KEY_VERSION_GROUP = 2  # reserved: group metadata

TopicPartition = tuple[str, int]


def partition_for_group(group_id: str, offsets_partitions: int) -> int:
    """The ``__consumer_offsets`` partition holding ``group_id``'s records.  (Kafka hashes the
    group id with Java's ``String.hashCode``; we use the murmur2 we already have for keys.)"""
    return (murmur2(group_id.encode("utf-8")) & 0x7FFFFFFF) % offsets_partitions


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    offset: int
    metadata: str = ""
    commit_timestamp: int = -1
    leader_epoch: int = -1  # -1: unknown

    def to_wire(self) -> dict[str, Any]:
        return {"offset": self.offset, "metadata": self.metadata,
                "commit_timestamp": self.commit_timestamp, "leader_epoch": self.leader_epoch}


@dataclass(frozen=True, slots=True)
class OffsetRecord:
    """One record to append: ``partition`` of ``__consumer_offsets``, key bytes, value bytes or
    ``None`` for a tombstone."""

    partition: int
    key: bytes
    value: bytes | None


class OffsetRecordError(ValueError):
    """A ``__consumer_offsets`` record that is not in the format above."""


def encode_key(group_id: str, topic: str, partition: int) -> bytes:
    return cbor2.dumps([KEY_VERSION_OFFSET, group_id, topic, partition])


def decode_key(key: bytes) -> tuple[str, str, int] | None:
    """``(group, topic, partition)``; ``None`` for a record of another key version."""
    try:
        k = cbor2.loads(key)
    except Exception as exc:  # cbor2 raises several types; never let them out
        raise OffsetRecordError(f"offsets key is not CBOR: {exc}") from None
    if not isinstance(k, list) or not k or not isinstance(k[0], int) or isinstance(k[0], bool):
        raise OffsetRecordError(f"offsets key must be an array starting with a version, got {k!r:.80}")
    if k[0] != KEY_VERSION_OFFSET:
        return None
    if (len(k) != 4 or not isinstance(k[1], str) or not isinstance(k[2], str)
            or not isinstance(k[3], int) or isinstance(k[3], bool) or k[3] < 0):
        raise OffsetRecordError(f"offsets key v1 must be [1, group, topic, partition], got {k!r:.80}")
    return k[1], k[2], k[3]


def encode_value(committed: CommittedOffset) -> bytes:
    return cbor2.dumps(committed.to_wire())


def decode_value(value: bytes) -> CommittedOffset:
    try:
        v = cbor2.loads(value)
    except Exception as exc:
        raise OffsetRecordError(f"offsets value is not CBOR: {exc}") from None
    if not isinstance(v, dict):
        raise OffsetRecordError(f"offsets value must be a map, got {type(v).__name__}")
    ints = {k: v.get(k, -1) for k in ("offset", "commit_timestamp", "leader_epoch")}
    if any(not isinstance(x, int) or isinstance(x, bool) for x in ints.values()):
        raise OffsetRecordError(f"offsets value has a non-integer field: {v!r:.80}")
    metadata = v.get("metadata", "")
    if not isinstance(metadata, str):
        raise OffsetRecordError("offsets value: metadata must be text")
    return CommittedOffset(ints["offset"], metadata, ints["commit_timestamp"], ints["leader_epoch"])


def commit_record(group_id: str, topic: str, partition: int, committed: CommittedOffset,
                  offsets_partitions: int) -> OffsetRecord:
    return OffsetRecord(partition_for_group(group_id, offsets_partitions),
                        encode_key(group_id, topic, partition), encode_value(committed))


def tombstone_record(group_id: str, topic: str, partition: int, offsets_partitions: int) -> OffsetRecord:
    return OffsetRecord(partition_for_group(group_id, offsets_partitions),
                        encode_key(group_id, topic, partition), None)


class OffsetStore:
    """Committed offsets in memory: group -> (topic, partition) -> ``CommittedOffset``."""

    def __init__(self) -> None:
        self._groups: dict[str, dict[TopicPartition, CommittedOffset]] = {}

    @classmethod
    def load(cls, records: Iterable[tuple[bytes, bytes | None]]) -> "OffsetStore":
        """A store rebuilt from replayed ``(key, value)`` records, in log order."""
        store = cls()
        store.apply(records)
        return store

    def apply(self, records: Iterable[tuple[bytes, bytes | None]]) -> int:
        """Apply ``(key, value)`` records in log order; returns how many were skipped (unknown key
        version or malformed)."""
        skipped = 0
        for key, value in records:
            try:
                k = decode_key(key)
                if k is None:
                    skipped += 1
                    continue
                committed = None if value is None else decode_value(value)
            except OffsetRecordError:
                skipped += 1
                continue
            group, topic, partition = k
            if committed is None:
                offsets = self._groups.get(group)
                if offsets is not None:
                    offsets.pop((topic, partition), None)
                    if not offsets:
                        del self._groups[group]
            else:
                self._groups.setdefault(group, {})[(topic, partition)] = committed
        return skipped

    def get(self, group_id: str, topic: str, partition: int) -> CommittedOffset | None:
        return self._groups.get(group_id, {}).get((topic, partition))

    def fetch(self, group_id: str, topics: Iterable[tuple[str, Iterable[int] | None]] | None = None,
              ) -> Iterator[tuple[str, int, CommittedOffset | None]]:
        """``(topic, partition, committed or None)`` for the asked partitions; ``topics=None``
        means every committed partition of the group, a topic with ``partitions=None`` every
        committed partition of that topic.  Sorted by topic and partition."""
        offsets = self._groups.get(group_id, {})
        if topics is None:
            for tp in sorted(offsets):
                yield tp[0], tp[1], offsets[tp]
            return
        for topic, partitions in topics:
            if partitions is None:
                parts: Iterable[int] = sorted(p for (t, p) in offsets if t == topic)
            else:
                parts = partitions
            for p in parts:
                yield topic, p, offsets.get((topic, p))

    def rows(self, group_id: str, topics: Iterable[tuple[str, Iterable[int] | None]] | None = None,
             ) -> list[dict[str, Any]]:
        """``fetch`` as reply rows; a partition without a commit has offset -1."""
        missing = CommittedOffset(-1)
        return [{"topic": t, "partition": p, **(c or missing).to_wire()} for t, p, c in self.fetch(group_id, topics)]

    def has_group(self, group_id: str) -> bool:
        return group_id in self._groups

    def groups(self) -> list[str]:
        return sorted(self._groups)

    def tombstones(self, group_id: str, offsets_partitions: int) -> list[OffsetRecord]:
        """Records deleting every committed offset of ``group_id`` (for ``delete_groups``)."""
        return [tombstone_record(group_id, t, p, offsets_partitions)
                for (t, p) in sorted(self._groups.get(group_id, {}))]

    def drop_group(self, group_id: str) -> None:
        """Forget a group in memory only (its offsets partition moved to another broker)."""
        self._groups.pop(group_id, None)
