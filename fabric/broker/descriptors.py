"""The broker's file-descriptor budget: how many segment files it may keep open.

Why: every descriptor the process holds counts against ``RLIMIT_NOFILE`` (often a soft limit of
1,024 and a hard one of 4,096 or more).  Segment files, client connections (one each, plus
ZeroMQ's own), the metadata and index writes and the flusher's duplicates all draw from it; when
the segment files alone took every descriptor, a create failed halfway, rolls and fsyncs failed and
new clients could not connect.  So:

- at start-up the shell raises the soft limit as far as the hard limit allows (``raise_nofile_limit``);
- segment files are lent by a bounded ``FilePool`` (``fabric/log/handles.py``) whose capacity is
  ``limits.segment_files_open_max``, lowered to what the limit leaves after a reserve for
  connections and the rest (``segment_file_budget``).  Partitions beyond it cost no descriptor
  while idle: 10,000 partitions run under a limit of 4,096.
"""

from __future__ import annotations

import logging
import resource

from ..log.handles import MIN_CAPACITY, nofile_limit
from ..protocol.limits import Limits

log = logging.getLogger("fabric.broker")

# Descriptors kept free besides one per connection: ZeroMQ's context, I/O thread and monitor
# socket, stdio and the log file, metadata and checkpoint writes, index files being written or
# fsynced, the flusher's and compactor's duplicates of the files they sync or read.
RESERVED_DESCRIPTORS = 64


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; returns the (soft, hard) now in force.
    A failure leaves the limit as it was (logged): the budget is then computed from it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and soft != resource.RLIM_INFINITY:
        target = hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = min(hard, 1 << 20) if hard != resource.RLIM_INFINITY else 1 << 20  # (nr_open's default)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (ValueError, OSError) as exc:
                log.warning("cannot raise the open-files limit from %d: %s", soft, exc)
                return nofile_limit()
        log.info("raised the open-files limit (RLIMIT_NOFILE) from %d to %d", soft, target)
    return nofile_limit()


def segment_file_budget(limits: Limits, nofile: int) -> int:
    """Segment files the broker may keep open under a descriptor limit of ``nofile``: the
    configured maximum, lowered to leave ``connections_max`` + ``RESERVED_DESCRIPTORS`` free (that
    reserve never takes more than half the limit, so a small limit still leaves room for files)."""
    reserve = min(limits.connections_max + RESERVED_DESCRIPTORS, nofile // 2)
    return max(MIN_CAPACITY, min(limits.segment_files_open_max, nofile - reserve))
