"""Check a cluster run: were the acknowledged records kept, in order, identically on every replica?

Why offline and from the disk: a fault drill (kill a leader, cut a link) must be judged by what
survived, not by what a client happened to read.  A test (or ``tools/cluster_check.py``) gives
this module the log of records the producers saw acknowledged and every replica's data
directory; it reads the stored segments read-only (nothing here opens a log for writing or runs
recovery) and reports:

- **lost**: an acknowledged record that no replica holds at its acknowledged offset (absent, or
  another record there);
- **reordered**: two acknowledgements of one key (per partition) whose offsets go backwards in
  acknowledgement order (one producer per key, sending in order, must see increasing offsets);
- **divergent**: an offset below the smallest log end of the partition's replicas where two
  replicas hold different records (or one holds none, except in a compacted topic: each replica
  compacts its own closed segments when it rolls them, so one may already have dropped a record
  its key superseded while another still holds it, as in Kafka);
- **duplicates**: one key and value at two offsets of a partition (at-least-once delivery allows
  them: reported, not a failure of ``ok``; ``exactly_once`` fails on them too, which is what an
  idempotent producer -- the default -- promises).

The acknowledgement log ("ack log") is JSON lines, one per acknowledged record, in the order the
acknowledgements arrived; ``ack_line`` writes one::

    {"topic": "orders", "partition": 0, "offset": 17, "key": "6b31", "value_sha256": "9f86d0..."}

``key`` is the key's bytes in lowercase hex (``null``: no key), ``value_sha256`` the SHA-256 of
the value's bytes in lowercase hex (``null``: no value).  Unknown fields are ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from ..log.files import LOG, parse_segment_file
from ..protocol.errors import FabricError
from ..records.batch import HEADER_SIZE, decode_records, parse_header

log = logging.getLogger(__name__)

TP = tuple[str, int]  # (topic, partition)
Content = tuple[str | None, str | None]  # (key hex, value sha256 hex)
READ_CHUNK = 1 << 20


def content_of(key: bytes | None, value: bytes | None) -> Content:
    return (None if key is None else key.hex(),
            None if value is None else hashlib.sha256(value).hexdigest())


def ack_line(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> str:
    """One line of the ack log (with its newline), for a record acknowledged at ``offset``."""
    k, v = content_of(key, value)
    return json.dumps({"topic": topic, "partition": partition, "offset": offset, "key": k,
                       "value_sha256": v}) + "\n"


@dataclass(frozen=True)
class Ack:
    topic: str
    partition: int
    offset: int
    content: Content
    line: int  # 1-based line in the ack log: the acknowledgement order


def read_acks(lines: Iterable[str]) -> list[Ack]:
    """Parse an ack log; a malformed line raises ``ValueError`` naming its number."""
    out: list[Ack] = []
    for n, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
            topic, partition, offset = row["topic"], row["partition"], row["offset"]
            key, value = row.get("key"), row.get("value_sha256")
            if not isinstance(topic, str) or type(partition) is not int or type(offset) is not int or offset < 0:
                raise ValueError("topic must be text, partition and offset non-negative integers")
            if not all(x is None or isinstance(x, str) for x in (key, value)):
                raise ValueError("key and value_sha256 must be hex text or null")
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"ack log line {n}: {exc}") from None
        out.append(Ack(topic, partition, offset, (key, value), n))
    return out


@dataclass
class PartitionData:
    """What one replica stores for one partition: offset -> content, and its log end."""

    records: dict[int, Content] = field(default_factory=dict)
    log_end: int = 0
    damaged_at: int | None = None  # offset where reading stopped at a damaged or torn batch


def _batches(data: bytes | memoryview) -> Iterator[tuple[int, memoryview]]:
    """(position, batch) for each whole batch of a segment's bytes, stopping at a torn tail."""
    view = memoryview(data)
    pos = 0
    while pos + HEADER_SIZE <= len(view):
        h = parse_header(view[pos:])
        if h.size < HEADER_SIZE or pos + h.size > len(view):
            return
        yield pos, view[pos:pos + h.size]
        pos += h.size


def read_batches(data: bytes | memoryview, into: PartitionData, topic: str = "", partition: int = 0) -> None:
    """Add the records of consecutive stored batches to ``into`` (CRC checked; stops at damage)."""
    for _, batch in _batches(data):
        try:
            h = parse_header(batch)
            records = decode_records(topic, partition, batch, h)
        except FabricError as exc:
            into.damaged_at = parse_header(batch).base_offset
            log.warning("%s-%d: stopped at a damaged batch: %s", topic, partition, exc)
            return
        for r in records:
            into.records[r.offset] = content_of(r.key, r.value)
        into.log_end = max(into.log_end, h.base_offset + h.last_offset_delta + 1)


def read_partition_dir(directory: Path, topic: str = "", partition: int = 0) -> PartitionData:
    """Read every live segment of one partition directory, read-only, in offset order."""
    out = PartitionData()
    bases = sorted(p.base_offset for p in map(parse_segment_file, os.listdir(directory))
                   if p is not None and p.suffix == LOG and p.state == "")
    for base in bases:
        out.log_end = max(out.log_end, base)
        with open(directory / f"{base:020d}{LOG}", "rb") as f:
            read_batches(f.read(), out, topic, partition)
        if out.damaged_at is not None:
            break
    return out


def read_store(store: Any, topic: str = "", partition: int = 0) -> PartitionData:
    """The same from a ``LogStore`` (``MemoryLog`` or an open ``PartitionLog``), via ``read``."""
    out = PartitionData(log_end=store.start_offset)
    offset = store.start_offset
    while offset < store.end_offset:
        data = store.read(offset, READ_CHUNK)
        if not data:
            break
        read_batches(data, out, topic, partition)
        if out.log_end <= offset:
            break
        offset = out.log_end
    return out


def split_partition_dir(name: str) -> TP | None:
    """``orders-3`` -> ("orders", 3): the broker's ``{topic}-{partition}`` directory names."""
    topic, sep, part = name.rpartition("-")
    return (topic, int(part)) if sep and topic and part.isdigit() else None


def read_data_dir(path: Path) -> dict[TP, PartitionData]:
    """Every partition of one broker data directory."""
    out: dict[TP, PartitionData] = {}
    for d in sorted(path.iterdir()):
        tp = split_partition_dir(d.name) if d.is_dir() else None
        if tp is not None and any((p := parse_segment_file(n)) is not None and p.suffix == LOG for n in os.listdir(d)):
            out[tp] = read_partition_dir(d, *tp)
    return out


@dataclass
class Finding:
    kind: str  # lost | reordered | divergent | duplicate
    topic: str
    partition: int
    offset: int
    detail: str


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    acks: int = 0
    partitions: int = 0
    replicas: int = 0

    FAILING = ("lost", "reordered", "divergent")

    def of(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    @property
    def ok(self) -> bool:
        """No loss, reordering or divergence (duplicates alone are allowed)."""
        return not any(f.kind in self.FAILING for f in self.findings)

    @property
    def exactly_once(self) -> bool:
        """``ok`` and no duplicate either: the idempotent producer's promise."""
        return self.ok and not self.of("duplicate")

    def to_dict(self) -> dict[str, Any]:
        counts = {k: len(self.of(k)) for k in (*self.FAILING, "duplicate")}
        return {"ok": self.ok, "acks": self.acks, "partitions": self.partitions, "replicas": self.replicas,
                "counts": counts, "findings": [asdict(f) for f in self.findings]}


COMPACTED_TOPICS = frozenset({"__consumer_offsets"})  # the internal topics with cleanup_policy compact


def check(acks: list[Ack], replicas: Mapping[str, Mapping[TP, PartitionData]],
          compacted: frozenset[str] | set[str] = COMPACTED_TOPICS) -> Report:
    """Judge one run: ``replicas`` maps a replica's name (e.g. its data dir) to its partitions;
    ``compacted``: the topics whose replicas may each have compacted away different records."""
    report = Report(acks=len(acks), replicas=len(replicas))
    tps = sorted({tp for parts in replicas.values() for tp in parts} | {(a.topic, a.partition) for a in acks})
    report.partitions = len(tps)
    for a in acks:
        _check_lost(a, replicas, report)
    _check_order(acks, report)
    for tp in tps:
        held = {name: parts[tp] for name, parts in replicas.items() if tp in parts}
        _check_divergence(tp, held, report, tp[0] in compacted)
        _check_duplicates(tp, held, report)
    return report


def _check_lost(a: Ack, replicas: Mapping[str, Mapping[TP, PartitionData]], report: Report) -> None:
    tp = (a.topic, a.partition)
    there = {name: parts[tp].records.get(a.offset) for name, parts in replicas.items() if tp in parts}
    if any(c == a.content for c in there.values()):
        return
    elsewhere = sorted({o for parts in replicas.values() if tp in parts
                        for o, c in parts[tp].records.items() if c == a.content})
    what = "no replica holds that offset" if all(c is None for c in there.values()) else \
        "every replica holding that offset holds another record there"
    more = f"; the same key and value are at offsets {elsewhere[:5]}" if elsewhere else ""
    report.findings.append(Finding("lost", a.topic, a.partition, a.offset,
                                   f"acknowledged (ack log line {a.line}) but {what}{more}"))


def _check_order(acks: list[Ack], report: Report) -> None:
    last: dict[tuple[str, int, str | None], Ack] = {}
    for a in acks:
        if a.content[0] is None:
            continue  # keyless records promise no order between them
        k = (a.topic, a.partition, a.content[0])
        prev = last.get(k)
        if prev is not None and a.offset <= prev.offset:
            report.findings.append(Finding(
                "reordered", a.topic, a.partition, a.offset,
                f"key {a.content[0]}: acknowledged at offset {a.offset} (line {a.line}) after offset "
                f"{prev.offset} (line {prev.line})"))
        if prev is None or a.offset > prev.offset:
            last[k] = a


def _check_divergence(tp: TP, held: Mapping[str, PartitionData], report: Report, compacted: bool = False) -> None:
    if len(held) < 2:
        return
    upto = min(min(p.log_end, p.damaged_at if p.damaged_at is not None else p.log_end) for p in held.values())
    offsets = sorted({o for p in held.values() for o in p.records if o < upto})
    names = sorted(held)
    for o in offsets:
        seen = {n: held[n].records.get(o) for n in names}
        differ = set(seen.values())
        if compacted:
            differ.discard(None)  # (compacted away on that replica, kept on another)
        if len(differ) > 1:
            shown = ", ".join(f"{n}: {'absent' if c is None else _short(c)}" for n, c in seen.items())
            report.findings.append(Finding("divergent", tp[0], tp[1], o,
                                           f"below the smallest log end {upto}, replicas differ ({shown})"))


def _check_duplicates(tp: TP, held: Mapping[str, PartitionData], report: Report) -> None:
    if not held:
        return
    longest = max(held.values(), key=lambda p: p.log_end)  # the fullest copy speaks for the partition
    first: dict[Content, int] = {}
    for o in sorted(longest.records):
        c = longest.records[o]
        if c in first:
            report.findings.append(Finding("duplicate", tp[0], tp[1], o,
                                           f"same key and value as offset {first[c]} ({_short(c)})"))
        else:
            first[c] = o


def _short(c: Content) -> str:
    key = "no key" if c[0] is None else f"key {c[0][:16]}"
    value = "no value" if c[1] is None else f"value sha256 {c[1][:12]}"
    return f"{key}, {value}"
