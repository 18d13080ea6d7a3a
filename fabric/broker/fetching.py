"""Fetch: reads, long polls, pipelined and standing fetches, without sockets or clocks.

Theory of operation.  ``fetch`` reads every requested partition from its offset (whole batches,
never decoded) up to its high watermark (``Leadership``: only a partition this broker leads is
read).  If that is less than ``min_bytes`` the request parks in the ``Purgatory`` under one
``WaitFor.BYTES`` key per partition until the high watermark of one of them moves far enough
(``wake``: an append, or an fsync for ``flush_every_batch``), its deadline passes (``expire``,
monotonic), a watched topic is deleted, or the broker shuts down (``drain``).  Each method returns
the replies to send now.

Why pipelining (``follows``).  With one fetch in flight, a consumer at the tail leaves the broker
without a parked fetch for a whole round trip after each reply: whatever is produced meanwhile
waits for the next request.  At 10,000 events/s on a loaded machine that wait was most of the
end-to-end latency.  So a consumer may send a second fetch at once that *follows* the first: it
reads each partition from where the reply to the first one ended.  The broker always holds one
of them, parked, ready to answer an append.

Rules for a fetch with ``follows`` = the cid of the connection's previous fetch:
1. The broker remembers one fetch per connection, the latest: while it is parked, its waiter;
   once answered, where each partition continues.  A partition continues at the high watermark
   when its reply held everything up to it (or nothing because the offset was the high
   watermark already), at its own offset when the reply held nothing for it (the byte budget
   went to other partitions); otherwise (cut by ``max_bytes``, or an error) it has no
   continuation.  Knowing this needs no walk over the batches (``PartitionLog.read_upto``).
2. Following a parked fetch, or a follow-on still waiting: the follow-on waits behind it (one per
   fetch; at most ``FOLLOW_ON_CHAIN_MAX`` waiting per connection) and is evaluated like a new
   fetch when the one before it is answered; its ``max_wait_ms`` starts then.
3. Following the latest answered fetch: evaluated at once, from the continued offsets.
4. Anything else (an older cid, a forgotten connection, a partition without continuation): from
   the offsets as given.
5. Every partition in the reply to a follow-on carries ``offset``, the offset it was read from,
   so the client can check that the data continues where it stands and ignore it otherwise.
6. A fetch with ``answers`` = N > 1 is a *standing* fetch: after a reply it waits again (a new
   ``max_wait_ms``), from where that reply ended, until it has had N replies.  Each reply carries
   ``offset`` (rule 5) and ``answers_left``.  A reply is its last (``answers_left`` 0) when it has
   an error, a partition without continuation (rule 1), when the fetch cannot wait
   (``max_wait_ms`` or ``min_bytes`` 0), or when a fetch the connection sent later does not follow
   its chain.  Follow-ons of a standing fetch wait until it is spent.  Why: at the tail, one
   request per reply was half the broker's requests, and each one cost as much as the append it
   waited for.
7. Flow control (``flow.py``): while the connection is *congested* (too many of its reply bytes,
   or of everyone's, still queued in ZeroMQ), a reply that would carry data carries none: every
   partition has the retriable error ``THROTTLED`` (and so no continuation, and a standing fetch
   ends).  A fetch arriving then is answered so at once, without reading the log.  Why at reply
   time and not only when a request arrives: parked, standing and follow-on fetches are answered
   without a new request, and a client that parks thousands of fetches and reads nothing would
   otherwise have them all answered with data by one append.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, NamedTuple

from ..log.errors import LogError
from ..protocol.errors import FabricError, error_map
from ..protocol.limits import Limits
from ..protocol.messages import FetchRequest
from ..protocol.schema import with_field
from ..records.batch import next_offset_in
from .bounded import BoundedDict
from .metrics import Metrics
from .replies import Outbox, Reply
from .leadership import Leadership
from .log_errors import wire_error
from .purgatory import Delayed, Purgatory, WaitFor, WaitKey
from .topics import TopicManager

log = logging.getLogger("fabric.broker")

Key = tuple[str, int]


class _Read(NamedTuple):
    metas: list[dict[str, Any]]
    datas: list[bytes]
    total: int
    any_error: bool
    ends: dict[Key, int]  # where each partition continues (rule 1)
    at_end: bool  # every partition was read up to its high watermark: nothing more to read now


FOLLOW_ON_CHAIN_MAX = 8  # follow-ons waiting behind one connection's parked fetch (rule 2)


def _never(peer: bytes) -> bool:
    return False


BYTES = WaitFor.BYTES


@dataclasses.dataclass(eq=False, slots=True)
class Waiter:
    """A parked fetch (the operation a purgatory entry holds)."""

    peer: bytes
    cid: int
    request: FetchRequest
    follow_on: "_FollowOn | None" = None  # the pipelined fetches waiting for this one
    spent: int = 0  # a standing fetch's replies so far (rule 6)


Parked = Delayed[Waiter]


@dataclasses.dataclass(eq=False, slots=True)
class _FollowOn:
    """A pipelined fetch waiting for the one before it to be answered (rule 2)."""

    cid: int
    request: FetchRequest
    depth: int  # its place in the chain behind the parked fetch (1 = right behind it)
    next: "_FollowOn | None" = None
    done: bool = False


@dataclasses.dataclass(eq=False, slots=True)
class _Latest:
    """A connection's latest fetch (rule 1): parked, waiting as a follow-on, or answered."""

    cid: int
    waiter: Parked | None = None
    follow_on: _FollowOn | None = None
    ends: dict[Key, int] | None = None


class Fetcher:
    def __init__(self, topics: TopicManager, metrics: Metrics, limits: Limits,
                 on_error: Callable[[FabricError], None], leadership: Leadership) -> None:
        self.topics = topics
        self.leadership = leadership  # who may be read here, and up to where (the high watermark)
        self.metrics = metrics
        self.on_error = on_error  # told of every per-partition error (the core logs storage ones)
        self.waiters: Purgatory[Waiter] = Purgatory(limits.inflight_requests_max)
        self._latest: dict[bytes, _Latest] = BoundedDict(limits.inflight_requests_max)
        self.congested: Callable[[bytes], bool] = _never  # rule 7; the core plugs in its ReplyBudget

    # ------------------------------------------------------------------ entry points
    def fetch(self, peer: bytes, cid: int, req: FetchRequest, now_ms: int) -> Outbox:
        if self.congested(peer) and req.partitions:  # rule 7, before any read
            self._latest[peer] = _Latest(cid, ends={})
            return [(peer, self._reply(cid, self._throttled(req), 0 if req.answers > 1 else None))]
        if req.follows >= 0:
            self.metrics.follow_on_fetches += 1
            latest = self._latest.get(peer)
            if latest is not None and latest.cid == req.follows:
                w, before = latest.waiter, latest.follow_on
                if w is not None and not w.done and w.op.follow_on is None:  # rule 2
                    self.metrics.follow_on_fetches_chained += 1
                    w.op.follow_on = self._wait_behind(peer, cid, req, 1)
                    return []
                if before is not None and not before.done and before.next is None \
                        and before.depth < FOLLOW_ON_CHAIN_MAX:
                    self.metrics.follow_on_fetches_chained += 1
                    before.next = self._wait_behind(peer, cid, req, before.depth + 1)
                    return []
                if latest.ends is not None:
                    self.metrics.follow_on_fetches_chained += 1
                    req = _continued(req, latest.ends)  # rule 3
        self._latest[peer] = _Latest(cid)  # the latest now, whether it parks or is answered at once
        return self._evaluate(peer, cid, req, now_ms)

    def _wait_behind(self, peer: bytes, cid: int, req: FetchRequest, depth: int) -> _FollowOn:
        f = _FollowOn(cid, req, depth)
        self._latest[peer] = _Latest(cid, follow_on=f)
        return f

    def wake(self, keys: list[Key], now_ms: int) -> Outbox:
        """Appends (or deletions) touched ``keys``: answer the parked fetches that now can be."""
        out: Outbox = []
        for entry in self.waiters.watching([WaitKey(BYTES, topic, p) for topic, p in keys]):
            w = entry.op
            req = w.request
            read = self._read(req)
            if read.total >= min(req.min_bytes, req.max_bytes) or read.any_error:
                out.extend(self._answer(w.peer, w.cid, req, read, now_ms, w.follow_on, w.spent, parked=entry))
        return out

    def expire(self, now_ms: int) -> Outbox:
        """Answer parked fetches whose wait is over with whatever they can have."""
        out: Outbox = []
        for entry in self.waiters.expired(now_ms):
            w = entry.op
            out.extend(self._answer(w.peer, w.cid, w.request, self._read(w.request), now_ms, w.follow_on, w.spent))
        return out

    def drain(self) -> Outbox:
        """On shutdown: answer every parked fetch, and the follow-ons waiting behind it, now."""
        return self._answer_last(self.waiters.all())

    def next_deadline_ms(self) -> int | None:
        return self.waiters.next_deadline_ms()

    def parked(self, peer: bytes) -> bool:
        """Whether ``peer``'s latest fetch waits here (parked, or a follow-on behind one): the
        connection is not idle even if it sends nothing for a while."""
        latest = self._latest.get(peer)
        if latest is None:
            return False
        return (latest.waiter is not None and not latest.waiter.done) or \
            (latest.follow_on is not None and not latest.follow_on.done)

    def release(self, peer: bytes) -> Outbox:
        """``peer``'s connection ended: answer its parked fetches, and the follow-ons behind them,
        now, each with its last reply.

        Why answer rather than drop: the broker learns of a connection's end from the ROUTER's
        monitor socket, which can lag behind a new connection's first message on the same
        (reused) descriptor, so the end may be pinned on a peer that is still there.  Such a peer
        just gets an early answer and fetches again; for one that is really gone the ROUTER
        drops the replies.  Either way nothing stays parked for a dead connection."""
        self._latest.pop(peer, None)
        out = self._answer_last([e for e in self.waiters.all() if e.op.peer == peer])
        if out:
            log.debug("connection of %s ended: answered its %d waiting fetches", peer.hex(), len(out))
        return out

    # ------------------------------------------------------------------ internals
    def _answer_last(self, entries: list[Parked]) -> Outbox:
        """Answer the parked fetches ``entries`` and the follow-ons behind each with what they can
        have now, as their last replies (a standing fetch ends: ``answers_left`` 0)."""
        out: Outbox = []
        for entry in entries:
            self.waiters.finish(entry)
            w = entry.op
            read = self._read(w.request)
            out.append((w.peer, self._reply(w.cid, read, 0 if w.request.answers > 1 else None)))
            f = w.follow_on
            while f is not None:
                f.done = True
                req = _continued(f.request, read.ends)
                read = self._read(req)
                out.append((w.peer, self._reply(f.cid, read, 0 if f.request.answers > 1 else None)))
                f = f.next
        return out

    def _evaluate(self, peer: bytes, cid: int, req: FetchRequest, now_ms: int,
                  behind: _FollowOn | None = None, spent: int = 0) -> Outbox:
        """Answer now, or park (long poll); ``behind``: the follow-ons waiting for this fetch."""
        read = self._read(req)
        if (req.max_wait_ms > 0 and read.total < min(req.min_bytes, req.max_bytes) and not read.any_error
                and req.partitions and not self.waiters.full()):
            self._park(peer, cid, req, now_ms, behind, spent)
            return []
        return self._answer(peer, cid, req, read, now_ms, behind, spent)

    def _park(self, peer: bytes, cid: int, req: FetchRequest, now_ms: int, behind: _FollowOn | None,
              spent: int) -> None:
        keys = [WaitKey(BYTES, fp.topic, fp.partition) for fp in req.partitions]
        w = self.waiters.park(Waiter(peer, cid, req, behind, spent), keys, now_ms + req.max_wait_ms)
        if behind is None:  # else the connection's latest fetch is the last one behind it
            latest = self._latest.get(peer)
            if latest is not None and latest.cid == cid:  # a standing fetch waiting again
                latest.waiter, latest.follow_on, latest.ends = w, None, None
            else:
                self._latest[peer] = _Latest(cid, waiter=w)

    def _answer(self, peer: bytes, cid: int, req: FetchRequest, read: _Read, now_ms: int,
                behind: _FollowOn | None = None, spent: int = 0, parked: Parked | None = None) -> Outbox:
        """Reply; then a standing fetch waits again, or else: remember where the reply ended and
        evaluate the follow-on waiting for it.  ``parked``: the fetch's waiter, still parked (a
        wake): finished here, or re-armed in place when the fetch waits again at the tail."""
        if read.total and self.congested(peer):  # rule 7
            read = self._throttled(req)
        left = req.answers - spent - 1
        stands = left > 0 and self._stands(peer, cid, req, read, behind, needs_slot=parked is None)  # rule 6
        if parked is not None and not (stands and read.at_end):
            self.waiters.finish(parked)
        if stands:
            out = [(peer, self._reply(cid, read, left))]
            self.metrics.standing_fetch_answers += 1
            req = _continued(req, read.ends)
            if read.at_end:  # (the usual case at the tail) reading again now would find nothing
                if parked is not None:  # same waiter, new request and deadline
                    parked.op.request, parked.op.spent = req, spent + 1
                    self.waiters.rearm(parked, now_ms + req.max_wait_ms)
                else:
                    self._park(peer, cid, req, now_ms, behind, spent + 1)
            else:
                out.extend(self._evaluate(peer, cid, req, now_ms, behind, spent + 1))
            return out
        out = [(peer, self._reply(cid, read, 0 if req.answers > 1 else None))]
        if behind is None:
            self._latest[peer] = _Latest(cid, ends=read.ends)
            return out
        behind.done = True
        if behind.next is not None:
            _shift(behind.next)
        out.extend(self._evaluate(peer, behind.cid, _continued(behind.request, read.ends), now_ms, behind.next))
        return out

    def _stands(self, peer: bytes, cid: int, req: FetchRequest, read: _Read, behind: _FollowOn | None,
                needs_slot: bool = True) -> bool:
        """Whether a standing fetch waits again after this reply (rule 6): no error, every
        partition continues (rule 1), and it is still the connection's latest fetch or has
        follow-ons waiting behind it.  ``needs_slot``: it would park anew (not re-armed)."""
        if read.any_error or len(read.ends) != len(req.partitions) or (needs_slot and self.waiters.full()) \
                or req.max_wait_ms <= 0 or min(req.min_bytes, req.max_bytes) <= 0:
            return False  # (a fetch that cannot wait would spend every answer at once)
        last = cid  # the newest fetch of its chain must be the connection's latest
        while behind is not None:
            last, behind = behind.cid, behind.next
        latest = self._latest.get(peer)
        return latest is not None and latest.cid == last

    def _read(self, req: FetchRequest) -> _Read:
        metas: list[dict[str, Any]] = []
        datas: list[bytes] = []
        ends: dict[Key, int] = {}
        total = 0
        any_error = False
        at_end = True
        says_offset = req.follows >= 0 or req.answers > 1  # rules 5 and 6
        for fp in req.partitions:
            key = (fp.topic, fp.partition)
            meta: dict[str, Any] = {"topic": fp.topic, "partition": fp.partition}
            if says_offset:
                meta["offset"] = fp.offset
            data = b""
            try:
                plog = self.topics.partition(fp.topic, fp.partition)
                hw = self.leadership.readable(fp.topic, fp.partition).high_watermark
                meta["high_watermark"] = hw
                meta["log_start_offset"] = plog.start_offset
                remaining = req.max_bytes - total
                if fp.offset == hw:
                    ends[key] = hw
                elif remaining > 0 or total == 0:
                    data, reached = plog.read_upto(fp.offset, max(1, min(fp.max_bytes, remaining)), hw)
                    if reached:
                        ends[key] = hw
                    else:
                        at_end = False
                    if data:  # records out: known from the end offset, else from the batch headers
                        c = self.metrics.partition(fp.topic, fp.partition)
                        n = (hw if reached else next_offset_in(data, fp.offset)) - fp.offset
                        c.records_out += n
                        self.metrics.records_out += n
                else:
                    ends[key] = fp.offset  # nothing read: the budget went to earlier partitions
                    at_end = False
            except (FabricError, LogError) as exc:
                err = wire_error(exc)
                self.on_error(err)
                meta["error"] = err.to_wire()
                if "skip_offset" in err.details:  # CORRUPT_BATCH: damage on disk (SPEC 5.10)
                    meta["skip_offset"] = err.details["skip_offset"]
                any_error = True
            metas.append(meta)
            datas.append(data)
            total += len(data)
        return _Read(metas, datas, total, any_error, ends, at_end)

    def _throttled(self, req: FetchRequest) -> _Read:
        """What a congested connection gets instead of data (rule 7)."""
        self.metrics.errors["THROTTLED"] += 1
        says_offset = req.follows >= 0 or req.answers > 1
        err = error_map("THROTTLED", "too many reply bytes wait unread for this connection or the broker: "
                                     "read them, back off, fetch again")
        metas = [{"topic": fp.topic, "partition": fp.partition, **({"offset": fp.offset} if says_offset else {}),
                  "error": err} for fp in req.partitions]
        return _Read(metas, [b""] * len(metas), 0, True, {}, False)

    def _reply(self, cid: int, read: _Read, answers_left: int | None = None) -> Reply:
        metrics = self.metrics
        metrics.bytes_out += read.total
        for meta, data in zip(read.metas, read.datas):
            if data:
                metrics.partition(meta["topic"], meta["partition"]).bytes_out += len(data)
        header = {"op": "fetch", "cid": cid, "partitions": read.metas}  # (ok_reply's map, inline)
        if answers_left is not None:
            header["answers_left"] = answers_left
        return Reply(header, read.datas)


def _shift(f: _FollowOn | None) -> None:
    """The fetch in front of a chain was answered: everyone in it moves up one place."""
    while f is not None:
        f.depth -= 1
        f = f.next


def _continued(req: FetchRequest, ends: dict[Key, int]) -> FetchRequest:
    """``req`` reading each partition from where the followed fetch left it (rules 3 and 4)."""
    parts = tuple([fp if (end := ends.get((fp.topic, fp.partition))) is None or end == fp.offset
                   else with_field(fp, "offset", end)
                   for fp in req.partitions])
    return with_field(req, "partitions", parts)
