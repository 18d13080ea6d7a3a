"""The broker's connection limit (``Limits.connections_max``), without sockets: which accepted
TCP connections to keep, which to close, and which to tell why first.

Why here and not in ZeroMQ: a ROUTER accepts every connection and has no limit of its own, and
each connection costs the broker a file descriptor and ZeroMQ's buffers however idle it is.  The
I/O shell watches the ROUTER's monitor events (``ZMQ_EVENT_ACCEPTED`` / ``DISCONNECTED``, both
naming the connection's descriptor) and asks this gate about every accepted one.

Rules:
1. Below the limit a connection is kept.
2. At the limit, a new connection *replaces* the kept connection that has gone longest without a
   request, if that is at least ``replace_idle_ms`` (the shell shuts the old one down).  Why:
   with the limit held by idle connections, refusing every newcomer locked out every new client
   for as long as the idle ones stayed (1,200 idle sockets, limit 1,000: no new client got an
   answer).  A connection whose peer has a fetch parked is busy, not idle (``busy``).  A client
   that keeps sending requests is not replaced; an idle one loses its connection, and its ZeroMQ
   socket reconnects by itself (a new connection like any other).  Why replace rather than
   reserve headroom: newcomers cannot be told from reconnecting idle sockets at accept, but the
   connection that has said nothing for longest is the one whose loss costs least.
3. Otherwise it is refused.  A refused connection is kept for ``REFUSE_GRACE_MS`` so that its
   first request can be answered ``TOO_MANY_CONNECTIONS`` (the client then backs off
   exponentially: libzmq's own reconnect back-off does not grow for a connection that was
   accepted and then closed), and shut down right after the answer, or at the end of the grace.
   No request of a refused connection is ever executed.  At most ``REFUSING_MAX`` wait at once;
   beyond, refusal is a plain shutdown (``shutdown(2)``: ZeroMQ then closes it as if the peer
   had gone), so a storm of reconnects costs little.
4. A connection without a request for ``idle_ms_max`` (and not busy) is closed (Kafka's
   ``connections.max.idle.ms``).

It also knows which peers (ROUTER identities) talk on which connection (the shell reads
``ZMQ_SRCFD`` of a peer's first message), so that when a connection ends the broker answers its
peers' parked fetches at once: a consumer that disconnects leaves no parked or standing fetch
behind to be read and answered into the void until its deadline.  The monitor's events can lag
behind a new connection's first message on a reused descriptor, so an end may be pinned on a
live peer: answering (not dropping) makes that harmless (``Fetcher.release``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, NamedTuple

REFUSE_GRACE_MS = 100  # a refused connection may send its first request this long, to be told why (rule 3)
REFUSING_MAX = 256  # refused connections waiting to be told at once; beyond, closed without a word
TOLD_LINGER_MS = 20  # from the TOO_MANY_CONNECTIONS answer to the shutdown: ZeroMQ writes it meanwhile
REPLACE_SCAN_MAX = 16  # busy connections skipped, at most, looking for one to replace or close

Busy = Callable[[list[bytes]], bool]  # whether any of these peers has a fetch parked


class Verdict(NamedTuple):
    """What to do with a connection just accepted."""

    keep: bool
    close: tuple[int, ...] = ()  # kept connections to shut down now (replaced: rule 2)
    tell: bool = False  # refused, but its first request is to be answered first (rule 3)


def _not_busy(peers: list[bytes]) -> bool:
    return False


class ConnectionGate:
    def __init__(self, limit: int, replace_idle_ms: int = 500, idle_ms_max: int = 600_000) -> None:
        self.limit = limit
        self.replace_idle_ms = replace_idle_ms
        self.idle_ms_max = idle_ms_max
        self._open: OrderedDict[int, int] = OrderedDict()  # kept: fd -> last request (ms), least recent first
        self._refusing: dict[int, int | None] = {}  # refused fd -> when to shut it down (None: done)
        self._waiting = 0  # entries of ``_refusing`` with a deadline
        self._peers: dict[int, list[bytes]] = {}  # descriptor -> peers seen on it
        self._fd_of: dict[bytes, int] = {}  # peer -> its descriptor
        self.refused_total = 0
        self.replaced_total = 0
        self.closed_idle_total = 0

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def accepted(self, fd: int, now_ms: int = 0, busy: Busy = _not_busy) -> Verdict:
        """A connection was accepted on ``fd``: keep it (perhaps in another's place), or refuse it."""
        if len(self._open) < self.limit:
            self._open[fd] = now_ms
            return Verdict(True)
        victim = self._idlest(now_ms, self.replace_idle_ms, busy)
        if victim is not None:
            self.replaced_total += 1
            self._open[fd] = now_ms
            return Verdict(True, (victim,))
        self.refused_total += 1
        if self._waiting < REFUSING_MAX:
            self._refusing[fd] = now_ms + REFUSE_GRACE_MS
            self._waiting += 1
            return Verdict(False, tell=True)
        self._refusing[fd] = None
        return Verdict(False)

    def knows(self, fd: int) -> bool:
        """Whether ``fd``'s ``ACCEPTED`` event has been seen (and the connection is not gone)."""
        return fd in self._open or fd in self._refusing

    def refused(self, fd: int) -> bool:
        """Whether ``fd`` is a refused connection (none of its requests may be executed)."""
        return fd in self._refusing

    @property
    def due_soon(self) -> bool:
        """Whether refused connections wait to be shut down (``due``)."""
        return self._waiting > 0

    def told(self, fd: int, now_ms: int) -> None:
        """``fd``'s request was answered TOO_MANY_CONNECTIONS: shut it down shortly."""
        deadline = self._refusing.get(fd)
        if deadline is not None:
            self._refusing[fd] = min(deadline, now_ms + TOLD_LINGER_MS)

    def due(self, now_ms: int) -> list[int]:
        """Refused connections to shut down now (told, or their grace is over)."""
        out = [fd for fd, deadline in self._refusing.items() if deadline is not None and deadline <= now_ms]
        for fd in out:
            self._refusing[fd] = None  # remembered as refused until it is gone
        self._waiting -= len(out)
        return out

    def idle(self, now_ms: int, busy: Busy = _not_busy) -> list[int]:
        """Kept connections without a request for ``idle_ms_max``: to shut down now (rule 4)."""
        out = []
        while (fd := self._idlest(now_ms, self.idle_ms_max, busy)) is not None:
            out.append(fd)
        self.closed_idle_total += len(out)
        return out

    def _idlest(self, now_ms: int, min_idle_ms: int, busy: Busy) -> int | None:
        """Take the kept connection idle longest out of the kept ones, if idle ``min_idle_ms``;
        a busy one counts as active now and the next is looked at."""
        for _ in range(min(REPLACE_SCAN_MAX, len(self._open))):
            fd, last = next(iter(self._open.items()))
            if now_ms - last < min_idle_ms:
                return None
            if busy(self._peers.get(fd, [])):
                self._open.move_to_end(fd)
                self._open[fd] = now_ms
                continue
            del self._open[fd]  # (its peers stay known until its DISCONNECTED event)
            return fd
        return None

    def peer_seen(self, peer: bytes, fd: int, now_ms: int = 0) -> None:
        """``peer``'s first message came on connection ``fd``."""
        if fd >= 0:
            self._peers.setdefault(fd, []).append(peer)
            self._fd_of[peer] = fd
            self.touch(peer, now_ms)

    def touch(self, peer: bytes, now_ms: int) -> None:
        """``peer`` sent a request: its connection is not idle."""
        fd = self._fd_of.get(peer)
        if fd is None:
            return
        try:
            self._open.move_to_end(fd)
        except KeyError:
            return
        self._open[fd] = now_ms

    def disconnected(self, fd: int) -> list[bytes]:
        """``fd``'s connection is gone (a refused one too); returns the peers it carried."""
        self._open.pop(fd, None)
        if self._refusing.pop(fd, None) is not None:
            self._waiting -= 1
        peers = self._peers.pop(fd, [])
        for peer in peers:
            if self._fd_of.get(peer) == fd:
                del self._fd_of[peer]
        return peers
