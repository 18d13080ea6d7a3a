"""What a broker sends: a reply (header, payload frames, logs to fsync first) to one peer.

Shared by the core and the services it delegates to (fetching, groups); the I/O shell sends an
``Outbox`` once per loop turn after fsyncing every log a reply lists (group commit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..log.partition_log import PartitionLog


@dataclass
class Reply:
    header: dict[str, Any]
    frames: list[bytes] = field(default_factory=list)
    flush: list[PartitionLog] = field(default_factory=list)


Outbox = list[tuple[bytes, Reply]]
