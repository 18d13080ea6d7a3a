"""The source runner: ``poll`` the task, convert, transform and send; commit source offsets.

Delivery is at-least-once: records are sent, and every ``offset_flush_interval_ms`` the runner
waits for the producer's acknowledgements (``flush``) and only then writes the newest source
offset of each source partition to the offsets topic.  A crash replays at most one interval.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fabric.client import Producer
from fabric.client.futures import BatchFuture

from .api import SourceBatch, SourceTask
from .attempt import FLUSH_TIMEOUT_S, Attempt, best_effort
from .state import offset_key
from .tolerance import ErrorHandler
from .transforms import apply_chain

log = logging.getLogger("fabric.connect.runtime")


class SourceAttempt(Attempt):
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
                    errors.bad_record("transform", exc, None, best_effort(r.value))
                    pending[pkey] = done
                    continue
                if r is None:  # filtered out: its offset still counts as done (and is committed)
                    pending[pkey] = done
                    continue
            try:
                k = kc.to_bytes(r.key)
                v = vc.to_bytes(r.value)
            except Exception as exc:  # noqa: BLE001
                errors.bad_record("convert", exc, None, best_effort(r.value))
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

