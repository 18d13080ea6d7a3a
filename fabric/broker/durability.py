"""Replies that wait for an fsync, without sockets, threads or clocks.

Why: with ``flush_every_batch`` (and for every group commit) a produce may be acknowledged only
once its batch is on disk.  The fsync used to run on the event loop at the end of the turn, which
stalled every connection behind one disk; now the loop hands the logs to the flusher thread and
carries on, and a reply waits here, parked in a ``Purgatory`` under ``WaitFor.DURABLE`` keys,
until the flusher reports its logs synced (``flushed``).

Rules:
1. A reply with logs to fsync (``Reply.flush``) is *held*: parked under one DURABLE key per log,
   in the batch of the current *ticket*.  ``handoff`` closes the ticket (once per loop turn, after
   the turn's appends: one fsync per log however many batches it took, the group commit) and
   returns the logs to sync with the log end each must reach.
2. Tickets complete in order (one flusher thread).  ``flushed(ticket, failed)`` releases every
   reply of that ticket; a reply whose log failed to sync becomes a ``STORAGE_ERROR`` reply, never
   a false acknowledgement.
3. Replies leave in order per connection: while a peer has a held reply, every later reply to it
   (of any operation) queues behind it, and a released reply leaves only when everything before
   it has.  Other peers are not held up.
4. Bounded: at most ``capacity`` replies are held.  Beyond, ``route`` reports the reply as
   ``overflow`` and the shell syncs its logs on the spot (the old way), keeping rule 3.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from ..log.partition_log import PartitionLog
from ..protocol.errors import FabricError
from ..protocol.messages import error_reply
from .purgatory import Purgatory, WaitFor, WaitKey
from .replies import Outbox, Reply

NEVER = 1 << 62  # a held reply has no deadline: it waits for the disk (whose failure is an answer too)


@dataclass(eq=False, slots=True)
class _Held:
    peer: bytes
    reply: Reply
    ticket: int
    ready: bool = False


@dataclass(slots=True)
class Handoff:
    """One ticket's work for the flusher: each log to fsync and the log end the sync covers."""

    ticket: int
    logs: dict[WaitKey, tuple[PartitionLog, int]] = field(default_factory=dict)


class DurableReplies:
    def __init__(self, capacity: int) -> None:
        self.purgatory: Purgatory[_Held] = Purgatory(capacity)
        self._queues: dict[bytes, deque[_Held]] = {}  # rule 3: per peer, held replies and those behind
        self._open = Handoff(1)  # the ticket replies are held in now (rule 1)

    def __len__(self) -> int:
        return len(self.purgatory)

    def route(self, outbox: Outbox, flush_now: Callable[[Reply], Reply]) -> Outbox:
        """The replies of ``outbox`` that may leave now, in order; the others are held (rules 1, 3).
        ``flush_now`` syncs a reply's logs on the spot when the purgatory is full (rule 4) and
        returns the reply to send (an error reply if the sync failed)."""
        if not self._queues and not any([reply.flush for _, reply in outbox]):
            return outbox  # the usual case: nothing waits
        now: Outbox = []
        for peer, reply in outbox:
            queue = self._queues.get(peer)
            if reply.flush and not self.purgatory.full():
                held = _Held(peer, reply, self._open.ticket)
                keys = []
                for topic, partition, plog in reply.flush:
                    key = WaitKey(WaitFor.DURABLE, topic, partition)
                    keys.append(key)
                    self._open.logs[key] = (plog, -1)  # the end is read at handoff
                self.purgatory.park(held, keys, NEVER)
                if queue is None:
                    self._queues[peer] = queue = deque()
                queue.append(held)
                continue
            if reply.flush:
                reply = flush_now(reply)
            if queue is None:
                now.append((peer, reply))
            else:
                queue.append(_Held(peer, reply, 0, ready=True))
        return now

    def handoff(self) -> Handoff | None:
        """Close the open ticket: the logs its held replies wait for (rule 1), or None if none."""
        job = self._open
        if not job.logs:
            return None
        self._open = Handoff(job.ticket + 1)
        job.logs = {key: (plog, plog.end_offset) for key, (plog, _) in job.logs.items()}
        return job

    def flushed(self, job: Handoff, failed: dict[WaitKey, str]) -> Outbox:
        """``job``'s logs are synced, but ``failed`` (key -> why): release its replies (rule 2) and
        return what may leave now (rule 3)."""
        peers: dict[bytes, None] = {}
        for entry in self.purgatory.watching(job.logs):
            held = entry.op
            if held.ticket > job.ticket:
                continue  # held in a later ticket, for the same log
            self.purgatory.finish(entry)
            bad = [failed[k] for k in entry.keys if k in failed]
            if bad:
                held.reply = _storage_error(held.reply, bad[0])
            held.ready = True
            peers[held.peer] = None
        self.purgatory.next_deadline_ms()  # drops finished entries from its heap (they never expire)
        out: Outbox = []
        for peer in peers:
            queue = self._queues[peer]
            while queue and queue[0].ready:
                out.append((peer, queue.popleft().reply))
            if not queue:
                del self._queues[peer]
        return out

    def drain(self, flush_now: Callable[[Reply], Reply]) -> Outbox:
        """On shutdown: sync what every held reply waits for on the spot and release everything."""
        out: Outbox = []
        for peer, queue in self._queues.items():
            for held in queue:
                out.append((peer, flush_now(held.reply) if not held.ready else held.reply))
        for entry in self.purgatory.all():
            self.purgatory.finish(entry)
        self._queues.clear()
        self._open = Handoff(self._open.ticket + 1)
        return out


def _storage_error(reply: Reply, why: str) -> Reply:
    header = reply.header
    err = FabricError("STORAGE_ERROR", f"the batch was written but could not be made durable: {why}")
    return Reply(error_reply(header.get("op"), header.get("cid"), err))
