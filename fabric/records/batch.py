"""Record batches: the unit of everything (produce, disk, replication, fetch).

Byte layout (all integers big-endian; SPEC.md "Record batch" is the normative copy)::

    offset size field
     0      8   base_offset        int64   first record's offset (set by the broker; clients send 0)
     8      4   batch_length       int32   bytes after this field (total size - 12)
    12      4   leader_epoch       int32   set by the broker (clients send -1)
    16      1   magic              int8    format version, 1
    17      4   crc                uint32  CRC-32 (ISO-HDLC, zlib.crc32) of bytes [21, end)
    21      2   attributes         int16   bits 0-2 compression (0 none, 1 zlib), bit 3 timestamp
                                           type (0 create time, 1 log-append time), bits 4-15 zero
    23      4   last_offset_delta  int32   record_count - 1
    27      8   base_timestamp     int64   ms since the epoch of the first record
    35      8   max_timestamp      int64   largest record timestamp
    43      8   producer_id        int64   -1 unless idempotent
    51      2   producer_epoch     int16   -1 unless idempotent
    53      4   base_sequence      int32   -1 unless idempotent
    57      4   record_count       int32   >= 1
    61      …   records            CBOR (zlib-deflated if compression = 1): an array of 4 arrays,
                                   each ``record_count`` long, in record order:
                                   [timestamp deltas (int, ms from base_timestamp),
                                    keys (bytes | null), values (bytes | null),
                                    headers (null | array of [text name, bytes value])]

Why columns: the Python cost per record is a list append when producing and one ``zip`` when
consuming; cbor2's C code does the rest.  Why CRC-32 rather than Kafka's CRC-32C: every
language's standard library has CRC-32 (Python zlib, Java java.util.zip.CRC32, Go hash/crc32
IEEE, .NET System.IO.Hashing, Node zlib.crc32), so a new client needs no extra package, and
zlib's is hardware-assisted.  The CRC starts at ``attributes`` so the broker can stamp
``base_offset`` and ``leader_epoch`` without recomputing it, exactly as Kafka does.

The broker only ever touches the 61-byte header (``BatchHeader``) of a batch: it never decodes
records on the hot path.  Clients build (``BatchBuilder``/``encode_batch``) and decode
(``decode_records``) the records section.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from itertools import repeat
from operator import add
from typing import Iterable, Iterator, NamedTuple, Sequence

import cbor2

from ..protocol.errors import FabricError

MAGIC = 1
HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size  # 61
LENGTH_PREFIX = struct.Struct(">qi")  # base_offset + batch_length: enough to walk a log
LOG_OVERHEAD = 12  # bytes before batch_length counts
CRC_START = 21
ATTR_COMPRESSION_MASK = 0x07
ATTR_LOG_APPEND_TIME = 0x08
COMPRESSION_NONE = 0
COMPRESSION_ZLIB = 1
_BASE_OFFSET = struct.Struct(">q")
_EPOCH = struct.Struct(">i")
_MAX_TS = struct.Struct(">q")

assert HEADER_SIZE == 61


class Record(NamedTuple):
    """One consumed event.  A NamedTuple because consumers create millions of them."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]  # () when the record has none


NO_HEADERS: tuple = ()
_new_tuple = tuple.__new__


class BatchHeader(NamedTuple):
    """The 61-byte batch header.  A NamedTuple: a consumer at the tail parses one per fetched
    batch, and a frozen dataclass's ``__init__`` cost ten times the ``struct`` unpack."""

    base_offset: int
    batch_length: int
    leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1


_new_header = tuple.__new__


def parse_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    if len(buf) - pos < HEADER_SIZE:
        raise FabricError("CORRUPT_BATCH", f"batch header truncated: {len(buf) - pos} of {HEADER_SIZE} bytes")
    return _new_header(BatchHeader, HEADER.unpack_from(buf, pos))


def validate_batch(buf: bytes | bytearray | memoryview, max_bytes: int, max_records: int) -> BatchHeader:
    """The broker's whole check of a produced batch: framing, CRC, counts.  Never decodes records.

    Raises ``FabricError`` (CORRUPT_BATCH / INVALID_BATCH / BATCH_TOO_LARGE) naming the numbers.
    """
    n = len(buf)
    if n > max_bytes:
        raise FabricError("BATCH_TOO_LARGE", f"batch is {n} bytes; the limit is {max_bytes}")
    h = parse_header(buf)
    if h.batch_length != n - LOG_OVERHEAD:
        raise FabricError("CORRUPT_BATCH",
                          f"batch_length says {h.batch_length} but the frame holds {n - LOG_OVERHEAD} bytes after it")
    if h.magic != MAGIC:
        raise FabricError("INVALID_BATCH", f"unsupported batch magic {h.magic} (this broker reads {MAGIC})")
    crc = zlib.crc32(memoryview(buf)[CRC_START:])
    if crc != h.crc:
        raise FabricError("CORRUPT_BATCH", f"batch CRC mismatch: header says {h.crc:#010x}, data gives {crc:#010x}")
    if h.record_count < 1 or h.record_count > max_records:
        raise FabricError("INVALID_BATCH", f"record_count {h.record_count} outside [1, {max_records}]")
    if h.last_offset_delta != h.record_count - 1:
        raise FabricError("INVALID_BATCH",
                          f"last_offset_delta {h.last_offset_delta} must be record_count - 1 = {h.record_count - 1}")
    if h.attributes & ~0x0F or (h.attributes & ATTR_COMPRESSION_MASK) > COMPRESSION_ZLIB:
        raise FabricError("INVALID_BATCH", f"unknown attribute bits {h.attributes:#06x}")
    if h.base_timestamp < 0 or h.max_timestamp < h.base_timestamp:
        raise FabricError("INVALID_BATCH", f"timestamps must satisfy 0 <= base_timestamp ({h.base_timestamp}) "
                                           f"<= max_timestamp ({h.max_timestamp})")
    if n == HEADER_SIZE:
        raise FabricError("INVALID_BATCH", "batch has no records section")
    if h.max_timestamp > TIMESTAMP_MAX:
        raise FabricError("INVALID_BATCH", f"max_timestamp {h.max_timestamp} is after the year 9999 "
                                           f"(at most {TIMESTAMP_MAX})")
    if h.attributes & ATTR_COMPRESSION_MASK == COMPRESSION_NONE:
        _check_plain_records(buf, h.record_count)
    else:
        _check_zlib_records(buf, h.record_count)
    return h


# What the header can prove about the records without decoding them (SPEC §6.6, rules 11-15).  A
# batch whose CRC is right can still lie: ``record_count`` is what moves the log end, so a batch
# of 71 bytes claiming a million records would advance the log by a million offsets that no
# consumer can ever read.  Each column holds ``record_count`` items of at least one byte (an
# integer 0-23, null), and the outer array and four column heads take at least one byte each:
# an uncompressed records section has at least ``4 * record_count + 5`` bytes.  DEFLATE
# expands at most 1032 times (a 258-byte match in two bits), so a zlib section of ``L`` bytes
# (a 2-byte header and a 4-byte Adler-32 around the DEFLATE stream) holds at most
# ``1032 * (L - 6)`` bytes once inflated.
RECORD_BYTES_MIN = 4
COLUMNS_OVERHEAD_MIN = 5
DEFLATE_EXPANSION_MAX = 1032
ZLIB_OVERHEAD = 6
TIMESTAMP_MAX = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z in ms


def _check_plain_records(buf: bytes | bytearray | memoryview, record_count: int) -> None:
    size = len(buf) - HEADER_SIZE
    # One byte, not a decode: an uncompressed records section must open a 4-element CBOR array
    # (0x84) or an indefinite-length array (0x9f).  Catches clients that send raw values.
    if buf[HEADER_SIZE] not in (0x84, 0x9F):
        raise FabricError("INVALID_BATCH", f"records section must start with a CBOR array of 4 columns "
                                           f"(0x84), not {buf[HEADER_SIZE]:#04x}")
    least = RECORD_BYTES_MIN * record_count + COLUMNS_OVERHEAD_MIN
    if size < least:
        raise FabricError("INVALID_BATCH", f"record_count {record_count} cannot fit in a records section of "
                                           f"{size} bytes (4 columns of {record_count} items need {least})")
    # The first column's array head follows at once: when its length is written, it is the count.
    head = buf[HEADER_SIZE + 1]
    if head >> 5 != 4 or 28 <= head & 0x1F <= 30:
        raise FabricError("INVALID_BATCH", f"the first column (timestamp deltas) must be a CBOR array, "
                                           f"not a value starting {head:#04x}")
    info = head & 0x1F
    if info == 31:
        return  # an indefinite-length column: its length is known only by reading it
    if info < 24:
        length = info
    else:
        width = 1 << (info - 24)
        length = int.from_bytes(buf[HEADER_SIZE + 2: HEADER_SIZE + 2 + width], "big")
    if length != record_count:
        raise FabricError("INVALID_BATCH", f"record_count is {record_count} but the first column holds "
                                           f"{length} timestamp deltas")


def _check_zlib_records(buf: bytes | bytearray | memoryview, record_count: int) -> None:
    size = len(buf) - HEADER_SIZE
    if size < ZLIB_OVERHEAD + 1:
        raise FabricError("INVALID_BATCH", f"a zlib records section of {size} bytes is too short")
    cmf, flg = buf[HEADER_SIZE], buf[HEADER_SIZE + 1]
    # RFC 1950: CM 8 (deflate), CINFO <= 7 (window <= 32 KiB), FCHECK, no preset dictionary
    if cmf & 0x0F != 8 or cmf >> 4 > 7 or ((cmf << 8) | flg) % 31 or flg & 0x20:
        raise FabricError("INVALID_BATCH", f"records section does not start with a zlib header "
                                           f"(RFC 1950, no preset dictionary): {cmf:#04x} {flg:#04x}")
    most = DEFLATE_EXPANSION_MAX * (size - ZLIB_OVERHEAD)
    least = RECORD_BYTES_MIN * record_count + COLUMNS_OVERHEAD_MIN
    if least > most:
        raise FabricError("INVALID_BATCH", f"record_count {record_count} cannot fit in a zlib records section "
                                           f"of {size} bytes (it inflates to at most {most}, {least} needed)")


def stamp(batch: bytearray, base_offset: int, leader_epoch: int) -> None:
    """Write broker-assigned fields in place; both lie outside the CRC."""
    _BASE_OFFSET.pack_into(batch, 0, base_offset)
    _EPOCH.pack_into(batch, 12, leader_epoch)


def set_log_append_time(batch: bytearray, now_ms: int) -> None:
    """For topics with ``timestamp_type: log_append_time``: the broker's clock wins (one CRC per batch)."""
    attrs = struct.unpack_from(">h", batch, 21)[0] | ATTR_LOG_APPEND_TIME
    struct.pack_into(">h", batch, 21, attrs)
    _MAX_TS.pack_into(batch, 27, now_ms)  # base_timestamp too, so base <= max still holds
    _MAX_TS.pack_into(batch, 35, now_ms)
    struct.pack_into(">I", batch, 17, zlib.crc32(memoryview(batch)[CRC_START:]))


def iter_headers(data: bytes | memoryview, pos: int = 0) -> Iterator[tuple[int, BatchHeader]]:
    """Walk concatenated batches (a fetch reply, a segment), yielding (position, header).
    Stops quietly at a truncated tail; a corrupt length raises."""
    end = len(data)
    while end - pos >= HEADER_SIZE:
        h = parse_header(data, pos)
        if h.batch_length < HEADER_SIZE - LOG_OVERHEAD:
            raise FabricError("CORRUPT_BATCH", f"batch at byte {pos} has impossible length {h.batch_length}")
        if pos + h.size > end:
            return
        yield pos, h
        pos += h.size


def encode_batch(timestamps: Sequence[int], keys: Sequence[bytes | None], values: Sequence[bytes | None],
                 headers: Sequence[Sequence[tuple[str, bytes]] | None] | None = None, *,
                 compression: int = COMPRESSION_NONE, producer_id: int = -1, producer_epoch: int = -1,
                 base_sequence: int = -1) -> bytes:
    """Build one batch from columns.  ``timestamps`` are absolute ms."""
    count = len(values)
    if count == 0:
        raise ValueError("a batch needs at least one record")
    if len(keys) != count or len(timestamps) != count or (headers is not None and len(headers) != count):
        raise ValueError("columns must have the same length")
    base_ts = timestamps[0]
    max_ts = max(timestamps)
    deltas = [t - base_ts for t in timestamps]
    hdrs = [None] * count if headers is None else [None if not h else [[n, v] for n, v in h] for h in headers]
    body = cbor2.dumps([deltas, list(keys), list(values), hdrs])
    if compression == COMPRESSION_ZLIB:
        body = zlib.compress(body, 1)
    elif compression != COMPRESSION_NONE:
        raise ValueError(f"unknown compression {compression}")
    rest = struct.pack(">hiqqqhii", compression, count - 1, base_ts, max_ts, producer_id, producer_epoch,
                       base_sequence, count) + body
    crc = zlib.crc32(rest)
    return struct.pack(">qiibI", 0, len(rest) + 9, -1, MAGIC, crc) + rest


def producer_fields(data: bytes | bytearray) -> tuple[int, int, int]:
    """(producer_id, producer_epoch, base_sequence) of an encoded batch."""
    return _PRODUCER_FIELDS.unpack_from(data, 43)


_PRODUCER_FIELDS = struct.Struct(">qhi")


def restamp_producer(data: bytes | bytearray, producer_id: int, producer_epoch: int, base_sequence: int) -> bytes:
    """A copy of an encoded batch under another producer numbering (CRC recomputed): what an
    idempotent producer re-sends after bumping its epoch (SPEC 14.5), the records untouched."""
    out = bytearray(data)
    _PRODUCER_FIELDS.pack_into(out, 43, producer_id, producer_epoch, base_sequence)
    struct.pack_into(">I", out, 17, zlib.crc32(memoryview(out)[CRC_START:]))
    return bytes(out)


def decode_records(topic: str, partition: int, batch: bytes | memoryview, h: BatchHeader | None = None,
                   verify_crc: bool = True) -> list[Record]:
    """Client side: turn one stored batch into ``Record``s (checks CRC and column shapes)."""
    if h is None:
        h = parse_header(batch)
    view = memoryview(batch)[: h.size]
    if len(view) < h.size:
        raise FabricError("CORRUPT_BATCH", "batch truncated")
    if verify_crc and zlib.crc32(view[CRC_START:]) != h.crc:
        raise FabricError("CORRUPT_BATCH", f"CRC mismatch in batch at offset {h.base_offset}")
    body = view[HEADER_SIZE:]
    if h.attributes & ATTR_COMPRESSION_MASK == COMPRESSION_ZLIB:
        body = memoryview(zlib.decompress(body))
    try:
        cols = cbor2.loads(body)
        deltas, keys, values, hdrs = cols
    except Exception as exc:
        raise FabricError("CORRUPT_BATCH", f"records section of batch at offset {h.base_offset} unreadable: {exc}") from None
    n = h.record_count
    if not (len(deltas) == len(keys) == len(values) == len(hdrs) == n):
        raise FabricError("CORRUPT_BATCH", f"batch at offset {h.base_offset}: columns disagree with record_count {n}")
    # Built with map/zip over columns so the per-record work runs in C: a consumer makes millions
    # of these.  (tuple.__new__(Record, row) is what Record._make does, minus the Python call.)
    if h.attributes & ATTR_LOG_APPEND_TIME:
        stamps: Iterable[int] = repeat(h.max_timestamp, n)
    else:
        stamps = map(add, deltas, repeat(h.base_timestamp, n))
    if any(hdrs):
        headers: Iterable = [NO_HEADERS if hd is None else _header_pairs(hd, h) for hd in hdrs]
    else:
        headers = repeat(NO_HEADERS, n)
    rows = zip(repeat(topic, n), repeat(partition, n), range(h.base_offset, h.base_offset + n), stamps, keys, values,
               headers)
    return list(map(_new_tuple, repeat(Record, n), rows))


@dataclass(slots=True)
class RecordColumns:
    """One batch's records as columns: the zero-per-record-object view for high-throughput
    consumers (``Consumer.poll_batches``).  Iterating yields ``Record``s, built on demand.
    Treat it as read-only; it is not frozen because a frozen dataclass's ``__init__`` costs
    as much as decoding a small batch, and a tail consumer makes one per batch."""

    topic: str
    partition: int
    offsets: range | list[int]  # a range for a fetched batch (its offsets are consecutive)
    timestamp_base: int
    timestamp_deltas: list[int] | None  # None: every record has timestamp_base (log-append time)
    keys: list[bytes | None]
    values: list[bytes | None]
    headers: list[Sequence[tuple[str, bytes]]] | None  # None when no record has headers

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def timestamps(self) -> list[int]:
        n = len(self.offsets)
        if self.timestamp_deltas is None:
            return [self.timestamp_base] * n
        return list(map(add, self.timestamp_deltas, repeat(self.timestamp_base, n)))

    def __iter__(self) -> Iterator[Record]:
        n = len(self.offsets)
        hdrs = repeat(NO_HEADERS, n) if self.headers is None else self.headers
        rows = zip(repeat(self.topic, n), repeat(self.partition, n), self.offsets, self.timestamps, self.keys,
                   self.values, hdrs)
        return map(_new_tuple, repeat(Record, n), rows)


def decode_columns(topic: str, partition: int, batch: bytes | memoryview, h: BatchHeader | None = None,
                   start_offset: int = 0) -> RecordColumns:
    """Like ``decode_records`` but columnar, dropping records before ``start_offset``."""
    if h is None:
        h = parse_header(batch)
    view = memoryview(batch)[: h.size]
    if len(view) < h.size or zlib.crc32(view[CRC_START:]) != h.crc:
        raise FabricError("CORRUPT_BATCH", f"CRC mismatch or truncation in batch at offset {h.base_offset}")
    body = view[HEADER_SIZE:]
    if h.attributes & ATTR_COMPRESSION_MASK == COMPRESSION_ZLIB:
        body = memoryview(zlib.decompress(body))
    try:
        deltas, keys, values, hdrs = cbor2.loads(body)
    except Exception as exc:
        raise FabricError("CORRUPT_BATCH", f"records section of batch at offset {h.base_offset} unreadable: {exc}") from None
    n = h.record_count
    if not (len(deltas) == len(keys) == len(values) == len(hdrs) == n):
        raise FabricError("CORRUPT_BATCH", f"batch at offset {h.base_offset}: columns disagree with record_count {n}")
    lat = bool(h.attributes & ATTR_LOG_APPEND_TIME)
    base_ts = h.max_timestamp if lat else h.base_timestamp
    headers = [NO_HEADERS if hd is None else _header_pairs(hd, h) for hd in hdrs] if any(hdrs) else None
    skip = max(0, start_offset - h.base_offset)
    if skip:
        deltas, keys, values = deltas[skip:], keys[skip:], values[skip:]
        headers = headers[skip:] if headers is not None else None
    return RecordColumns(topic, partition, range(h.base_offset + skip, h.base_offset + n), base_ts,
                         None if lat else deltas, keys, values, headers)


def batch_spans(data: bytes | memoryview) -> list[tuple[int, BatchHeader]]:
    """Every whole batch of a fetch payload as (position, header): a consumer walks a reply's
    headers once and hands the list to ``next_offset_in`` and ``columns_in``."""
    return list(iter_headers(data))


def next_offset_in(data: bytes | memoryview, start_offset: int = 0,
                   spans: list[tuple[int, BatchHeader]] | None = None) -> int:
    """The offset after the last whole batch of a fetch payload (``start_offset`` if there is
    none): where the next fetch starts, known from the headers alone, without decoding records."""
    end = start_offset
    for _, h in batch_spans(data) if spans is None else spans:
        if h.next_offset > end:
            end = h.next_offset
    return end


def columns_in(topic: str, partition: int, data: bytes | memoryview, start_offset: int = 0,
               spans: list[tuple[int, BatchHeader]] | None = None) -> list[RecordColumns]:
    """Every whole batch of a fetch payload as ``RecordColumns`` (records before ``start_offset``
    dropped).  ``spans``: ``batch_spans(data)``, if the caller has it already."""
    out: list[RecordColumns] = []
    view = memoryview(data)
    for pos, h in batch_spans(data) if spans is None else spans:
        if h.next_offset <= start_offset:
            continue
        out.append(decode_columns(topic, partition, view[pos: pos + h.batch_length + LOG_OVERHEAD], h, start_offset))
    return out


def _header_pairs(hd: object, h: BatchHeader) -> list[tuple[str, bytes]]:
    """A record's headers as (text, bytes) pairs; anything else is a corrupt batch, not a crash
    somewhere in the application."""
    try:
        pairs = [(a, b) for a, b in hd]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        pairs = None
    if pairs is None or not all(type(a) is str and type(b) is bytes for a, b in pairs):
        raise FabricError("CORRUPT_BATCH", f"batch at offset {h.base_offset}: headers must be [text, bytes] pairs")
    return pairs


def records_in(topic: str, partition: int, data: bytes | memoryview, start_offset: int = 0) -> list[Record]:
    """Decode every whole batch of a fetch payload, dropping records before ``start_offset``
    (a fetch returns the whole batch that contains the requested offset)."""
    out: list[Record] = []
    for pos, h in iter_headers(data):
        if h.next_offset <= start_offset:
            continue
        recs = decode_records(topic, partition, memoryview(data)[pos: pos + h.size], h)
        if h.base_offset < start_offset:
            recs = recs[start_offset - h.base_offset:]
        out.extend(recs)
    return out
