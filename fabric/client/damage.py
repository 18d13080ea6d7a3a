"""Reading a fetch reply that may hold damaged data: keep every good record before the damage,
then say exactly where it is, once.

Why: a flipped byte on the broker's disk used to stall a consumer (bytes that did not start at a
batch boundary parsed as "no whole batch", so its position never moved) or make it raise on every
poll while throwing away the intact records of the same reply.  Here a reply's payload is walked
in two steps, both pure:

1. ``scan``: the batch headers only (magic, length within the reply, counts, offsets moving
   forward), before anything is decoded, so the next fetch can leave at once (prefetch) and stops
   at the first header that makes no sense;
2. ``decode``: each batch in turn (CRC, records section, column lengths); the first one that fails
   ends the list.

Either step answers ``Damage(offset, skip_offset, reason)`` for the first bad spot; the consumer
delivers what came before it, then raises ``CorruptRecordError`` once.  (A bad header after good
batches is not raised at once: the consumer fetches again from it, so the broker's read starts
there and checks it, and answers exactly where the damage on its disk ends; see
``FetchPipeline._on_fetch_reply``.)
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

from ..protocol.errors import EXCEPTIONS, FabricError
from ..records.batch import (CRC_START, HEADER, HEADER_SIZE, LOG_OVERHEAD, MAGIC, BatchHeader, RecordColumns,
                             decode_columns)

CorruptBatchError = EXCEPTIONS["CORRUPT_BATCH"]
_MIN_BATCH_BYTES = HEADER_SIZE + 1


class CorruptRecordError(CorruptBatchError):  # type: ignore[misc, valid-type]
    """Records of ``topic``/``partition`` from ``offset`` on cannot be read: the batch there is
    damaged (reported by the broker, which found it on its disk, or found by this client: CRC,
    length, header or records section).  Every record before ``offset`` was delivered first;
    the consumer raises this once and then leaves the partition where it is (other partitions go
    on) until you move it.

    To skip the damaged records, seek past them::

        except CorruptRecordError as exc:
            log.error("skipping damaged records: %s", exc)
            consumer.seek((exc.topic, exc.partition), exc.skip_offset)

    ``skip_offset`` is the first offset known to be readable after the damage (the next batch,
    or for damage the broker found, the next intact batch it found on disk); ``None`` if nobody
    knows, then pick an offset yourself (``fabric log verify`` on the broker's data directory
    lists what is damaged).  The records between ``offset`` and ``skip_offset`` are lost to this
    consumer; in rare cases seeking there meets more damage and raises again, with a later
    ``skip_offset``.  A subclass of ``CorruptBatchError``, so code catching that still works."""

    def __init__(self, topic: str, partition: int, offset: int, skip_offset: int | None, reason: str) -> None:
        where = f"seek to offset {skip_offset} to skip it" if skip_offset is not None else "no readable offset after it is known"
        super().__init__("CORRUPT_BATCH", f"{topic}/{partition}: records from offset {offset} are damaged "
                                          f"({reason}); {where}")
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.skip_offset = skip_offset


class Damage(NamedTuple):
    offset: int  # the first offset not delivered
    skip_offset: int | None  # the first offset known to follow the damage
    reason: str


def _header_problem(h: BatchHeader, pos: int, end: int) -> str:
    if h.magic != MAGIC:
        return f"magic {h.magic}"
    if h.size < _MIN_BATCH_BYTES:
        return f"impossible batch_length {h.batch_length}"
    if pos + h.size > end:
        return f"batch_length {h.batch_length} runs {pos + h.size - end} bytes past the end of the data"
    if h.record_count < 1 or h.last_offset_delta != h.record_count - 1:
        return f"record_count {h.record_count} and last_offset_delta {h.last_offset_delta} disagree"
    return ""


def scan(data: bytes | memoryview, start: int, high_watermark: int | None = None
         ) -> tuple[list[tuple[int, BatchHeader]], Damage | None]:
    """The whole, plausible batches of a payload fetched from ``start`` as (position, header),
    up to the first damage.  A payload of whole batches (SPEC 6.5) never has bytes left over,
    so leftovers are damage too: a reader that stopped there quietly would never move on.  No
    batch reaches the ``high_watermark`` of the reply (when given): one that does has a damaged
    ``base_offset`` (which no CRC covers), and its records would be delivered under wrong offsets."""
    spans: list[tuple[int, BatchHeader]] = []
    end, pos, expected, prev_next = len(data), 0, start, 0
    limit = (1 << 63) if high_watermark is None else high_watermark
    unpack, new = HEADER.unpack_from, tuple.__new__
    while pos < end:  # (fields by index, checks inlined: this runs once per fetched batch)
        if end - pos < HEADER_SIZE:
            return spans, Damage(expected, None, f"{end - pos} bytes after the last whole batch")
        h = new(BatchHeader, unpack(data, pos))
        size, count = h[1] + LOG_OVERHEAD, h[12]
        if h[3] != MAGIC or size < _MIN_BATCH_BYTES or pos + size > end or count < 1 or h[6] != count - 1 \
                or h[0] < prev_next or h[0] + count > limit:
            problem = _header_problem(h, pos, end) or (
                f"batch base offset {h.base_offset} goes backwards" if h[0] < prev_next else
                f"batch offsets {h.base_offset}-{h.last_offset} reach the high watermark {high_watermark}")
            # Where it may end: its own next offset, if its offset fields agree with each other
            # and with where it stands (a single flipped byte cannot make them agree).
            plausible = count >= 1 and h[6] == count - 1 and h[0] == expected and h[0] + count <= limit
            return spans, Damage(expected, h[0] + count if plausible else None,
                                 f"batch header at byte {pos} of the reply: {problem}")
        spans.append((pos, h))
        prev_next = h[0] + count
        if prev_next > expected:
            expected = prev_next
        pos += size
    if spans and expected <= start:
        return spans, Damage(start, None, f"the reply holds no offset at or after {start}")
    return spans, None


def decode(topic: str, partition: int, data: bytes | memoryview, start: int,
           spans: list[tuple[int, BatchHeader]]) -> tuple[list[RecordColumns], Damage | None]:
    """``RecordColumns`` of each batch in ``spans`` (records before ``start`` dropped), up to the
    first that fails to decode."""
    out: list[RecordColumns] = []
    view = memoryview(data)
    for i, (pos, h) in enumerate(spans):
        if h.next_offset <= start:
            continue
        batch = view[pos: pos + h.batch_length + LOG_OVERHEAD]
        try:
            out.append(decode_columns(topic, partition, batch, h, start))
        except Exception as exc:  # FabricError, or zlib/cbor errors of a damaged records section
            crc = zlib.crc32(batch[CRC_START:])
            # Where reading can go on: this header's next offset (the log assigned offsets by it;
            # ``scan`` found its count and last delta agreeing), not the next batch of the reply,
            # which was found by this batch's length field: the one field without a cross-check.
            skip = h.next_offset
            if crc != h.crc:
                reason = f"batch at offset {h.base_offset}: CRC mismatch (header {h.crc:#010x}, data {crc:#010x})"
            elif isinstance(exc, FabricError):
                reason = exc.message
            else:
                reason = f"batch at offset {h.base_offset}: records section unreadable ({type(exc).__name__}: {exc})"
            return out, Damage(max(start, h.base_offset), skip, reason)
    return out, None
