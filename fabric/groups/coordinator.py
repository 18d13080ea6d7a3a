"""The consumer-group coordinator: one state machine per group, no sockets, threads or clocks.

Theory of operation
===================
The broker parses a request into a ``fabric.groups.messages`` dataclass and calls the method of the
same name with an opaque hashable ``token`` naming the request (e.g. ROUTER identity + ``cid``) and
``now_ms``.  Every method returns a list of actions for the broker to carry out:

* ``Reply(token, op, result, error)``: answer request ``token`` (``Reply.header(cid)`` is the map).
  A join that must wait for the other members is *parked*: its Reply comes out of a later call
  (another member's join, a leave, ``tick``), so one call may answer several tokens.
* ``AppendOffsets(token, records, reply)``: append ``records`` to their ``__consumer_offsets``
  partitions; once durable call ``offsets_appended(records)`` then send ``reply``.  If the append
  fails, answer ``token`` with that error instead.  Appends must be applied in log order.

``tick(now_ms)`` (every ~100 ms) expires members and finishes rebalances that timed out.
``metadata_changed(now_ms)`` is called when topics change: groups whose subscribed partition
counts moved rebalance.  ``load_partition``/``unload_partition`` follow the leadership of the
offsets partitions; groups whose partition this broker does not lead get NOT_COORDINATOR.

Choices
=======
* Server-side assignment.  Kafka has the group leader (a client) compute the assignment; here the
  coordinator does, when the join phase completes.  A client in any language then needs no
  assignor code, and the policy is in one place.  Members send their subscribed topics (patterns
  resolved by the client), their assignors in preference order and, for cooperative assignors,
  what they own.  ``sync_group`` is kept (Kafka's shape): it fetches the member's assignment and
  is its acknowledgement of the generation; it is never parked.
* Member ids follow KIP-394: a dynamic member's first join (member_id "") is answered with
  MEMBER_ID_REQUIRED and a fresh ``member_id`` it must rejoin with, so a client retrying a timed
  out join never leaves phantom members for the group to wait on.  Static members get theirs at once.
* Max poll interval: heartbeats carry ``ms_since_poll``; a member that has not polled for its
  ``rebalance_timeout_ms`` is removed, so clients need no local timer or leave logic for it.
* Membership is not persisted: after a coordinator move or restart groups come back EMPTY with
  their committed offsets, and members rejoin on UNKNOWN_MEMBER_ID.  Member ids are random, so a
  member of the old incarnation can never pass for one of the new.

Rules
=====
Rule 1: every state change goes through ``TRANSITIONS`` (``state.transition``); anything else is a bug.
Rule 2: the generation grows by one exactly when a join phase ends (PREPARING_REBALANCE left).
Rule 3: assignments are computed only when a join phase ends; in COMPLETING_REBALANCE and STABLE
        every member but those parked by Rule 7 holds its assignment for the current generation.
Rule 4: a cooperative assignment never gives a member a partition another member reported owning
        (``cooperative_plan``); the owner is told to revoke it, and its rejoin starts the
        follow-up rebalance in which the partition moves.
Rule 5: a member with a parked join is not expired by session or poll timeout; the rebalance
        deadline bounds it.  Members that have not rejoined when it passes are removed.
Rule 6: errors are raised before anything changes, so an error reply never leaves a half-update
        (heartbeat refreshes liveness before answering REBALANCE_IN_PROGRESS, on purpose).
Rule 7: a join arriving in COMPLETING_REBALANCE (typically a cooperative member that has just
        revoked) is parked until every other member has synced, so nobody misses the assignment
        of the generation it joined; then the next join phase starts.  Removals do not wait.
Rule 8: a member commits with the group's generation, or (cooperative) with the generation its
        owned partitions came from (``owned_generation`` of its latest join) for partitions it
        *holds*: ones it reported owning at that join which the ending join phase left with it
        (``resolve_owned``; by Rule 4 no other member was given them since).  Its client has not
        yet seen the join reply that moved the generation on, and it keeps consuming those
        partitions, so the commit is as sound as one in the old generation.  Any other partition
        with that generation gets REBALANCE_IN_PROGRESS while the group rebalances (commit after
        the rebalance), ILLEGAL_GENERATION once it is stable.
"""

from __future__ import annotations

import functools
import itertools
import uuid
from typing import Any, Callable, Hashable, Iterable

from ..protocol.errors import FabricError, error_map
from .assignors import ASSIGNORS, Subscription, cooperative_plan, resolve_owned
from .messages import (DeleteGroupsRequest, DescribeGroupsRequest, HeartbeatRequest, JoinGroupRequest,
                       LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest,
                       SyncGroupRequest, flatten, topic_partitions)
from .offsets import CommittedOffset, OffsetRecord, OffsetStore, commit_record, partition_for_group
from .state import Action, AppendOffsets, Event, Group, GroupConfig, Member, Reply, State, transition


def _check_generation(group: Group, generation: int) -> None:
    if generation != group.generation:
        raise FabricError("ILLEGAL_GENERATION", f"generation {generation}; the group is at {group.generation}: rejoin")


def _operation(op: str) -> Callable:
    """A FabricError raised by an operation becomes its error reply."""
    def decorate(fn: Callable[..., list[Action]]) -> Callable[..., list[Action]]:
        @functools.wraps(fn)
        def wrapper(self: "Coordinator", token: Hashable, req: Any, now_ms: int, **kw: Any) -> list[Action]:
            try:
                return fn(self, token, req, now_ms, **kw)
            except FabricError as err:
                return [Reply(token, op, {}, err)]
        return wrapper
    return decorate


def _default_member_id(client_id: str) -> str:
    return f"{client_id or 'member'}-{uuid.uuid4().hex}"


class Coordinator:
    """Every group whose ``__consumer_offsets`` partition this broker leads."""

    def __init__(self, partitions_for: Callable[[str], int | None], *, offsets_partitions: int = 50,
                 config: GroupConfig = GroupConfig(),
                 new_member_id: Callable[[str], str] = _default_member_id) -> None:
        self.partitions_for = partitions_for
        self.offsets_partitions = offsets_partitions
        self.config = config
        self.offsets = OffsetStore()
        self._new_member_id = new_member_id
        self._groups: dict[str, Group] = {}
        self._led: set[int] = set()
        self._loading: set[int] = set()
        self._seq = itertools.count()

    # ------------------------------------------------------------ offsets-partition leadership

    def begin_loading(self, partition: int) -> None:
        """This broker leads ``partition`` and is replaying it: its groups get COORDINATOR_NOT_AVAILABLE."""
        self._loading.add(partition)

    def load_partition(self, partition: int, records: Iterable[tuple[bytes, bytes | None]]) -> int:
        """Replay ``partition``'s ``(key, value)`` records and serve its groups; returns the count of
        records skipped (unknown or malformed).  To reload a partition, unload it first."""
        if partition in self._led:
            raise ValueError(f"offsets partition {partition} is already loaded")
        self._forget_partition(partition)  # stale offsets only: no group of an unled partition exists
        skipped = self.offsets.apply(records)
        self._loading.discard(partition)
        self._led.add(partition)
        return skipped

    def unload_partition(self, partition: int) -> list[Action]:
        """Leadership of ``partition`` moved away: drop its groups, answer their parked joins."""
        self._led.discard(partition)
        self._loading.discard(partition)
        return self._forget_partition(partition)

    def _forget_partition(self, partition: int) -> list[Action]:
        actions: list[Action] = []
        for gid in [g for g in self._groups if self.partition_for(g) == partition]:
            group = self._groups.pop(gid)
            for m in group.members.values():
                if m.join_token is not None:
                    actions.append(Reply(m.join_token, "join_group", {}, FabricError("NOT_COORDINATOR")))
            transition(group, Event.UNLOAD)
        for gid in self.offsets.groups():
            if self.partition_for(gid) == partition:
                self.offsets.drop_group(gid)
        return actions

    def partition_for(self, group_id: str) -> int:
        return partition_for_group(group_id, self.offsets_partitions)

    def _check_coordinator(self, group_id: str) -> None:
        p = self.partition_for(group_id)
        if p in self._loading:
            raise FabricError("COORDINATOR_NOT_AVAILABLE", f"offsets partition {p} is loading")
        if p not in self._led:
            raise FabricError("NOT_COORDINATOR", f"this broker does not lead offsets partition {p}")

    def offsets_appended(self, records: Iterable[OffsetRecord]) -> None:
        """The records of an ``AppendOffsets`` are durable: apply them to memory."""
        self.offsets.apply((r.key, r.value) for r in records if r.partition in self._led)

    # ------------------------------------------------------------ membership

    def handle(self, token: Hashable, op: str, req: Any, now_ms: int, *, host: str = "",
               wall_ms: int | None = None) -> list[Action]:
        """Dispatch a parsed request by operation name (every group operation but find_coordinator).
        ``now_ms`` (monotonic) drives sessions and rebalances; ``wall_ms`` is the date a commit
        records (``commit_timestamp``; None: ``now_ms``, for callers with one clock)."""
        if op == "join_group":
            return self.join_group(token, req, now_ms, host=host)
        if op == "offset_commit":
            return self.offset_commit(token, req, now_ms, wall_ms=wall_ms)
        if op not in _HANDLERS:
            raise ValueError(f"{op!r} is not a coordinator operation")
        return getattr(self, op)(token, req, now_ms)

    @_operation("join_group")
    def join_group(self, token: Hashable, req: JoinGroupRequest, now_ms: int, *, host: str = "") -> list[Action]:
        self._check_coordinator(req.group_id)
        known = tuple(a for a in req.assignors if a in ASSIGNORS)
        if not known:
            raise FabricError("INCONSISTENT_GROUP_PROTOCOL",
                              f"this coordinator supports the assignors {sorted(ASSIGNORS)}, not {list(req.assignors)}")
        group = self._groups.get(req.group_id)
        if group is None:
            if len(self._groups) >= self.config.groups_max:
                raise FabricError("LIMIT_EXCEEDED", f"this coordinator already has {len(self._groups)} groups")
            group = Group(req.group_id)  # stored below, once the join is accepted
        iid = req.group_instance_id
        if not req.member_id:
            if iid is not None and iid in group.static:
                return self._replace_static(group, token, req, known, now_ms, host)
            member_id = self._new_member_id(req.client_id)
            if iid is None:
                self._check_protocols(group, member_id, known)
                self._groups.setdefault(group.group_id, group)
                group.pending[member_id] = now_ms + req.session_timeout_ms
                return [Reply(token, "join_group", {"member_id": member_id},
                              FabricError("MEMBER_ID_REQUIRED", "rejoin with the member_id of this reply"))]
        else:
            member_id = req.member_id
            self._check_fenced(group, member_id, iid)
            if member_id not in group.members and member_id not in group.pending:
                raise FabricError("UNKNOWN_MEMBER_ID", f"group {group.group_id!r} has no member {member_id!r}")
        self._check_protocols(group, member_id, known)
        member = group.members.get(member_id)
        if member is None and len(group.members) >= self.config.group_members_max:
            raise FabricError("LIMIT_EXCEEDED", f"group {group.group_id!r} has {len(group.members)} members")
        # -- no error past this point (Rule 6)
        self._groups.setdefault(group.group_id, group)
        group.pending.pop(member_id, None)
        if member is None:
            member = group.members[member_id] = Member(member_id, iid, next(self._seq))
            if iid is not None:
                group.static[iid] = member_id
        self._update_member(group, member, req, known, now_ms, host)
        return self._park_join(group, member, token, now_ms)

    def _replace_static(self, group: Group, token: Hashable, req: JoinGroupRequest, known: tuple[str, ...],
                        now_ms: int, host: str) -> list[Action]:
        """A static member restarted (or a second process uses its instance id): the new process takes
        the old member's place and assignment under a new member id; the old id is fenced."""
        assert req.group_instance_id is not None
        self._check_protocols(group, group.static[req.group_instance_id], known)
        old = group.members.pop(group.static[req.group_instance_id])
        # A rebalance is still needed if the subscription changed, or if the old process was in the
        # middle of one (rejoining, or revoking: partitions are withheld until the owner rejoins).
        changed = (set(req.topics) != set(old.topics) or group.protocol not in known
                   or old.join_token is not None or bool(old.revoked))
        actions: list[Action] = []
        if old.join_token is not None:
            actions.append(Reply(old.join_token, "join_group", {},
                                 FabricError("FENCED_INSTANCE_ID", "a newer member uses this group_instance_id")))
            old.join_token = None
        old.member_id = self._new_member_id(req.client_id)
        group.members[old.member_id] = old
        group.static[req.group_instance_id] = old.member_id
        self._update_member(group, old, req, known, now_ms, host)
        old.synced, old.revoked, old.held = False, (), frozenset()  # the new process owns nothing yet
        if changed or group.state in (State.EMPTY, State.PREPARING_REBALANCE):
            return actions + self._park_join(group, old, token, now_ms)
        return actions + [Reply(token, "join_group", self._join_result(group, old))]

    def _update_member(self, group: Group, m: Member, req: JoinGroupRequest, known: tuple[str, ...],
                       now_ms: int, host: str) -> None:
        m.client_id, m.host = req.client_id, host
        m.session_timeout_ms, m.rebalance_timeout_ms = req.session_timeout_ms, req.rebalance_timeout_ms
        group.support.subtract(m.assignors)
        group.support.update(known)
        m.topics, m.assignors = tuple(req.topics), known
        owned = flatten(req.owned)
        # Rule 8: what it held stays held only while it reports the same claim; a newer claim gets
        # its holdings when this join phase ends.
        m.held = m.held.intersection(owned) if req.generation == m.owned_generation else frozenset()
        m.owned, m.owned_generation = owned, req.generation
        m.session_deadline = now_ms + req.session_timeout_ms
        m.poll_deadline = now_ms + req.rebalance_timeout_ms

    def _park_join(self, group: Group, member: Member, token: Hashable, now_ms: int) -> list[Action]:
        actions: list[Action] = []
        if member.join_token is not None:
            actions.append(Reply(member.join_token, "join_group", {},
                                 FabricError("REBALANCE_IN_PROGRESS", "superseded by a newer join of this member")))
        member.join_token = token
        if group.state is State.COMPLETING_REBALANCE:
            return actions + self._maybe_end_sync(group, now_ms)  # Rule 7
        if group.state is not State.PREPARING_REBALANCE:
            self._begin_rebalance(group, Event.JOIN, now_ms)
        group.join_deadline_ms = max(group.join_deadline_ms, group.phase_started_ms + member.rebalance_timeout_ms)
        return actions + self._maybe_finish_join(group, now_ms)

    def _maybe_end_sync(self, group: Group, now_ms: int) -> list[Action]:
        """COMPLETING_REBALANCE ends when every member has synced or rejoined; rejoins start the
        next join phase at once."""
        if any(not m.synced and m.join_token is None for m in group.members.values()):
            return []
        transition(group, Event.ALL_SYNCED)
        if all(m.join_token is None for m in group.members.values()):
            return []
        self._begin_rebalance(group, Event.JOIN, now_ms)
        return self._maybe_finish_join(group, now_ms)

    def _check_protocols(self, group: Group, member_id: str, known: tuple[str, ...]) -> None:
        """Some assignor in ``known`` must be offered by every other member."""
        me = group.members.get(member_id)
        own = me.assignors if me is not None else ()
        others = len(group.members) - (me is not None)
        if not any(group.support[a] - (a in own) == others for a in known):
            theirs = sorted(a for a, n in group.support.items() if n == len(group.members))
            raise FabricError("INCONSISTENT_GROUP_PROTOCOL",
                              f"group {group.group_id!r} uses assignors {theirs}; this member offers {list(known)}")

    def _check_fenced(self, group: Group, member_id: str, iid: str | None) -> None:
        if iid is not None and group.static.get(iid, member_id) != member_id:
            raise FabricError("FENCED_INSTANCE_ID",
                              f"group_instance_id {iid!r} now belongs to another member; this one is fenced")

    def _member(self, group_id: str, member_id: str, iid: str | None) -> tuple[Group, Member]:
        self._check_coordinator(group_id)
        group = self._groups.get(group_id)
        if group is not None:
            self._check_fenced(group, member_id, iid)
            member = group.members.get(member_id)
            if member is not None:
                return group, member
        raise FabricError("UNKNOWN_MEMBER_ID", f"group {group_id!r} has no member {member_id!r}: rejoin")

    def _begin_rebalance(self, group: Group, event: Event, now_ms: int) -> None:
        from_empty = group.state is State.EMPTY
        transition(group, event)
        group.phase_started_ms = now_ms
        group.not_before_ms = now_ms + (self.config.initial_rebalance_delay_ms if from_empty else 0)
        group.join_deadline_ms = now_ms + max((m.rebalance_timeout_ms for m in group.members.values()), default=0)

    def _maybe_finish_join(self, group: Group, now_ms: int) -> list[Action]:
        if group.state is not State.PREPARING_REBALANCE:
            return []
        if now_ms < group.join_deadline_ms and (
                now_ms < group.not_before_ms or any(m.join_token is None for m in group.members.values())):
            return []
        late = [m for m in group.members.values() if m.join_token is None]
        for m in late:  # Rule 5
            self._drop(group, m)
        return self._finish_join(group, now_ms)

    def _finish_join(self, group: Group, now_ms: int) -> list[Action]:
        group.generation += 1  # Rule 2
        if not group.members:
            transition(group, Event.JOIN_DONE_EMPTY)
            group.protocol, group.partition_counts = None, {}
            return []
        transition(group, Event.JOIN_DONE)
        group.phase_started_ms = now_ms
        members = sorted(group.members.values(), key=lambda m: m.seq)
        group.protocol = next(a for a in members[0].assignors if group.support[a] == len(members))
        assignor = ASSIGNORS[group.protocol]
        subs = {m.member_id: Subscription(frozenset(m.topics), m.owned, m.owned_generation, m.instance_id)
                for m in members}
        counts = {t: self.partitions_for(t) or 0 for t in sorted(set().union(*(m.topics for m in members)))}
        group.partition_counts = counts
        target = assignor.assign(subs, counts)
        owners = resolve_owned(subs, counts) if assignor.cooperative else {}
        assigned, revoked = cooperative_plan(target, subs, owners)  # Rule 4
        actions: list[Action] = []
        for m in members:
            m.assignment, m.revoked = tuple(assigned[m.member_id]), tuple(revoked[m.member_id])
            m.held = frozenset(tp for tp in m.owned if owners.get(tp) == m.member_id)  # Rule 8
            m.synced = False
            m.session_deadline = now_ms + m.session_timeout_ms
            actions.append(Reply(m.join_token, "join_group", self._join_result(group, m)))
            m.join_token = None
        return actions

    def _join_result(self, group: Group, m: Member) -> dict[str, Any]:
        return {"member_id": m.member_id, "generation": group.generation, "protocol": group.protocol,
                "members": len(group.members)}

    def _drop(self, group: Group, m: Member) -> list[Action]:
        """Remove ``m`` without a state change; answer its parked join if any."""
        del group.members[m.member_id]
        group.support.subtract(m.assignors)
        if m.instance_id is not None and group.static.get(m.instance_id) == m.member_id:
            del group.static[m.instance_id]
        if m.join_token is None:
            return []
        token, m.join_token = m.join_token, None
        return [Reply(token, "join_group", {}, FabricError("UNKNOWN_MEMBER_ID", "removed from the group"))]

    def _remove(self, group: Group, m: Member, now_ms: int) -> list[Action]:
        """Remove ``m`` and rebalance the others."""
        actions = self._drop(group, m)
        if group.state in (State.STABLE, State.COMPLETING_REBALANCE):
            self._begin_rebalance(group, Event.REMOVE, now_ms)
        return actions + self._maybe_finish_join(group, now_ms)

    @_operation("sync_group")
    def sync_group(self, token: Hashable, req: SyncGroupRequest, now_ms: int) -> list[Action]:
        group, m = self._member(req.group_id, req.member_id, req.group_instance_id)
        if group.state is State.PREPARING_REBALANCE:
            raise FabricError("REBALANCE_IN_PROGRESS", "the group is rebalancing: rejoin")
        _check_generation(group, req.generation)
        m.session_deadline = now_ms + m.session_timeout_ms
        m.synced = True
        reply = Reply(token, "sync_group", {
            "generation": group.generation, "protocol": group.protocol,
            "assignment": topic_partitions(m.assignment), "revoked": topic_partitions(m.revoked)})
        if group.state is State.COMPLETING_REBALANCE:
            return [reply] + self._maybe_end_sync(group, now_ms)
        return [reply]

    @_operation("heartbeat")
    def heartbeat(self, token: Hashable, req: HeartbeatRequest, now_ms: int) -> list[Action]:
        group, m = self._member(req.group_id, req.member_id, req.group_instance_id)
        m.session_deadline = now_ms + m.session_timeout_ms
        m.poll_deadline = now_ms - req.ms_since_poll + m.rebalance_timeout_ms
        if group.state is State.PREPARING_REBALANCE:
            raise FabricError("REBALANCE_IN_PROGRESS", "the group is rebalancing: rejoin")
        _check_generation(group, req.generation)
        return [Reply(token, "heartbeat")]

    @_operation("leave_group")
    def leave_group(self, token: Hashable, req: LeaveGroupRequest, now_ms: int) -> list[Action]:
        if req.member_id:
            group, m = self._member(req.group_id, req.member_id, req.group_instance_id)
        else:  # a tool removing a static member by instance id
            self._check_coordinator(req.group_id)
            group_or_none = self._groups.get(req.group_id)
            mid = group_or_none.static.get(req.group_instance_id or "") if group_or_none else None
            if group_or_none is None or mid is None:
                raise FabricError("UNKNOWN_MEMBER_ID", f"no member with instance id {req.group_instance_id!r}")
            group, m = group_or_none, group_or_none.members[mid]
        return self._remove(group, m, now_ms) + [Reply(token, "leave_group")]

    def tick(self, now_ms: int) -> list[Action]:
        """Expire members (session, poll interval, unsynced after a join phase), pending member ids
        and empty groups; finish join phases whose deadline or initial delay passed."""
        actions: list[Action] = []
        for group in list(self._groups.values()):
            group.pending = {k: t for k, t in group.pending.items() if t > now_ms}
            for m in list(group.members.values()):
                if m.join_token is not None or group.members.get(m.member_id) is not m:
                    continue  # Rule 5, or already gone
                unsynced = (group.state is State.COMPLETING_REBALANCE and not m.synced
                            and now_ms >= group.phase_started_ms + m.rebalance_timeout_ms)
                if now_ms >= m.session_deadline or now_ms >= m.poll_deadline or unsynced:
                    actions += self._remove(group, m, now_ms)
            actions += self._maybe_finish_join(group, now_ms)
            if (group.state is State.EMPTY and not group.pending
                    and not self.offsets.has_group(group.group_id)):
                del self._groups[group.group_id]
        return actions

    def metadata_changed(self, now_ms: int) -> list[Action]:
        """Topics changed: rebalance groups whose subscribed partition counts are not the ones their
        assignment was computed with (new topic, added partitions, deleted topic)."""
        for group in self._groups.values():
            if group.state in (State.STABLE, State.COMPLETING_REBALANCE) and any(
                    (self.partitions_for(t) or 0) != n for t, n in group.partition_counts.items()):
                self._begin_rebalance(group, Event.METADATA, now_ms)
        return []

    # ------------------------------------------------------------ offsets and administration

    @_operation("offset_commit")
    def offset_commit(self, token: Hashable, req: OffsetCommitRequest, now_ms: int, *,
                      wall_ms: int | None = None) -> list[Action]:
        self._check_coordinator(req.group_id)
        group = self._groups.get(req.group_id)
        if group is not None and group.members:
            _, m = self._member(req.group_id, req.member_id, req.group_instance_id)
            if req.generation != group.generation:
                self._check_held(group, m, req)
        elif req.member_id:
            raise FabricError("UNKNOWN_MEMBER_ID", f"group {req.group_id!r} has no members")
        elif req.generation != -1:
            raise FabricError("ILLEGAL_GENERATION", "the group has no members: commit with generation -1")
        else:
            m = None
        for o in req.offsets:
            n = self.partitions_for(o.topic)
            if n is None or o.partition >= n:
                raise FabricError("UNKNOWN_TOPIC_OR_PARTITION", f"{o.topic}[{o.partition}] does not exist")
        if m is not None:
            m.session_deadline = now_ms + m.session_timeout_ms  # a commit is a sign of life, as in Kafka
        records = tuple(commit_record(req.group_id, o.topic, o.partition,
                                      CommittedOffset(o.offset, o.metadata, now_ms if wall_ms is None else wall_ms,
                                                      o.leader_epoch),
                                      self.offsets_partitions) for o in req.offsets)
        return [AppendOffsets(token, records, Reply(token, "offset_commit"))]

    @staticmethod
    def _check_held(group: Group, m: Member, req: OffsetCommitRequest) -> None:
        """Rule 8: a commit with the member's previous generation, for partitions it holds."""
        if req.generation != m.owned_generation or req.generation < 0 or not m.held:
            _check_generation(group, req.generation)
        foreign = sorted({(o.topic, o.partition) for o in req.offsets} - m.held)
        if not foreign:
            return
        if group.state in (State.PREPARING_REBALANCE, State.COMPLETING_REBALANCE):
            raise FabricError("REBALANCE_IN_PROGRESS",
                              f"generation {req.generation} may commit only the partitions this member keeps "
                              f"through the rebalance, not {foreign}: poll to finish the rebalance, then commit")
        _check_generation(group, req.generation)

    @_operation("offset_fetch")
    def offset_fetch(self, token: Hashable, req: OffsetFetchRequest, now_ms: int) -> list[Action]:
        self._check_coordinator(req.group_id)
        topics = None if req.topics is None else [(t.topic, t.partitions) for t in req.topics]
        return [Reply(token, "offset_fetch", {"group_id": req.group_id,
                                              "offsets": self.offsets.rows(req.group_id, topics)})]

    def _group(self, group_id: str) -> Group | None:
        """The group, or a fresh EMPTY one if it exists only through committed offsets."""
        group = self._groups.get(group_id)
        if group is None and self.offsets.has_group(group_id):
            group = self._groups[group_id] = Group(group_id)
        return group

    @_operation("list_groups")
    def list_groups(self, token: Hashable, req: ListGroupsRequest, now_ms: int) -> list[Action]:
        ids = sorted({*self._groups, *(g for g in self.offsets.groups() if self.partition_for(g) in self._led)})
        rows = []
        for gid in ids:
            group = self._group(gid)
            assert group is not None
            if req.states is None or group.state.value in req.states:
                rows.append({"group_id": gid, "state": group.state.value, "protocol": group.protocol,
                             "members": len(group.members)})
        return [Reply(token, "list_groups", {"groups": rows})]

    @_operation("describe_groups")
    def describe_groups(self, token: Hashable, req: DescribeGroupsRequest, now_ms: int) -> list[Action]:
        return [Reply(token, "describe_groups", {"groups": [self._describe(g) for g in req.group_ids]})]

    def _describe(self, group_id: str) -> dict[str, Any]:
        try:
            self._check_coordinator(group_id)
        except FabricError as err:
            return {"group_id": group_id, "error": err.to_wire()}
        group = self._group(group_id)
        if group is None:
            return {"group_id": group_id, "state": State.DEAD.value, "error": error_map("GROUP_ID_NOT_FOUND")}
        members = [{"member_id": m.member_id, "group_instance_id": m.instance_id, "client_id": m.client_id,
                    "host": m.host, "topics": list(m.topics), "assignment": topic_partitions(m.assignment)}
                   for m in sorted(group.members.values(), key=lambda m: m.seq)]
        return {"group_id": group_id, "state": group.state.value, "protocol": group.protocol,
                "generation": group.generation, "members": members, "offsets": self.offsets.rows(group_id)}

    @_operation("delete_groups")
    def delete_groups(self, token: Hashable, req: DeleteGroupsRequest, now_ms: int) -> list[Action]:
        results: list[dict[str, Any]] = []
        records: list[OffsetRecord] = []
        for gid in dict.fromkeys(req.group_ids):
            try:
                self._check_coordinator(gid)
                group = self._group(gid)
                if group is None:
                    raise FabricError("GROUP_ID_NOT_FOUND", f"no group {gid!r}")
                if group.state is not State.EMPTY:
                    raise FabricError("GROUP_NOT_EMPTY", f"group {gid!r} has {len(group.members)} members")
            except FabricError as err:
                results.append({"group_id": gid, "error": err.to_wire()})
                continue
            transition(group, Event.DELETE)
            del self._groups[gid]
            records += self.offsets.tombstones(gid, self.offsets_partitions)
            results.append({"group_id": gid, "error": None})
        reply = Reply(token, "delete_groups", {"results": results})
        return [AppendOffsets(token, tuple(records), reply)] if records else [reply]

    # ------------------------------------------------------------ inspection (tests, dashboard)

    def group_state(self, group_id: str) -> State:
        group = self._groups.get(group_id)
        if group is None:
            return State.EMPTY if self.offsets.has_group(group_id) else State.DEAD
        return group.state

    def group(self, group_id: str) -> Group | None:
        return self._groups.get(group_id)

    def overview(self) -> list[dict[str, Any]]:
        """Every group this broker coordinates, with its committed offsets (for ``stats``)."""
        ids = sorted({*self._groups, *(g for g in self.offsets.groups() if self.partition_for(g) in self._led)})
        out = []
        for gid in ids:
            group = self._group(gid)
            assert group is not None
            out.append({"group_id": gid, "state": group.state.value, "protocol": group.protocol,
                        "generation": group.generation, "members": len(group.members),
                        "offsets": self.offsets.rows(gid)})
        return out


_HANDLERS = frozenset({"join_group", "sync_group", "heartbeat", "leave_group", "offset_commit",
                       "offset_fetch", "list_groups", "describe_groups", "delete_groups"})
