"""The sink runner: fetch, convert, transform and ``put``; commit the offsets the task made durable.

Delivery is at-least-once: records are converted, transformed and ``put``; every
``offset_flush_interval_ms`` the runner asks the task's ``pre_commit`` which offsets are durable
(by default it ``flush``es everything) and commits those; on stop and revocation it ``flush``es
and commits all.  A crash replays what was not committed yet (about one interval, or one write
in flight), which an upsert sink absorbs.  When the topics have nothing new for ``IDLE_POLL_MS``
after records were put (the end of a burst, or of a backlog), that commit comes at once instead
of at the next interval: a task that buffers (the SQL sinks fill ``batch_size`` rows) writes the
tail then, not up to an interval plus a poll later.

Partitions: in distributed mode (``worker.group`` set) the sink tasks of a connector, wherever
they run, share its topics' partitions through the consumer group ``connect-NAME``, whose
protocol moves them when a worker comes or goes.  A standalone worker has no peer to share with,
and joining a group would cost the broker's ``group_initial_rebalance_delay_ms`` (3 s by default)
before the first record: there each task reads its own share directly (partition *p* of a topic
goes to task ``(crc32(topic) + p) % tasks``: stable as partitions are added, so a partition never
moves between tasks), re-reads the metadata every ``ASSIGN_REFRESH_S`` for new topics (a
``topics_regex``) and partitions, and still resumes from and commits to the offsets of the group
``connect-NAME`` (a commit outside any generation, as Kafka's consumers with a manual assignment
do).  So both modes read the same committed offsets, and a connector can move between them.
"""

from __future__ import annotations

import logging
import re
import time
import zlib
from itertools import repeat
from typing import Any

from fabric.client import Admin, Consumer, Producer
from fabric.errors import ClientError, CommitFailedError, FabricError

from .api import ConnectError, SinkRecord
from .attempt import FLUSH_TIMEOUT_S, PAUSED_POLL_S, Attempt
from .tolerance import ErrorHandler
from .transforms import apply_chain

log = logging.getLogger("fabric.connect.runtime")

ASSIGN_REFRESH_S = 5.0
IDLE_POLL_MS = 100  # records put, then nothing new for this long: commit (so write) them without waiting


class SinkAttempt(Attempt):
    def run(self) -> None:
        sup = self.sup
        cc = self.cc
        dlq = Producer(sup.bootstrap, acks=-1, client_id=f"connect-{self.name}-dlq") \
            if cc.errors.dead_letter_topic else None
        errors = ErrorHandler(cc.errors, self.name, dlq, self.stopping)
        self.pending: dict[tuple[str, int], int] = {}  # next offset after what was put, not committed yet
        self.low: dict[tuple[str, int], int] = {}  # first offset put since the last commit of a partition
        consumer = Consumer(sup.bootstrap, group_id=f"connect-{self.name}", enable_auto_commit=False,
                            auto_offset_reset="earliest", client_id=f"connect-{self.name}-{sup.task_id}",
                            max_poll_records=sup.task_config.get("batch_size", 10_000) or 10_000,
                            fetch_max_wait_ms=200)
        admin = Admin(sup.bootstrap)
        try:
            task = self.make_task()
            errors.retry(task.start, sup.task_config)
            self.consumer, self.errors = consumer, errors
            if sup.share is not None:
                errors.retry(self._assign, admin)
            else:
                if cc.topics:
                    # A group assigns only topics that exist when it (re)balances: create the ones a
                    # source has not created yet (as a producer would), so the sink does not sit idle.
                    admin.metadata(cc.topics, allow_auto_create=True)
                consumer.subscribe(cc.topics if cc.topics else cc.topics_regex,
                                   on_revoked=lambda tps: self._commit(task), on_lost=lambda tps: self._forget())
            sup.set_state("RUNNING")
            next_commit = time.monotonic() + sup.flush_interval_s
            while not self.stopping():
                if sup.share is not None and time.monotonic() >= self.next_assign:
                    try:
                        self._assign(admin)
                    except (FabricError, ClientError) as exc:  # keep reading what it has; again later
                        log.warning("%s task %d: cannot refresh its partitions: %s", self.name, sup.task_id, exc)
                if sup.paused.is_set():
                    consumer.pause(*consumer.assignment())
                    sup.set_state("PAUSED")
                    while sup.paused.is_set() and not self.stopping():
                        consumer.poll(int(PAUSED_POLL_S * 1000))  # keeps the group membership alive
                    consumer.resume(*consumer.assignment())
                    if not self.stopping():
                        sup.set_state("RUNNING")
                    continue
                batches = consumer.poll_batches(IDLE_POLL_MS if self.pending else 500)
                if batches:
                    self._put(task, batches, errors)
                elif self.pending:
                    # Nothing new for IDLE_POLL_MS: the end of a burst, or of the backlog.  Commit
                    # now, not at the next interval, so that a task that buffers writes the tail now.
                    self._commit(task, block=False)
                if time.monotonic() >= next_commit:
                    self._commit(task, block=False)
                    next_commit = time.monotonic() + sup.flush_interval_s
            self._commit(task)
        finally:
            self.close_task()
            consumer.close()
            admin.close()
            if dlq is not None:
                dlq.close(timeout=5)

    def _put(self, task: Any, batches: list, errors: ErrorHandler) -> None:
        kc, vc, chain = self.key_conv, self.value_conv, self.chain
        out: list[SinkRecord] = []
        raw: tuple[list, list] = ([], [])  # each record's key and value bytes (for the dead-letter topic)
        for cols in batches:
            topic, part = cols.topic, cols.partition
            hdrs = cols.headers
            self.low.setdefault((topic, part), cols.offsets[0])
            if not chain and self._convert_columns(cols, out, raw):
                self.pending[(topic, part)] = cols.offsets[-1] + 1
                continue
            for i, (off, ts, kb, vb) in enumerate(zip(cols.offsets, cols.timestamps, cols.keys, cols.values)):
                h = list(hdrs[i]) if hdrs is not None else []
                try:
                    rec = SinkRecord(topic, part, off, ts, kc.from_bytes(kb), vc.from_bytes(vb), h)
                except Exception as exc:  # noqa: BLE001
                    errors.bad_record("convert", exc, kb, vb, (topic, part, off), h)
                    continue
                if chain:
                    try:
                        rec = apply_chain(chain, rec)
                    except Exception as exc:  # noqa: BLE001
                        errors.bad_record("transform", exc, kb, vb, (topic, part, off), h)
                        continue
                    if rec is None:
                        continue
                out.append(rec)
                raw[0].append(kb)
                raw[1].append(vb)
            self.pending[(topic, part)] = cols.offsets[-1] + 1
        if not out:
            return
        try:
            errors.retry(task.put, out)
        except Exception as exc:  # noqa: BLE001
            if not errors.tolerant:
                raise
            log.warning("%s: put of %d records failed (%s); retrying one by one", self.name, len(out), exc)
            for rec, kb, vb in zip(out, *raw):
                try:
                    errors.retry(task.put, [rec])
                except Exception as one_exc:  # noqa: BLE001
                    errors.bad_record("put", one_exc, kb, vb, (rec.topic, rec.partition, rec.offset), rec.headers)
        self.progressed = True

    def _convert_columns(self, cols: Any, out: list[SinkRecord], raw: tuple[list, list]) -> bool:
        """The columnar fast path: convert whole key and value columns.  False (nothing added)
        when a value does not convert: the caller goes record by record, for the error policy."""
        try:
            keys = self.key_conv.from_bytes_many(cols.keys)
            values = self.value_conv.from_bytes_many(cols.values)
        except Exception:  # noqa: BLE001 - handled record by record
            return False
        heads = [list(h) for h in cols.headers] if cols.headers is not None else [[] for _ in values]
        out.extend(map(SinkRecord, repeat(cols.topic), repeat(cols.partition), cols.offsets, cols.timestamps,
                       keys, values, heads))
        raw[0].extend(cols.keys)  # two list copies, not a tuple per record
        raw[1].extend(cols.values)
        return True

    def _commit(self, task: Any, block: bool = True) -> None:
        """Commit what the task has made durable: everything (``flush``) when ``block``, else what
        its ``pre_commit`` says is durable already; the rest stays pending for the next time."""
        if not self.pending:
            return
        offsets = dict(self.pending)
        if block:
            self.errors.retry(task.flush, offsets)
            ready = offsets
        else:
            done = self.errors.retry(task.pre_commit, offsets)
            # Only offsets past what this worker's own puts started from: a mark a task kept from an
            # earlier assignment of the partition must not move the group's offset back.
            ready = {tp: o for tp, o in done.items() if tp in offsets and self.low[tp] < o <= offsets[tp]}
            if not ready:
                return
        if self.errors.producer is not None:
            self.errors.producer.flush(FLUSH_TIMEOUT_S)  # dead letters land before their offsets commit
        try:
            self.consumer.commit(ready)
        except CommitFailedError as exc:
            if self.sup.share is None:
                raise
            raise ConnectError(f"cannot commit to the group {self.consumer.group_id!r}: it has members (a "
                               f"worker in distributed mode, or another consumer, uses it too): {exc}") from exc
        for tp, o in ready.items():
            if self.pending.get(tp) == o:
                del self.pending[tp]
                del self.low[tp]
            else:
                self.low[tp] = o

    def _forget(self) -> None:
        """Partitions lost without a commit (another member has them now): their offsets are not ours."""
        self.pending.clear()
        self.low.clear()

    def _assign(self, admin: Admin) -> None:
        """Standalone: read this task's share of the partitions (see the module), from now on."""
        index, count = self.sup.share  # type: ignore[misc]
        self.next_assign = time.monotonic() + ASSIGN_REFRESH_S
        if self.cc.topics:  # created if missing, as a producer would (a source may not have yet)
            meta = admin.metadata(self.cc.topics, allow_auto_create=True)["topics"]
            found = [(t["name"], len(t["partitions"])) for t in meta if "error" not in t]
        else:
            pattern = re.compile(self.cc.topics_regex)
            found = [(t["name"], t["partitions"]) for t in admin.list_topics() if pattern.fullmatch(t["name"])]
        mine = sorted((t, p) for t, n in found for p in range(n) if (zlib.crc32(t.encode()) + p) % count == index)
        current = set(self.consumer.assignment())
        if set(mine) == current:
            return
        for tp in current - set(mine):  # its topic is gone: nothing of it can be committed
            self.pending.pop(tp, None)
            self.low.pop(tp, None)
        log.info("%s task %d reads %s", self.name, self.sup.task_id,
                 ", ".join(f"{t}/{p}" for t, p in mine) or "nothing yet")
        self.consumer.assign(mine)

