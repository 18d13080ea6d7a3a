"""``Consumer``: read partitions in order, from any offset or time.

Threading contract: a consumer is used from one thread; all I/O happens inside ``poll`` (no
background thread), so a consumer that stops polling stops fetching.

Why prefetch: as soon as ``poll`` hands out records it sends the next fetch (positions after
what is buffered), so the broker reads and the network moves the next chunk while the user
processes this one.  A ``seek`` bumps the partition's epoch; data from a fetch sent before the
seek is dropped for that partition.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

import zmq

from ..protocol.errors import FabricError, OffsetOutOfRangeError, exception_for
from ..protocol.messages import FetchPartition, FetchRequest
from ..records.batch import Record, records_in
from .admin import Admin
from .connection import ClosedError, Connection, RequestTimeoutError, monotonic_ms, parse_bootstrap

log = logging.getLogger("fabric.consumer")


class TopicPartition(NamedTuple):
    topic: str
    partition: int


@dataclass
class _PartitionState:
    position: int | None = None  # next offset to hand to the user
    fetch_offset: int | None = None  # next offset to fetch (>= position while records are buffered)
    epoch: int = 0
    high_watermark: int = -1
    paused: bool = False


class Consumer:
    def __init__(self, bootstrap: str | Sequence[str] = "127.0.0.1:7171", *,
                 auto_offset_reset: str = "latest", fetch_min_bytes: int = 1, fetch_max_wait_ms: int = 500,
                 max_partition_fetch_bytes: int = 4 << 20, fetch_max_bytes: int = 32 << 20,
                 max_poll_records: int = 100_000, request_timeout_ms: int = 30_000,
                 client_id: str = "fabric-consumer", ctx: zmq.Context | None = None) -> None:
        if auto_offset_reset not in ("earliest", "latest", "error"):
            raise ValueError("auto_offset_reset must be 'earliest', 'latest' or 'error'")
        self.auto_offset_reset = auto_offset_reset
        self.fetch_min_bytes = fetch_min_bytes
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.max_partition_fetch_bytes = max_partition_fetch_bytes
        self.fetch_max_bytes = fetch_max_bytes
        self.max_poll_records = max_poll_records
        self.request_timeout_ms = request_timeout_ms
        self._ctx = ctx or zmq.Context.instance()
        endpoints = parse_bootstrap(bootstrap)
        self._admin = Admin(endpoints, timeout_ms=request_timeout_ms, ctx=self._ctx, client_id=client_id)
        self._conn = Connection(endpoints[0], self._ctx, client_id)
        self._parts: dict[TopicPartition, _PartitionState] = {}
        self._buffer: deque[tuple[TopicPartition, int, list[Record]]] = deque()
        self._inflight: tuple[int, int, dict[TopicPartition, int]] | None = None  # cid, sent_ms, epochs
        self._closed = False

    # ------------------------------------------------------------------ assignment and positions
    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Read exactly these partitions (replacing the previous assignment)."""
        wanted = [TopicPartition(t, p) for t, p in partitions]
        for tp in wanted:
            if tp not in self._parts:
                self._parts[tp] = _PartitionState()
        for tp in list(self._parts):
            if tp not in wanted:
                del self._parts[tp]  # its buffered records and in-flight data are skipped from now on

    def assign_topic(self, topic: str) -> list[TopicPartition]:
        """Assign every partition of ``topic``."""
        n = self._admin.partitions_for(topic)
        tps = [TopicPartition(topic, p) for p in range(n)]
        self.assign(list(self._parts) + [tp for tp in tps if tp not in self._parts])
        return tps

    def assignment(self) -> list[TopicPartition]:
        return list(self._parts)

    def _state(self, tp: tuple[str, int]) -> _PartitionState:
        st = self._parts.get(TopicPartition(*tp))
        if st is None:
            raise ValueError(f"{tp} is not assigned to this consumer")
        return st

    def seek(self, tp: tuple[str, int], offset: int) -> None:
        if offset < 0:
            raise ValueError("offset must be >= 0")
        st = self._state(tp)
        st.position = st.fetch_offset = offset
        st.epoch += 1
        self._drop_buffered({TopicPartition(*tp)})

    def _seek_many(self, tps: Sequence[tuple[str, int]] | None, at: Any) -> None:
        targets = [TopicPartition(*tp) for tp in tps] if tps else list(self._parts)
        if not targets:
            return
        res = self._admin.list_offsets([(tp.topic, tp.partition, at) for tp in targets])
        for tp, r in zip(targets, res):
            off = r["offset"]
            if off < 0:  # no record at or after that time: go to the end
                off = self._admin.list_offsets([(tp.topic, tp.partition, "latest")])[0]["offset"]
            self.seek(tp, off)

    def seek_to_beginning(self, *tps: tuple[str, int]) -> None:
        self._seek_many(tps, "earliest")

    def seek_to_end(self, *tps: tuple[str, int]) -> None:
        self._seek_many(tps, "latest")

    def seek_to_timestamp(self, timestamp_ms: int, *tps: tuple[str, int]) -> None:
        """Position at the first record whose timestamp is >= ``timestamp_ms`` (the end if none)."""
        self._seek_many(tps, int(timestamp_ms))

    def position(self, tp: tuple[str, int]) -> int:
        st = self._state(tp)
        if st.position is None:
            self._reset_positions([TopicPartition(*tp)])
        assert st.position is not None
        return st.position

    def pause(self, *tps: tuple[str, int]) -> None:
        for tp in tps:
            self._state(tp).paused = True
        self._drop_buffered({TopicPartition(*tp) for tp in tps})

    def resume(self, *tps: tuple[str, int]) -> None:
        for tp in tps:
            self._state(tp).paused = False

    def high_watermark(self, tp: tuple[str, int]) -> int:
        """The last high watermark seen in a fetch (-1 before the first)."""
        return self._state(tp).high_watermark

    def _drop_buffered(self, tps: set[TopicPartition]) -> None:
        """Forget buffered records of ``tps`` and refetch from the user-visible position."""
        self._buffer = deque(e for e in self._buffer if e[0] not in tps)
        for tp in tps:
            st = self._parts.get(tp)
            if st is not None:
                st.fetch_offset = st.position
                st.epoch += 1

    def _reset_positions(self, tps: list[TopicPartition]) -> None:
        if self.auto_offset_reset == "error":
            raise OffsetOutOfRangeError("OFFSET_OUT_OF_RANGE",
                                        f"no position for {tps} and auto_offset_reset='error'")
        res = self._admin.list_offsets([(tp.topic, tp.partition, self.auto_offset_reset) for tp in tps])
        for tp, r in zip(tps, res):
            st = self._parts[tp]
            st.position = st.fetch_offset = r["offset"]
            st.epoch += 1

    # ------------------------------------------------------------------ fetching
    def _send_fetch(self) -> None:
        missing = [tp for tp, st in self._parts.items() if st.position is None]
        if missing:
            self._reset_positions(missing)
        buffered = {e[0] for e in self._buffer}
        parts = []
        epochs: dict[TopicPartition, int] = {}
        for tp, st in self._parts.items():
            if st.paused or tp in buffered:
                continue
            parts.append(FetchPartition(topic=tp.topic, partition=tp.partition, offset=st.fetch_offset,
                                        max_bytes=self.max_partition_fetch_bytes))
            epochs[tp] = st.epoch
        if not parts:
            return
        req = FetchRequest(max_wait_ms=self.fetch_max_wait_ms, min_bytes=self.fetch_min_bytes,
                           max_bytes=self.fetch_max_bytes, partitions=tuple(parts))
        cid = self._conn.send("fetch", req)
        self._inflight = (cid, monotonic_ms(), epochs)

    def _on_fetch_reply(self, header: dict[str, Any], frames: list, epochs: dict[TopicPartition, int]) -> None:
        if "error" in header:
            raise exception_for(header["error"])
        reset: list[TopicPartition] = []
        for meta, data in zip(header["partitions"], frames):
            tp = TopicPartition(meta["topic"], meta["partition"])
            st = self._parts.get(tp)
            if st is None or epochs.get(tp) != st.epoch:
                continue  # unassigned or sought since the fetch was sent
            if "error" in meta:
                err = exception_for(meta["error"])
                if isinstance(err, OffsetOutOfRangeError) and self.auto_offset_reset != "error":
                    log.warning("%s offset %s out of range [%s, %s]; resetting to %s", tp, st.fetch_offset,
                                meta.get("log_start_offset"), meta.get("high_watermark"), self.auto_offset_reset)
                    reset.append(tp)
                    continue
                if err.retriable:
                    log.info("fetch %s: %s (will retry)", tp, err)
                    continue
                raise err
            st.high_watermark = meta.get("high_watermark", st.high_watermark)
            if len(data):
                recs = records_in(tp.topic, tp.partition, data, st.fetch_offset or 0)
                if recs:
                    st.fetch_offset = recs[-1].offset + 1
                    self._buffer.append((tp, st.epoch, recs))
        if reset:
            self._reset_positions(reset)

    def poll(self, timeout_ms: int = 1000, max_records: int | None = None) -> list[Record]:
        """Records in offset order per partition; an empty list after ``timeout_ms`` without data."""
        if self._closed:
            raise ClosedError("consumer is closed")
        limit = max_records or self.max_poll_records
        deadline = monotonic_ms() + timeout_ms
        while True:
            out = self._take_buffered(limit)
            if self._inflight is None:
                self._send_fetch()  # prefetch while the caller works on `out`
            if out:
                return out
            if self._inflight is None:  # nothing assigned or all paused
                left = deadline - monotonic_ms()
                if left <= 0:
                    return []
                self._conn.recv(min(left, 100))
                continue
            cid, sent_ms, epochs = self._inflight
            now = monotonic_ms()
            if now - sent_ms > self.request_timeout_ms + self.fetch_max_wait_ms:
                self._inflight = None
                self._conn.reset()
                raise RequestTimeoutError(f"no fetch reply from {self._conn.endpoint} within "
                                          f"{self.request_timeout_ms} ms")
            left = deadline - now
            if left <= 0:
                return []
            got = self._conn.recv(min(left, 100))
            if got is None:
                continue
            header, frames = got
            if header.get("cid") != cid:
                continue
            self._inflight = None
            self._on_fetch_reply(header, frames, epochs)

    def _take_buffered(self, limit: int) -> list[Record]:
        out: list[Record] = []
        while self._buffer and len(out) < limit:
            tp, epoch, recs = self._buffer[0]
            st = self._parts.get(tp)
            if st is None or st.epoch != epoch:
                self._buffer.popleft()
                continue
            room = limit - len(out)
            if len(recs) <= room:
                self._buffer.popleft()
                taken = recs
            else:
                taken = recs[:room]
                self._buffer[0] = (tp, epoch, recs[room:])
            out.extend(taken)
            st.position = taken[-1].offset + 1
        return out

    def __iter__(self) -> Iterator[Record]:
        while not self._closed:
            yield from self.poll(1000)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.close()
            self._admin.close()

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
