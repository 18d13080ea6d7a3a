"""The client half of the consumer-group protocol (SPEC.md section 12) for one member.

Lifecycle
=========
    UNJOINED --join--> JOINING --join reply--> SYNCING --sync reply--> STABLE
    JOINING:  MEMBER_ID_REQUIRED -> rejoin at once with the id of the reply (KIP-394)
    any:      NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE / timeout -> look the coordinator up
              again, back off, rejoin
    any:      UNKNOWN_MEMBER_ID / ILLEGAL_GENERATION -> partitions lost (no commit), member id ""
              and generation -1, rejoin;  FENCED_INSTANCE_ID and other refusals -> fatal, raised
              from every later ``poll``
    STABLE -> JOINING on REBALANCE_IN_PROGRESS (heartbeat), a subscription change, or a sync
              reply that revoked something (cooperative: that rejoin starts the follow-up round)
    commits:  sent with (member id, generation) while in a generation, also while JOINING (a
              cooperative member's partitions stay committable, SPEC 12.3); a refusal
              (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS, FENCED_INSTANCE_ID)
              is a ``CommitFailedError`` for the caller, and without a join in flight it also
              raises the flag (lost, or rejoin) that the next ``poll`` acts on

Eager assignors (``range``, ``roundrobin``): before rejoining, everything is revoked (the
listener commits and stops consuming) and the join reports ``owned: []``.  Cooperative
(``cooperative-sticky``): the member keeps consuming while its join is parked, reports what it
owns, and gives up only what a sync reply takes away.

Threading contract
==================
``GroupMember`` belongs to the consumer's poll thread: its methods run there, and so do the
listener hooks (and through them the user's callbacks), only ever from ``poll``, ``commit``,
``unsubscribe`` and ``close``.  Join, sync and async commits are sent without blocking; their
replies wait in the link's inbox and are handled at the top of ``poll``, never inside another
request, so hooks are not re-entered.  A heartbeat thread sends ``heartbeat`` every
``heartbeat_interval_ms`` with ``ms_since_poll`` through its *own* ``CoordinatorLink`` (ZeroMQ
sockets are single-threaded); it reads (member id, generation, state) under ``_lock`` and only
raises flags (rejoin, lost, fatal) for ``poll`` to act on.  A member that has not polled for
``max_poll_interval_ms`` knows the coordinator has removed it: its next ``poll`` declares the
partitions lost (no commit) and rejoins.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Protocol, Sequence

import zmq

from ..groups.assignors import ASSIGNORS
from ..groups.messages import (CommitOffset, FetchTopic, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
                               OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest, TopicPartitions,
                               topic_partitions)
from ..protocol.errors import FabricError
from .connection import ClientError, ClosedError, RequestTimeoutError, monotonic_ms
from .coordinator_link import COORDINATOR_MOVED, CoordinatorLink, backoff_ms, reply_error

log = logging.getLogger("fabric.consumer.group")

LEAVE_TIMEOUT_MS_MAX = 2000  # close() does not hang on a dead coordinator
LOST = frozenset({"UNKNOWN_MEMBER_ID", "ILLEGAL_GENERATION"})
COMMIT_REJECTED = LOST | {"FENCED_INSTANCE_ID", "REBALANCE_IN_PROGRESS"}  # -> CommitFailedError
UNJOINED, JOINING, SYNCING, STABLE = "UNJOINED", "JOINING", "SYNCING", "STABLE"


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class CommitFailedError(ClientError):
    """The coordinator rejected a commit because of the group's membership, not because of a
    fault: this member is not in the group's current generation (evicted, or the group rebalanced
    without it: its partitions are lost and the next ``poll`` rejoins), or the group is
    rebalancing and the commit named a partition this member does not hold through it (the next
    ``poll`` finishes the rebalance).  Not fatal: keep polling.  The offsets stay uncommitted, so
    the records after the last committed offset are delivered again, to whichever member consumes
    the partition after the rebalance (Kafka's ``CommitFailedException`` and
    ``RebalanceInProgressException``).  ``__cause__`` is the broker's error."""


class Listener(Protocol):
    """What the consumer does when its assignment changes (always on the poll thread)."""

    def revoke(self, tps: frozenset[TopicPartition]) -> None: ...  # commit if auto-committing, then stop
    def assign(self, tps: frozenset[TopicPartition]) -> None: ...  # start (positions are resolved later)
    def lost(self, tps: frozenset[TopicPartition]) -> None: ...  # stop without committing


CommitCallback = Callable[[dict[TopicPartition, int], Exception | None], None]


def _tps(wire: Iterable[Mapping[str, Any]]) -> frozenset[TopicPartition]:
    return frozenset(TopicPartition(t["topic"], p) for t in wire for p in t["partitions"])


class GroupMember:
    def __init__(self, endpoints: Sequence[str], group_id: str, listener: Listener, *,
                 group_instance_id: str | None = None, client_id: str = "fabric-consumer",
                 session_timeout_ms: int = 10_000, heartbeat_interval_ms: int = 3000,
                 max_poll_interval_ms: int = 300_000, assignors: Sequence[str] = ("cooperative-sticky", "range"),
                 request_timeout_ms: int = 30_000, ctx: zmq.Context | None = None) -> None:
        if not assignors:
            raise ValueError("name at least one assignor")
        self.group_id = group_id
        self.group_instance_id = group_instance_id
        self.client_id = client_id[:128]
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.max_poll_interval_ms = max_poll_interval_ms
        self.assignors = tuple(assignors)
        self.request_timeout_ms = request_timeout_ms
        self._listener = listener
        self._stop = threading.Event()  # stops the heartbeat thread
        self.link = CoordinatorLink(endpoints, group_id, client_id=self.client_id,
                                    request_timeout_ms=request_timeout_ms, ctx=ctx)
        self._hb_link = CoordinatorLink(endpoints, group_id, client_id=self.client_id,
                                        request_timeout_ms=request_timeout_ms, ctx=ctx, stop=self._stop)
        self._join: tuple[int, int, int] | None = None  # (cid, link epoch, sent_ms) of the join in flight
        self._sync: tuple[int, int, int] | None = None
        # cid -> (link epoch, (member id, generation) it was sent with, offsets, callback)
        self._async_commits: dict[int, tuple[int, tuple[str, int], dict[TopicPartition, int],
                                             CommitCallback | None]] = {}
        self._rejoin_needed = False
        self._retry_at = 0
        self._attempt = 0
        self._topics: tuple[str, ...] = ()
        self._subscribed = False
        self.owned: frozenset[TopicPartition] = frozenset()
        self._owned_generation = -1  # the generation that gave us ``owned``
        self.protocol: str | None = None
        self._last_poll_ms = monotonic_ms()  # an int written by the poll thread, read by the heartbeat thread
        # -- shared with the heartbeat thread, under _lock
        self._lock = threading.Lock()
        self.member_id = ""
        self.generation = -1
        self.state = UNJOINED
        self._flags: dict[str, tuple[str, int]] = {}  # "rejoin"/"lost" -> the (member id, generation) it is about
        self._fatal: FabricError | None = None
        self._heartbeat = threading.Thread(target=self._heartbeat_main, name=f"fabric-heartbeat-{group_id}",
                                           daemon=True)
        self._heartbeat.start()

    def _set(self, **fields: Any) -> None:
        with self._lock:
            for k, v in fields.items():
                setattr(self, k, v)

    # ------------------------------------------------------------------ subscription
    def subscribe(self, topics: Iterable[str]) -> None:
        """Set the subscribed topic names (patterns are resolved by the caller); a change rejoins."""
        topics = tuple(sorted(set(topics)))
        if topics != self._topics or not self._subscribed:
            log.info("group %s: subscribed to %s", self.group_id, list(topics))
            self._topics, self._subscribed, self._rejoin_needed = topics, True, True

    @property
    def subscription(self) -> tuple[str, ...]:
        return self._topics

    @property
    def subscribed(self) -> bool:
        return self._subscribed

    @property
    def stable(self) -> bool:
        return self.state == STABLE

    def _cooperative(self) -> bool:
        assignor = ASSIGNORS.get(self.protocol or "")
        return assignor is not None and assignor.cooperative

    # ------------------------------------------------------------------ driving
    def poll(self) -> None:
        """Make progress without blocking: replies, heartbeat flags, (re)joins.  Runs hooks."""
        now = monotonic_ms()
        gap, self._last_poll_ms = now - self._last_poll_ms, now
        if self._fatal is not None:
            raise self._fatal
        if self.state in (SYNCING, STABLE) and gap > self.max_poll_interval_ms:
            log.warning("group %s: %d ms since the last poll is more than max_poll_interval_ms=%d, so the "
                        "coordinator has removed this member: partitions lost, rejoining", self.group_id, gap,
                        self.max_poll_interval_ms)
            if self.group_instance_id is None:
                self._leave()
            self._lose()
        self.link.pump(0)
        self._handle_async_commits()
        with self._lock:
            flags, self._flags = self._flags, {}
        if self.state == STABLE and flags.get("lost") == (self.member_id, self.generation):
            log.warning("group %s: member %s of generation %d is no longer known: partitions lost, rejoining",
                        self.group_id, self.member_id, self.generation)
            self._lose()
        elif self.state == STABLE and flags.get("rejoin") == (self.member_id, self.generation):
            log.info("group %s: the group is rebalancing; rejoining", self.group_id)
            self._rejoin_needed = True
        self._handle_join_sync(now)
        if (self._subscribed and self._rejoin_needed and self._join is None and self._sync is None
                and now >= self._retry_at):
            self._send_join(now)

    def _lose(self) -> None:
        lost, self.owned = self.owned, frozenset()
        self._join = self._sync = None
        self._rejoin_needed = True
        self._set(member_id="", generation=-1, state=UNJOINED)
        if lost:
            self._listener.lost(lost)

    def _send_join(self, now: int) -> None:
        if not self.link.ensure(now + self.request_timeout_ms, raise_timeout=False):
            self._retry_later(now)
            return
        if self.owned and not self._cooperative():  # eager: commit and stop everything first
            revoked, self.owned = self.owned, frozenset()
            self._listener.revoke(revoked)
        owned = tuple(TopicPartitions(topic=t["topic"], partitions=tuple(t["partitions"]))
                      for t in topic_partitions(self.owned))
        req = JoinGroupRequest(group_id=self.group_id, member_id=self.member_id,
                               group_instance_id=self.group_instance_id, client_id=self.client_id,
                               session_timeout_ms=self.session_timeout_ms,
                               rebalance_timeout_ms=self.max_poll_interval_ms, topics=self._topics,
                               assignors=self.assignors, owned=owned,
                               generation=self._owned_generation if owned else -1)
        self._join = (self.link.send("join_group", req), self.link.epoch, now)
        self._rejoin_needed = False
        self._set(state=JOINING)
        log.debug("group %s: join sent (member %r, owning %d)", self.group_id, self.member_id, len(self.owned))

    def _retry_later(self, now: int) -> None:
        self._attempt += 1
        self._retry_at = now + backoff_ms(self._attempt)
        self._rejoin_needed = True
        self._join = self._sync = None
        if self.state in (JOINING, SYNCING):  # a cooperative member keeps what it owns meanwhile
            self._set(state=STABLE if self.owned else UNJOINED)

    def _take(self, flight: tuple[int, int, int] | None, timeout_ms: int, now: int) -> dict[str, Any] | None:
        """The reply to an in-flight join/sync, or None.  A dropped or timed-out one schedules a retry."""
        if flight is None:
            return None
        cid, epoch, sent = flight
        header = self.link.take(cid)
        if header is None and (epoch != self.link.epoch or now - sent > timeout_ms):
            log.info("group %s: no reply to a join/sync (connection dropped or %d ms passed); retrying",
                     self.group_id, now - sent)
            if epoch == self.link.epoch:
                self.link.reset()
            self._retry_later(now)
        return header

    def _handle_join_sync(self, now: int) -> None:
        # a parked join may wait for every member's rejoin: up to the longest rebalance timeout
        header = self._take(self._join, self.max_poll_interval_ms + self.request_timeout_ms, now)
        if header is not None:
            self._join = None
            self._on_join_reply(header, now)
        header = self._take(self._sync, self.request_timeout_ms, now)
        if header is not None:
            self._sync = None
            self._on_sync_reply(header, now)

    def _on_join_reply(self, header: dict[str, Any], now: int) -> None:
        if "error" in header:
            err = reply_error(header)
            if err.name == "MEMBER_ID_REQUIRED":
                self._set(member_id=str(header.get("member_id", "")))
                self._rejoin_needed, self._retry_at = True, 0
            else:
                self._on_error("join_group", err, now)
            return
        self._set(member_id=header["member_id"], generation=header["generation"], state=SYNCING)
        self.protocol = header.get("protocol")
        log.info("group %s: joined generation %d as %s (%s, %s members)", self.group_id, self.generation,
                 self.member_id, self.protocol, header.get("members"))
        req = SyncGroupRequest(group_id=self.group_id, member_id=self.member_id, generation=self.generation,
                               group_instance_id=self.group_instance_id)
        self._sync = (self.link.send("sync_group", req), self.link.epoch, now)

    def _on_sync_reply(self, header: dict[str, Any], now: int) -> None:
        if "error" in header:
            self._on_error("sync_group", reply_error(header), now)
            return
        assignment, revoked = _tps(header.get("assignment", [])), _tps(header.get("revoked", []))
        self._set(generation=header.get("generation", self.generation), state=STABLE)
        self._attempt = 0
        gone = self.owned - assignment
        log.info("group %s generation %d: %d partitions assigned, %d revoked", self.group_id, self.generation,
                 len(assignment), len(gone))
        if gone:  # cooperative: commit and stop these before anything else
            self.owned -= gone
            self._listener.revoke(gone)
        added = assignment - self.owned
        self.owned, self._owned_generation = assignment, self.generation
        self._listener.assign(added)
        if revoked:
            self._rejoin_needed, self._retry_at = True, 0  # starts the follow-up rebalance

    def _on_error(self, op: str, err: FabricError, now: int) -> None:
        if err.name in COORDINATOR_MOVED:
            log.info("group %s: %s: %s; looking the coordinator up again", self.group_id, op, err.name)
            self.link.forget()
            self._retry_later(now)
        elif err.name in LOST:
            log.warning("group %s: %s: %s: partitions lost, rejoining", self.group_id, op, err)
            self._lose()
        elif err.name == "REBALANCE_IN_PROGRESS":
            self._rejoin_needed, self._retry_at = True, 0
            self._set(state=STABLE if self.owned else UNJOINED)
        else:  # FENCED_INSTANCE_ID, INCONSISTENT_GROUP_PROTOCOL, INVALID_SESSION_TIMEOUT, ...
            log.error("group %s: %s refused: %s", self.group_id, op, err)
            self._fatal = err
            raise err

    # ------------------------------------------------------------------ offsets
    def _commit_as(self) -> tuple[str, int]:
        """(member id, generation) to commit with: ours while we hold a generation, else a tool's."""
        if self.member_id and self.generation >= 0 and self.state != UNJOINED:
            return self.member_id, self.generation
        return "", -1

    def _commit_request(self, offsets: Mapping[TopicPartition, int], mid: str, gen: int) -> OffsetCommitRequest:
        return OffsetCommitRequest(group_id=self.group_id, generation=gen, member_id=mid,
                                   group_instance_id=self.group_instance_id if mid else None,
                                   offsets=tuple(CommitOffset(topic=t, partition=p, offset=o)
                                                 for (t, p), o in sorted(offsets.items())))

    def _rejected(self, err: FabricError, mid: str, gen: int) -> CommitFailedError:
        rebalancing = err.name == "REBALANCE_IN_PROGRESS"
        if mid and (mid, gen) == (self.member_id, self.generation) and self._join is None:
            with self._lock:  # the next poll rejoins (with a join in flight, its reply decides)
                self._flags["rejoin" if rebalancing else "lost"] = (mid, gen)
        why = ("the group is rebalancing" if rebalancing
               else "this member is not part of the group's current generation")
        exc = CommitFailedError(f"commit to group {self.group_id!r} failed: {err.name}: {err.message} ({why}; "
                                "the records after the last committed offset will be delivered again)")
        exc.__cause__ = err
        return exc

    def commit(self, offsets: Mapping[tuple[str, int], int], timeout_ms: int | None = None) -> None:
        """Commit and wait.  ``CommitFailedError`` if the group's membership refuses it (see there).
        Callbacks of async commits sent earlier run before this returns (replies come in order)."""
        offs = {TopicPartition(*tp): o for tp, o in offsets.items()}
        if not offs:
            return
        mid, gen = self._commit_as()
        try:
            self.link.request("offset_commit", self._commit_request(offs, mid, gen), timeout_ms)
        except FabricError as err:
            if err.name in COMMIT_REJECTED:
                raise self._rejected(err, mid, gen) from err
            raise
        finally:
            self._handle_async_commits()

    def commit_async(self, offsets: Mapping[tuple[str, int], int], callback: CommitCallback | None = None) -> None:
        """Send a commit without waiting; ``callback(offsets, exception_or_None)`` runs in a later
        ``poll``/``commit``/``close``."""
        offs = {TopicPartition(*tp): o for tp, o in offsets.items()}
        if not offs:
            return
        mid, gen = self._commit_as()
        if not self.link.ensure(monotonic_ms() + self.request_timeout_ms, raise_timeout=False):
            if callback is not None:
                callback(offs, RequestTimeoutError(f"group {self.group_id!r}: coordinator not found"))
            return
        cid = self.link.send("offset_commit", self._commit_request(offs, mid, gen))
        self._async_commits[cid] = (self.link.epoch, (mid, gen), offs, callback)

    def _handle_async_commits(self, wait_ms: int = 0) -> None:
        deadline = monotonic_ms() + wait_ms
        while any(e == self.link.epoch and not self.link.has(c) for c, (e, *_) in self._async_commits.items()):
            left = deadline - monotonic_ms()
            if left <= 0:
                break
            self.link.pump(left)
        for cid, (epoch, (mid, gen), offs, callback) in list(self._async_commits.items()):
            header = self.link.take(cid)
            if header is None and epoch == self.link.epoch and wait_ms == 0:
                continue  # not yet
            del self._async_commits[cid]
            exc: Exception | None = None
            if header is None:
                exc = RequestTimeoutError(f"group {self.group_id!r}: no reply to an async commit")
            elif "error" in header:
                err = reply_error(header)
                exc = self._rejected(err, mid, gen) if err.name in COMMIT_REJECTED else err
                log.warning("group %s: async commit failed: %s", self.group_id, err)
            if callback is not None:
                callback(offs, exc)

    def fetch_committed(self, tps: Iterable[tuple[str, int]], timeout_ms: int | None = None
                        ) -> dict[TopicPartition, int | None]:
        """Committed offsets of ``tps`` (None where the group has committed nothing)."""
        out: dict[TopicPartition, int | None] = {TopicPartition(*tp): None for tp in tps}
        if not out:
            return out
        topics = tuple(FetchTopic(topic=t["topic"], partitions=tuple(t["partitions"]))
                       for t in topic_partitions(out))
        header = self.link.request("offset_fetch", OffsetFetchRequest(group_id=self.group_id, topics=topics),
                                   timeout_ms)
        for row in header.get("offsets", []):
            tp = TopicPartition(row["topic"], row["partition"])
            if tp in out and row["offset"] >= 0:
                out[tp] = row["offset"]
        return out

    # ------------------------------------------------------------------ heartbeats (own thread)
    def _heartbeat_main(self) -> None:
        next_ms, attempt = 0, 0
        try:
            while not self._stop.is_set():
                with self._lock:
                    mid, gen, stable = self.member_id, self.generation, self.state == STABLE
                now = monotonic_ms()
                if not stable or now < next_ms:
                    self._stop.wait(min(100, max(1, next_ms - now)) / 1000)
                    continue
                req = HeartbeatRequest(group_id=self.group_id, member_id=mid, generation=gen,
                                       group_instance_id=self.group_instance_id,
                                       ms_since_poll=min(max(0, now - self._last_poll_ms), 2**31 - 1))
                next_ms = now + self.heartbeat_interval_ms
                try:
                    self._hb_link.request("heartbeat", req, min(self.session_timeout_ms, self.request_timeout_ms))
                    attempt = 0
                except FabricError as err:
                    self._on_heartbeat_error(err, mid, gen)
                except RequestTimeoutError as exc:
                    attempt += 1
                    next_ms = monotonic_ms() + backoff_ms(attempt)
                    log.info("group %s: heartbeat: %s", self.group_id, exc)
        except ClosedError:
            pass
        except Exception:  # a bug: say so; without heartbeats the session expires and the member rejoins
            log.exception("group %s: the heartbeat thread failed", self.group_id)
        finally:
            self._hb_link.close()

    def _on_heartbeat_error(self, err: FabricError, mid: str, gen: int) -> None:
        with self._lock:
            if err.name == "REBALANCE_IN_PROGRESS":
                self._flags["rejoin"] = (mid, gen)
            elif err.name in LOST:
                self._flags["lost"] = (mid, gen)
            elif err.name == "FENCED_INSTANCE_ID":
                self._fatal = err
            else:
                log.warning("group %s: heartbeat: %s", self.group_id, err)

    # ------------------------------------------------------------------ leaving
    def _leave(self) -> None:
        if not self.member_id:
            return
        req = LeaveGroupRequest(group_id=self.group_id, member_id=self.member_id,
                                group_instance_id=self.group_instance_id)
        try:
            self.link.request("leave_group", req, min(self.request_timeout_ms, LEAVE_TIMEOUT_MS_MAX))
            log.info("group %s: member %s left", self.group_id, self.member_id)
        except (FabricError, ClientError) as exc:
            log.info("group %s: leave_group: %s", self.group_id, exc)

    def unsubscribe(self) -> None:
        """Give everything up (``revoke``: commits) and leave the group (dynamic members)."""
        if self.owned:
            revoked, self.owned = self.owned, frozenset()
            self._listener.revoke(revoked)
        if self.group_instance_id is None:
            self._leave()
        self._join = self._sync = None
        self._set(member_id="", generation=-1, state=UNJOINED)
        self._subscribed, self._topics, self._rejoin_needed = False, (), False

    def close(self) -> None:
        """Revoke (the listener commits), wait briefly for async commits, stop the heartbeat thread,
        leave (dynamic members only: a static member keeps its place for ``session_timeout_ms``),
        close the sockets."""
        try:
            if self.owned:
                revoked, self.owned = self.owned, frozenset()
                self._listener.revoke(revoked)
            self._handle_async_commits(wait_ms=min(self.request_timeout_ms, LEAVE_TIMEOUT_MS_MAX))
        finally:
            self._stop.set()
            self._heartbeat.join()
            if self.group_instance_id is None:
                self._leave()
            self._set(member_id="", generation=-1, state=UNJOINED)
            self.link.close()
