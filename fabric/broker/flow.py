"""Flow control toward clients: how many reply bytes the broker has handed to ZeroMQ and ZeroMQ
still holds, per connection and in total, without sockets.

Why.  A ROUTER queues replies for a peer that does not read them (up to its ``SNDHWM`` in
*messages*, whatever their size): a client that sends fetches and never reads the 1 MiB replies
made the broker hold about 1 MiB per request, gigabytes after a few thousand.  ZeroMQ has no byte
limit and does not say how much it holds for a peer, so the broker counts it itself.

How the bytes are known to have left.  The I/O shell sends some replies with a pyzmq
``MessageTracker`` (a *mark*): libzmq releases a message once its bytes are written to the TCP
socket (or dropped: peer gone, high-water mark), and the tracker is then done.  A peer's replies
leave in the order sent (one pipe, one TCP stream), so a done mark also confirms every reply sent
to that peer before it.  The shell marks every reply of ``MARK_BYTES`` or more (those go through
pyzmq's zero-copy path anyway) and, among smaller replies, the one that brings the bytes sent
since the last mark to ``MARK_BYTES``: acknowledgements and small fetch replies keep the cheap
native send path, and at most ``MARK_BYTES`` per peer are ever sent without a mark.

Why not credit a peer when it sends its next request: a DEALER may pipeline requests without
reading a single reply, which is exactly what the abusive client does; a request says nothing
about what was read.  Why not ``ZMQ_ROUTER_MANDATORY``: it reports a full pipe (in messages) only,
and a blocking send would stall the loop; with it off, a reply to a peer at its high-water mark is
dropped, which is what a peer that does not read deserves and frees the bytes at once.

Rules (``congested`` / ``over``):
1. A peer is *over* its budget while its bytes not yet confirmed (marked or not) reach
   ``peer_bytes_max``.  Every request of a peer that is over is refused with ``THROTTLED``
   (retriable), before any work: its replies are small, and dropped at the high-water mark.
2. A peer is *congested* when it is over, or while the marked bytes of all peers are at
   ``total_bytes_max`` (the broker is *full*), or while they are at half of it and the peer holds
   its fair share of that half or more (the half divided by the peers with marks pending).  A
   fetch reply to a congested peer carries no data: each partition says ``THROTTLED`` (a standing
   fetch ends).  Other operations go on, so a broker full of unread replies still serves
   metadata, produce, groups.  Why the fair share: a few connections that read nothing would
   otherwise fill the total and starve every consumer that does read (its own bytes stay near
   zero, below any share); the hard stop at the total still bounds many such connections.
3. A peer's account goes when its connection does (``forget``).
Bound: a peer can hold ``peer_bytes_max`` plus the one reply that crossed it, plus the data
replies of fetches admitted before (at most its parked, standing and follow-on fetches, each
capped by ``fetch_bytes_max``), plus its ``THROTTLED`` answers (a few hundred bytes each, at most
``SNDHWM`` of them); all peers together ``total_bytes_max`` plus as much per peer, and
``MARK_BYTES`` per peer unmarked.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Hashable

from .bounded import BoundedDict

MARK_BYTES = 64 << 10  # replies this large are tracked; so is one per this many bytes of smaller ones


@dataclass(slots=True)
class _Account:
    sent: int = 0  # bytes handed to ZeroMQ for this peer, ever (while the account lives)
    confirmed: int = 0  # of those, bytes known to have left (up to the last done mark)
    marked: int = 0  # ``sent`` at the last mark
    marks: deque = field(default_factory=deque)  # (sent at the mark, token), oldest first

    @property
    def queued(self) -> int:
        return self.sent - self.confirmed


class ReplyBudget:
    """Per-peer and total bytes of replies not yet confirmed gone (module docstring)."""

    def __init__(self, peer_bytes_max: int, total_bytes_max: int, peers_max: int = 10_000) -> None:
        self.peer_bytes_max = peer_bytes_max
        self.total_bytes_max = total_bytes_max
        self._accounts: dict[bytes, _Account] = BoundedDict(peers_max)
        self._marked_peers: set[bytes] = set()  # peers with a mark not yet done
        self.marked_bytes = 0  # over every peer: bytes up to their last mark not confirmed
        self.marked_high = 0  # the most ``marked_bytes`` has been since the shell last reset it
        self.throttled_total = 0  # requests and fetch replies refused, for broker_stats

    # ------------------------------------------------------------------ sending
    def needs_mark(self, peer: bytes, nbytes: int) -> bool:
        """Whether the shell must send this reply with a tracker."""
        if nbytes >= MARK_BYTES:
            return True
        acc = self._accounts.get(peer)
        return acc is not None and acc.sent - acc.marked + nbytes >= MARK_BYTES

    def sent(self, peer: bytes, nbytes: int, mark: Hashable | None = None) -> None:
        """A reply of ``nbytes`` went to ZeroMQ; ``mark``: its tracker if it was sent with one."""
        acc = self._accounts.get(peer)
        if acc is None:
            acc = self._accounts[peer] = _Account()
        acc.sent += nbytes
        if mark is not None:
            self.marked_bytes += acc.sent - acc.marked
            if self.marked_bytes > self.marked_high:
                self.marked_high = self.marked_bytes
            acc.marked = acc.sent
            acc.marks.append((acc.sent, mark))
            self._marked_peers.add(peer)

    def settle(self, done: Callable[[object], bool], peer: bytes | None = None) -> None:
        """Credit every mark ``done`` says has left (of ``peer`` only, if given)."""
        peers = list(self._marked_peers) if peer is None else [peer] if peer in self._marked_peers else []
        for p in peers:
            acc = self._accounts.get(p)
            if acc is None:
                self._marked_peers.discard(p)
                continue
            marks = acc.marks
            while marks and done(marks[0][1]):
                upto, _ = marks.popleft()
                self.marked_bytes -= upto - acc.confirmed
                acc.confirmed = upto
            if not marks:
                self._marked_peers.discard(p)
                if acc.sent == acc.confirmed:
                    del self._accounts[p]

    def forget(self, peer: bytes) -> None:
        """``peer``'s connection is gone: ZeroMQ drops what it still held for it (rule 3)."""
        acc = self._accounts.pop(peer, None)
        self._marked_peers.discard(peer)
        if acc is not None:
            self.marked_bytes -= acc.marked - acc.confirmed

    # ------------------------------------------------------------------ deciding
    def queued(self, peer: bytes) -> int:
        acc = self._accounts.get(peer)
        return 0 if acc is None else acc.queued

    def over(self, peer: bytes) -> bool:
        """Rule 1: refuse every request of ``peer``."""
        acc = self._accounts.get(peer)
        return acc is not None and acc.sent - acc.confirmed >= self.peer_bytes_max

    def full(self) -> bool:
        return self.marked_bytes >= self.total_bytes_max

    def congested(self, peer: bytes) -> bool:
        """Rule 2: no fetch data for ``peer`` now."""
        acc = self._accounts.get(peer)
        queued = 0 if acc is None else acc.sent - acc.confirmed
        if queued >= self.peer_bytes_max:
            return True
        half = self.total_bytes_max // 2
        marked = self.marked_bytes
        if marked < half:
            return False
        return marked >= self.total_bytes_max or queued >= half // max(1, len(self._marked_peers))

    @property
    def peers(self) -> int:
        """Peers with bytes not yet confirmed gone."""
        return len(self._accounts)
