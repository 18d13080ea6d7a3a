"""A broker's side of the controller: registration, heartbeats and the metadata it follows,
without sockets or clocks.

Why pure: what a broker believes about the cluster (who leads what, whether it is itself fenced)
decides whether it acknowledges writes; this class holds that belief and its timers, and the
simulation and unit tests drive it with ``now_ms`` and replies, as the shell does with sockets.

Rules:
1. One request at a time to the controller (register, heartbeat or metadata fetch), with a
   timeout; a reply that names another leader (NOT_CONTROLLER) moves the next request there, a
   timeout moves it to the next voter in turn.
2. Until registered, the broker registers every ``retry_ms``; once registered it heartbeats every
   ``heartbeat_ms`` with the metadata offset it has applied.  A heartbeat answered STALE_BROKER_EPOCH
   (or unknown broker) registers again with a new incarnation.
3. When a reply says the committed metadata is ahead of what this broker applied, it fetches
   records from that offset and applies them in order to its own ``MetadataState``; every applied
   batch yields a new ``MetadataImage`` (``image_changed``; once caught up, rule 5).
4. ``lease_valid(now_ms)``: true while a heartbeat was answered within the session timeout.  A
   broker whose lease ran out has been (or is about to be) fenced; it stops acknowledging as a
   leader until a heartbeat is answered again (a paused or partitioned leader never acts on a stale
   belief).
5. No image is reported (``image_changed``) before the applied metadata holds this process's own
   registration (``caught_up``): everything before it describes the cluster as this broker's
   previous incarnation left it, leaderships included, and a restarted broker that acted on it
   (catching up in several fetches of ``FETCH_ENTRIES_MAX`` records) led partitions at epochs
   already moved on, with a log that lost its unflushed tail: followers of that epoch truncated
   committed records to match it (found by the cluster simulation).  The controller moves the old
   incarnation's leaderships before the registration record, so the first image reported is
   already without them.
6. ``register`` carries ``intact_since``: the oldest incarnation since which this broker's logs
   hold every write (given at start by ``restart.restart_intact_since``: clean shutdowns, or
   crashes the machine's page cache outlived), None when a power loss may have cut their unflushed
   tail.  The controller keeps a broker in the ISRs only when that covers the incarnation it had
   registered (KIP-966, ``ControllerLogic`` rule 7).  Once registered, this process vouches for
   its own writes: a re-registration of the same process (a new incarnation after
   STALE_BROKER_EPOCH or UNKNOWN_BROKER) sends the start-up value, or, when that was None, the
   incarnation this process first registered: the process lost nothing since.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..controller.metadata import MetadataState
from ..controller.records import RecordError, decode_record
from ..protocol.errors import FabricError

log = logging.getLogger("fabric.broker.controller_link")

__all__ = ["ControllerLink", "LinkConfig"]

HELLO_MS = 2000


@dataclass(frozen=True)
class LinkConfig:
    heartbeat_ms: int = 250
    session_timeout_ms: int = 1500
    request_timeout_ms: int = 1000
    retry_ms: int = 200


class ControllerLink:
    def __init__(self, broker_id: int, voters: list[int], endpoint: dict[str, Any], incarnation: int,
                 config: LinkConfig = LinkConfig(), intact_since: int | None = None) -> None:
        self.broker_id = broker_id
        self.voters = sorted(voters)
        self.endpoint = dict(endpoint)  # host, port, pub_port, rack
        self.incarnation = incarnation
        self.intact_since = intact_since  # rule 6
        self.config = config
        self.state = MetadataState()
        self.registered = False
        self.fenced = True
        self._target = self.voters[0] if broker_id not in self.voters else broker_id
        self._inflight: tuple[int, str, int] | None = None  # (cid, op, deadline)
        self._cid = 0
        self._next_heartbeat = 0
        self._last_ok_ms = -(1 << 62)
        self._committed = 0
        self.image_changed = False
        self._unreported = False  # records applied while not ``caught_up`` (rule 5)
        self._shutdown_requested = False
        self._next_hello = 0
        self.shutdown_done = False

    # ------------------------------------------------------------------ reads
    @property
    def offset(self) -> int:
        return self.state.offset

    @property
    def caught_up(self) -> bool:
        """Rule 5: the applied metadata holds this incarnation's registration."""
        b = self.state.brokers.get(self.broker_id)
        return b is not None and b.incarnation >= self.incarnation

    def lease_valid(self, now_ms: int) -> bool:
        """Rule 4."""
        return self.registered and not self.fenced and now_ms - self._last_ok_ms < self.config.session_timeout_ms

    @property
    def target(self) -> int:
        """The voter the next request goes to (the believed controller leader)."""
        return self._target

    def redirect(self, leader: Any) -> None:
        """A forwarded request was answered NOT_CONTROLLER naming ``leader``."""
        if isinstance(leader, int) and leader in self.voters:
            self._target = leader
        else:
            self._next_target()

    def note_committed(self, offset: int) -> None:
        """The controller committed metadata up to ``offset``: fetch it at the next poll."""
        self._committed = max(self._committed, offset)

    def request_shutdown(self) -> None:
        """Controlled shutdown: the next heartbeats ask the controller to move leaderships away."""
        self._shutdown_requested = True

    # ------------------------------------------------------------------ timers
    def poll(self, now_ms: int) -> tuple[int, dict[str, Any]] | None:
        """The request to send now, as (voter id, header), if any (rule 1)."""
        if self._inflight is not None:
            if now_ms < self._inflight[2]:
                return None
            log.debug("controller %d did not answer %s in time", self._target, self._inflight[1])
            self._inflight = None
            self._next_target()
        if not self.registered:
            if now_ms < self._next_heartbeat:
                return None
            return self._send("register", now_ms, broker_id=self.broker_id, incarnation=self.incarnation,
                              **self.endpoint, intact_since=self.intact_since)
        if self._committed > self.state.offset:
            return self._send("metadata_fetch", now_ms, offset=self.state.offset)
        if now_ms >= self._next_heartbeat:
            return self._send("heartbeat", now_ms, broker_id=self.broker_id, incarnation=self.incarnation,
                              metadata_offset=self.state.offset, wants_shutdown=self._shutdown_requested)
        return None

    def hellos(self, now_ms: int) -> list[tuple[int, dict[str, Any]]]:
        """One-way ``hello`` to every voter, every ``hello_ms``: each controller learns which of
        its connections is this broker, so this process's death (its connections reset) fences it
        within a short grace instead of a session timeout, even on a voter that leads only later."""
        if now_ms < self._next_hello:
            return []
        self._next_hello = now_ms + HELLO_MS
        return [(v, {"op": "hello", "broker_id": self.broker_id}) for v in self.voters]

    def next_deadline_ms(self) -> int:
        if self._inflight is not None:
            return self._inflight[2]
        return self._next_heartbeat

    def _send(self, op: str, now_ms: int, **fields: Any) -> tuple[int, dict[str, Any]]:
        self._cid += 1
        self._inflight = (self._cid, op, now_ms + self.config.request_timeout_ms)
        return self._target, {"op": op, "cid": self._cid, **fields}

    def _next_target(self) -> None:
        i = self.voters.index(self._target) if self._target in self.voters else -1
        self._target = self.voters[(i + 1) % len(self.voters)]

    # ------------------------------------------------------------------ replies
    def on_reply(self, header: dict[str, Any], now_ms: int) -> None:
        if self._inflight is None or header.get("cid") != self._inflight[0]:
            return  # late: its request timed out (rule 1)
        op = self._inflight[1]
        self._inflight = None
        error = header.get("error")
        if error:
            name = error.get("name") if isinstance(error, dict) else str(error)
            leader = header.get("leader_id")
            if name == "NOT_CONTROLLER":
                if isinstance(leader, int) and leader in self.voters and leader != self._target:
                    self._target = leader  # redirected: at once
                    self._next_heartbeat = now_ms
                else:  # no leader known, or it is this one still catching up: wait, then try
                    if leader != self._target:
                        self._next_target()
                    self._next_heartbeat = now_ms + self.config.retry_ms
                return
            if op == "heartbeat" and name in ("STALE_BROKER_EPOCH", "UNKNOWN_BROKER", "BROKER_FENCED"):
                if name != "BROKER_FENCED":
                    self.registered = False
                    self.incarnation += 1
                self._next_heartbeat = now_ms
                return
            if op == "register" and name == "STALE_BROKER_EPOCH":
                known = header.get("incarnation")
                if isinstance(known, int) and known >= self.incarnation:
                    self.incarnation = known + 1  # (a clock stepped back since that registration)
                    self._next_heartbeat = now_ms
                    return
            log.warning("controller answered %s with %s", op, error)
            self._next_heartbeat = now_ms + self.config.retry_ms
            return
        committed = header.get("committed", header.get("metadata_offset"))
        if isinstance(committed, int):
            self._committed = max(self._committed, committed)
        if op == "register":
            self.registered = True
            if self.intact_since is None:  # rule 6
                self.intact_since = self.incarnation
            self._last_ok_ms = now_ms
            self._next_heartbeat = now_ms
            log.info("broker %d registered with controller %d (incarnation %d)", self.broker_id, self._target,
                     self.incarnation)
        elif op == "heartbeat":
            self._last_ok_ms = now_ms
            self.fenced = bool(header.get("fenced", False))
            self.shutdown_done = bool(header.get("shutdown_ready", False))
            self._next_heartbeat = now_ms + self.config.heartbeat_ms
        elif op == "metadata_fetch":
            self._apply(header)

    def _apply(self, reply: dict[str, Any]) -> None:
        snapshot = reply.get("snapshot")
        if snapshot is not None:
            self.state = MetadataState.from_snapshot(snapshot)
            self._unreported = True
        for index, data in reply.get("records", ()):
            if index <= self.state.offset:
                continue
            if not data:  # a new Raft leader's no-op entry
                self.state.offset = index
                continue
            try:
                self.state.apply(decode_record(data), index)
            except (RecordError, FabricError, ValueError, KeyError) as exc:
                log.error("metadata record %d could not be applied: %s", index, exc)
                self.state.offset = index
            self._unreported = True
        if self._unreported and self.caught_up:  # rule 5
            self.image_changed, self._unreported = True, False
