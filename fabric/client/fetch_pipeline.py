"""The consumer's fetching: prefetch, pipelined and standing fetches, and the checks on replies.

Why prefetch (double buffering): the next fetch leaves as soon as a reply arrives, before its
records are decoded: the new positions come from the 61-byte batch headers alone.  So the broker
holds a parked fetch again while this side decodes and the user works, and an event produced
meanwhile is answered at once instead of waiting for the consumer's next request (at the tail,
that wait was most of the end-to-end latency).  At the tail a second fetch goes too, following the
first (SPEC 5.10 "Pipelining"): the broker reads it from where the first one's reply ended, so
one is always parked there.  And each of them is a standing fetch (SPEC 5.10 "Standing
fetches"): answered up to ``standing_fetch_answers`` times, so the broker gets one request per
that many replies instead of one per reply.  A partition is fetched again only while at most one
chunk of it is buffered: memory stays bounded by a few fetch responses.

A ``FetchPipeline`` is a member of ``Consumer``, one per broker it reads from (the leader of
its partitions): it owns that connection and its fetches in flight, and works on the partition
states it is given (shared with the consumer, which routes each partition to its leader's
pipeline) and the consumer's record buffer.  It runs on the consumer's thread inside ``poll``;
positions it lacks come from the ``Positions`` it is given (the consumer).
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..protocol.errors import OffsetOutOfRangeError, exception_for
from ..records.batch import next_offset_in
from .connection import Connection, monotonic_ms
from .damage import CorruptBatchError, CorruptRecordError, Damage, decode, scan
from .group import TopicPartition
from .metadata import REFRESH_ERRORS

log = logging.getLogger("fabric.consumer")

# After a retriable per-partition error (NOT_LEADER while the metadata catches up, a leader not
# yet serving) the partition waits this long before it is fetched again: without it a consumer
# asked the same broker thousands of times a second.  Short, because failover time counts it.
FETCH_RETRY_BACKOFF_MS = 50
_EPOCHS = itertools.count(1)  # fetch epochs, unique across partitions and reassignments


def new_epoch() -> int:
    return next(_EPOCHS)


@dataclass
class PartitionState:
    """One assigned partition, as the consumer and its pipeline see it."""

    position: int | None = None  # next offset to hand to the user
    fetch_offset: int | None = None  # next offset to fetch (>= position while records are buffered)
    epoch: int = field(default_factory=new_epoch)
    high_watermark: int = -1
    paused: bool = False
    halted: CorruptRecordError | None = None  # stopped at damaged records until a seek (damage.py)
    retry_at_ms: int = 0  # after a retriable error: not fetched again before then (FETCH_RETRY_BACKOFF_MS)
    routed_to: str | None = None  # the broker the router sends it to (a new one ends the back-off)


@dataclass(frozen=True, slots=True)
class FetchConfig:
    """The consumer's fetch settings (see ``Consumer``)."""

    auto_offset_reset: str
    fetch_pipeline_depth: int
    standing_fetch_answers: int
    fetch_max_wait_ms: int
    fetch_min_bytes: int
    fetch_max_bytes: int
    max_partition_fetch_bytes: int


class Positions(Protocol):
    """Where a pipeline gets the positions of partitions that have none (the consumer)."""

    def _init_positions(self, tps: list[TopicPartition]) -> None: ...

    def _reset_positions(self, tps: list[TopicPartition]) -> None: ...


@dataclass(slots=True)
class _Fetch:
    """A fetch in flight."""

    cid: int
    since_ms: int  # sent, or (a follow-on) when the fetch it follows was answered: its wait starts then
    epochs: dict[TopicPartition, int]  # partition epochs when sent: data for a sought partition is dropped
    follows: bool  # its reply says where each partition was read from, to be checked
    answers: int = 1  # > 1: a standing fetch, answered up to this many times (each reply checked)


class FetchPipeline:
    """Fetching from one broker for ``Consumer`` (see the module docstring)."""

    def __init__(self, conn: Connection, config: FetchConfig, positions: Positions,
                 buffer: deque[tuple[TopicPartition, int, list]],
                 corrupt: dict[TopicPartition, CorruptRecordError]) -> None:
        self._conn = conn
        self._config = config
        self._positions = positions
        self._parts: dict[TopicPartition, PartitionState] = {}  # the partitions it reads (set by the consumer)
        self._buffer = buffer  # the consumer's: (partition, epoch, fetched batches)
        self._corrupt = corrupt  # the consumer's: damage found, raised once its records before are taken
        self._inflight: deque[_Fetch] = deque()  # oldest first; two only when pipelining at the tail
        self._plain_after: int | None = None  # after a stray follow-on: no pipelining until a plain
        #                                       fetch with a cid above this one is answered
        c = config
        self.auto_offset_reset = c.auto_offset_reset
        self.fetch_pipeline_depth = c.fetch_pipeline_depth
        self.standing_fetch_answers = c.standing_fetch_answers
        self.fetch_max_wait_ms = c.fetch_max_wait_ms
        self.fetch_min_bytes = c.fetch_min_bytes
        self.fetch_max_bytes = c.fetch_max_bytes
        self.max_partition_fetch_bytes = c.max_partition_fetch_bytes
        self.refresh_wanted = False  # a partition's reply said its leader may have moved
        self._backing_off = False  # some partition waits out a retry back-off (``_fetch_epochs``)

    @property
    def conn(self) -> Connection:
        return self._conn

    @property
    def busy(self) -> bool:
        """A fetch is in flight."""
        return bool(self._inflight)

    def set_partitions(self, parts: dict[TopicPartition, PartitionState]) -> None:
        """The partitions this pipeline reads from now on (a standing fetch for another set is
        forgotten at the next ``fill``)."""
        self._parts = parts

    def timed_out(self, now_ms: int, request_timeout_ms: int) -> bool:
        """The oldest fetch got no reply in time: the broker restarted or the network dropped
        the request."""
        return bool(self._inflight) and \
            now_ms - self._inflight[0].since_ms > request_timeout_ms + self.fetch_max_wait_ms

    def reset(self) -> None:
        """Start afresh (lazy pirate): positions are untouched, so nothing is skipped or repeated."""
        self._inflight.clear()
        self._conn.reset()

    def close(self) -> None:
        self._conn.close()

    def on_reply(self, header: dict[str, Any], frames: list) -> None:
        self._on_reply(header, frames)

    def fill(self) -> None:
        self._fill_pipeline()

    def _on_reply(self, header: dict[str, Any], frames: list) -> None:
        """A fetch reply: match it to a fetch in flight (a standing fetch stays in flight until
        its last answer), then take its data."""
        cid = header.get("cid")
        for fetch in self._inflight:
            if fetch.cid == cid:
                break
        else:
            return  # a late reply to a fetch given up on
        if header.get("answers_left", 0) > 0 and "error" not in header:
            fetch.since_ms = monotonic_ms()  # a standing fetch: it waits again at the broker
        else:
            self._inflight.remove(fetch)
            if self._inflight:
                self._inflight[0].since_ms = monotonic_ms()  # a follow-on's wait starts now
        self._on_fetch_reply(header, frames, fetch)

    def _fill_pipeline(self) -> None:
        """Keep a fetch in flight, and at the tail a second one that follows it (SPEC 5.10), so
        the broker always holds one parked: an event produced while a reply travels is answered
        at once instead of waiting for this consumer's next request.  Catching up needs no
        pipelining (the data is there) and a follow-on could then only repeat what is in flight."""
        if self._inflight and self._inflight[0].answers > 1 and self._fetch_epochs() != self._inflight[0].epochs:
            # A standing fetch reads what it read when sent; after a seek, an assignment change or
            # a pause it would keep answering for the old set.  Forget it (and its follow-ons):
            # the next fetch ends it at the broker, and its late replies are dropped here.
            self._inflight.clear()
        if not self._inflight:
            self._send_fetch(None)
        while 0 < len(self._inflight) < self.fetch_pipeline_depth and self._plain_after is None \
                and self._at_tail():
            before = len(self._inflight)
            self._send_fetch(self._inflight[-1])
            if len(self._inflight) == before:
                break  # nothing to follow with (a partition buffered, sought or paused meanwhile)

    def _at_tail(self) -> bool:
        return all(0 <= st.high_watermark <= (st.fetch_offset or 0)
                   for st in self._parts.values() if not (st.paused or st.halted))

    def _fetch_epochs(self) -> dict[TopicPartition, int]:
        """The partitions a fetch sent now would ask for (not paused, nothing buffered), with
        their epochs."""
        parts = self._parts
        if self._backing_off:
            now = monotonic_ms()
            waiting = [tp for tp, st in parts.items() if st.retry_at_ms > now]
            if waiting:
                parts = {tp: st for tp, st in parts.items() if tp not in waiting}
            else:
                self._backing_off = False
        if not self._buffer:  # (every poll at the tail asks: the short way)
            return {tp: st.epoch for tp, st in parts.items() if not (st.paused or st.halted)}
        buffered = {e[0] for e in self._buffer}
        return {tp: st.epoch for tp, st in parts.items() if not (st.paused or st.halted or tp in buffered)}

    def _send_fetch(self, follows: _Fetch | None) -> None:
        missing = [tp for tp, st in self._parts.items() if st.position is None]
        if missing:
            self._positions._init_positions(missing)
        epochs = self._fetch_epochs()
        if not epochs or (follows is not None and follows.epochs != epochs):
            return  # a follow-on reads what the fetch it follows read, no seek or rebalance between
        parts = [{"topic": tp.topic, "partition": tp.partition, "offset": self._parts[tp].fetch_offset,
                  "max_bytes": self.max_partition_fetch_bytes} for tp in epochs]
        # The header as a plain map (the FetchRequest fields): the dataclass round trip cost as
        # much as the rest of the fetch on this path, which runs once per reply.
        fields: dict[str, Any] = {"max_wait_ms": self.fetch_max_wait_ms, "min_bytes": self.fetch_min_bytes,
                                  "max_bytes": self.fetch_max_bytes, "partitions": parts}
        if follows is not None:
            fields["follows"] = follows.cid
        answers = self.standing_fetch_answers if self._at_tail() else 1
        if answers > 1:
            fields["answers"] = answers
        cid = self._conn.send("fetch", fields=fields)
        self._inflight.append(_Fetch(cid, monotonic_ms(), epochs, follows is not None, answers))

    def _on_fetch_reply(self, header: dict[str, Any], frames: list, fetch: _Fetch) -> None:
        if "error" in header:
            raise exception_for(header["error"])
        epochs = fetch.epochs
        astray = False  # a follow-on that did not continue where we stand
        if not fetch.follows and self._plain_after is not None and fetch.cid > self._plain_after:
            self._plain_after = None
        reset: list[TopicPartition] = []
        damaged: list[tuple[TopicPartition, Damage]] = []  # bad headers: decoded up to there, then raised
        arrived: list[tuple[TopicPartition, int, Any, int, list]] = []  # (tp, epoch, data, first wanted offset, spans)
        for meta, data in zip(header["partitions"], frames):
            tp = TopicPartition(meta["topic"], meta["partition"])
            st = self._parts.get(tp)
            if st is None or epochs.get(tp) != st.epoch or st.halted:
                continue  # unassigned or sought since the fetch was sent, or stopped at damage
            if (fetch.follows or fetch.answers > 1) and meta.get("offset") != st.fetch_offset:
                astray = True  # e.g. the broker forgot the fetch it followed: its data is not ours
                continue
            if "error" in meta:
                err = exception_for(meta["error"])
                if isinstance(err, CorruptBatchError):  # damage on the broker's disk (SPEC 5.10)
                    self._halt(tp, Damage(st.fetch_offset or 0, meta.get("skip_offset"), err.message))
                    continue
                if isinstance(err, OffsetOutOfRangeError) and self.auto_offset_reset != "error":
                    log.warning("%s offset %s out of range [%s, %s]; resetting to %s", tp, st.fetch_offset,
                                meta.get("log_start_offset"), meta.get("high_watermark"), self.auto_offset_reset)
                    reset.append(tp)
                    continue
                if err.retriable:
                    log.info("fetch %s: %s (will retry in %d ms)", tp, err, FETCH_RETRY_BACKOFF_MS)
                    st.retry_at_ms = monotonic_ms() + FETCH_RETRY_BACKOFF_MS
                    self._backing_off = True
                    if err.name in REFRESH_ERRORS:
                        self.refresh_wanted = True
                    continue
                raise err
            st.high_watermark = meta.get("high_watermark", st.high_watermark)
            if len(data):
                start = st.fetch_offset or 0
                spans, damage = scan(data, start, meta.get("high_watermark"))  # walked once: next offset, decoding
                end = next_offset_in(data, start, spans)
                if end > start:
                    st.fetch_offset = end
                    arrived.append((tp, st.epoch, data, start, spans))
                if damage is not None and end <= start:
                    damaged.append((tp, damage))
                # (damage after whole batches: the next fetch starts at it, and the broker checks
                # the batch a read starts at, so it answers exactly where damage on disk ends)
        if reset:
            self._positions._reset_positions(reset)
        if astray:  # this chain is broken: no follow-ons until a plain fetch sent from now on is answered
            self._plain_after = self._inflight[-1].cid if self._inflight else fetch.cid
            if fetch.answers > 1 or any(f.answers > 1 for f in self._inflight):
                self._inflight.clear()  # standing fetches would keep answering from there: forget them
        if arrived and not self._inflight:
            self._fill_pipeline()  # before decoding: see "Why prefetch" above (pipelined, one waits already)
        for tp, epoch, data, start, spans in arrived:
            columns, damage = decode(tp.topic, tp.partition, data, start, spans)
            if columns:
                self._buffer.append((tp, epoch, columns))
            if damage is not None:
                damaged.insert(0, (tp, damage))  # (before a header problem further on)
        for tp, damage in damaged:
            self._halt(tp, damage)

    def _halt(self, tp: TopicPartition, damage: Damage) -> None:
        """Stop reading ``tp`` at ``damage``: the records before it stay buffered for the user,
        fetches (an early one may have gone past it already) are ignored for it, and once those
        records are taken ``poll`` raises ``CorruptRecordError`` once.  ``seek`` lifts the halt."""
        st = self._parts[tp]
        if st.halted:
            return  # (the first damage found wins)
        st.fetch_offset = damage.offset
        st.halted = self._corrupt[tp] = CorruptRecordError(tp.topic, tp.partition, damage.offset,
                                                           damage.skip_offset, damage.reason)
        log.debug("%s", st.halted)  # (raised to the application, which decides how loud)
