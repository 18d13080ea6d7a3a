"""Storage failures, logged for the operator: each distinct one, rate-limited, with its path.

Why: a ``STORAGE_ERROR`` (a full disk, an I/O error, a log that refuses appends after a failed
write) used to go back to the client that hit it and nowhere else, so the one person who can fix
the disk saw nothing.  Logging every occurrence is no better: a producer retrying against a full
disk fails thousands of times a second, and the log would bury everything else (and fill the
disk that is already full).

Rule: a failure is "distinct" by its message with the numbers that change from request to
request (offsets) taken out; the messages of ``fabric.log`` name the partition directory, so the
path is in the key.  The first occurrence of a failure is logged at once, as an ERROR; repeats
within ``interval_ms`` are counted, and the next report after the interval says how many were
not logged.  At most ``keys_max`` failures are remembered (the oldest are forgotten first).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Callable

from ..protocol.errors import FabricError
from .bounded import BoundedDict

log = logging.getLogger("fabric.broker.storage")

REPORT_INTERVAL_MS = 60_000
KEYS_MAX = 1_000
_VARYING = re.compile(r"\b(offset|offsets|at|timestamp) -?\d+")


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class StorageFaults:
    """The broker's record of storage failures (one per broker, shared by the loop and the
    flusher thread, hence the lock; it is taken only when something failed)."""

    def __init__(self, interval_ms: int = REPORT_INTERVAL_MS, keys_max: int = KEYS_MAX,
                 clock_ms: Callable[[], int] = _monotonic_ms) -> None:
        self.interval_ms = interval_ms
        self.clock_ms = clock_ms
        # key -> (when last logged, occurrences since then)
        self._seen: dict[str, tuple[int, int]] = BoundedDict(keys_max)
        self._lock = threading.Lock()
        self.total = 0

    def note(self, err: FabricError) -> None:
        """Log ``err`` if it is a storage failure not logged in the last ``interval_ms``."""
        if err.name != "STORAGE_ERROR":
            return
        key = _VARYING.sub(r"\1 N", err.message)
        with self._lock:
            self.total += 1
            now = self.clock_ms()
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.interval_ms:
                self._seen[key] = (seen[0], seen[1] + 1)
                return
            self._seen[key] = (now, 0)
        if seen is None:
            log.error("storage error: %s", err.message)
        else:
            log.error("storage error again, %d times in the %d s since its last report: %s",
                      seen[1] + 1, (now - seen[0]) // 1000, err.message)
