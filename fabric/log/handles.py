"""A bounded pool of open segment files, shared by every partition log of a process.

Why: a descriptor per segment file for the segment's whole life made a broker's descriptors grow
with its partitions (three per active segment, one per closed one): 10,000 partitions needed
30,000 and a create ran into ``EMFILE`` halfway.  Here a segment's ``.log`` is opened on first use
and may be closed again whenever the pool needs room, so the descriptors held stay below
``capacity`` however many partitions and segments exist.  (Index files hold no descriptor at all:
see ``index.py``.)

Rules
-----
1. An *owner* (a ``Segment``) reaches its descriptor only through its ``fd`` property, which
   reopens a closed one through ``FilePool.open``; it never keeps the number in a variable across
   a call that may open another file of the pool.
2. Every owner has a *guard*: the lock of the partition log that holds it.  Code that uses an
   owner's descriptor holds that guard (``PartitionLog`` does for appends, reads, flush
   snapshots; the loader holds it while it opens the directory).
3. The pool closes an owner's descriptor only while holding that owner's guard: it *tries* the
   guard (never waits for it, so no lock order exists to get wrong) and passes over owners whose
   guard is busy.  The exception is the guard of the owner being opened, which the caller holds
   already (rule 2): its siblings are closed directly.  An owner without a guard (single-threaded
   use, tests) is closed freely.
4. Which owner goes: the clock (second chance) algorithm.  ``fd`` sets the owner's ``_used``
   flag, a plain attribute store on the hot path (no lock, no list operation); the sweep clears
   the flag of a used owner and moves it to the back, and closes the first one found unused.
   A partition being appended to keeps its descriptor; an idle one loses it.
5. If a whole sweep finds nothing to close (every guard busy), the pool goes over ``capacity``
   rather than fail, and counts it in ``overflows``: ``capacity`` leaves headroom below the
   process's descriptor limit for exactly this.

The pool's own lock covers the ring and the open/close system calls, never any I/O on the files.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

log = logging.getLogger("fabric.log")

MIN_CAPACITY = 8  # below this a read across two segments would evict its own first half
DEFAULT_CAPACITY_MAX = 4096  # the process-wide default pool never asks for more than this


class Guard(Protocol):
    """A lock: ``PartitionLog._lock`` (``threading.Lock``)."""

    def acquire(self, blocking: bool = ...) -> bool: ...

    def release(self) -> None: ...


class PooledFile(Protocol):
    """What the pool needs of an owner (``Segment`` implements it)."""

    _fd: int
    _used: bool
    _guard: Guard | None


class FilePool:
    def __init__(self, capacity: int) -> None:
        if capacity < MIN_CAPACITY:
            raise ValueError(f"a file pool needs at least {MIN_CAPACITY} descriptors, not {capacity}")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._ring: OrderedDict[PooledFile, None] = OrderedDict()  # front: next to be looked at
        self.opens_total = 0
        self.evictions_total = 0
        self.overflows = 0

    def __repr__(self) -> str:
        return f"FilePool(open={len(self._ring)}, capacity={self.capacity})"

    @property
    def open_count(self) -> int:
        """Descriptors the pool's owners hold now."""
        return len(self._ring)

    def open(self, owner: PooledFile, path: Path, flags: int, mode: int = 0o644) -> int:
        """Open ``path`` for ``owner`` (which must hold none), closing idle owners' descriptors
        first if the pool is full.  Raises ``OSError`` from ``os.open``."""
        with self._lock:
            if owner._fd >= 0:
                raise ValueError(f"{path.name} is open already")
            if len(self._ring) >= self.capacity:
                self._make_room(owner._guard)
            fd = os.open(path, flags, mode)
            owner._fd = fd
            owner._used = True
            self._ring[owner] = None
            self.opens_total += 1
            return fd

    def close(self, owner: PooledFile) -> None:
        """``owner`` gives its descriptor up (segment closed or deleted)."""
        with self._lock:
            self._ring.pop(owner, None)
            fd, owner._fd = owner._fd, -1
        if fd >= 0:
            os.close(fd)

    def _make_room(self, held: Guard | None) -> None:
        """Close descriptors until one slot is free (see rules 3-5).  Caller holds the pool lock."""
        ring = self._ring
        budget = 2 * len(ring)  # one pass to clear the used flags, one to find them still clear
        while len(ring) >= self.capacity and budget > 0:
            budget -= 1
            victim, _ = ring.popitem(last=False)
            if victim._used:
                victim._used = False
                ring[victim] = None
                continue
            guard = victim._guard
            if guard is None or guard is held:
                self._evict(victim)
            elif guard.acquire(False):
                try:
                    self._evict(victim)
                finally:
                    guard.release()
            else:  # in use on another thread right now
                ring[victim] = None
        if len(ring) >= self.capacity:
            self.overflows += 1
            if self.overflows == 1 or self.overflows % 1000 == 0:
                log.warning("file pool over its capacity of %d descriptors (%d times): every open file is busy",
                            self.capacity, self.overflows)

    def _evict(self, victim: PooledFile) -> None:
        fd, victim._fd = victim._fd, -1
        self.evictions_total += 1
        try:
            os.close(fd)
        except OSError as exc:  # (EBADF would be a bug; EIO is reported by the next fsync anyway)
            if exc.errno != errno.EINTR:
                log.warning("closing an idle segment descriptor %d: %s", fd, exc)


def nofile_limit() -> tuple[int, int]:
    """(soft, hard) ``RLIMIT_NOFILE`` of this process (``RLIM_INFINITY`` as a large number)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    inf = resource.RLIM_INFINITY
    return (1 << 20 if soft == inf else soft), (1 << 20 if hard == inf else hard)


_shared: FilePool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> FilePool:
    """The process-wide pool for logs opened without one: a quarter of the soft descriptor limit
    (at most ``DEFAULT_CAPACITY_MAX``), read when first asked for.  The broker makes its own,
    sized from its configuration."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = FilePool(max(MIN_CAPACITY, min(DEFAULT_CAPACITY_MAX, nofile_limit()[0] // 4)))
        return _shared
