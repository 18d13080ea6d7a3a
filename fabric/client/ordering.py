"""The producer's requests in flight and its retries, kept in per-partition order (no I/O).

The promise: the records one producer sends to one partition are written in the order sent, in
the default configuration (several requests in flight), through broker crashes, restarts and
lost connections.  Precisely, for two records ``x`` sent before ``y`` to one partition:

- if ``y`` is in the log, the first copy of ``x`` in the log comes before the first copy of
  ``y``, or ``x``'s future failed (and ``x`` is then nowhere after ``y``);
- a record can be in the log twice (no idempotent producer yet): when a connection is lost, the
  requests without a reply are sent again, in their order, and the ones the broker had already
  appended are then written again after them.  Such a repeat is a re-send of a whole run, in
  the original order; leaving out every record already seen, the log is exactly the send order.

Why it holds.  The broker executes the requests of one connection in the order sent and a crash
cuts that sequence at one point (a torn log tail is cut off too), so of the requests sent on one
connection it has a prefix.  The book then keeps two rules:

1. **Send order.**  A batch of a partition goes out only after every older batch of that
   partition was acknowledged or went out before it on the same connection.  Retries go first,
   oldest first; nothing newer of a partition goes while an older one waits for its retry.
   A lost connection (the producer's socket is one TCP connection: see ``Connection``) makes
   every request still in flight unresolved: all of them are sent again at once, in order, on
   the new connection, before anything newer.  Together with the prefix property this gives
   the first clause above: every copy of ``y`` has a copy of ``x`` before it on its connection.
2. **No retry behind a written batch.**  A batch that gets a *retriable error reply* while a
   later batch of its partition is in flight is not retried at once: it waits (``deferred``)
   for the replies of those later batches.  If all of them failed too, they are retried
   together, in order, one request at a time for that partition (``cautious``) until one
   succeeds.  If one of them was written, or the connection is lost before their replies come,
   a retry would land after a written record: the batch fails with ``RetryWouldReorderError``
   instead.  (Our broker answers a batch with a retriable error and writes a later one of the
   same partition only in rare cases: a write failure it could undo, say a full disk, followed
   by a smaller batch that fits, or a partition created in between.)

3. **Idempotent producer** (``RequestBook(idempotent=True)``, SPEC 14.5).  The leader writes
   a batch only if its sequence continues the partition's, so a batch sent after one that failed
   is never written before it: it is refused with ``OUT_OF_ORDER_SEQUENCE`` (or
   ``UNKNOWN_PRODUCER_ID`` when the leader has none of the producer's batches).  Such an error,
   while an older batch of the partition waits for its retry, is retriable, and the batches are
   retried in order; and a partition's batch is first sent only while fewer than 5 of its
   batches were sent since its oldest one not yet completed (the leader's window: a retry of
   that oldest one is still recognised).  Rule 2's ``RetryWouldReorderError`` is never raised (a retry of a batch
   that was written is answered with its original offsets, not written again).  With the
   retries, every record acknowledged is in the log exactly once, in send order.
4. **Lost producer state** (idempotent): the same errors with no older batch of the partition
   outstanding mean the partition lost the producer's state; the producer bumps its epoch and
   retries the partition's unacknowledged batches, re-stamped in order, under it (Kafka's
   KIP-360; ``epoch_bump.py`` has the rule in full, including which batches cannot be retried).

What it does not cover: a broker that stalls (SIGSTOP, swapping) longer than
``delivery_timeout_ms`` and then executes requests the producer already gave up on; those
records were reported as failed, yet may then be written after later ones.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from ..protocol.errors import FabricError, exception_for
from .accumulator import ProducerBatch as _Batch
from .connection import ClientError, RequestTimeoutError
from .epoch_bump import EpochBump, is_gap, not_appended

_Key = tuple[str, int]
WINDOW = 5  # batches of a partition a leader remembers per producer (SPEC 14.3)
RETRY_BACKOFF_FACTOR_MAX = 32  # a retry waits retry_backoff_ms doubling per attempt, at most this many times it
Finish = Callable[["_Batch", int, "BaseException | None"], None]


class RetryWouldReorderError(ClientError):
    """A batch got a retriable error but was not retried: a later batch of the same partition was
    (or may have been) written meanwhile, and the retry would have landed after it.  Order is
    kept; these records were not delivered.  ``__cause__`` is the broker's error."""


@dataclass
class _InFlight:
    batches: list["_Batch"]
    sent_ms: int


class _Consequence(ClientError):
    """An ``OUT_OF_ORDER_SEQUENCE`` (or ``UNKNOWN_PRODUCER_ID``: the new leader never saw the
    producer's first batches either) caused by an older batch of the partition that failed first:
    retriable, in order after it (rule 3)."""

    def __init__(self, err: FabricError) -> None:
        super().__init__(str(err))
        self.__cause__ = err


def is_retriable(err: BaseException) -> bool:
    return isinstance(err, (RequestTimeoutError, _Consequence)) or (isinstance(err, FabricError) and err.retriable)


class RequestBook(EpochBump):
    """The sender thread's bookkeeping: requests in flight, batches to (re)send, and which batch
    may go next.  ``finish(batch, base_offset, error)`` completes a batch (the shell's)."""

    def __init__(self, finish: Finish, retry_backoff_ms: int, delivery_timeout_ms: int,
                 idempotent: bool = False) -> None:
        self.finish = finish
        self.idempotent = idempotent  # rule 3
        self.retry_backoff_ms = retry_backoff_ms
        self.delivery_timeout_ms = delivery_timeout_ms
        self.closing = False  # no more retries: the producer is closing
        self.inflight: dict[int, _InFlight] = {}  # by cid, in send order
        self.retry: list[_Batch] = []  # to send again (sorted by ``seq`` when selected)
        self.waiting: list[_Batch] = []  # never sent, kept in the order they became ready
        self.deferred: dict[_Key, list[_Batch]] = {}  # rule 2: wait for the later batches' replies
        self.cautious: set[_Key] = set()  # rule 2: one batch in flight until one succeeds
        self.connection_error: BaseException | None = None  # why the last connection ended
        # rule 3: per partition, the batches sent from the oldest one not yet completed on
        self.window: dict[_Key, deque[_Batch]] = {}
        self.rebasing: dict[_Key, list[_Batch]] = {}  # rule 4: partitions waiting for a new epoch
        self._rebase_cause: dict[_Key, BaseException] = {}

    @property
    def idle(self) -> bool:
        return not (self.inflight or self.retry or self.waiting or self.deferred or self.rebasing)

    def next_due_ms(self) -> int | None:
        """When the earliest retry may go (None: no retry waits)."""
        return min(b.retry_at_ms for b in self.retry) if self.retry else None

    # ------------------------------------------------------------------ choosing what to send
    def select(self, fresh: list["_Batch"], now: int) -> list["_Batch"]:
        """The batches that may be sent now, in the order to send them; the others stay queued.
        Give back with ``keep`` whatever of the list is not sent."""
        if not (self.retry or self.deferred or self.cautious or self.rebasing):  # no failure to recover from
            if self.waiting:
                fresh = self.waiting + fresh
                self.waiting = []
            go = self._unexpired(fresh, now) if fresh else fresh
            return self._within_window(go) if self.idempotent and go else go
        self.retry.sort(key=_seq)
        go: list[_Batch] = []
        blocked: set[_Key] = set()
        busy: set[_Key] | None = None  # partitions with a batch in flight (cautious ones need it)
        keep_retry: list[_Batch] = []
        keep_waiting: list[_Batch] = []
        for source, kept in ((self.retry, keep_retry), (self.waiting, keep_waiting), (fresh, keep_waiting)):
            for b in source:
                key = (b.topic, b.partition)
                if key in blocked or b.retry_at_ms > now or key in self.deferred or key in self.rebasing:
                    blocked.add(key)
                    kept.append(b)
                    continue
                if now - b.created_ms > self.delivery_timeout_ms:
                    self.finish(b, -1, self._give_up(b, now))
                    continue
                if key in self.cautious:
                    if busy is None:
                        busy = {(x.topic, x.partition) for f in self.inflight.values() for x in f.batches}
                    blocked.add(key)  # at most one batch of a cautious partition per turn
                    if key in busy:
                        kept.append(b)
                        continue
                go.append(b)
        self.retry, self.waiting = keep_retry, keep_waiting
        return self._within_window(go) if self.idempotent and go else go

    def _within_window(self, go: list["_Batch"]) -> list["_Batch"]:
        """Rule 3: a partition's first send of a batch waits while ``WINDOW`` batches of it,
        counted from its oldest one not yet completed, were sent: the leader remembers only the
        last ``WINDOW``, and that oldest one may still need a retry, which must be recognised."""
        out: list[_Batch] = []
        held: list[_Batch] = []
        room: dict[_Key, int] = {}
        for b in go:
            key = (b.topic, b.partition)
            if b.attempts == 0:
                left = room.get(key)
                if left is None:
                    sent = self.window.get(key)
                    while sent and sent[0].result.done:
                        sent.popleft()
                    left = WINDOW - (len(sent) if sent else 0)
                if left <= 0:
                    room[key] = 0
                    held.append(b)
                    continue
                room[key] = left - 1
            out.append(b)
        if held:
            self.waiting[:0] = held
        return out

    def keep(self, unsent: list["_Batch"]) -> None:
        """Give back batches ``select`` returned that the in-flight window did not take.  They
        are older than any queued batch of their partition, so they go in front."""
        unsent = [b for b in unsent if not b.result.done]
        retry = [b for b in unsent if b.attempts]
        if retry:
            self.retry.extend(retry)
            unsent = [b for b in unsent if not b.attempts]
        self.waiting[:0] = unsent

    def hold(self, fresh: list["_Batch"], now: int) -> None:
        """Queue batches that cannot be sent now (no connection)."""
        self.waiting.extend(fresh)
        if self.waiting and now - self.waiting[0].created_ms > self.delivery_timeout_ms:
            self.waiting = self._unexpired(self.waiting, now)
        if self.retry and now - min(b.created_ms for b in self.retry) > self.delivery_timeout_ms:
            self.retry = self._unexpired(self.retry, now)

    def _unexpired(self, batches: list["_Batch"], now: int) -> list["_Batch"]:
        out = []
        for b in batches:
            if now - b.created_ms > self.delivery_timeout_ms:
                self.finish(b, -1, self._give_up(b, now))
            elif not b.result.done:
                out.append(b)
        return out

    # ------------------------------------------------------------------ moving a partition
    def release(self, key: _Key) -> tuple[list["_Batch"], bool] | None:
        """Hand partition ``key`` over to another connection (its leader moved): its queued
        batches, oldest first, and whether it is cautious.  None while a batch of it is in flight
        or deferred: rule 1 needs a partition's requests on one connection at a time, so it moves
        only once this connection owes it no reply (a lost connection's requests are queued
        again by ``on_lost``, and then move)."""
        if key in self.deferred or key in self.rebasing:
            return None
        for f in self.inflight.values():
            for b in f.batches:
                if (b.topic, b.partition) == key:
                    return None
        moved = sorted((b for b in self.retry if (b.topic, b.partition) == key), key=_seq)
        moved += [b for b in self.waiting if (b.topic, b.partition) == key]
        if moved:
            self.retry = [b for b in self.retry if (b.topic, b.partition) != key]
            self.waiting = [b for b in self.waiting if (b.topic, b.partition) != key]
        cautious = key in self.cautious
        self.cautious.discard(key)
        return moved, cautious

    def adopt(self, batches: list["_Batch"], cautious: bool) -> None:
        """Take over a partition another book released (none of its batches is here)."""
        for b in batches:
            (self.retry if b.attempts else self.waiting).append(b)
        if cautious and batches:
            self.cautious.add((batches[0].topic, batches[0].partition))

    def sent(self, cid: int, batches: list["_Batch"], now: int) -> None:
        self.inflight[cid] = _InFlight(batches, now)
        if self.idempotent:
            for b in batches:
                if b.attempts == 1:  # its first send
                    self.window.setdefault((b.topic, b.partition), deque()).append(b)

    # ------------------------------------------------------------------ outcomes
    def on_reply(self, header: dict[str, Any], now: int, on_error: Callable[[BaseException], None]) -> None:
        """A produce reply: complete, retry, defer or fail each batch of the request."""
        f = self.inflight.pop(header.get("cid"), None)  # type: ignore[arg-type]
        if f is None:
            return  # a reply to a request we already gave up on
        batches = f.batches
        self.connection_error = None
        if "error" in header:
            err = exception_for(header["error"])
            on_error(err)
            for i, b in enumerate(batches):
                self._failed(b, err, batches[i + 1:], now)
            return
        results = header.get("results") or []
        deferred = self.deferred
        cautious = self.cautious
        for i, b in enumerate(batches):
            r = results[i] if i < len(results) else {"error": {"code": 1, "message": "missing result"}}
            if "error" in r:
                err = exception_for(r["error"])
                on_error(err)
                self._failed(b, err, batches[i + 1:], now)
                continue
            self.finish(b, r["base_offset"], None)
            if self.rebasing and (b.topic, b.partition) in self.rebasing:
                self._rebase_acked((b.topic, b.partition), b)
            if deferred or cautious:
                key = (b.topic, b.partition)
                cautious.discard(key)
                waiting = deferred.get(key)
                if waiting:  # rule 2: an older batch of this partition failed and this one is written
                    older = [x for x in waiting if x.seq < b.seq]
                    for x in older:
                        if self.idempotent:  # rule 3: it was written too; a retry is answered as a duplicate
                            x.retry_at_ms = now
                            self.retry.append(x)
                        else:
                            self._not_retried(x, f"a later batch of {key[0]}-{key[1]} was written first")
                    rest = [x for x in waiting if x.seq > b.seq]
                    if rest:
                        deferred[key] = rest
                    else:
                        del deferred[key]

    def on_lost(self, now: int, err: BaseException) -> None:
        """The connection ended or a request timed out: nothing in flight will be answered.
        Everything in flight is sent again at once, in order (rule 1); a deferred batch cannot be
        retried any more (rule 2)."""
        self.connection_error = err
        for key, waiting in self.deferred.items():
            for x in waiting:
                if self.idempotent:  # rule 3: retried in order with the rest; the broker drops copies
                    x.retry_at_ms = now
                    self.retry.append(x)
                else:
                    self._not_retried(x, f"the connection was lost before the replies to the later batches "
                                         f"of {key[0]}-{key[1]}, which may be written")
        self.deferred.clear()
        for f in self.inflight.values():
            for b in f.batches:
                b.last_error = err
                b.uncertain = True  # (rule 4: this attempt may have been written)
                if self.closing or now - b.created_ms >= self.delivery_timeout_ms:
                    self.finish(b, -1, self._give_up(b, now))
                elif self.rebasing and (b.topic, b.partition) in self.rebasing:
                    self.rebasing[(b.topic, b.partition)].append(b)
                else:
                    b.retry_at_ms = now  # a new connection: no back-off
                    self.retry.append(b)
        self.inflight.clear()

    def _failed(self, b: "_Batch", err: BaseException, later: list["_Batch"], now: int) -> None:
        """Batch ``b`` got an error reply; ``later`` are the batches after it in its request."""
        key = (b.topic, b.partition)
        b.last_error = err
        if not not_appended(err):
            b.uncertain = True  # (rule 4: this attempt may have been appended)
        if self.idempotent and (key in self.rebasing or (is_gap(err) and not self._older_pending(key, b.seq))):
            if is_gap(err) or is_retriable(err):  # rule 4: held for the new epoch
                self._hold_for_rebase(key, b, err)
                return
        if self.idempotent and is_gap(err) and self._older_pending(key, b.seq):
            err = b.last_error = _Consequence(err)  # rule 3: it follows an older batch's failure
        if not is_retriable(err):
            self.finish(b, -1, err)
        elif self.closing or now - b.created_ms >= self.delivery_timeout_ms:
            self.finish(b, -1, self._give_up(b, now))
        else:
            self.deferred.setdefault(key, []).append(b)
        self._settle(key, later, now)

    def _older_pending(self, key: _Key, seq: int) -> bool:
        """Whether an older batch of ``key`` is not yet acknowledged (queued for a retry, or in
        flight: its request may have been lost on the way)."""
        return any(x.seq < seq for x in self.deferred.get(key, ())) or any(
            x.seq < seq and (x.topic, x.partition) == key for x in self.retry) or any(
            x.seq < seq and (x.topic, x.partition) == key for f in self.inflight.values() for x in f.batches)

    def _settle(self, key: _Key, later: list["_Batch"], now: int) -> None:
        """Retry a partition's deferred batches once no later batch of it is in flight."""
        waiting = self.deferred.get(key)
        if not waiting:
            return
        oldest = waiting[0].seq
        for b in later:
            if b.seq > oldest and (b.topic, b.partition) == key:
                return
        for f in self.inflight.values():
            for b in f.batches:
                if b.seq > oldest and (b.topic, b.partition) == key:
                    return
        del self.deferred[key]
        for b in waiting:
            b.retry_at_ms = now + self.retry_backoff_ms * min(2 ** max(b.attempts - 1, 0), RETRY_BACKOFF_FACTOR_MAX)
            self.retry.append(b)
        self.cautious.add(key)

    def _not_retried(self, b: "_Batch", why: str) -> None:
        exc = RetryWouldReorderError(f"{b.last_error}; not retried: {why}, and a retry would land after it")
        exc.__cause__ = b.last_error
        self.finish(b, -1, exc)

    def _give_up(self, b: "_Batch", now: int) -> BaseException:
        """The error of a batch that ran out of time or retries: says how long it was tried."""
        tried = f"sent {b.attempts} time{'s' * (b.attempts != 1)} over {(now - b.created_ms) / 1000:.1f} s"
        if self.closing:
            return b.last_error or ClientError("producer closed before the record was sent")
        last_error = b.last_error or self.connection_error
        last = f"; last error: {last_error}" if last_error is not None else ""
        exc = RequestTimeoutError(f"not acknowledged within delivery_timeout_ms={self.delivery_timeout_ms} "
                                  f"({tried}){last}")
        exc.__cause__ = last_error
        return exc


def _seq(b: "_Batch") -> int:
    return b.seq
