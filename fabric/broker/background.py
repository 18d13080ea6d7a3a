"""The broker's two background threads: fsync and log compaction.

Why threads: both do slow disk work (fsync, reading and rewriting whole segments) that must not
stall the event loop.  The flusher does two jobs: the fsyncs replies wait for (``submit``: a
``durability.Handoff`` from the loop, answered in order on ``completed`` and announced by
``wake``, which makes the loop's poll return), and the interval fsync of every log whose
``flush_interval_ms`` has passed.  ``PartitionLog.flush`` and ``compaction.compact`` are written to run
concurrently with appends and reads on the loop thread (they take the log's lock only briefly).
Each thread wakes on a fixed interval, walks a snapshot of the logs, and stops on ``stop()``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

from ..clock import Clock, SystemClock
from ..log.compaction import compact
from ..log.errors import LogError
from ..log.partition_log import PartitionLog
from ..protocol.errors import FabricError
from .core import BrokerCore
from .durability import Handoff
from .log_errors import wire_error
from .metrics import FsyncStats
from .purgatory import WaitKey

log = logging.getLogger("fabric.broker")


def timed_flush(plog: PartitionLog, stats: FsyncStats) -> None:
    """``plog.flush()``, its duration and failures counted for ``stats`` (any thread)."""
    started = time.perf_counter_ns()
    dirty = plog.unflushed
    try:
        plog.flush()
    except Exception:
        stats.failed()
        raise
    if dirty:  # a flush with nothing to write is no fsync
        stats.observe((time.perf_counter_ns() - started) // 1000)


class _Periodic(threading.Thread):
    def __init__(self, name: str, core: BrokerCore, interval_ms: int, clock: Clock | None = None) -> None:
        super().__init__(name=name, daemon=True)
        self.core = core
        self.clock = clock or SystemClock()  # dates: a log's unflushed-since and segment times are wall
        self.interval_s = interval_ms / 1000
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            self.work(self.clock.wall_ms())

    def work(self, now_ms: int) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        if self.is_alive():
            self.join(timeout)


_STOP = object()


class Flusher(_Periodic):
    """fsyncs what the loop hands over (``submit``), then reports it (``completed`` + ``wake``);
    between jobs, every ``interval_ms``, the logs whose ``flush_interval_ms`` has passed since
    their first unflushed write."""

    def __init__(self, core: BrokerCore, interval_ms: int, clock: Clock | None = None,
                 wake: Callable[[], None] = lambda: None) -> None:
        super().__init__("fabric-flusher", core, interval_ms, clock)
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.completed: queue.SimpleQueue[tuple[Handoff, dict[WaitKey, str]]] = queue.SimpleQueue()
        self._wake = wake

    def submit(self, job: Handoff) -> None:
        """Any thread (the loop): fsync ``job``'s logs, then report it on ``completed``."""
        self._jobs.put(job)

    def run(self) -> None:
        next_interval = time.monotonic() + self.interval_s
        while not self.stop_event.is_set():
            try:
                job = self._jobs.get(timeout=max(0.0, next_interval - time.monotonic()))
            except queue.Empty:
                job = None
            if job is _STOP:
                return
            if job is not None:
                # Group commit across turns: every job waiting now shares one fsync per log (the
                # loop turns once per request when it is not busy, so one job per turn would
                # mean one fsync per batch while this thread is behind).
                jobs, stop = [job], False
                while True:
                    try:
                        more = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if more is _STOP:
                        stop = True
                        break
                    jobs.append(more)
                failed = self.sync(jobs)
                for j in jobs:
                    self.completed.put((j, {k: why for k, why in failed.items() if k in j.logs}))
                self._wake()
                if stop:
                    return
            if time.monotonic() >= next_interval:
                self.work(self.clock.wall_ms())
                next_interval = time.monotonic() + self.interval_s

    def sync(self, jobs: list[Handoff]) -> dict[WaitKey, str]:
        """fsync each log of ``jobs`` once; returns the ones that failed, with why."""
        failed: dict[WaitKey, str] = {}
        logs = {key: plog for job in jobs for key, (plog, _) in job.logs.items()}
        for key, plog in logs.items():
            try:
                timed_flush(plog, self.core.metrics.fsync)
            except (FabricError, LogError) as exc:
                self.core.storage_faults.note(wire_error(exc))
                failed[key] = exc.message
            except Exception as exc:
                log.exception("fsync of %s-%d", key.topic, key.partition)
                failed[key] = f"{type(exc).__name__}: {exc}"
        return failed

    def stop(self, timeout: float = 10.0) -> None:
        self._jobs.put(_STOP)
        super().stop(timeout)

    def work(self, now_ms: int) -> None:
        for name, p, plog in self.core.topics.all_logs():
            try:
                if plog.unflushed and plog.needs_flush(now_ms):
                    timed_flush(plog, self.core.metrics.fsync)
            except (FabricError, LogError) as exc:  # a broken disk: rate-limited, not a traceback a second
                self.core.storage_faults.note(wire_error(exc))
            except Exception:
                log.exception("background flush of %s-%d", name, p)


class Compactor(_Periodic):
    """Compacts the closed segments of ``cleanup_policy: compact`` topics.  A log is looked at
    again once it has rolled a new segment since its last pass, or once the time its last pass
    named (``retry_at_ms``: a segment passing ``min_compaction_lag_ms``, a tombstone passing
    ``delete_retention_ms``) has come."""

    def __init__(self, core: BrokerCore, interval_ms: int, clock: Clock | None = None) -> None:
        super().__init__("fabric-compactor", core, interval_ms, clock)
        self._seen: dict[int, tuple[tuple[int, int], int | None]] = {}

    def work(self, now_ms: int) -> None:
        for name, p, plog in self.core.topics.all_logs():
            if self.stop_event.is_set():
                return
            if not plog.config.compact or plog.segment_count < 2:
                continue
            # Taken before the pass: a roll while the pass runs (the writer does not wait for
            # it) must bring the log back next time.  The segment count after the pass would
            # already count that roll, and its closed segment would wait for the next roll,
            # maybe forever, as in a CI run where a compacted topic was never compacted.
            marker = (plog.active_base_offset, plog.start_offset)
            seen = self._seen.get(id(plog))
            if seen is not None and seen[0] == marker and (seen[1] is None or now_ms < seen[1]):
                continue
            try:
                result = compact(plog, now_ms)
                self._seen[id(plog)] = (marker, result.retry_at_ms)
            except Exception:
                log.exception("compaction of %s-%d", name, p)
