"""What a broker sends: a reply (header, payload frames, logs to fsync first) to one peer.

Shared by the core and the services it delegates to (fetching, groups).  The I/O shell sends an
``Outbox`` at once, except a reply that lists logs to fsync (``flush``: ``(topic, partition, log)``
triples) and the replies to the same peer behind it, which wait in ``durability.py`` until the
flusher thread has synced those logs (once per loop turn for all of them: group commit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..log.partition_log import PartitionLog


@dataclass(slots=True)
class Reply:
    """``frames`` and ``flush`` default to a shared empty tuple (read-only: a reply is built
    whole), so the produce ack and the error reply allocate no lists."""

    header: dict[str, Any]
    frames: Sequence[bytes] = ()
    flush: Sequence[tuple[str, int, PartitionLog]] = ()


Outbox = list[tuple[bytes, Reply]]
