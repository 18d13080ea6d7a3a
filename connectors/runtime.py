"""Running one task: the source and sink loops, and the supervisor that restarts a failed task.

Each task has one thread (``TaskSupervisor.thread``), which owns the task object, its Fabric
clients, its converters and its transform chain; the worker's thread only sets flags (pause,
resume, restart, stop) and reads status.  That is the whole threading story: no lock is shared
between tasks except inside the stores (``state.py``).

Delivery is at-least-once on both sides:

* Source: records are sent, and every ``offset_flush_interval_ms`` the runner waits for the
  producer's acknowledgements (``flush``) and only then writes the newest source offset of each
  source partition to the offsets topic.  A crash replays at most one interval.
* Sink: records are converted, transformed and ``put``; every interval the runner asks the task's
  ``pre_commit`` which offsets are durable (by default it ``flush``es everything) and commits
  those; on stop and revocation it ``flush``es and commits all.  A crash replays what was not
  committed yet (about one interval, or one write in flight), which an upsert sink absorbs.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from itertools import repeat
from typing import Any

from fabric.client import Admin, Consumer, Producer
from fabric.client.futures import BatchFuture

from .api import SinkRecord, SourceBatch, SourceTask, TaskContext
from .config import ConnectorConfig
from .converters import make_converter
from .state import OffsetStore, StatusStore, offset_key
from .tolerance import ErrorHandler, backoff_ms
from .transforms import apply_chain, build_chain

log = logging.getLogger("fabric.connect.runtime")

FLUSH_TIMEOUT_S = 60.0
PAUSED_POLL_S = 0.2


class _Attempt:
    """One run of a task, from ``start`` to its end (failure, stop or restart)."""

    def __init__(self, sup: "TaskSupervisor") -> None:
        self.sup = sup
        self.cc: ConnectorConfig = sup.cc
        self.name = sup.cc.name
        self.key_conv = make_converter(self.cc.key_converter)
        self.value_conv = make_converter(self.cc.value_converter)
        self.chain = build_chain(self.cc.transforms)
        self.progressed = False
        self.task: Any = None

    def stopping(self) -> bool:
        return self.sup.stop_event.is_set() or self.sup.restart_event.is_set()

    def close_task(self) -> None:
        if self.task is None:
            return
        try:
            self.task.stop()
            self.task.close()
        except Exception:  # noqa: BLE001 - closing must not hide the failure that got us here
            log.warning("%s task %d: close failed", self.name, self.sup.task_id, exc_info=True)

    def make_task(self) -> Any:
        task = self.cc.connector_class.task_class()
        task.initialize(TaskContext(self.name, self.sup.task_id,
                                    lambda p: self.sup.offsets.get(self.name, p), self.stopping,
                                    self.sup.bootstrap))
        self.task = task
        return task


class SourceAttempt(_Attempt):
    def run(self) -> None:
        sup = self.sup
        producer = Producer(sup.bootstrap, acks=-1, linger_ms=5, client_id=f"connect-{self.name}-{sup.task_id}")
        errors = ErrorHandler(self.cc.errors, self.name, producer, self.stopping)
        try:
            task = self.make_task()
            errors.retry(task.start, sup.task_config)
            sup.set_state("RUNNING")
            pending: dict[bytes, Any] = {}
            batches: list[Any] = []  # one future per producer batch touched since the last commit
            next_commit = time.monotonic() + sup.flush_interval_s
            try:
                while not self.stopping():
                    if sup.paused.is_set():
                        sup.set_state("PAUSED")
                        sup.pause_wait()
                        if not sup.paused.is_set() and not self.stopping():
                            sup.set_state("RUNNING")
                        continue
                    records = errors.retry(task.poll)
                    if records:
                        self._send(records, producer, errors, pending, batches)
                    if time.monotonic() >= next_commit:
                        self._commit(producer, pending, batches, task)
                        next_commit = time.monotonic() + sup.flush_interval_s
            except Exception:
                # The task failed, but what it sent may be fine: commit what the broker acknowledged,
                # so that the restarted task does not send it again.
                try:
                    self._commit(producer, pending, batches, task)
                except Exception:  # noqa: BLE001 - the original failure is the one to report
                    log.warning("%s: could not commit offsets after a failure", self.name, exc_info=True)
                raise
            self._commit(producer, pending, batches, task)
        finally:
            self.close_task()
            producer.close(timeout=5)

    def _send(self, records: list, producer: Producer, errors: ErrorHandler, pending: dict, batches: list) -> None:
        if any(type(r) is SourceBatch for r in records):
            flat: list = []
            for r in records:
                if type(r) is not SourceBatch:
                    flat.append(r)
                elif self.chain or not self._send_columns(r, producer, pending, batches):
                    flat.extend(r.records())
            records = flat
        chain, kc, vc, name = self.chain, self.key_conv, self.value_conv, self.name
        send = producer.send
        last = None
        last_sp: Any = None
        pkey = b""
        for r in records:
            if r.source_partition is not last_sp:  # tasks reuse one dict per source partition
                last_sp = r.source_partition
                pkey = offset_key(name, last_sp)
            if chain:
                done = r.source_offset
                try:
                    r = apply_chain(chain, r)
                except Exception as exc:  # noqa: BLE001 - any transform bug is a bad record
                    errors.bad_record("transform", exc, None, _best_effort(r.value))
                    pending[pkey] = done
                    continue
                if r is None:  # filtered out: its offset still counts as done (and is committed)
                    pending[pkey] = done
                    continue
            try:
                k = kc.to_bytes(r.key)
                v = vc.to_bytes(r.value)
            except Exception as exc:  # noqa: BLE001
                errors.bad_record("convert", exc, None, _best_effort(r.value))
                pending[pkey] = r.source_offset
                continue
            f = send(r.topic, v, k, partition=r.partition, timestamp_ms=r.timestamp, headers=r.headers or None)
            if f[0] is not last:
                last = f[0]
                batches.append(f)
            pending[pkey] = r.source_offset
        self.progressed = True

    def _send_columns(self, b: SourceBatch, producer: Producer, pending: dict, batches: list) -> bool:
        """The columnar fast path: convert whole columns, one ``send_batch``.  False (nothing sent)
        when a value does not convert: the caller goes record by record, for the error policy."""
        if not b.values:
            pending[offset_key(self.name, b.source_partition)] = b.source_offset
            return True
        try:
            if b.columns is None:
                values = self.value_conv.to_bytes_many(b.values)
            else:
                values = self.value_conv.to_bytes_rows(b.columns, b.values)
            keys = None if b.keys is None else self.key_conv.to_bytes_many(b.keys)
        except Exception:  # noqa: BLE001 - handled record by record
            return False
        # One partition (a topic's default): every key lands in partition 0, so say so and spare
        # the producer its per-key murmur2 (pure Python, ~3 us a key: a third of this path).
        one = 0 if keys is not None and producer.partitions_for(b.topic) == 1 else None
        batches.append(producer.send_batch(b.topic, values, keys, partition=one))
        pending[offset_key(self.name, b.source_partition)] = b.source_offset
        self.progressed = True
        return True

    def _commit(self, producer: Producer, pending: dict, batches: list, task: SourceTask) -> None:
        if not pending and not batches:
            return
        producer.flush(FLUSH_TIMEOUT_S)
        for f in batches:
            exc = _error_of(f)
            if exc is not None:
                raise exc  # an unacknowledged record: do not move the offset past it
        batches.clear()
        self.sup.offsets.commit(self.name, dict(pending))
        pending.clear()
        task.commit()


def _error_of(f: Any) -> BaseException | None:
    """The delivery error of a ``RecordFuture`` or a ``BatchFuture`` (both done after ``flush``)."""
    if isinstance(f, BatchFuture):
        try:
            f.wait(0)
        except Exception as exc:  # noqa: BLE001
            return exc
        return None
    return f.exception(0)


def _best_effort(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return repr(value).encode()


class SinkAttempt(_Attempt):
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
        try:
            task = self.make_task()
            errors.retry(task.start, sup.task_config)
            self.consumer, self.errors = consumer, errors
            if cc.topics:
                # A group assigns only topics that exist when it (re)balances: create the ones a
                # source has not created yet (as a producer would), so the sink does not sit idle.
                with Admin(sup.bootstrap) as admin:
                    admin.metadata(cc.topics, allow_auto_create=True)
            consumer.subscribe(cc.topics if cc.topics else cc.topics_regex,
                               on_revoked=lambda tps: self._commit(task), on_lost=lambda tps: self._forget())
            sup.set_state("RUNNING")
            next_commit = time.monotonic() + sup.flush_interval_s
            while not self.stopping():
                if sup.paused.is_set():
                    consumer.pause(*consumer.assignment())
                    sup.set_state("PAUSED")
                    while sup.paused.is_set() and not self.stopping():
                        consumer.poll(int(PAUSED_POLL_S * 1000))  # keeps the group membership alive
                    consumer.resume(*consumer.assignment())
                    if not self.stopping():
                        sup.set_state("RUNNING")
                    continue
                batches = consumer.poll_batches(500)
                if batches:
                    self._put(task, batches, errors)
                if time.monotonic() >= next_commit:
                    self._commit(task, block=False)
                    next_commit = time.monotonic() + sup.flush_interval_s
            self._commit(task)
        finally:
            self.close_task()
            consumer.close()
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
        self.consumer.commit(ready)
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


class TaskSupervisor:
    """Runs one task in its own thread and restarts it after a failure: backoff from
    ``restart.backoff_initial_ms`` doubling to ``restart.backoff_max_ms``; after
    ``restart.max_tries`` failures in a row without progress it gives up (FAILED, with the reason)."""

    def __init__(self, cc: ConnectorConfig, task_id: int, task_config: dict[str, Any], bootstrap: str,
                 offsets: OffsetStore, status: StatusStore, flush_interval_ms: int) -> None:
        self.cc = cc
        self.task_id = task_id
        self.task_config = task_config
        self.bootstrap = bootstrap
        self.offsets = offsets
        self.status = status
        self.flush_interval_s = flush_interval_ms / 1000
        self.stop_event = threading.Event()
        self.restart_event = threading.Event()
        self.paused = threading.Event()
        self._wake = threading.Event()
        self.state = "UNASSIGNED"
        self.failures = 0
        self.attempt: _Attempt | None = None
        self.thread = threading.Thread(target=self._run, name=f"connect-{cc.name}-{task_id}", daemon=True)

    @property
    def key(self) -> str:
        return StatusStore.task_key(self.cc.name, self.task_id)

    def set_state(self, state: str, trace: str | None = None) -> None:
        if state != self.state or trace:
            self.state = state
            self.status.put(self.key, state, trace, restarts=self.failures)

    def pause_wait(self) -> None:
        self._wake.wait(PAUSED_POLL_S)
        self._wake.clear()

    def start(self) -> None:
        self.thread.start()

    def pause(self) -> None:
        self.paused.set()

    def resume(self) -> None:
        self.paused.clear()
        self._wake.set()

    def restart(self) -> None:
        self.failures = 0
        self.restart_event.set()
        self._wake.set()
        if self.attempt is not None and self.attempt.task is not None:
            self.attempt.task.stop()

    def stop(self) -> None:
        self.stop_event.set()
        self._wake.set()
        if self.attempt is not None and self.attempt.task is not None:
            self.attempt.task.stop()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def _run(self) -> None:
        r = self.cc.restart
        while not self.stop_event.is_set():
            self.restart_event.clear()
            self.attempt = (SinkAttempt if self.cc.is_sink else SourceAttempt)(self)
            try:
                self.attempt.run()
                if self.restart_event.is_set():
                    self.set_state("RESTARTING")
                    continue
                break
            except Exception as exc:  # noqa: BLE001 - every failure is reported and restarted
                if self.stop_event.is_set():
                    break
                trace = traceback.format_exc()
                self.failures = 1 if self.attempt.progressed else self.failures + 1
                log.error("%s task %d failed (%d in a row): %s", self.cc.name, self.task_id, self.failures, exc)
                if self.failures > r.max_tries:
                    self.set_state("FAILED", f"gave up after {r.max_tries} restarts; last error: "
                                             f"{type(exc).__name__}: {exc}\n{trace}")
                    return
                self.set_state("FAILED", f"{type(exc).__name__}: {exc}\n{trace}")
                wait = backoff_ms(self.failures - 1, r.backoff_initial_ms, r.backoff_max_ms) / 1000
                self.set_state("RESTARTING", f"restart {self.failures} of at most {r.max_tries} in {wait:.1f} s "
                                             f"after {type(exc).__name__}: {exc}")
                self._wake.clear()
                if not self.restart_event.is_set():
                    self._wake.wait(wait)
        self.set_state("STOPPED")
