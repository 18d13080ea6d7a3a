"""``Consumer``: read partitions in order, from any offset or time, alone or in a consumer group.

Threading contract: a consumer is used from one thread.  All fetching, group joins and rebalance
callbacks happen inside ``poll`` (and ``commit``/``close``), on that thread, so a consumer that
stops polling stops fetching.  With a ``group_id`` one helper thread sends the group heartbeats
(``fabric.client.group``); it never touches the consumer's state.

Lifecycle with a group: ``subscribe`` -> ``poll`` joins, and on every rebalance calls
``on_revoked`` (after committing, with auto-commit), then ``on_assigned``; partitions taken away
without a chance to commit (the member was evicted, e.g. for polling less often than
``max_poll_interval_ms``) go to ``on_lost`` (default: ``on_revoked``).  A newly assigned partition
starts at the group's committed offset, else at ``auto_offset_reset``.  ``close`` commits (with
auto-commit), leaves the group (dynamic members) and stops the heartbeat thread;
``closing_on_signals`` does that on SIGTERM/SIGINT (``fabric.client.shutdown``).  A commit the
group refuses raises ``CommitFailedError``, which is not fatal: keep polling.

Fetching (prefetch, pipelined and standing fetches at the tail): ``fetch_pipeline.py``, one
``FetchPipeline`` per broker read from.  Each partition is fetched from its leader: the
metadata (merged over every bootstrap broker, ``pool.Cluster``) routes it to that broker's
pipeline, and is looked up again after ``NOT_LEADER`` / ``UNKNOWN_TOPIC_OR_PARTITION`` and every
``metadata_max_age_ms`` when there is more than one broker; against one broker there is one
pipeline, as before.  A ``seek`` gives the partition a new epoch; data from a fetch sent before
the seek (or before the partition was reassigned) is dropped for that partition.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from typing import Any, Callable, ContextManager, Iterable, Iterator, Mapping, Sequence

import zmq

from itertools import chain

from ..protocol.errors import FabricError, OffsetOutOfRangeError
from ..protocol.messages import FETCH_ANSWERS_MAX
from ..records.batch import Record, RecordColumns
from .admin import Admin
from .connection import ClientError, ClosedError, Connection, RequestTimeoutError, monotonic_ms, parse_bootstrap
from .damage import CorruptRecordError
from .fetch_pipeline import FetchConfig, FetchPipeline, PartitionState, new_epoch
from .fetch_router import FetchRouter
from .group import CommitCallback, CommitFailedError, GroupMember, TopicPartition
from .shutdown import ShutdownSignals, closing_on_signals

log = logging.getLogger("fabric.consumer")

__all__ = ["Consumer", "TopicPartition", "CommitFailedError", "CorruptRecordError"]

RebalanceCallback = Callable[[list[TopicPartition]], None]
_PartitionState = PartitionState


class _GroupHooks:
    """``GroupMember``'s listener: the consumer's reaction to assignment changes."""

    def __init__(self, consumer: "Consumer") -> None:
        self.c = consumer

    def revoke(self, tps: frozenset[TopicPartition]) -> None:
        self.c._on_group_change(tps, commit=self.c.enable_auto_commit, callback=self.c._on_revoked)

    def lost(self, tps: frozenset[TopicPartition]) -> None:
        self.c._on_group_change(tps, commit=False, callback=self.c._on_lost or self.c._on_revoked)

    def assign(self, tps: frozenset[TopicPartition]) -> None:
        for tp in tps:
            self.c._parts.setdefault(tp, _PartitionState())
        self.c._router.invalidate()
        self.c._user_callback(self.c._on_assigned, tps)


class Consumer:
    """Reads records.  Without ``group_id``: ``assign`` partitions and ``seek``.  With ``group_id``:
    ``subscribe`` to topics (or a regular expression) and share their partitions with the other
    members of the group; progress is committed to the group (``commit``, or auto-commit every
    ``auto_commit_interval_ms``, before a revocation and on ``close``)."""

    def __init__(self, bootstrap: str | Sequence[str] = "127.0.0.1:7171", *,
                 group_id: str | None = None, group_instance_id: str | None = None,
                 session_timeout_ms: int = 10_000, heartbeat_interval_ms: int = 3000,
                 max_poll_interval_ms: int = 300_000, assignors: Sequence[str] = ("cooperative-sticky", "range"),
                 enable_auto_commit: bool = True, auto_commit_interval_ms: int = 5000,
                 metadata_max_age_ms: int = 5000, on_assigned: RebalanceCallback | None = None,
                 on_revoked: RebalanceCallback | None = None, on_lost: RebalanceCallback | None = None,
                 auto_offset_reset: str = "latest", fetch_min_bytes: int = 1, fetch_max_wait_ms: int = 500,
                 max_partition_fetch_bytes: int = 4 << 20, fetch_max_bytes: int = 32 << 20,
                 max_poll_records: int = 100_000, request_timeout_ms: int = 30_000,
                 fetch_pipeline_depth: int = 2, standing_fetch_answers: int = 16,
                 client_id: str = "fabric-consumer", ctx: zmq.Context | None = None) -> None:
        if auto_offset_reset not in ("earliest", "latest", "error"):
            raise ValueError("auto_offset_reset must be 'earliest', 'latest' or 'error'")
        if group_id is None and group_instance_id is not None:
            raise ValueError("group_instance_id needs a group_id")
        if group_id is not None and not heartbeat_interval_ms < session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms (about a third of it)")
        if not 1 <= fetch_pipeline_depth <= 8:
            raise ValueError("fetch_pipeline_depth must be 1 (no pipelining) to 8")
        if not 1 <= standing_fetch_answers <= FETCH_ANSWERS_MAX:
            raise ValueError(f"standing_fetch_answers must be 1 (a request per reply) to {FETCH_ANSWERS_MAX}")
        self.fetch_pipeline_depth = fetch_pipeline_depth
        self.standing_fetch_answers = standing_fetch_answers
        self.auto_offset_reset = auto_offset_reset
        self.fetch_min_bytes = fetch_min_bytes
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.max_partition_fetch_bytes = max_partition_fetch_bytes
        self.fetch_max_bytes = fetch_max_bytes
        self.max_poll_records = max_poll_records
        self.request_timeout_ms = request_timeout_ms
        self.group_id = group_id
        self.enable_auto_commit = enable_auto_commit and group_id is not None
        self.auto_commit_interval_ms = auto_commit_interval_ms
        self.metadata_max_age_ms = metadata_max_age_ms
        self._on_assigned, self._on_revoked, self._on_lost = on_assigned, on_revoked, on_lost
        self._ctx = ctx or zmq.Context.instance()
        endpoints = parse_bootstrap(bootstrap)
        self._admin = Admin(endpoints, timeout_ms=request_timeout_ms, ctx=self._ctx, client_id=client_id)
        self._parts: dict[TopicPartition, _PartitionState] = {}
        # (partition, epoch, fetched batches as RecordColumns, or Records once poll() split them)
        self._buffer: deque[tuple[TopicPartition, int, list]] = deque()
        self._corrupt: dict[TopicPartition, CorruptRecordError] = {}  # damage found, not raised yet
        fetch_config = FetchConfig(auto_offset_reset, fetch_pipeline_depth, standing_fetch_answers,
                                   fetch_max_wait_ms, fetch_min_bytes, fetch_max_bytes, max_partition_fetch_bytes)

        def pipeline(endpoint: str) -> FetchPipeline:
            return FetchPipeline(Connection(endpoint, self._ctx, client_id), fetch_config, self, self._buffer,
                                 self._corrupt)
        self._router = FetchRouter(endpoints, self._admin, pipeline, metadata_max_age_ms)
        self._closed = False
        self._wakeup = False  # set by wakeup() (e.g. from a signal handler): poll returns early
        self._pattern: re.Pattern[str] | None = None
        self._pattern_refresh_at = 0
        self._next_auto_commit = monotonic_ms() + auto_commit_interval_ms
        self._committed: dict[TopicPartition, int] = {}  # what this consumer last committed
        self._callback_error: BaseException | None = None
        self._group: GroupMember | None = None
        if group_id is not None:
            self._group = GroupMember(endpoints, group_id, _GroupHooks(self), group_instance_id=group_instance_id,
                                      client_id=client_id, session_timeout_ms=session_timeout_ms,
                                      heartbeat_interval_ms=heartbeat_interval_ms,
                                      max_poll_interval_ms=max_poll_interval_ms, assignors=assignors,
                                      request_timeout_ms=request_timeout_ms, ctx=self._ctx)

    # ------------------------------------------------------------------ group membership
    def subscribe(self, topics: Iterable[str] | str | re.Pattern[str], *, on_assigned: RebalanceCallback | None = None,
                  on_revoked: RebalanceCallback | None = None, on_lost: RebalanceCallback | None = None) -> None:
        """Share the partitions of ``topics`` with the group.  A ``str`` (or compiled pattern) is a
        regular expression matched in full against topic names, re-resolved every
        ``metadata_max_age_ms``; pass ``["orders"]`` for a single topic.  Callbacks given here
        replace the constructor's; they run inside ``poll`` with a sorted list of partitions."""
        if self._group is None:
            raise ValueError("subscribe() needs a consumer group: Consumer(..., group_id='my-group') "
                             "(use assign() to read partitions without a group)")
        if self._parts and not self._group.subscribed:
            raise ValueError("this consumer has partitions from assign(); call assign([]) before subscribe()")
        for name, cb in (("_on_assigned", on_assigned), ("_on_revoked", on_revoked), ("_on_lost", on_lost)):
            if cb is not None:
                setattr(self, name, cb)
        if isinstance(topics, (str, re.Pattern)):
            self._pattern = re.compile(topics)
            self._refresh_pattern()
        else:
            names = [topics] if isinstance(topics, str) else list(topics)
            self._pattern = None
            self._group.subscribe(names)

    def unsubscribe(self) -> None:
        """Revoke everything (committing, with auto-commit) and leave the group."""
        if self._group is not None and self._group.subscribed:
            self._group.unsubscribe()
        self._pattern = None
        self._parts.clear()
        self._router.invalidate()

    def group_metadata(self) -> dict[str, Any] | None:
        """This member's ``group_id``, ``member_id``, ``generation`` (-1 outside one), ``state``
        (UNJOINED, JOINING, SYNCING, STABLE), ``protocol`` and ``group_instance_id``; None without a group."""
        g = self._group
        if g is None:
            return None
        return {"group_id": g.group_id, "member_id": g.member_id, "generation": g.generation, "state": g.state,
                "protocol": g.protocol, "group_instance_id": g.group_instance_id}

    def subscription(self) -> list[str]:
        """The subscribed topic names (a pattern's current matches)."""
        return list(self._group.subscription) if self._group is not None else []

    def _refresh_pattern(self) -> None:
        assert self._group is not None and self._pattern is not None
        self._pattern_refresh_at = monotonic_ms() + self.metadata_max_age_ms
        try:
            names = [t["name"] for t in self._admin.list_topics() if self._pattern.fullmatch(t["name"])]
        except RequestTimeoutError as exc:
            log.warning("cannot resolve topic pattern %r: %s", self._pattern.pattern, exc)
            return
        self._group.subscribe(names)

    def _user_callback(self, callback: RebalanceCallback | None, tps: Iterable[TopicPartition]) -> None:
        """Run a rebalance callback; its exception is raised from ``poll`` once the group step ends."""
        if callback is None:
            return
        try:
            callback(sorted(tps))
        except Exception as exc:
            log.exception("rebalance callback %r failed", callback)
            self._callback_error = self._callback_error or exc

    def _on_group_change(self, tps: frozenset[TopicPartition], commit: bool,
                         callback: RebalanceCallback | None) -> None:
        """Partitions leave this consumer: commit (revocation) or not (lost), tell the user, stop."""
        if commit:
            self._commit_quietly(self._positions(tps))
        self._user_callback(callback, tps)
        for tp in tps:
            self._parts.pop(tp, None)
            self._committed.pop(tp, None)
        self._router.invalidate()

    def _drive_group(self) -> None:
        assert self._group is not None
        now = monotonic_ms()
        if self._pattern is not None and now >= self._pattern_refresh_at:
            self._refresh_pattern()
        try:
            self._group.poll()
        finally:
            err, self._callback_error = self._callback_error, None
        if err is not None:
            raise err
        if self.enable_auto_commit and now >= self._next_auto_commit and (
                self._group.stable or not self._group.subscribed):
            self._next_auto_commit = now + self.auto_commit_interval_ms
            offsets = {tp: o for tp, o in self._positions(self._parts).items() if self._committed.get(tp) != o}
            if offsets:
                self._group.commit_async(offsets, self._on_auto_commit)

    def _on_auto_commit(self, offsets: dict[TopicPartition, int], exc: Exception | None) -> None:
        if exc is None:
            self._committed.update(offsets)
        else:
            log.warning("auto-commit of %d offsets failed: %s", len(offsets), exc)

    # ------------------------------------------------------------------ commits
    def _positions(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: st.position for tp in tps if (st := self._parts.get(tp)) is not None
                and st.position is not None}

    def _need_group(self, what: str) -> GroupMember:
        if self._closed:
            raise ClosedError("consumer is closed")
        if self._group is None:
            raise ValueError(f"{what} needs a consumer group: Consumer(..., group_id='my-group')")
        return self._group

    @staticmethod
    def _offsets(offsets: Mapping[tuple[str, int], int]) -> dict[TopicPartition, int]:
        return {TopicPartition(*tp): int(o) for tp, o in offsets.items()}

    def commit(self, offsets: Mapping[tuple[str, int], int] | None = None, timeout_ms: int | None = None) -> None:
        """Commit and wait.  ``offsets``: partition -> the next offset to read (default: the current
        positions of the assignment).  Raises ``CommitFailedError`` if the group refuses it: this
        member is no longer in the group's generation (its partitions are lost; the next ``poll``
        rejoins), or the group is rebalancing.  Catch it and keep polling: the records after the
        last committed offset are delivered again after the rebalance."""
        group = self._need_group("commit()")
        offs = self._offsets(offsets) if offsets is not None else self._positions(self._parts)
        group.commit(offs, timeout_ms)
        self._committed.update(offs)

    def commit_async(self, offsets: Mapping[tuple[str, int], int] | None = None,
                     callback: CommitCallback | None = None) -> None:
        """Commit without waiting; ``callback(offsets, exception_or_None)`` runs in a later
        ``poll``, ``commit`` or ``close``."""
        group = self._need_group("commit_async()")
        offs = self._offsets(offsets) if offsets is not None else self._positions(self._parts)

        def done(result: dict[TopicPartition, int], exc: Exception | None) -> None:
            if exc is None:
                self._committed.update(result)
            if callback is not None:
                callback(result, exc)
        group.commit_async(offs, done)

    def _commit_quietly(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets or self._group is None:
            return
        try:
            self._group.commit(offsets)
            self._committed.update(offsets)
        except (FabricError, ClientError) as exc:
            log.warning("commit of %d offsets failed: %s", len(offsets), exc)

    def committed(self, tps: Iterable[tuple[str, int]], timeout_ms: int | None = None
                  ) -> dict[TopicPartition, int | None]:
        """The group's committed offsets of ``tps`` (None where it has committed nothing)."""
        return self._need_group("committed()").fetch_committed(tps, timeout_ms)

    # ------------------------------------------------------------------ assignment and positions
    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Read exactly these partitions (replacing the previous assignment).  Not with ``subscribe``."""
        if self._group is not None and self._group.subscribed:
            raise ValueError("this consumer subscribed to a group; call unsubscribe() before assign()")
        wanted = [TopicPartition(t, p) for t, p in partitions]
        for tp in wanted:
            if tp not in self._parts:
                self._parts[tp] = _PartitionState()
        for tp in list(self._parts):
            if tp not in wanted:
                del self._parts[tp]  # its buffered records and in-flight data are skipped from now on
        self._router.invalidate()

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
        """Read ``tp`` from ``offset`` next.  Also the way past damaged records: after a
        ``CorruptRecordError`` the partition stays where it is until sought, e.g. to the
        error's ``skip_offset``."""
        if offset < 0:
            raise ValueError("offset must be >= 0")
        st = self._state(tp)
        st.position = st.fetch_offset = offset
        st.epoch = new_epoch()
        st.halted = None
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
            self._init_positions([TopicPartition(*tp)])
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
        kept = [e for e in self._buffer if e[0] not in tps]
        self._buffer.clear()  # (in place: the pipelines share this deque)
        self._buffer.extend(kept)
        for tp in tps:
            st = self._parts.get(tp)
            if st is not None:
                st.fetch_offset = st.position
                st.epoch = new_epoch()

    def _init_positions(self, tps: list[TopicPartition]) -> None:
        """Positions of partitions that have none: the group's committed offset, else the reset policy."""
        if self._group is not None:
            for tp, off in self._group.fetch_committed(tps).items():
                st = self._parts.get(tp)
                if off is not None and st is not None and st.position is None:
                    st.position = st.fetch_offset = off
                    st.epoch = new_epoch()
            tps = [tp for tp in tps if tp in self._parts and self._parts[tp].position is None]
        if tps:
            self._reset_positions(tps)

    def _reset_positions(self, tps: list[TopicPartition]) -> None:
        if self.auto_offset_reset == "error":
            raise OffsetOutOfRangeError("OFFSET_OUT_OF_RANGE",
                                        f"no position for {tps} and auto_offset_reset='error'")
        res = self._admin.list_offsets([(tp.topic, tp.partition, self.auto_offset_reset) for tp in tps])
        for tp, r in zip(tps, res):
            st = self._parts[tp]
            st.position = st.fetch_offset = r["offset"]
            st.epoch = new_epoch()
            st.halted = None

    def poll(self, timeout_ms: int = 1000, max_records: int | None = None) -> list[Record]:
        """Records in offset order per partition; an empty list after ``timeout_ms`` without data.
        With a group this also joins, rebalances (running the callbacks) and auto-commits.

        Damaged records (a bad CRC, length or header, on the broker's disk or in transit) raise
        ``CorruptRecordError`` (topic, partition, offset, skip_offset) once, after every record
        before them was returned; that partition then waits for a ``seek`` (see the exception),
        the others go on."""
        return self._poll(timeout_ms, max_records or self.max_poll_records, self._take_buffered)

    def poll_batches(self, timeout_ms: int = 1000, max_records: int | None = None) -> list[RecordColumns]:
        """Like ``poll`` but columnar: whole fetched batches as ``RecordColumns`` (``keys``,
        ``values``, ``offsets``, ``timestamps`` lists; iterate one for ``Record``s).  No object per
        record is made, which is what a consumer moving millions of events a second needs.
        Returns about ``max_records`` (whole batches, at least one)."""
        return self._poll(timeout_ms, max_records or self.max_poll_records, self._take_columns)

    def _poll(self, timeout_ms: int, limit: int, take: Any) -> list:
        if self._closed:
            raise ClosedError("consumer is closed")
        deadline = monotonic_ms() + timeout_ms
        while True:
            if self._wakeup:
                self._wakeup = False
                return []
            if self._group is not None:
                self._drive_group()
            router = self._router
            if router.routed_version != router.meta.version:
                router.route(self._parts)
            if self._corrupt:
                self._raise_damage()
            out = take(limit)
            fetchers = router.pipelines
            for f in fetchers:
                if not (out and f.busy):  # pipelined: one fetch waits at the broker already, so
                    f.fill()              # records go out first and the next poll refills
            if out:
                return out
            now = monotonic_ms()
            if now >= router.next_route_ms:
                router.invalidate()  # the metadata is old: look the leaders up again
            for f in fetchers:
                if f.timed_out(now, self.request_timeout_ms):
                    log.warning("no fetch reply from %s within %d ms; reconnecting", f.conn.endpoint,
                                self.request_timeout_ms)
                    f.reset()
                    router.leaders_may_have_moved(refused=False)
                if f.refresh_wanted:
                    f.refresh_wanted = False
                    router.leaders_may_have_moved()
            left = deadline - now
            if left <= 0:
                return []
            got = None
            for f in fetchers:
                got = f.conn.recv(0)  # a reply waiting already needs no poll (nor a GIL hand-off)
                if got is not None:
                    f.on_reply(*got)
                    break
            if got is not None:
                continue
            for f in router.wait(min(left, 100), self._group.link.socket if self._group is not None else None):
                got = f.conn.recv(0)
                if got is not None:
                    f.on_reply(*got)

    def _raise_damage(self) -> None:
        """Raise the first found damage whose partition has no records left before it."""
        buffered = {e[0] for e in self._buffer}
        for tp, exc in list(self._corrupt.items()):
            st = self._parts.get(tp)
            if st is None or st.halted is not exc:
                del self._corrupt[tp]  # unassigned or moved since
            elif tp not in buffered:
                del self._corrupt[tp]
                raise exc

    def _take_buffered(self, limit: int) -> list[Record]:
        out: list[Record] = []
        while self._buffer and len(out) < limit:
            tp, epoch, items = self._buffer[0]
            st = self._parts.get(tp)
            if st is None or st.epoch != epoch:
                self._buffer.popleft()
                continue
            if isinstance(items[0], RecordColumns):
                items = list(items[0]) if len(items) == 1 else list(chain.from_iterable(items))
            room = limit - len(out)
            if len(items) <= room:
                self._buffer.popleft()
                taken = items
            else:
                taken = items[:room]
                self._buffer[0] = (tp, epoch, items[room:])
            out.extend(taken)
            st.position = taken[-1].offset + 1
        return out

    def _take_columns(self, limit: int) -> list[RecordColumns]:
        out: list[RecordColumns] = []
        count = 0
        while self._buffer and count < limit:
            tp, epoch, items = self._buffer.popleft()
            st = self._parts.get(tp)
            if st is None or st.epoch != epoch:
                continue
            if not isinstance(items[0], RecordColumns):  # left over from a poll() that split a batch
                recs = items
                items = [RecordColumns(tp.topic, tp.partition, [r.offset for r in recs], 0,
                                       [r.timestamp for r in recs], [r.key for r in recs],
                                       [r.value for r in recs], [r.headers for r in recs])]
            out.extend(items)
            count += sum(len(c) for c in items)
            st.position = items[-1].offsets[-1] + 1
        return out

    def wakeup(self) -> None:
        """Make the current (or next) ``poll`` return at once, with no records, within ~100 ms.
        Safe from a signal handler or another thread: it only sets a flag."""
        self._wakeup = True

    def closing_on_signals(self, signals: Iterable[int] | None = None) -> ContextManager[ShutdownSignals]:
        """``with consumer.closing_on_signals() as stop: while not stop.requested: ...``: SIGTERM
        and SIGINT end the loop and the consumer is closed (commit, leave) on this thread; see
        ``fabric.client.shutdown``.  Call from the main thread."""
        return closing_on_signals(self, signals)

    def __iter__(self) -> Iterator[Record]:
        while not self._closed:
            yield from self.poll(1000)

    def close(self) -> None:
        """Commit (with auto-commit), leave the group (dynamic members), stop the heartbeat thread."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._group is not None:
                if self.enable_auto_commit and not self._group.subscribed:
                    self._commit_quietly(self._positions(self._parts))  # assign() with a group_id
                self._group.close()
        finally:
            self._router.close()
            self._admin.close()

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
