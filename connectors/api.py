"""The connector API: what a source or a sink plugin implements, and what the worker promises it.

Strategy (Kafka Connect's split, in Python): a *connector* is configuration-time code that looks
at its validated ``config`` and splits the work into at most ``tasks_max`` task configurations;
a *task* does the copying.  The worker owns every thread, every Fabric client, the offsets, the
converters, the transforms and the error policy: a task only turns an external system into
``SourceRecord``s (``poll``) or ``SinkRecord``s into external writes (``put``/``flush``).

Lifecycle and threading contract, for both kinds of task (as in Kafka's ``SourceTask``/``SinkTask``):

* The worker creates the task object with no arguments, then calls ``initialize(context)`` and
  ``start(config)`` once, in the task's own thread.  Everything after that (``poll``/``put``/
  ``flush``/``commit``) is called from that same thread, one call at a time: a task needs no locks
  for its own state.
* ``stop()`` is the only method that is called from *another* thread (the worker's, on shutdown,
  restart or rebalance).  It must be quick and thread-safe: set a flag, wake a wait; it must not
  wait for ``poll``/``put`` to return.  After ``stop()`` the worker does not call ``poll``/``put``
  again.
* ``close()`` is called exactly once, last, in the task's own thread, even after a failure
  (``start`` may not have finished): release connections, files and sockets there.  Then the
  object is dropped (a restart makes a new one).
* An exception from ``start``/``poll``/``put``/``flush`` fails the task: the worker reports it as
  ``FAILED`` with its stack in the status topic and restarts a *fresh* task with exponential
  backoff, giving up after the connector's ``restart.max_tries``.  Raise ``RetriableError`` for a
  fault that may pass (a database restarting): the worker retries the same call with backoff
  first, within the connector's ``errors.retry_timeout_ms``, before failing the task.

Source tasks: ``poll()`` returns a list of ``SourceRecord`` (and/or ``SourceBatch``, the columnar
form; possibly empty; it should block at most about a second so that ``stop`` and pause are noticed).  Each record carries a
``source_partition`` (e.g. ``{"file": "/var/log/app.log"}``) and the ``source_offset`` reached
*after* it (e.g. ``{"position": 1234}``), both JSON-able dicts.  The worker writes the newest
offset of every source partition to the offsets topic only after the broker acknowledged every
record up to it; after a crash ``context.offset(partition)`` returns that last committed offset
and the task resumes there (records after it are sent again: at-least-once).

Sink tasks: ``put(records)`` receives a batch (in order within each topic-partition) and may
write it at once or buffer it.  Every ``offset_flush_interval_ms`` the worker asks
``pre_commit(offsets)`` (Kafka's ``preCommit``) which offsets it may commit, and commits only
those: the default calls ``flush(offsets)``, which must make everything handed to ``put`` so far
durable, and returns ``offsets``; a task that writes in the background may instead return, at
once, the offsets its finished writes cover, so that the worker goes on fetching and converting
while the external system works.  On shutdown and before its partitions are revoked the worker
calls ``flush`` itself and commits everything.  A record is committed only after it is durable
either way.  A tombstone has ``value is None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

Headers = Sequence[tuple[str, bytes]]


class ConnectError(Exception):
    """A connector or task cannot go on (bad data, refused write)."""


class RetriableError(ConnectError):
    """A fault that may pass by itself: the worker retries the same call with backoff."""


@dataclass(frozen=True, slots=True)
class Field:
    """One configuration key of a connector or transform, as Kafka's ``ConfigDef`` entries:
    the worker validates YAML against these before anything starts."""

    kind: str  # "str" | "int" | "float" | "bool" | "list" | "dict" | "any"
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] | None = None
    min: float | None = None
    doc: str = ""


ConfigSpec = Mapping[str, Field]


@dataclass(slots=True)
class SourceRecord:
    """What a source task produces.  ``key``/``value`` are plain Python values (dict, list, str,
    bytes, numbers, None) that the connector's converters turn into bytes; ``partition=None``
    lets the producer's partitioner choose by key; ``timestamp=None`` means now."""

    source_partition: dict[str, Any]
    source_offset: dict[str, Any]
    topic: str
    value: Any
    key: Any = None
    partition: int | None = None
    timestamp: int | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class SourceBatch:
    """Many records of one source partition at once, as columns: the fast path for bulk sources
    (a file's lines, a query's rows).  ``poll`` may return these among its ``SourceRecord``s.
    When the connector has no transforms and no record needs its own partition, timestamp or
    headers, the worker converts the columns and hands them to the producer in one call; else it
    expands the batch into ``SourceRecord``s.  ``source_offset`` is the offset after the *last*
    value (a batch is committed whole).

    With ``columns`` (a query's rows), each of ``values`` is a row tuple and its record's value
    is the object ``dict(zip(columns, row))``: the value converter then encodes the rows without
    building a dict per row (the JSON converter's column-wise encoder, ``json_columns.py``)."""

    source_partition: dict[str, Any]
    source_offset: dict[str, Any]
    topic: str
    values: list[Any]
    keys: list[Any] | None = None
    columns: list[str] | None = None

    def objects(self) -> list[Any]:
        """The record values (the rows as dicts when ``columns`` is given)."""
        if self.columns is None:
            return self.values
        cols = self.columns
        return [dict(zip(cols, row)) for row in self.values]

    def records(self) -> list[SourceRecord]:
        values = self.objects()
        keys = self.keys if self.keys is not None else [None] * len(values)
        sp, so, topic = self.source_partition, self.source_offset, self.topic
        return [SourceRecord(sp, so, topic, v, key=k) for k, v in zip(keys, values)]


@dataclass(slots=True)
class SinkRecord:
    """What a sink task receives: the converted key and value plus where the record came from
    (``kafka_*`` fields, so a task can do exactly-once bookkeeping of its own if it wants)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: Any
    value: Any
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class TaskContext:
    """What the worker gives a task.  ``offset`` is for source tasks (their last committed source
    offset); ``stopping`` is true once the worker wants the task to stop (for long polls)."""

    def __init__(self, connector: str, task_id: int, offset_reader: Callable[[dict], dict | None],
                 stopping: Callable[[], bool], bootstrap: str = "127.0.0.1:7171") -> None:
        self.connector = connector
        self.task_id = task_id
        self.bootstrap = bootstrap  # the worker's cluster (a mirror source creates its topics there)
        self._offset_reader = offset_reader
        self._stopping = stopping

    def offset(self, source_partition: dict[str, Any]) -> dict[str, Any] | None:
        return self._offset_reader(source_partition)

    @property
    def stopping(self) -> bool:
        return self._stopping()


class Task:
    """Common part of both task kinds (see the module docstring for the contract)."""

    context: TaskContext

    def initialize(self, context: TaskContext) -> None:
        self.context = context

    def start(self, config: dict[str, Any]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def stop(self) -> None:
        """Called from another thread; must return quickly."""

    def close(self) -> None:
        """Called last, once, in the task's thread: release what ``start`` opened."""


class SourceTask(Task):
    def poll(self) -> list[SourceRecord | SourceBatch]:  # pragma: no cover - interface
        """Records read since the last call; block at most about a second."""
        raise NotImplementedError

    def commit(self) -> None:
        """Called after the worker committed the offsets of everything polled so far (optional)."""


class SinkTask(Task):
    def put(self, records: list[SinkRecord]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def flush(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Make every record given to ``put`` durable; ``offsets`` are the next offsets to be
        committed per (topic, partition)."""

    def pre_commit(self, offsets: Mapping[tuple[str, int], int]) -> Mapping[tuple[str, int], int]:
        """The offsets the worker may commit now, per (topic, partition), each at most the one in
        ``offsets`` (the next offset after everything given to ``put``); a partition left out is
        not committed this time.  Default: ``flush`` and all of ``offsets``.  Should not block
        for long: it is called from the task's thread between two ``put``s."""
        self.flush(offsets)
        return offsets


class Connector:
    """Configuration-time part of a plugin.  ``CONFIG`` declares its keys (validated before the
    worker starts anything); ``task_configs`` splits the work.  Called from the worker's thread."""

    CONFIG: ConfigSpec = {}
    CONVERTERS: str | None = None  # a converter both key and value must use (e.g. "bytes"), if any
    task_class: type[Task]

    def validate(self, config: dict[str, Any]) -> list[tuple[str, str]]:
        """Cross-field checks beyond ``CONFIG``: a list of (key, reason); empty when valid."""
        return []

    def task_configs(self, config: dict[str, Any], tasks_max: int) -> list[dict[str, Any]]:
        """One dict per task (at most ``tasks_max``); default: one task with the whole config."""
        return [dict(config)]


class SourceConnector(Connector):
    task_class: type[SourceTask]


class SinkConnector(Connector):
    """Sinks get two framework keys in ``config``: ``topics`` (a list) or ``topics_regex``."""

    task_class: type[SinkTask]
