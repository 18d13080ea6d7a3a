"""A cluster broker's producer ids: blocks allocated by the controller (Kafka's KIP-730), SPEC 14.2.

Why blocks from the controller: an id a broker composed itself (node id and a local counter, what a
single node still does: ``producer_ids.py``) is reused when the broker's data directory is wiped
and it rejoins under the same node id.  The controller hands out each block once, through a
committed metadata record (``fabric/controller/logic_producer_ids.py``), so every id is unique in
the cluster whatever happens to any broker.  A block lives only in this process's memory: a
restarted broker asks for a new one, and the ids left in the old one are never used (there are
2^63 of them).

Rules:
1. ``take`` hands out the ids of the blocks held, in order, each once.
2. A new block is asked for (``allocate_producer_ids``, one request at a time) as soon as fewer
   than ``prefetch_below`` ids are left, so the next block is normally there before the current
   one runs out and ``init_producer_id`` does not wait for the controller.  A failed request is
   asked again after ``retry_ms``.
3. An ``init_producer_id`` that finds no id (just after start-up, or the controller unreachable
   while the blocks ran out) is parked, answered in arrival order when a block arrives, or with
   REQUEST_TIMED_OUT (retriable: every client retries it, the reference client at once on the
   next bootstrap broker) after ``park_ms``, below the reference client's 2 s timeout for it.
"""

from __future__ import annotations

import logging
from typing import Any, Hashable

from ..clock import Now
from ..protocol.errors import FabricError
from ..protocol.messages import error_reply, ok_reply
from .replies import Outbox, Reply

log = logging.getLogger("fabric.broker.producer_ids")

__all__ = ["ClusterProducerIds", "ProducerIdBlocks"]

PREFETCH_BELOW = 100  # a tenth of the controller's block of 1000
PARK_MS = 1000
RETRY_MS = 200
PRODUCER_ID_MAX = 2**63 - 1


class ProducerIdBlocks:
    """Pure: the blocks held, the parked requests, and when to ask for the next block."""

    def __init__(self, prefetch_below: int = PREFETCH_BELOW, park_ms: int = PARK_MS, retry_ms: int = RETRY_MS) -> None:
        self.prefetch_below, self.park_ms, self.retry_ms = prefetch_below, park_ms, retry_ms
        self._blocks: list[list[int]] = []  # [next id, end) per block, oldest first
        self._asking = False
        self._failed = False  # the last request failed: wait retry_ms (from the next look) before asking again
        self._retry_at = 0
        self._parked: list[tuple[int, Hashable]] = []  # (deadline, token), in arrival order
        self.blocks_received = 0

    @property
    def available(self) -> int:
        return sum(end - nxt for nxt, end in self._blocks)

    @property
    def parked(self) -> int:
        return len(self._parked)

    def take(self) -> int | None:
        """Rule 1: the next id, or None when no block holds one."""
        while self._blocks and self._blocks[0][0] >= self._blocks[0][1]:
            self._blocks.pop(0)
        if not self._blocks:
            return None
        block = self._blocks[0]
        block[0] += 1
        return block[0] - 1

    def park(self, token: Hashable, now_ms: int) -> None:
        """Rule 3: ``token`` waits for the next block (at most ``park_ms``)."""
        self._parked.append((now_ms + self.park_ms, token))

    def wants_block(self, now_ms: int) -> bool:
        """Rule 2: whether to ask the controller for a block now."""
        if self._failed:
            self._failed, self._retry_at = False, now_ms + self.retry_ms
        if self._asking or now_ms < self._retry_at:
            return False
        return self.available < self.prefetch_below or bool(self._parked)

    def asking(self) -> None:
        self._asking = True

    def on_block(self, start: int, size: int) -> list[tuple[Hashable, int]]:
        """A block arrived: the parked requests it answers, with their ids."""
        self._asking = False
        self._blocks.append([start, start + size])
        self.blocks_received += 1
        out = []
        while self._parked:
            pid = self.take()
            if pid is None:
                break
            out.append((self._parked.pop(0)[1], pid))
        return out

    def on_failure(self) -> None:
        self._asking, self._failed = False, True

    def expire(self, now_ms: int) -> list[Hashable]:
        """The parked requests whose time ran out (rule 3)."""
        if not self._parked or self._parked[0][0] > now_ms:
            return []
        gone = [token for deadline, token in self._parked if deadline <= now_ms]
        self._parked = [(d, t) for d, t in self._parked if d > now_ms]
        return gone


class ClusterProducerIds:
    """``init_producer_id``'s new ids on a cluster broker: the ``ClusterNode`` (``node``) forwards
    the block requests to the controller; this keeps the blocks and answers the clients."""

    def __init__(self, node: Any, blocks: ProducerIdBlocks | None = None) -> None:
        self.node = node
        self.blocks = blocks or ProducerIdBlocks()

    def new_id(self, peer: bytes, cid: int | None, now: Now) -> Outbox:
        """A new producer id at epoch 0 for the client ``peer`` (parked when none is held)."""
        pid = self.blocks.take()
        if pid is not None:
            return [(peer, Reply(ok_reply("init_producer_id", cid, producer_id=pid, producer_epoch=0)))]
        self.blocks.park((peer, cid), now.mono_ms)
        return self.tick(now)

    def tick(self, now: Now) -> Outbox:
        """Parked requests whose time ran out; a block request when one is due (rule 2)."""
        out: Outbox = []
        for peer, cid in self.blocks.expire(now.mono_ms):  # type: ignore[misc]
            err = FabricError("REQUEST_TIMED_OUT", "no producer id block from the controller yet: retry")
            out.append((peer, Reply(error_reply("init_producer_id", cid, err))))
        link = self.node.link
        if link.registered and self.blocks.wants_block(now.mono_ms):
            self.blocks.asking()
            self.node.forward({"op": "allocate_producer_ids", "broker_id": self.node.node_id,
                               "incarnation": link.incarnation}, self._granted, now.mono_ms)
        return out

    def _granted(self, answer: dict[str, Any]) -> Outbox:
        start, size = answer.get("start"), answer.get("size")
        if answer.get("error") or not _is_block(start, size):
            log.info("no producer id block from the controller: %s", answer.get("error") or answer)
            self.blocks.on_failure()
            return []
        assert isinstance(start, int) and isinstance(size, int)
        log.debug("producer ids %d-%d are this broker's", start, start + size - 1)
        return [(peer, Reply(ok_reply("init_producer_id", cid, producer_id=pid, producer_epoch=0)))
                for (peer, cid), pid in self.blocks.on_block(start, size)]  # type: ignore[misc]


def _is_block(start: Any, size: Any) -> bool:
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (start, size))
    return ints and start >= 0 and size > 0 and start + size - 1 <= PRODUCER_ID_MAX
