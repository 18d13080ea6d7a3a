"""The error policy of one task: retries with backoff, tolerance, and the dead-letter topic.

Two kinds of trouble, handled differently (Kafka Connect's ``errors.*`` semantics):

* A *fault that may pass* (``RetriableError`` from a task, a broker timeout): the same call is
  retried with exponential backoff (100 ms doubling up to ``retry_backoff_max_ms``) until
  ``retry_timeout_ms`` has gone by; then it becomes a task failure (and the worker restarts the task).
* A *bad record* (it does not convert, a transform rejects it, the sink refuses it): with
  ``tolerance: none`` the task fails; with ``tolerance: all`` the record is skipped, logged, and,
  when ``dead_letter_topic`` is set, written there as it was read, with headers saying why:

  ======================  ==================================================
  ``error``               the exception's message
  ``error.class``         the exception's class name
  ``error.stage``         ``convert``, ``transform`` or ``put``
  ``error.connector``     the connector's name
  ``error.topic``         original topic (sinks) — absent for sources
  ``error.partition``     original partition, decimal
  ``error.offset``        original offset, decimal
  ======================  ==================================================
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, TypeVar

from fabric.client import Producer
from fabric.client.connection import RequestTimeoutError

from .api import RetriableError
from .config import ErrorPolicy

log = logging.getLogger("fabric.connect.errors")

T = TypeVar("T")
RETRY_BACKOFF_INITIAL_MS = 100

RETRIABLE = (RetriableError, RequestTimeoutError, TimeoutError, ConnectionError)


def backoff_ms(attempt: int, initial_ms: int, max_ms: int) -> int:
    """Exponential backoff: initial, 2x, 4x ... capped (``attempt`` counts from 0)."""
    return min(max_ms, initial_ms << min(attempt, 30))


class ErrorHandler:
    def __init__(self, policy: ErrorPolicy, connector: str, producer: Producer | None,
                 stopping: Callable[[], bool], sleep: Callable[[float], Any] = time.sleep) -> None:
        self.policy = policy
        self.connector = connector
        self.producer = producer
        self.stopping = stopping
        self.sleep = sleep
        self.skipped = 0
        self.dead_lettered = 0

    def retry(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, retried while it raises a retriable error and time is left."""
        deadline = time.monotonic() + self.policy.retry_timeout_ms / 1000
        attempt = 0
        while True:
            try:
                return fn(*args)
            except RETRIABLE as exc:
                if time.monotonic() >= deadline or self.stopping():
                    raise
                wait = backoff_ms(attempt, RETRY_BACKOFF_INITIAL_MS, self.policy.retry_backoff_max_ms)
                log.warning("%s: %s; retrying in %d ms", self.connector, exc, wait)
                self.sleep(wait / 1000)
                attempt += 1

    @property
    def tolerant(self) -> bool:
        return self.policy.tolerance == "all"

    def bad_record(self, stage: str, exc: BaseException, key: bytes | None, value: bytes | None,
                   origin: tuple[str, int, int] | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> None:
        """Report one record that failed at ``stage``; re-raises unless tolerance is ``all``."""
        if not self.tolerant:
            raise exc
        self.skipped += 1
        if self.policy.log:
            where = f" at {origin[0]}/{origin[1]}@{origin[2]}" if origin else ""
            log.warning("%s: skipped a record%s (%s): %s", self.connector, where, stage, exc)
        topic = self.policy.dead_letter_topic
        if topic is None or self.producer is None:
            return
        h = list(headers or [])
        h += [("error", str(exc).encode()), ("error.class", type(exc).__name__.encode()),
              ("error.stage", stage.encode()), ("error.connector", self.connector.encode())]
        if origin is not None:
            h += [("error.topic", origin[0].encode()), ("error.partition", str(origin[1]).encode()),
                  ("error.offset", str(origin[2]).encode())]
        self.producer.send(topic, value, key=key, headers=h)
        self.dead_lettered += 1
