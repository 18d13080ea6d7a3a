"""Produce replies that wait for the high watermark (``acks=all``), without sockets or clocks.

Why: with replication a produce with ``acks=all`` may be acknowledged only once every in-sync
replica holds its batches, i.e. once the partition's high watermark has passed them; otherwise a
leader dying right after the reply could take acknowledged records with it.  One request may write
to several partitions, each with its own leader progress, so the reply waits here until the last
of its partitions is committed (or fails, or the request's ``timeout_ms`` passes).

Rules:
1. ``hold`` parks the reply in a ``Purgatory`` under one ``HIGH_WATERMARK`` key per waiting
   partition, with the request's deadline; it returns one token per partition, which the caller
   gives to that partition's ``LeaderReplica.wait`` (or ``append``).
2. ``committed(tokens)`` marks those partitions done; a reply leaves when none is left.
3. ``failed(tokens, error)`` marks them failed with ``error`` (leadership lost: NOT_LEADER, since
   the new leader may have truncated the batch); the reply still waits for its other partitions.
4. At the deadline the partitions still waiting get REQUEST_TIMED_OUT: the batch is in the
   leader's log and may yet be committed, so the producer retries it (a duplicate without
   idempotence, never a loss).
5. Bounded: ``full()`` tells the caller to refuse the request before appending anything.
6. Replies leave in request order per connection: a produce reply to a peer that still waits
   for an earlier one queues behind it (``answer``), as a client's retry and ordering logic
   expects of one connection.  (Without this a one-partition request committed at once overtook a
   two-partition request still waiting for its slower partition, and the producer saw the later
   records of a key acknowledged first.)
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable

from ..protocol.errors import FabricError
from ..protocol.messages import ok_reply
from .purgatory import Delayed, Purgatory, WaitFor, WaitKey
from .replies import Outbox, Reply

__all__ = ["AcksAllReplies"]


@dataclass(eq=False, slots=True)
class _Pending:
    peer: bytes
    op: str
    cid: int
    results: list[dict[str, Any]]
    waiting: dict[int, int] = field(default_factory=dict)  # token number -> index in results
    entry: Delayed | None = None
    ready: bool = False


class AcksAllReplies:
    def __init__(self, capacity: int) -> None:
        self.purgatory: Purgatory[_Pending] = Purgatory(capacity)
        self._tokens: dict[int, _Pending] = {}
        self._seq = itertools.count(1)
        self._queues: dict[bytes, deque[_Pending]] = {}  # rule 6: per peer, in request order

    def __len__(self) -> int:
        return len(self.purgatory)

    def full(self) -> bool:
        return self.purgatory.full()

    def hold(self, peer: bytes, op: str, cid: int, results: list[dict[str, Any]],
             waiting: Iterable[tuple[int, str, int]], deadline_ms: int) -> list[int]:
        """Rule 1.  ``waiting``: (index in ``results``, topic, partition) of each partition whose
        batch must be committed; returns their tokens in the same order."""
        pending = _Pending(peer, op, cid, results)
        keys = []
        tokens = []
        for index, topic, partition in waiting:
            token = next(self._seq)
            pending.waiting[token] = index
            self._tokens[token] = pending
            tokens.append(token)
            keys.append(WaitKey(WaitFor.HIGH_WATERMARK, topic, partition))
        pending.entry = self.purgatory.park(pending, keys, deadline_ms)
        self._queues.setdefault(peer, deque()).append(pending)
        return tokens

    def answer(self, peer: bytes, op: str, cid: int, results: list[dict[str, Any]]) -> Outbox:
        """A produce reply that waits for nothing: sent now, or queued behind this peer's earlier
        replies still waiting (rule 6)."""
        queue = self._queues.get(peer)
        if not queue:
            return [(peer, Reply(ok_reply(op, cid, results=results)))]
        queue.append(_Pending(peer, op, cid, results, ready=True))
        return []

    def committed(self, tokens: Iterable[Hashable]) -> Outbox:
        """Rule 2."""
        return self._settle(tokens, None)

    def failed(self, tokens: Iterable[Hashable], error: FabricError) -> Outbox:
        """Rule 3."""
        return self._settle(tokens, error)

    def _settle(self, tokens: Iterable[Hashable], error: FabricError | None) -> Outbox:
        out: Outbox = []
        for token in tokens:
            pending = self._tokens.pop(token, None)  # type: ignore[arg-type]
            if pending is None:
                continue
            index = pending.waiting.pop(token)  # type: ignore[arg-type]
            if error is not None:
                row = pending.results[index]
                row["error"] = error.to_wire()
                row["base_offset"] = -1
            if not pending.waiting:
                if pending.entry is not None:
                    self.purgatory.finish(pending.entry)
                pending.ready = True
                out.extend(self._release(pending.peer))
        return out

    def _release(self, peer: bytes) -> Outbox:
        """Rule 6: the ready replies at the head of ``peer``'s queue."""
        queue = self._queues.get(peer)
        out: Outbox = []
        while queue and queue[0].ready:
            p = queue.popleft()
            out.append((peer, Reply(ok_reply(p.op, p.cid, results=p.results))))
        if queue is not None and not queue:
            del self._queues[peer]
        return out

    def forget(self, peer: bytes) -> None:
        """``peer``'s connection is gone: nothing can be sent to it any more."""
        for p in self._queues.pop(peer, ()):
            for token in p.waiting:
                self._tokens.pop(token, None)
            if p.entry is not None:
                self.purgatory.finish(p.entry)

    def expire(self, now_ms: int) -> Outbox:
        """Rule 4."""
        out: Outbox = []
        for entry in self.purgatory.expired(now_ms):
            pending = entry.op
            err = FabricError("REQUEST_TIMED_OUT", "the in-sync replicas did not all confirm the batch within "
                                                   "timeout_ms; it may still be committed: retry")
            for token, index in list(pending.waiting.items()):
                pending.results[index]["error"] = err.to_wire()
                pending.results[index]["base_offset"] = -1
                self._tokens.pop(token, None)
            pending.waiting.clear()
            pending.ready = True
            out.extend(self._release(pending.peer))
        return out

    def next_deadline_ms(self) -> int | None:
        return self.purgatory.next_deadline_ms()

    def drain(self, error: FabricError) -> Outbox:
        """On shutdown: every waiting partition fails with ``error``."""
        out: Outbox = []
        for entry in self.purgatory.all():
            out.extend(self.failed(list(entry.op.waiting), error))
        return out
