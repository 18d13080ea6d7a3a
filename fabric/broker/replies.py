"""What a broker sends: a reply (header, payload frames, logs to fsync first) to one peer.

Shared by the core and the services it delegates to (fetching, groups); the I/O shell sends an
``Outbox`` once per loop turn after fsyncing every log a reply lists (group commit).
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
    flush: Sequence[PartitionLog] = ()


Outbox = list[tuple[bytes, Reply]]
