"""One run of a task (an *attempt*): what the source and the sink runners share.

An attempt lives from ``start`` to its end (failure, stop or restart) in the task's own thread
(``TaskSupervisor.thread``); it owns the task object, its Fabric clients, its converters and its
transform chain.  A restart makes a new attempt, so nothing of a failed run is reused.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from .api import TaskContext
from .config import ConnectorConfig
from .converters import make_converter
from .state import OffsetStore
from .transforms import build_chain

log = logging.getLogger("fabric.connect.runtime")

FLUSH_TIMEOUT_S = 60.0
PAUSED_POLL_S = 0.2


class Supervisor(Protocol):
    """What an attempt uses of the ``runtime.TaskSupervisor`` that runs it (a protocol, so this
    module and the runners need not import the runtime that imports them)."""

    cc: ConnectorConfig
    task_id: int
    task_config: dict[str, Any]
    bootstrap: str
    offsets: OffsetStore
    flush_interval_s: float
    share: tuple[int, int] | None
    stop_event: threading.Event
    restart_event: threading.Event
    paused: threading.Event

    def set_state(self, state: str, trace: str | None = None) -> None: ...

    def pause_wait(self) -> None: ...


class Attempt:
    """One run of a task, from ``start`` to its end (failure, stop or restart)."""

    def __init__(self, sup: Supervisor) -> None:
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



def best_effort(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return repr(value).encode()

