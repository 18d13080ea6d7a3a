"""The group coordinator, driven by model clients and a manual clock (no sockets, no sleeps).

``Bench`` plays the broker: it parses request maps through the wire schema, hands them to the
coordinator with a token, and records every reply (checking each token is answered once).
``Member`` plays a client as SPEC.md section 12 tells clients to behave, so the tests read like the
conversation a real consumer has with its coordinator.
"""

from __future__ import annotations

import itertools

import pytest

from fabric.groups import AppendOffsets, Coordinator, GroupConfig, Reply, State
from fabric.groups.messages import topic_partitions
from fabric.protocol.errors import FabricError
from fabric.protocol.messages import OPERATIONS, parse_request, request_header
from fabric.protocol.schema import parse
from fabric.testing.seeds import seeds

EAGER = {"range", "roundrobin"}


class Bench:
    def __init__(self, partitions=None, records=(), **config):
        self.topics = dict(partitions or {"t": 6})
        ids = itertools.count(1)
        self.coord = Coordinator(self.topics.get, offsets_partitions=1,
                                 config=GroupConfig(**{"initial_rebalance_delay_ms": 0, **config}),
                                 new_member_id=lambda client: f"{client or 'm'}-{next(ids)}")
        self.coord.load_partition(0, records)
        self.now = 0
        self.replies: dict[int, Reply] = {}
        self.log: list = []  # what was "appended" to __consumer_offsets
        self._tokens = itertools.count()

    def run(self, actions):
        for a in actions:
            if isinstance(a, AppendOffsets):
                self.log.extend(a.records)
                self.coord.offsets_appended(a.records)
                a = a.reply
            assert a.token not in self.replies, f"token {a.token} answered twice"
            self.replies[a.token] = a

    def call(self, op, **fields) -> int:
        token = next(self._tokens)
        self.run(self.coord.handle(token, op, parse(OPERATIONS[op][0], fields), self.now))
        return token

    def ask(self, op, **fields) -> Reply:
        reply = self.replies.get(self.call(op, **fields))
        assert reply is not None, f"{op} was parked"
        return reply

    def advance(self, ms):
        self.now += ms
        self.run(self.coord.tick(self.now))

    def state(self, group="g"):
        return self.coord.group_state(group)


def err(reply):
    return reply.error.name if reply is not None and reply.error is not None else None


class Member:
    """A model consumer: joins, syncs, heartbeats, revokes, rejoins."""

    def __init__(self, bench, group="g", topics=("t",), assignors=("range",), instance_id=None,
                 session_timeout_ms=10_000, rebalance_timeout_ms=30_000):
        self.b, self.group, self.topics, self.assignors = bench, group, list(topics), list(assignors)
        self.instance_id, self.session, self.rebalance = instance_id, session_timeout_ms, rebalance_timeout_ms
        self.member_id, self.generation, self.protocol = "", -1, None
        self.owned: set = set()
        self.join_token = None
        self.history: list[tuple[str, set]] = []  # (event, owned after it)
        self.fenced = False

    def join(self):
        if self.protocol in EAGER:
            self.owned = set()  # eager: revoke everything before rejoining
        self.join_token = self.b.call(
            "join_group", group_id=self.group, member_id=self.member_id, group_instance_id=self.instance_id,
            topics=self.topics, assignors=self.assignors, owned=topic_partitions(self.owned),
            generation=self.generation, session_timeout_ms=self.session, rebalance_timeout_ms=self.rebalance)
        reply = self.b.replies.get(self.join_token)
        if err(reply) == "MEMBER_ID_REQUIRED":
            self.member_id = reply.result["member_id"]
            self.join()

    def step(self) -> bool:
        """Advance one protocol step; True when it did something (not just an OK heartbeat)."""
        if self.fenced:
            return False
        if self.join_token is not None:
            reply = self.b.replies.get(self.join_token)
            if reply is None:
                return False  # parked
            self.join_token = None
            if reply.error is not None:
                return self.on_error(reply)
            self.member_id, self.generation = reply.result["member_id"], reply.result["generation"]
            self.protocol = reply.result["protocol"]
            return self.sync()
        reply = self.b.ask("heartbeat", group_id=self.group, member_id=self.member_id, generation=self.generation,
                           group_instance_id=self.instance_id)
        return self.on_error(reply) if reply.error else False

    def sync(self) -> bool:
        reply = self.b.ask("sync_group", group_id=self.group, member_id=self.member_id,
                           generation=self.generation, group_instance_id=self.instance_id)
        if reply.error:
            return self.on_error(reply)
        assignment = {(e["topic"], p) for e in reply.result["assignment"] for p in e["partitions"]}
        revoked = {(e["topic"], p) for e in reply.result["revoked"] for p in e["partitions"]}
        assert not revoked & assignment
        self.owned = assignment
        self.history.append(("sync", set(self.owned)))
        if revoked:
            self.join()  # cooperative: revoked, now rejoin so the partitions can move
        return True

    def on_error(self, reply) -> bool:
        name = err(reply)
        if name == "FENCED_INSTANCE_ID":
            self.fenced, self.owned = True, set()
        elif name in ("UNKNOWN_MEMBER_ID", "ILLEGAL_GENERATION"):
            self.member_id, self.generation, self.owned = "", -1, set()  # partitions lost
            self.join()
        elif name == "REBALANCE_IN_PROGRESS":
            self.join()
        else:
            raise AssertionError(f"unexpected {reply}")
        return True

    def leave(self):
        assert err(self.b.ask("leave_group", group_id=self.group, member_id=self.member_id)) is None
        self.owned = set()


def check_disjoint(members):
    seen: dict = {}
    for m in members:
        for tp in m.owned:
            assert tp not in seen, f"{tp} owned by {seen[tp]} and {m.member_id}"
            seen[tp] = m.member_id


def check_held(bench, members, group="g"):
    """Rule 8 is sound: what the coordinator lets a member commit with its previous generation
    is owned by no other member."""
    g = bench.coord.group(group)
    for cm in (g.members.values() if g is not None else ()):
        for m in members:
            if m.member_id != cm.member_id:
                assert not cm.held & m.owned, f"{cm.member_id} holds {sorted(cm.held & m.owned)} owned by {m.member_id}"


def settle(bench, members, group="g", rounds=40):
    for _ in range(rounds):
        busy = [m.step() for m in members]
        check_disjoint(members)
        check_held(bench, members, group)
        if not any(busy) and bench.state(group) is State.STABLE and all(m.join_token is None for m in members):
            return
        bench.advance(100)
    raise AssertionError(f"group did not settle: {bench.state(group)}")


def all_partitions(bench, topics=("t",)):
    return {(t, p) for t in topics for p in range(bench.topics[t])}


# ------------------------------------------------------------------ joining

@pytest.mark.parametrize("assignor", ["range", "roundrobin", "cooperative-sticky"])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7])
def test_members_joining_one_by_one_get_disjoint_complete_assignments(assignor, n):
    b = Bench()
    members = []
    for _ in range(n):
        members.append(Member(b, assignors=[assignor]))
        members[-1].join()
        settle(b, members)
        owned = [m.owned for m in members]
        assert set().union(*owned) == all_partitions(b)
        assert sum(len(o) for o in owned) == 6
        assert max(map(len, owned)) - min(map(len, owned)) <= 1
    group = b.coord.group("g")
    assert group.protocol == assignor and group.state is State.STABLE
    assert {m.generation for m in members} == {group.generation}


def test_first_join_gets_member_id_required_then_joins_with_it():
    b = Bench()
    first = b.ask("join_group", group_id="g", topics=["t"], assignors=["range"], client_id="app")
    assert err(first) == "MEMBER_ID_REQUIRED"
    member_id = first.result["member_id"]
    assert member_id.startswith("app-")
    assert first.header(7)["member_id"] == member_id and first.header(7)["error"]["code"] == 51
    second = b.ask("join_group", group_id="g", member_id=member_id, topics=["t"], assignors=["range"])
    assert second.error is None and second.result == {"member_id": member_id, "generation": 1,
                                                      "protocol": "range", "members": 1}
    bogus = b.ask("join_group", group_id="g", member_id="made-up", topics=["t"], assignors=["range"])
    assert err(bogus) == "UNKNOWN_MEMBER_ID"


def test_pending_member_id_expires_after_the_session_timeout():
    b = Bench()
    mid = b.ask("join_group", group_id="g", topics=["t"], assignors=["range"],
                session_timeout_ms=5000).result["member_id"]
    b.advance(5000)
    assert err(b.ask("join_group", group_id="g", member_id=mid, topics=["t"], assignors=["range"])) == \
        "UNKNOWN_MEMBER_ID"
    assert b.state() is State.DEAD  # an empty group with no offsets is dropped


def test_initial_rebalance_delay_collects_early_joiners_into_one_generation():
    b = Bench(initial_rebalance_delay_ms=3000)
    a, c = Member(b), Member(b)
    a.join()
    b.advance(1000)
    c.join()
    assert b.replies.get(a.join_token) is None and b.state() is State.PREPARING_REBALANCE
    b.advance(1999)
    assert b.replies.get(a.join_token) is None
    b.advance(1)
    assert b.replies[a.join_token].result["generation"] == b.replies[c.join_token].result["generation"] == 1
    settle(b, [a, c])
    assert b.coord.group("g").generation == 1


def test_protocol_is_the_oldest_members_first_choice_all_support():
    b = Bench()
    a = Member(b, assignors=["roundrobin", "range"])
    c = Member(b, assignors=["range", "roundrobin"])
    a.join()
    c.join()
    settle(b, [a, c])
    assert b.coord.group("g").protocol == "roundrobin"
    d = Member(b, assignors=["cooperative-sticky"])
    d.join()
    assert err(b.replies[d.join_token]) == "INCONSISTENT_GROUP_PROTOCOL"
    unknown = b.ask("join_group", group_id="g2", topics=["t"], assignors=["magic"])
    assert err(unknown) == "INCONSISTENT_GROUP_PROTOCOL"
    c.leave()
    d.join()  # a still offers nothing d offers
    assert err(b.replies[d.join_token]) == "INCONSISTENT_GROUP_PROTOCOL"
    e = Member(b, assignors=["range"])
    a.leave()
    e.join()  # e is now the only member
    d.join()
    assert err(b.replies[d.join_token]) == "INCONSISTENT_GROUP_PROTOCOL"
    e.leave()
    d.join()  # an empty group takes any assignor
    settle(b, [d])
    assert b.coord.group("g").protocol == "cooperative-sticky"


@pytest.mark.sim
@pytest.mark.parametrize("seed", seeds(range(24)))
def test_random_membership_churn_keeps_ownership_disjoint_and_settles(seed):
    """Seeded simulation: members join, leave, crash (go silent) and restart as static members while
    the clock runs; at every step no partition is owned by two live members; at the end the group
    settles with a complete assignment."""
    import random
    rng = random.Random(seed)
    assignor = ["range", "roundrobin", "cooperative-sticky"][seed % 3]
    b = Bench({"t": 6, "u": 3})
    live: list[Member] = []
    for _ in range(60):
        roll = rng.random()
        if roll < 0.3 or not live:
            iid = rng.choice([None, "s1", "s2"])
            if iid is not None and any(m.instance_id == iid for m in live):
                iid = None
            live.append(Member(b, topics=["t", "u"], assignors=[assignor], instance_id=iid,
                               session_timeout_ms=3000))
            live[-1].join()
        elif roll < 0.4:
            m = live.pop(rng.randrange(len(live)))
            if m.member_id and m.join_token is None and not m.fenced:
                b.ask("leave_group", group_id="g", member_id=m.member_id)
        elif roll < 0.5:
            live.pop(rng.randrange(len(live)))  # crashed: silent from now on, expired by the coordinator
        for _ in range(rng.randrange(1, 6)):
            for m in list(live):
                m.step()
            live = [m for m in live if not m.fenced]
            check_disjoint(live)
            check_held(b, live)
            b.advance(rng.choice([10, 100, 500]))
    if not live:
        return
    b.advance(3000)  # let crashed members expire
    settle(b, live, rounds=200)
    assert set().union(*(m.owned for m in live)) == all_partitions(b, ("t", "u"))
    assert sum(len(m.owned) for m in live) == 9


# ------------------------------------------------------------------ leaving and expiry

def test_leave_triggers_a_rebalance_and_the_rest_take_over():
    b = Bench()
    ms = [Member(b) for _ in range(3)]
    for m in ms:
        m.join()
    settle(b, ms)
    gen = b.coord.group("g").generation
    ms[0].leave()
    assert b.state() is State.PREPARING_REBALANCE
    settle(b, ms[1:])
    assert ms[1].owned | ms[2].owned == all_partitions(b)
    assert b.coord.group("g").generation == gen + 1
    ms[1].leave()
    ms[2].leave()
    assert b.state() is State.EMPTY
    b.advance(1)
    assert b.state() is State.DEAD  # no members, no offsets: dropped by the next tick


def test_last_member_leaving_empties_the_group_and_keeps_offsets():
    b = Bench()
    m = Member(b)
    m.join()
    settle(b, [m])
    assert b.ask("offset_commit", group_id="g", generation=m.generation, member_id=m.member_id,
                 offsets=[{"topic": "t", "partition": 0, "offset": 5}]).error is None
    m.leave()
    assert b.state() is State.EMPTY
    b.advance(100_000)
    assert b.state() is State.EMPTY


def test_session_timeout_removes_a_silent_member():
    b = Bench()
    a, c, silent = Member(b), Member(b), Member(b, session_timeout_ms=3000)
    for m in (a, c, silent):
        m.join()
    settle(b, [a, c, silent])
    gen = b.coord.group("g").generation
    for _ in range(29):  # a and c heartbeat every 100 ms; silent says nothing
        a.step()
        c.step()
        b.advance(100)
    assert b.state() is State.STABLE
    a.step()
    c.step()
    b.advance(100)  # 3000 ms since silent's last sign of life
    assert b.state() is State.PREPARING_REBALANCE
    assert silent.member_id not in b.coord.group("g").members
    settle(b, [a, c])
    assert a.owned | c.owned == all_partitions(b) and b.coord.group("g").generation == gen + 1
    assert err(b.ask("heartbeat", group_id="g", member_id=silent.member_id, generation=gen)) == "UNKNOWN_MEMBER_ID"


def test_member_that_stops_polling_is_removed_after_its_rebalance_timeout():
    b = Bench()
    busy, ok = Member(b, rebalance_timeout_ms=5000), Member(b, rebalance_timeout_ms=5000)
    busy.join()
    ok.join()
    settle(b, [busy, ok])
    t0 = b.now  # busy's application polls for the last time; its heartbeats keep coming
    for _ in range(49):
        assert b.ask("heartbeat", group_id="g", member_id=busy.member_id, generation=busy.generation,
                     ms_since_poll=b.now - t0).error is None
        ok.step()
        b.advance(100)
    assert b.state() is State.STABLE  # 4900 ms without a poll
    b.ask("heartbeat", group_id="g", member_id=busy.member_id, generation=busy.generation, ms_since_poll=4900)
    ok.step()
    b.advance(100)
    assert busy.member_id not in b.coord.group("g").members
    settle(b, [ok])
    assert ok.owned == all_partitions(b)


def test_members_that_do_not_rejoin_within_the_rebalance_timeout_are_removed():
    b = Bench()
    a, late = Member(b, rebalance_timeout_ms=20_000), Member(b, session_timeout_ms=60_000,
                                                              rebalance_timeout_ms=20_000)
    a.join()
    late.join()
    settle(b, [a, late])
    newcomer = Member(b, rebalance_timeout_ms=20_000)
    newcomer.join()
    a.step()  # REBALANCE_IN_PROGRESS -> rejoins; late never hears of it
    assert b.replies.get(a.join_token) is None
    b.advance(19_999)
    assert b.replies.get(a.join_token) is None
    b.advance(1)
    assert b.replies[a.join_token].result["members"] == 2
    settle(b, [a, newcomer])
    assert late.member_id not in b.coord.group("g").members
    assert err(b.ask("heartbeat", group_id="g", member_id=late.member_id, generation=late.generation)) == \
        "UNKNOWN_MEMBER_ID"


def test_member_that_never_syncs_is_removed():
    b = Bench()
    a = Member(b, rebalance_timeout_ms=5000)
    a.join()
    settle(b, [a])
    mute = Member(b, rebalance_timeout_ms=5000, session_timeout_ms=60_000)
    mute.join()
    a.step()  # rejoin; the join phase completes, mute never calls sync_group
    a.step()  # a syncs
    assert b.state() is State.COMPLETING_REBALANCE
    for _ in range(49):
        a.step()
        b.advance(100)
    assert b.state() is State.COMPLETING_REBALANCE
    b.advance(100)
    assert mute.member_id not in b.coord.group("g").members
    settle(b, [a])


# ------------------------------------------------------------------ generations

def test_heartbeat_and_sync_during_a_rebalance_answer_rebalance_in_progress():
    b = Bench()
    a = Member(b)
    a.join()
    settle(b, [a])
    Member(b).join()
    hb = b.ask("heartbeat", group_id="g", member_id=a.member_id, generation=a.generation)
    assert err(hb) == "REBALANCE_IN_PROGRESS" and hb.header(3)["error"]["code"] == 44
    sync = b.ask("sync_group", group_id="g", member_id=a.member_id, generation=a.generation)
    assert err(sync) == "REBALANCE_IN_PROGRESS"


def test_stale_generation_is_rejected_for_heartbeat_sync_and_commit():
    b = Bench()
    a, c = Member(b), Member(b)
    a.join()
    settle(b, [a])
    old = a.generation
    c.join()
    settle(b, [a, c])
    assert a.generation == old + 1
    offsets = [{"topic": "t", "partition": 0, "offset": 10}]
    assert err(b.ask("heartbeat", group_id="g", member_id=a.member_id, generation=old)) == "ILLEGAL_GENERATION"
    assert err(b.ask("sync_group", group_id="g", member_id=a.member_id, generation=old)) == "ILLEGAL_GENERATION"
    assert err(b.ask("offset_commit", group_id="g", generation=old, member_id=a.member_id,
                     offsets=offsets)) == "ILLEGAL_GENERATION"
    assert err(b.ask("offset_commit", group_id="g", generation=a.generation, member_id="nobody",
                     offsets=offsets)) == "UNKNOWN_MEMBER_ID"
    assert err(b.ask("offset_commit", group_id="g", offsets=offsets)) == "UNKNOWN_MEMBER_ID"  # tool on a live group
    assert b.coord.offsets.get("g", "t", 0) is None and b.log == []
    assert b.ask("offset_commit", group_id="g", generation=a.generation, member_id=a.member_id,
                 offsets=offsets).error is None
    assert b.coord.offsets.get("g", "t", 0).offset == 10


def test_commits_to_an_empty_group_need_generation_minus_one():
    b = Bench()
    offsets = [{"topic": "t", "partition": 1, "offset": 3, "metadata": "reset"}]
    assert err(b.ask("offset_commit", group_id="tools", generation=4, offsets=offsets)) == "ILLEGAL_GENERATION"
    assert err(b.ask("offset_commit", group_id="tools", member_id="x", offsets=offsets)) == "UNKNOWN_MEMBER_ID"
    assert err(b.ask("offset_commit", group_id="tools", offsets=[{"topic": "t", "partition": 6, "offset": 1}])) \
        == "UNKNOWN_TOPIC_OR_PARTITION"
    assert b.ask("offset_commit", group_id="tools", offsets=offsets).error is None
    assert b.state("tools") is State.EMPTY
    assert b.ask("list_groups").result["groups"] == [
        {"group_id": "tools", "state": "EMPTY", "protocol": None, "members": 0}]


# ------------------------------------------------------------------ cooperative-sticky

def test_cooperative_third_member_revokes_only_what_moves_then_gets_it_in_a_second_round():
    b = Bench()
    a, c = Member(b, assignors=["cooperative-sticky"]), Member(b, assignors=["cooperative-sticky"])
    a.join()
    settle(b, [a])
    c.join()
    settle(b, [a, c])
    before = {"a": set(a.owned), "c": set(c.owned)}
    assert len(before["a"]) == len(before["c"]) == 3
    gen = b.coord.group("g").generation

    new = Member(b, assignors=["cooperative-sticky"])
    new.join()
    a.step()  # REBALANCE_IN_PROGRESS: rejoin, still owning (and consuming) its 3 partitions
    assert a.owned == before["a"]
    c.step()  # the last rejoin completes round 1
    for m in (a, c, new):
        m.step()  # sync round 1 (a and c see what to revoke, drop it and rejoin at once)
    round1 = {name: m.history[-1][1] for name, m in (("a", a), ("c", c), ("new", new))}
    assert round1["new"] == set()  # what moves is withheld until its owner has revoked it
    assert round1["a"] < before["a"] and len(round1["a"]) == 2  # kept 2, revoked 1
    assert round1["c"] < before["c"] and len(round1["c"]) == 2
    settle(b, [a, c, new])
    assert b.coord.group("g").generation == gen + 2  # exactly two rebalances
    assert a.owned == round1["a"] and c.owned == round1["c"]  # nothing else moved
    assert new.owned == (before["a"] - round1["a"]) | (before["c"] - round1["c"])
    assert sorted(len(m.owned) for m in (a, c, new)) == [2, 2, 2]
    for m in (a, c):  # the partitions a member kept were never revoked along the way
        assert all(m.owned <= owned for _, owned in m.history[-2:])


def test_cooperative_member_leaving_hands_its_partitions_over_in_one_round():
    b = Bench()
    ms = [Member(b, assignors=["cooperative-sticky"]) for _ in range(3)]
    for m in ms:
        m.join()
        settle(b, ms[: ms.index(m) + 1])
    kept = [set(m.owned) for m in ms[:2]]
    gen = b.coord.group("g").generation
    ms[2].leave()
    settle(b, ms[:2])
    assert b.coord.group("g").generation == gen + 1
    assert all(k <= m.owned for k, m in zip(kept, ms))
    assert ms[0].owned | ms[1].owned == all_partitions(b)



def _commit(b, m, generation, tps, offset=7):
    return b.ask("offset_commit", group_id="g", member_id=m.member_id, generation=generation,
                 offsets=[{"topic": t, "partition": p, "offset": offset} for t, p in sorted(tps)])


def test_cooperative_member_commits_what_it_holds_while_its_join_reply_is_unread():
    """Rule 8: the join phase ended (generation + 1) but the member has not read its join reply,
    so its commit still carries the old generation; for partitions it owned and keeps holding
    (kept, or still to revoke) that commit succeeds, for any other partition it fails."""
    b = Bench()
    a, c = Member(b, assignors=["cooperative-sticky"]), Member(b, assignors=["cooperative-sticky"])
    a.join()
    settle(b, [a])
    c.join()
    settle(b, [a, c])
    old = a.generation
    new = Member(b, assignors=["cooperative-sticky"])
    new.join()
    a.step()
    c.step()  # both rejoined: round 1 ends, the join replies wait unread
    group = b.coord.group("g")
    assert group.state is State.COMPLETING_REBALANCE and group.generation == old + 1
    assert a.join_token in b.replies and a.generation == old
    revoking = set(a.owned) - set(group.members[a.member_id].assignment)
    assert revoking  # a keeps some partitions and gives one up; it holds all of them until it revokes
    assert _commit(b, a, old, a.owned, offset=11).error is None
    assert {tp: b.coord.offsets.get("g", *tp).offset for tp in a.owned} == {tp: 11 for tp in a.owned}
    theirs = sorted(c.owned)[0]
    refused = _commit(b, a, old, {*a.owned, theirs}, offset=12)
    assert err(refused) == "REBALANCE_IN_PROGRESS" and str(theirs[1]) in refused.error.message
    assert b.coord.offsets.get("g", *theirs) is None and b.coord.offsets.get("g", *sorted(a.owned)[0]).offset == 11
    assert err(_commit(b, a, old - 1, a.owned)) == "ILLEGAL_GENERATION"  # not the generation of its claim
    settle(b, [a, c, new])  # two rounds; a rejoined with its new claim, so the old generation is spent
    assert err(_commit(b, a, old, a.owned)) == "ILLEGAL_GENERATION"
    assert _commit(b, a, a.generation, a.owned).error is None


def test_eager_member_cannot_commit_with_the_generation_before_a_rebalance():
    b = Bench()
    a, c = Member(b), Member(b)  # range: members revoke (and commit) everything before rejoining
    a.join()
    settle(b, [a])
    old, owned = a.generation, set(a.owned)
    c.join()
    a.step()
    assert b.coord.group("g").state is State.COMPLETING_REBALANCE
    assert err(_commit(b, a, old, owned)) == "ILLEGAL_GENERATION"


# ------------------------------------------------------------------ static membership

def test_static_member_restart_within_session_timeout_keeps_its_assignment_without_rebalance():
    b = Bench()
    a, c = Member(b, instance_id="host-a"), Member(b, instance_id="host-c")
    a.join()
    c.join()
    settle(b, [a, c])
    gen, before, old_id = b.coord.group("g").generation, set(a.owned), a.member_id
    restarted = Member(b, instance_id="host-a")  # same instance id, no member id, owns nothing yet
    restarted.join()
    reply = b.replies[restarted.join_token]
    assert reply.error is None and reply.result["generation"] == gen and reply.result["member_id"] != old_id
    restarted.step()  # sync
    assert restarted.owned == before
    assert b.state() is State.STABLE and b.coord.group("g").generation == gen
    assert c.step() is False  # c heartbeats OK: no rebalance
    # the old process, still alive, is fenced
    hb = b.ask("heartbeat", group_id="g", member_id=old_id, generation=gen, group_instance_id="host-a")
    assert err(hb) == "FENCED_INSTANCE_ID"
    assert err(b.ask("offset_commit", group_id="g", generation=gen, member_id=old_id, group_instance_id="host-a",
                     offsets=[{"topic": "t", "partition": 0, "offset": 1}])) == "FENCED_INSTANCE_ID"
    a.step()
    assert a.fenced


def test_static_member_back_after_its_session_expired_rejoins_with_a_rebalance():
    b = Bench()
    a, c = Member(b, instance_id="a", session_timeout_ms=2000), Member(b, instance_id="c", session_timeout_ms=2000)
    a.join()
    c.join()
    settle(b, [a, c])
    gen = b.coord.group("g").generation
    for _ in range(20):
        c.step()
        b.advance(100)
    assert list(b.coord.group("g").static) == ["c"]
    settle(b, [c])
    back = Member(b, instance_id="a", session_timeout_ms=2000)
    back.join()
    settle(b, [back, c])
    assert b.coord.group("g").generation == gen + 2
    assert back.owned | c.owned == all_partitions(b)


def test_static_member_replaced_during_a_rebalance_fences_the_parked_join():
    b = Bench()
    a, c = Member(b, instance_id="a"), Member(b, instance_id="c")
    a.join()
    c.join()
    settle(b, [a, c])
    Member(b).join()  # a third member starts a rebalance
    a.step()  # a rejoins and waits
    replacement = Member(b, instance_id="a")
    replacement.join()
    assert err(b.replies[a.join_token]) == "FENCED_INSTANCE_ID"


def test_static_member_replaced_while_revoking_still_lets_the_partitions_move():
    b = Bench()
    a = Member(b, instance_id="a", assignors=["cooperative-sticky"])
    a.join()
    settle(b, [a])
    c = Member(b, instance_id="c", assignors=["cooperative-sticky"])
    c.join()
    a.step()  # REBALANCE_IN_PROGRESS: rejoin owning all 6; the join phase completes
    a.step()  # sync: a keeps 3, revokes 3 and rejoins, parked until c has synced (Rule 7)
    assert len(a.owned) == 3 and b.replies.get(a.join_token) is None
    assert b.state() is State.COMPLETING_REBALANCE
    restarted = Member(b, instance_id="a", assignors=["cooperative-sticky"])
    restarted.join()  # a's process restarts right then
    assert err(b.replies[a.join_token]) == "FENCED_INSTANCE_ID"
    settle(b, [restarted, c])
    assert restarted.owned | c.owned == all_partitions(b) and len(c.owned) == 3


def test_admin_removes_a_static_member_by_instance_id():
    b = Bench()
    a, c = Member(b, instance_id="a"), Member(b, instance_id="c")
    a.join()
    c.join()
    settle(b, [a, c])
    assert b.ask("leave_group", group_id="g", group_instance_id="a").error is None
    settle(b, [c])
    assert c.owned == all_partitions(b)
    assert err(b.ask("leave_group", group_id="g", group_instance_id="zz")) == "UNKNOWN_MEMBER_ID"


# ------------------------------------------------------------------ topics change

def test_added_partitions_rebalance_the_group():
    b = Bench({"t": 2, "u": 0})
    a = Member(b, topics=["t", "u"])
    a.join()
    settle(b, [a])
    assert b.coord.metadata_changed(b.now) == [] and b.state() is State.STABLE
    b.topics["u"] = 3
    b.coord.metadata_changed(b.now)
    assert b.state() is State.PREPARING_REBALANCE
    settle(b, [a])
    assert a.owned == all_partitions(b, ("t", "u"))


# ------------------------------------------------------------------ offsets, describe, delete, restart

def test_commit_fetch_describe_delete_and_restart_from_the_log():
    b = Bench({"t": 2, "u": 1})
    m = Member(b, topics=["t", "u"], assignors=["roundrobin"])
    m.join()
    settle(b, [m])
    commit = dict(group_id="g", generation=m.generation, member_id=m.member_id)
    t0 = b.now
    b.ask("offset_commit", **commit, offsets=[{"topic": "t", "partition": 0, "offset": 5, "metadata": "a"},
                                              {"topic": "u", "partition": 0, "offset": 9, "leader_epoch": 2}])
    b.advance(50)
    b.ask("offset_commit", **commit, offsets=[{"topic": "t", "partition": 0, "offset": 6}])
    fetched = b.ask("offset_fetch", group_id="g").result["offsets"]
    assert fetched == [
        {"topic": "t", "partition": 0, "offset": 6, "metadata": "", "commit_timestamp": t0 + 50, "leader_epoch": -1},
        {"topic": "u", "partition": 0, "offset": 9, "metadata": "", "commit_timestamp": t0, "leader_epoch": 2}]
    some = b.ask("offset_fetch", group_id="g", topics=[{"topic": "t", "partitions": [0, 1]}]).result["offsets"]
    assert [(o["partition"], o["offset"]) for o in some] == [(0, 6), (1, -1)]

    described = b.ask("describe_groups", group_ids=["g", "nope"]).result["groups"]
    assert described[0]["state"] == "STABLE" and described[0]["protocol"] == "roundrobin"
    assert described[0]["members"][0]["member_id"] == m.member_id
    assert described[0]["members"][0]["assignment"] == [{"topic": "t", "partitions": [0, 1]},
                                                        {"topic": "u", "partitions": [0]}]
    assert [o["offset"] for o in described[0]["offsets"]] == [6, 9]
    assert described[1]["state"] == "DEAD" and described[1]["error"]["name"] == "GROUP_ID_NOT_FOUND"

    result = b.ask("delete_groups", group_ids=["g"]).result["results"]
    assert result == [{"group_id": "g", "error": result[0]["error"]}] and result[0]["error"]["name"] == "GROUP_NOT_EMPTY"

    # Broker restart: a new coordinator replays the log; members come back to an EMPTY group.
    b2 = Bench({"t": 2, "u": 1}, records=[(r.key, r.value) for r in b.log])
    assert b2.ask("offset_fetch", group_id="g").result["offsets"] == fetched
    assert err(b2.ask("heartbeat", group_id="g", member_id=m.member_id, generation=m.generation)) == \
        "UNKNOWN_MEMBER_ID"
    assert b2.ask("list_groups").result["groups"][0]["state"] == "EMPTY"
    deleted = b2.ask("delete_groups", group_ids=["g", "g", "missing"]).result["results"]
    assert deleted == [{"group_id": "g", "error": None},
                       {"group_id": "missing", "error": deleted[1]["error"]}]
    assert deleted[1]["error"]["name"] == "GROUP_ID_NOT_FOUND"
    assert [r.value for r in b2.log] == [None, None]  # tombstones for t[0] and u[0]
    assert b2.ask("offset_fetch", group_id="g").result["offsets"] == []
    b3 = Bench({"t": 2, "u": 1}, records=[(r.key, r.value) for r in b.log + b2.log])
    assert b3.ask("list_groups").result["groups"] == []


def test_commit_reply_waits_for_the_append():
    b = Bench()
    actions = b.coord.offset_commit("tok", parse(OPERATIONS["offset_commit"][0], {
        "group_id": "g", "offsets": [{"topic": "t", "partition": 0, "offset": 1}]}), 0)
    [append] = actions
    assert isinstance(append, AppendOffsets) and append.reply.token == "tok"
    assert b.coord.offsets.get("g", "t", 0) is None  # not applied before the log has it
    b.coord.offsets_appended(append.records)
    assert b.coord.offsets.get("g", "t", 0).offset == 1


# ------------------------------------------------------------------ coordinator ownership

def test_not_coordinator_loading_and_unloading():
    b = Bench()
    c = Coordinator(b.topics.get, offsets_partitions=1)
    req = parse(OPERATIONS["heartbeat"][0], {"group_id": "g", "member_id": "m", "generation": 1})
    assert err(c.heartbeat(1, req, 0)[0]) == "NOT_COORDINATOR"
    c.begin_loading(0)
    assert err(c.heartbeat(2, req, 0)[0]) == "COORDINATOR_NOT_AVAILABLE"
    assert c.describe_groups(3, parse(OPERATIONS["describe_groups"][0], {"group_ids": ["g"]}), 0)[0] \
        .result["groups"][0]["error"]["name"] == "COORDINATOR_NOT_AVAILABLE"

    a, d = Member(b), Member(b)
    a.join()
    settle(b, [a])
    d.join()  # parked until a rejoins, which it never gets to do here
    assert b.replies.get(d.join_token) is None
    replies = b.coord.unload_partition(0)
    assert [(r.token, err(r)) for r in replies] == [(d.join_token, "NOT_COORDINATOR")]
    c.load_partition(0, [])
    with pytest.raises(ValueError):
        c.load_partition(0, [])  # to reload, unload first
    assert b.state() is State.DEAD
    assert err(b.ask("offset_fetch", group_id="g")) == "NOT_COORDINATOR"


# ------------------------------------------------------------------ wire

def test_requests_validate_with_their_own_error_codes():
    def parse_err(op, **fields):
        try:
            parse_request({"op": op, "v": 1, "cid": 1, **fields})
        except FabricError as e:
            return e.name
        return None

    join = {"group_id": "g", "topics": ["t"], "assignors": ["range"]}
    assert parse_err("join_group", **join) is None
    assert parse_err("join_group", **{**join, "session_timeout_ms": 999}) == "INVALID_SESSION_TIMEOUT"
    assert parse_err("join_group", **{**join, "session_timeout_ms": 300_001}) == "INVALID_SESSION_TIMEOUT"
    assert parse_err("join_group", **{**join, "group_id": ""}) == "INVALID_GROUP_ID"
    assert parse_err("join_group", **{**join, "group_id": "x" * 256}) == "INVALID_GROUP_ID"
    assert parse_err("join_group", **{**join, "assignors": []}) == "INVALID_FIELD"
    assert parse_err("join_group", **{**join, "topics": ["bad/name"]}) == "INVALID_TOPIC_NAME"
    assert parse_err("offset_commit", group_id="g", offsets=[
        {"topic": "t", "partition": 0, "offset": 1, "metadata": "x" * 4097}]) == "OFFSET_METADATA_TOO_LARGE"
    assert parse_err("offset_commit", group_id="g", offsets=[
        {"topic": "t", "partition": 0, "offset": 1, "metadata": "x" * 4096}]) is None
    assert parse_err("leave_group", group_id="g") == "INVALID_FIELD"
    assert parse_err("describe_groups", group_ids=[]) == "INVALID_FIELD"
    assert parse_err("list_groups", states=["NAPPING"]) == "INVALID_FIELD"
    assert parse_err("find_coordinator", group_id="g") is None


def test_request_header_round_trip():
    from fabric.groups.messages import JoinGroupRequest, TopicPartitions
    req = JoinGroupRequest(group_id="g", topics=("t",), assignors=("cooperative-sticky", "range"),
                           owned=(TopicPartitions(topic="t", partitions=(0, 2)),), generation=3)
    env, again = parse_request(request_header("join_group", 9, req))
    assert (env.op, env.cid) == ("join_group", 9) and again == req


def test_the_transition_table_is_the_only_way_between_states() -> None:
    """Rule 1: ``state.transition`` applies ``TRANSITIONS`` and refuses anything else, so a
    coordinator bug shows as an error, not as a group in a state it cannot leave."""
    from fabric.groups.state import TRANSITIONS, Event, Group, transition

    assert set(TRANSITIONS) == set(State)
    reachable = {State.EMPTY}
    while True:
        more = {nxt for s in reachable for nxt in TRANSITIONS[s].values()} - reachable
        if not more:
            break
        reachable |= more
    assert reachable == set(State)  # every state can happen; DEAD is the only one without a way out
    assert [s for s in State if not TRANSITIONS[s]] == [State.DEAD]
    g = Group("g")
    transition(g, Event.JOIN)
    assert g.state is State.PREPARING_REBALANCE
    with pytest.raises(AssertionError, match="no transition from PREPARING_REBALANCE on DELETE"):
        transition(g, Event.DELETE)
    assert g.state is State.PREPARING_REBALANCE
