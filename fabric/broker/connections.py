"""The broker's connection limit (``Limits.connections_max``), without sockets: which accepted
TCP connections to keep.

Why here and not in ZeroMQ: a ROUTER accepts every connection and has no limit of its own, and
each connection costs the broker a file descriptor and ZeroMQ's buffers however idle it is.  The
I/O shell watches the ROUTER's monitor events (``ZMQ_EVENT_ACCEPTED`` / ``DISCONNECTED``, both
naming the connection's descriptor) and asks this gate about every accepted one; a refused one is
shut down at once (``shutdown(2)``: ZeroMQ then closes it as if the peer had gone).  The peer gets
no reply: ZeroMQ has no way to send one before the handshake, and its client reconnects later
with the usual back-off, so a client turned away is served once others leave.

It also knows which peers (ROUTER identities) talk on which connection (the shell reads
``ZMQ_SRCFD`` of a peer's first message), so that when a connection ends the broker answers its
peers' parked fetches at once: a consumer that disconnects leaves no parked or standing fetch
behind to be read and answered into the void until its deadline.  The monitor's events can lag
behind a new connection's first message on a reused descriptor, so an end may be pinned on a
live peer: answering (not dropping) makes that harmless (``Fetcher.release``).
"""

from __future__ import annotations


class ConnectionGate:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: set[int] = set()  # descriptors of the connections kept
        self._peers: dict[int, list[bytes]] = {}  # descriptor -> peers seen on it
        self.refused_total = 0

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def accepted(self, fd: int) -> bool:
        """A connection was accepted on ``fd``: True to keep it, False to close it now."""
        if len(self._open) >= self.limit:
            self.refused_total += 1
            return False
        self._open.add(fd)
        return True

    def peer_seen(self, peer: bytes, fd: int) -> None:
        """``peer``'s first message came on connection ``fd``."""
        if fd >= 0:
            self._peers.setdefault(fd, []).append(peer)

    def disconnected(self, fd: int) -> list[bytes]:
        """``fd``'s connection is gone (a refused one too); returns the peers it carried."""
        self._open.discard(fd)
        return self._peers.pop(fd, [])
