"""The sender thread's ``init_producer_id`` calls (SPEC 14.2): the idempotent producer's first id,
and the next epoch of it when a partition lost the producer's state (``epoch_bump.py``).

Why apart from ``sender.py``: both are the same blocking call with the same back-off, and neither
is on the path of a produce request; the sender calls them before it selects what to send.
"""

from __future__ import annotations

import logging
from typing import Any

from .ordering import RequestBook

log = logging.getLogger("fabric.producer")

__all__ = ["obtain", "rebase"]

CALL_TIMEOUT_MS = 2000  # as a metadata refresh on the sender thread: at most this per broker


def _call(sender: Any, pid: int, epoch: int, now: int, what: str) -> tuple[int, int] | None:
    """``init_producer_id`` (each bootstrap broker in turn); None after a failure (the next try
    waits ``retry_backoff_ms``)."""
    p = sender.p
    if now < sender.pid_retry_at:
        return None
    try:
        with p._meta_lock:
            return p._admin.init_producer_id(pid, epoch, timeout_ms=min(p.request_timeout_ms, CALL_TIMEOUT_MS))
    except Exception as exc:  # (any failure: the broker's REQUEST_TIMED_OUT while it waits for ids, a timeout...)
        log.info("init_producer_id (%s) failed: %s", what, exc)
        sender.pid_retry_at = now + p.retry_backoff_ms
        return None


def obtain(sender: Any, now: int) -> bool:
    """The producer's first id; False when it is not there yet."""
    got = _call(sender, -1, -1, now, "a new id")
    if got is None:
        return False
    sender.p._idem.granted(*got)
    log.debug("producer id %d epoch %d", *got)
    return True


def rebase(sender: Any, book: RequestBook, now: int) -> None:
    """``epoch_bump`` rule 2: the partitions of ``book`` that lost the producer's state and have
    nothing in flight get the producer's next epoch and their batches re-stamped."""
    ready = book.rebase_ready()
    if not ready:
        return
    idem = sender.p._idem
    pid, epoch = idem.bump_request()
    got = _call(sender, pid, epoch, now, "the next epoch")
    if got is None:
        return
    idem.granted(*got)
    for key in ready:
        retried, failed = book.rebased(key, idem, now)
        log.warning("%s-%d lost producer %d's state: producer %d epoch %d re-sends %d batches from sequence 0%s",
                    key[0], key[1], pid, got[0], got[1], retried,
                    f" ({failed} failed: they may have been written before the state was lost)" if failed else "")
