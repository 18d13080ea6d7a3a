"""Running one task: the supervisor that owns a task's thread and restarts it after a failure.

Each task has one thread (``TaskSupervisor.thread``), which runs one *attempt* after another
(``attempt.py``): a ``SourceAttempt`` (``source_runner.py``) or a ``SinkAttempt``
(``sink_runner.py``), each owning the task object, its Fabric clients, its converters and its
transform chain; the worker's thread only sets flags (pause, resume, restart, stop) and reads
status.  That is the whole threading story: no lock is shared between tasks except inside the
stores (``state.py``).  Delivery (at-least-once on both sides) is described in each runner.
"""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Any

from .attempt import PAUSED_POLL_S, Attempt
from .config import ConnectorConfig
from .sink_runner import SinkAttempt
from .source_runner import SourceAttempt
from .state import OffsetStore, StatusStore
from .tolerance import backoff_ms

log = logging.getLogger("fabric.connect.runtime")


class TaskSupervisor:
    """Runs one task in its own thread and restarts it after a failure: backoff from
    ``restart.backoff_initial_ms`` doubling to ``restart.backoff_max_ms``; after
    ``restart.max_tries`` failures in a row without progress it gives up (FAILED, with the reason)."""

    def __init__(self, cc: ConnectorConfig, task_id: int, task_config: dict[str, Any], bootstrap: str,
                 offsets: OffsetStore, status: StatusStore, flush_interval_ms: int,
                 share: tuple[int, int] | None = None) -> None:
        self.cc = cc
        self.task_id = task_id
        self.task_config = task_config
        self.bootstrap = bootstrap
        self.offsets = offsets
        self.status = status
        self.flush_interval_s = flush_interval_ms / 1000
        # A sink task of a standalone worker: (its index, the connector's task count), and it reads
        # its share of the partitions directly; None: through the connector's consumer group.
        self.share = share
        self.stop_event = threading.Event()
        self.restart_event = threading.Event()
        self.paused = threading.Event()
        self._wake = threading.Event()
        self.state = "UNASSIGNED"
        self.failures = 0
        self.attempt: Attempt | None = None
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
