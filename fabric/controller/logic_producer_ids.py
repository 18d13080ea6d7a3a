"""The controller's producer-id allocation (Kafka's KIP-730): blocks of ids, one Raft record each.

A mixin of ``ControllerLogic`` (``logic.py``), pure like the rest: ``allocate_producer_ids`` returns
``(records, error, reply)`` and never changes the state itself.

Why through the controller: an id handed out twice could make a partition leader take a new
producer's batches for an old producer's duplicates (and drop them).  An id composed from the
broker's node id and a counter of its own (the scheme before this one) is reused when a broker's
data directory is wiped and it rejoins under the same node id; a block committed through Raft is
never handed out again, whatever happens to any broker or controller.

Rules (numbered after logic.py's and logic_admin.py's):
13. ``allocate_producer_ids`` gives a registered broker (its current incarnation) the next
    ``BLOCK`` ids: one ``producer_ids`` record starting at the state's
    ``next_producer_id_block_start`` (overlaid with the blocks decided and not yet applied, so two
    requests before a commit get two different blocks).  The service answers only once the record
    is committed, so a block a broker holds is in the replicated state, and a controller elected
    afterwards (which decides only once it has applied everything committed before its term)
    starts past it.  A block decided and never committed was never answered: nobody holds it.
14. The very first block of a cluster starts at ``(highest registered broker id + 1) << 32``
    (at most 2^62), above every id the per-broker scheme of earlier releases composed (node id in
    the high 32 bits), so a cluster upgraded from it never hands out one of those again.
"""

from __future__ import annotations

import logging
from typing import Any

from ..protocol.errors import FabricError
from .codes import STALE_BROKER_EPOCH, UNKNOWN_BROKER
from .records import PRODUCER_ID_MAX

log = logging.getLogger("fabric.controller.logic")

__all__ = ["BLOCK", "ProducerIdDecisions"]

BLOCK = 1000  # ids per block (Kafka's default too): a broker asks about once per thousand producers
FIRST_BLOCK_MAX = 1 << 62
Decision = tuple[list[dict[str, Any]], str | None, dict[str, Any]]


class ProducerIdDecisions:
    """Mixed into ``ControllerLogic``; uses its ``state``, ``_broker`` and ``_broker_ids``."""

    _pid_next: int | None

    def _pid_init(self) -> None:
        self._pid_next = None  # the end of the last block decided and not yet applied (soft state)

    def _next_block_start(self) -> int:
        committed = self.state.next_producer_id_block_start  # type: ignore[attr-defined]
        if self._pid_next is not None and self._pid_next > committed:
            return self._pid_next
        self._pid_next = None  # (applied: the state has caught up with it)
        if committed == 0:  # rule 14
            return min((max(self._broker_ids(), default=0) + 1) << 32, FIRST_BLOCK_MAX)  # type: ignore[attr-defined]
        return committed

    def allocate_producer_ids(self, broker_id: int, incarnation: int, now_ms: int) -> Decision:
        """Rule 13: the reply is ``{start, size}``, the block ``[start, start + size)``."""
        for name, value in (("broker_id", broker_id), ("incarnation", incarnation)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise FabricError("INVALID_FIELD", f"{name} must be an integer >= 0, not {value!r:.60}")
        view = self._broker(broker_id)  # type: ignore[attr-defined]
        if view is None or incarnation > view.incarnation:
            return [], UNKNOWN_BROKER, {}
        if incarnation < view.incarnation:
            return [], STALE_BROKER_EPOCH, {"incarnation": view.incarnation}
        start = self._next_block_start()
        if start + BLOCK - 1 > PRODUCER_ID_MAX:
            raise FabricError("LIMIT_EXCEEDED", f"the cluster has handed out every producer id below {start}")
        self._pid_next = start + BLOCK
        log.debug("producer ids %d-%d go to broker %d", start, start + BLOCK - 1, broker_id)
        return [{"type": "producer_ids", "broker_id": broker_id, "incarnation": incarnation, "start": start,
                 "size": BLOCK}], None, {"start": start, "size": BLOCK}
