"""Consumer groups end to end: real broker processes, consumers in this process and in their own.

Timing: the broker's initial rebalance delay is cut to 200 ms, sessions to 3 s and heartbeats to
200-300 ms so the suite stays fast; every wait polls a condition with a deadline.
"""

from __future__ import annotations

import collections
import signal
import threading
import time

import pytest

from fabric.client import Admin, CommitFailedError, Consumer, Producer
from fabric.errors import FabricError
from fabric.testing.group_worker import GroupWorkerProcess

FAST_GROUPS = ["--group-initial-rebalance-delay-ms", "200"]
SESSION_MS = 3000
FAST = {"session_timeout_ms": SESSION_MS, "heartbeat_interval_ms": 200, "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": 100}


@pytest.fixture
def gbroker(brokers):
    return brokers(FAST_GROUPS)


@pytest.fixture
def workers():
    """Starts group_worker processes; every one is SIGKILLed and reaped at the end."""
    started: list[GroupWorkerProcess] = []

    def start(*args, **kw) -> GroupWorkerProcess:
        w = GroupWorkerProcess(*args, **kw)
        started.append(w)
        return w.start()

    try:
        yield start
    finally:
        for w in started:
            w.kill()


@pytest.fixture
def consumers():
    """Makes in-process consumers; each is closed at the end (bounded: leave times out fast)."""
    made: list[Consumer] = []

    def make(bootstrap: str, **kw) -> Consumer:
        c = Consumer(bootstrap, **{**FAST, **kw})
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            try:
                c.close()
            except Exception:
                pass


def wait_until(fn, timeout: float, what: str, *poll):
    """Call ``fn`` until it returns something truthy (polling ``poll`` consumers meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        for c in poll:
            c.poll(50)
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        if not poll:
            time.sleep(0.05)


def group_view(admin: Admin, group: str):
    """(state, generation, {member_id: {(topic, partition)}}) or None if the group does not exist."""
    try:
        g = admin.describe_group(group)
    except FabricError:
        return None
    members = {m["member_id"]: {(e["topic"], p) for e in m["assignment"] for p in e["partitions"]}
               for m in g["members"]}
    return g["state"], g["generation"], members


def balanced(admin: Admin, group: str, sizes: list[int]):
    view = group_view(admin, group)
    if view and view[0] == "STABLE" and sorted(len(a) for a in view[2].values()) == sizes:
        return view
    return None


def produce(bootstrap: str, topic: str, n: int, keys: int = 30, start: int = 0) -> set[tuple[int, int]]:
    with Producer(bootstrap, linger_ms=2) as p:
        futs = [p.send(topic, f"v{i}".encode(), key=f"k{i % keys}".encode()) for i in range(start, start + n)]
        p.flush(10)
        return {(m.partition, m.offset) for m in (f.result(5) for f in futs)}


# --------------------------------------------------------------------------- processes


def test_three_processes_share_partitions_and_take_over_after_sigkill(gbroker, workers):
    with Admin(gbroker.bootstrap) as admin:
        admin.create_topic("events", partitions=6)
        produced = produce(gbroker.bootstrap, "events", 1200)
        ws = [workers(gbroker.bootstrap, "procs", ["events"], "--commit", "sync", name=f"w{i}") for i in range(3)]

        # (a) each of the three gets exactly two partitions, and the callbacks agree with the coordinator
        try:
            view = wait_until(lambda: balanced(admin, "procs", [2, 2, 2]), 20, "3 members with 2 partitions each")
        except AssertionError as exc:  # say where it stood: the group, and what each worker saw
            seen = [(w.name, w.proc and w.proc.poll(), [(e["event"], e.get("generation"), e.get("partitions"))
                                                         for e in w.snapshot() if e["event"] != "records"][-4:],
                     w.stderr()[-300:]) for w in ws]
            raise AssertionError(f"{exc}; group: {group_view(admin, 'procs')}; workers: {seen}") from None
        for w in ws:
            w.wait_for(lambda ev, w=w: len(w.assignment()) == 2, 10, "2 partitions")
        assert sorted(sorted(w.assignment()) for w in ws) == sorted(sorted(a) for a in view[2].values())

        def consumed() -> set[tuple[int, int]]:
            return {(p, o) for w in ws for _, p, o, _ in w.records()}

        wait_until(lambda: consumed() >= produced, 20, "the first 1200 records")

        # (b) SIGKILL one: its partitions move to the others within the session timeout
        victim, survivors = ws[0], ws[1:]
        moved = victim.assignment()
        killed_at = time.time()
        victim.kill()
        produced |= produce(gbroker.bootstrap, "events", 1200, start=1200)
        wait_until(lambda: balanced(admin, "procs", [3, 3]), SESSION_MS / 1000 + 5, "2 members with 3 partitions each")
        took = time.time() - killed_at
        assert took < SESSION_MS / 1000 + 2.5, f"takeover took {took:.1f} s"
        wait_until(lambda: consumed() >= produced, 20, "all 2400 records")
        assert set().union(*(w.assignment() for w in survivors)) == {("events", p) for p in range(6)}

    # none skipped, none invented
    assert consumed() == produced
    # per-key order within each consumer's output
    for w in ws:
        per_key = collections.defaultdict(list)
        for _, _, o, key in w.records():
            per_key[key].append(o)
        assert all(offs == sorted(set(offs)) for offs in per_key.values()), f"{w.name}: per-key order broken"
    # duplicates only from the victim's uncommitted window: per partition, a suffix of what it read
    seen = collections.Counter((p, o) for w in ws for _, p, o, _ in w.records())
    dupes = {tp for tp, n in seen.items() if n > 1}
    assert all(seen[tp] == 2 for tp in dupes)
    victim_read = collections.defaultdict(set)
    for _, p, o, _ in victim.records():
        victim_read[p].add(o)
    after_kill = collections.defaultdict(list)
    for w in survivors:
        for e in w.snapshot():
            if e["event"] == "records" and e["t"] >= killed_at:
                for _, p, o, _ in e["records"]:
                    after_kill[p].append(o)
    for p, o in dupes:
        assert ("events", p) in moved and o in victim_read[p], f"duplicate {p}/{o} was not the victim's"
    for tp in moved:
        p = tp[1]
        resumed_at = min(after_kill[p])
        assert {o for q, o in dupes if q == p} == {o for o in victim_read[p] if o >= resumed_at}
        assert len([o for o in victim_read[p] if o >= resumed_at]) <= 500  # at most one batch (--commit sync)



def test_sync_committing_workers_survive_the_rebalance_of_a_paused_member(gbroker, workers):
    """`group_worker --commit sync` commits after every batch.  A member frozen with SIGSTOP is
    removed when its session expires; the others rebalance while committing, and the frozen one,
    once resumed, usually finds its commit refused (CommitFailedError) before its heartbeat tells
    it it was removed.  Nobody dies: every worker keeps polling, the group settles with all three
    again, and every record is processed.  Two members are frozen in turn, so that a refused
    commit is all but certain to happen in one run."""
    with Admin(gbroker.bootstrap) as admin:
        admin.create_topic("paused", partitions=6)
        produced = produce(gbroker.bootstrap, "paused", 600)
        ws = [workers(gbroker.bootstrap, "pausers", ["paused"], "--commit", "sync", name=f"w{i}") for i in range(3)]
        wait_until(lambda: balanced(admin, "pausers", [2, 2, 2]), 20, "3 members with 2 partitions each")

        def consumed() -> set[tuple[int, int]]:
            return {(p, o) for w in ws for _, p, o, _ in w.records()}

        wait_until(lambda: consumed() >= produced, 20, "the first 600 records")
        for frozen in ws[:2]:
            assert frozen.proc is not None
            lost_before = sum(e["event"] == "lost" for e in frozen.snapshot())
            frozen.proc.send_signal(signal.SIGSTOP)
            try:  # records keep coming: some wait in the frozen member's fetch socket, the rest are taken over
                produced |= produce(gbroker.bootstrap, "paused", 600, start=len(produced))
                wait_until(lambda: balanced(admin, "pausers", [3, 3]), SESSION_MS / 1000 + 10,
                           f"{frozen.name}'s removal")
                produced |= produce(gbroker.bootstrap, "paused", 600, start=len(produced))
                wait_until(lambda: consumed() >= produced, 20, f"the records while {frozen.name} is frozen")
            finally:
                frozen.proc.send_signal(signal.SIGCONT)
            frozen.wait_for(lambda ev: sum(e["event"] == "lost" for e in ev) > lost_before, 20,
                            "the resumed member to learn it was removed")
            wait_until(lambda: balanced(admin, "pausers", [2, 2, 2]), 20, "all three members again")
            produced |= produce(gbroker.bootstrap, "paused", 600, start=len(produced))
            wait_until(lambda: consumed() >= produced, 20, "every record")
            assert [w.proc.poll() for w in ws] == [None, None, None], [w.stderr() for w in ws]
        refused = [e["error"] for w in ws for e in w.snapshot() if e["event"] == "commit_failed"]
        print(f"{len(refused)} refused commits, {len(produced)} records: {[r[:100] for r in refused]}")
        for w in ws:
            assert w.stop() == 0, w.stderr()
            assert w.snapshot()[-1]["event"] == "closed"


# --------------------------------------------------------------------------- in-process


def test_committed_offsets_survive_a_broker_crash(brokers, consumers):
    broker = brokers(FAST_GROUPS)
    with Admin(broker.bootstrap) as admin:
        admin.create_topic("keep", partitions=2)
    produce(broker.bootstrap, "keep", 50)
    tps = [("keep", 0), ("keep", 1)]
    c = consumers(broker.bootstrap, group_id="keepers", enable_auto_commit=False)
    c.subscribe(["keep"])
    got: list = []
    wait_until(lambda: got.extend(c.poll(100)) or len(got) >= 50, 20, "50 records")
    c.commit()
    before = c.committed(tps)
    assert sum(before.values()) == 50
    c.close()
    broker.restart(kill=True)  # SIGKILL: no clean shutdown

    c2 = consumers(broker.bootstrap, group_id="keepers")
    assert c2.committed(tps) == before
    produce(broker.bootstrap, "keep", 5, start=50)
    c2.subscribe(["keep"])
    again: list = []
    wait_until(lambda: again.extend(c2.poll(100)) or len(again) >= 5, 20, "the 5 new records")
    assert sorted(r.value for r in again) == [f"v{i}".encode() for i in range(50, 55)]


def test_member_that_stops_polling_is_evicted_then_rejoins_cleanly(gbroker, consumers):
    with Admin(gbroker.bootstrap) as admin:
        admin.create_topic("slow", partitions=2)
        produce(gbroker.bootstrap, "slow", 20)
        events: list = []
        c = consumers(gbroker.bootstrap, group_id="sleepy", max_poll_interval_ms=1000,
                      auto_commit_interval_ms=600_000,  # only revocations and close commit
                      on_assigned=lambda tps: events.append(("assigned", tps)),
                      on_revoked=lambda tps: events.append(("revoked", tps)),
                      on_lost=lambda tps: events.append(("lost", tps)))
        c.subscribe(["slow"])
        got: list = []
        wait_until(lambda: got.extend(c.poll(100)) or len(got) >= 20, 20, "20 records")
        member = c.group_metadata()["member_id"]
        assert events == [("assigned", [("slow", 0), ("slow", 1)])]

        # no poll for longer than max_poll_interval_ms: the coordinator removes the member
        wait_until(lambda: not (group_view(admin, "sleepy") or ("", 0, {}))[2], 10, "the member to be evicted")
        with pytest.raises(CommitFailedError):
            c.commit()
        assert c.committed([("slow", 0), ("slow", 1)]) == {("slow", 0): None, ("slow", 1): None}

        # the next poll learns it: on_lost (not on_revoked, no commit), then a clean rejoin
        again: list = []
        wait_until(lambda: again.extend(c.poll(100)) or len(again) >= 20, 20, "records after rejoining")
        assert events[1] == ("lost", [("slow", 0), ("slow", 1)])
        assert events[2] == ("assigned", [("slow", 0), ("slow", 1)])
        assert len(events) == 3
        assert sorted((r.partition, r.offset) for r in again) == sorted((r.partition, r.offset) for r in got)
        view = group_view(admin, "sleepy")
        assert view[0] == "STABLE" and list(view[2]) == [c.group_metadata()["member_id"]] != [member]


def test_cooperative_rebalance_keeps_consuming_what_stays(gbroker, consumers):
    a_events: list = []
    b_events: list = []
    a = consumers(gbroker.bootstrap, group_id="coop", on_assigned=lambda t: a_events.append(("assigned", t)),
                  on_revoked=lambda t: a_events.append(("revoked", t)), on_lost=lambda t: a_events.append(("lost", t)))
    b = consumers(gbroker.bootstrap, group_id="coop",
                  on_assigned=lambda t: b_events.append(("assigned", t, time.monotonic())))
    a_records: list = []
    b_records: list = []
    stop = threading.Event()

    def keep_producing() -> None:
        with Producer(gbroker.bootstrap, linger_ms=1) as p:
            i = 0
            while not stop.is_set():
                p.send("coop", f"{i}".encode(), partition=i % 4)
                i += 1
                time.sleep(0.005)
            p.flush(10)

    with Admin(gbroker.bootstrap) as admin:
        admin.create_topic("coop", partitions=4)
        producer = threading.Thread(target=keep_producing)
        producer.start()
        try:
            a.subscribe(["coop"])
            wait_until(lambda: len(a.assignment()) == 4 and len(a_records) > 20, 20, "a to own everything",
                       _Collect(a, a_records))
            b_joined = time.monotonic()
            b.subscribe(["coop"])
            wait_until(lambda: balanced(admin, "coop", [2, 2]) and len(b.assignment()) == 2, 20,
                       "2 partitions each", _Collect(a, a_records), _Collect(b, b_records))
            b_started = next(t for _, tps, t in b_events if tps)
            for _ in range(5):  # read a little more on both sides
                _Collect(a, a_records).poll(50)
                _Collect(b, b_records).poll(50)
        finally:
            stop.set()
            producer.join()

    kept = set(a.assignment())
    moved = set(b.assignment())
    assert len(kept) == len(moved) == 2 and not kept & moved
    # a was told to revoke exactly what moved, once; nothing was lost
    assert [e for e in a_events if e[0] != "assigned"] == [("revoked", sorted(moved))]
    # a kept consuming the partitions it kept while the rebalance ran
    during = [r for t, r in a_records if b_joined <= t <= b_started and (r.topic, r.partition) in kept]
    assert during, "a stopped consuming its kept partitions during the rebalance"
    # no gaps or repeats: per partition, a's and b's reads together are 0..n-1 exactly once
    per_partition = collections.defaultdict(list)
    for _, r in a_records + b_records:
        per_partition[r.partition].append(r.offset)
    for p, offs in per_partition.items():
        assert sorted(offs) == list(range(len(offs))), f"partition {p}: gap or duplicate"


class _Collect:
    """Lets ``wait_until`` poll a consumer into a list of (time, record)."""

    def __init__(self, consumer: Consumer, into: list) -> None:
        self.consumer, self.into = consumer, into

    def poll(self, timeout_ms: int) -> None:
        self.into.extend((time.monotonic(), r) for r in self.consumer.poll(timeout_ms))


def test_static_member_restart_within_session_timeout_does_not_rebalance(gbroker, consumers):
    with Admin(gbroker.bootstrap) as admin:
        admin.create_topic("static", partitions=4)
        b_events: list = []
        static = {"group_id": "statics", "session_timeout_ms": 6000}
        a = consumers(gbroker.bootstrap, group_instance_id="a", **static)
        b = consumers(gbroker.bootstrap, group_instance_id="b", on_assigned=lambda t: b_events.append(("assigned", t)),
                      on_revoked=lambda t: b_events.append(("revoked", t)), **static)
        a.subscribe(["static"])
        b.subscribe(["static"])
        state, generation, _ = wait_until(lambda: balanced(admin, "statics", [2, 2]) and len(a.assignment()) == 2
                                          and len(b.assignment()) == 2 and balanced(admin, "statics", [2, 2]),
                                          20, "2 static members with 2 partitions each", a, b)
        a_owned = sorted(a.assignment())
        b_seen = list(b_events)
        a.close()  # a static member does not leave
        assert len(group_view(admin, "statics")[2]) == 2

        a2 = consumers(gbroker.bootstrap, group_instance_id="a", **static)
        a2.subscribe(["static"])
        wait_until(lambda: a2.assignment(), 10, "the restarted member's assignment", a2, b)
        assert sorted(a2.assignment()) == a_owned
        for _ in range(5):
            a2.poll(50)
            b.poll(50)
        state, generation2, members = group_view(admin, "statics")
        assert (state, generation2, len(members)) == ("STABLE", generation, 2)
        assert a2.group_metadata()["generation"] == generation
        assert b_events == b_seen  # b noticed nothing


@pytest.mark.parametrize("assignor", ["range", "cooperative-sticky"])
def test_commit_while_the_join_reply_is_unread(gbroker, consumers, assignor):
    """The join phase ends (the generation moves on) while a member has not read its join reply,
    so its commit carries the old generation.  Eager: refused (CommitFailedError, cause
    ILLEGAL_GENERATION).  Cooperative: the partitions it still holds commit fine (SPEC 12.3), any
    other is refused with REBALANCE_IN_PROGRESS; either way the member carries on."""
    with Admin(gbroker.bootstrap) as admin:
        admin.create_topic("stale", partitions=2)
        admin.create_topic("elsewhere", partitions=1)
        a, b, c = (consumers(gbroker.bootstrap, group_id="stale", enable_auto_commit=False, assignors=[assignor])
                   for _ in range(3))
        a.subscribe(["stale"])
        b.subscribe(["stale"])
        def settled():
            both = a.group_metadata()["state"] == b.group_metadata()["state"] == "STABLE"
            return both and balanced(admin, "stale", [1, 1])

        _, generation, _ = wait_until(settled, 20, "a and b in one generation", a, b)
        held = a.assignment()
        # c joins; a rejoins (its join is parked) and then stops polling, so it never reads its
        # join reply: the group moves to the next generation while a still holds the old one
        c.subscribe(["stale"])
        deadline = time.monotonic() + 10
        while a.group_metadata()["state"] != "JOINING":
            assert time.monotonic() < deadline, "a never rejoined"
            a.poll(0)
            b.poll(20)
            c.poll(20)
        wait_until(lambda: group_view(admin, "stale")[1] > generation, 10, "the next generation", b, c)
        assert a.group_metadata()["generation"] == generation
        if assignor == "range":
            with pytest.raises(CommitFailedError) as info:
                a.commit({held[0]: 1})
            assert info.value.__cause__.name == "ILLEGAL_GENERATION"
        else:
            a.commit({held[0]: 1})
            assert a.committed(held) == {held[0]: 1}
            with pytest.raises(CommitFailedError) as info:
                a.commit({held[0]: 2, ("elsewhere", 0): 2})
            assert info.value.__cause__.name == "REBALANCE_IN_PROGRESS"
            assert a.committed(held) == {held[0]: 1}

        # a recovers on its next polls and can commit again
        wait_until(lambda: a.group_metadata()["state"] == "STABLE" and a.group_metadata()["generation"] > generation,
                   10, "a back in the group", a, b, c)
        a.commit()


def test_subscribe_needs_a_group_and_assign_still_works(gbroker, consumers):
    with Admin(gbroker.bootstrap) as admin:
        admin.create_topic("plain", partitions=1)
    produce(gbroker.bootstrap, "plain", 3)
    c = consumers(gbroker.bootstrap)
    with pytest.raises(ValueError, match="group_id"):
        c.subscribe(["plain"])
    c.assign([("plain", 0)])
    got: list = []
    wait_until(lambda: got.extend(c.poll(100)) or len(got) >= 3, 10, "3 records")
    with pytest.raises(ValueError, match="group"):
        c.commit()
    g = consumers(gbroker.bootstrap, group_id="g-assign")
    g.subscribe(["plain"])
    with pytest.raises(ValueError, match="unsubscribe"):
        g.assign([("plain", 0)])
    # the member's host is the address ZeroMQ saw its connection come from (multipart.recv_routed)
    with Admin(gbroker.bootstrap) as admin:
        members = wait_until(lambda: _members(admin, "g-assign"), 10, "the member to join", g)
    assert [m["host"] for m in members] == ["127.0.0.1"]


def _members(admin: Admin, group: str) -> list:
    try:
        return admin.describe_group(group)["members"]
    except FabricError:
        return []


def test_pattern_subscription_picks_up_new_topics(gbroker, consumers):
    with Admin(gbroker.bootstrap) as admin:
        admin.create_topic("logs.a", partitions=1)
        c = consumers(gbroker.bootstrap, group_id="patterns", metadata_max_age_ms=300)
        c.subscribe(r"logs\..*")
        wait_until(lambda: c.assignment() == [("logs.a", 0)], 10, "logs.a", c)
        admin.create_topic("logs.b", partitions=2)
        admin.create_topic("other", partitions=1)
        wait_until(lambda: sorted(c.assignment()) == [("logs.a", 0), ("logs.b", 0), ("logs.b", 1)], 10,
                   "logs.b as well", c)
        assert c.subscription() == ["logs.a", "logs.b"]


def test_commit_async_callback_runs_in_a_later_poll(gbroker, consumers):
    with Admin(gbroker.bootstrap) as admin:
        admin.create_topic("async", partitions=1)
    produce(gbroker.bootstrap, "async", 10)
    c = consumers(gbroker.bootstrap, group_id="asyncers", enable_auto_commit=False)
    c.subscribe(["async"])
    got: list = []
    wait_until(lambda: got.extend(c.poll(100)) or len(got) >= 10, 20, "10 records")
    results: list = []
    c.commit_async(callback=lambda offsets, exc: results.append((dict(offsets), exc)))
    assert results == []
    wait_until(lambda: results, 5, "the async commit callback", c)
    assert results == [({("async", 0): 10}, None)]
    assert c.committed([("async", 0)]) == {("async", 0): 10}


def test_eager_range_revokes_everything_before_rejoining(gbroker, consumers):
    with Admin(gbroker.bootstrap) as admin:
        admin.create_topic("eager", partitions=4)
        produce(gbroker.bootstrap, "eager", 200)
        a_events: list = []
        a = consumers(gbroker.bootstrap, group_id="eagers", assignors=("range",),
                      on_assigned=lambda t: a_events.append(("assigned", t)),
                      on_revoked=lambda t: a_events.append(("revoked", t)))
        b = consumers(gbroker.bootstrap, group_id="eagers", assignors=("range",))
        a.subscribe(["eager"])
        got: list = []
        wait_until(lambda: got.extend(a.poll(100)) or len(got) >= 200, 20, "a to read everything")
        b.subscribe(["eager"])
        wait_until(lambda: balanced(admin, "eagers", [2, 2]) and len(a.assignment()) == len(b.assignment()) == 2,
                   20, "range: 2 partitions each", a, b)
        everything = [("eager", p) for p in range(4)]
        assert a_events == [("assigned", everything), ("revoked", everything), ("assigned", sorted(a.assignment()))]
        assert a.group_metadata()["protocol"] == "range"
        # a committed everything it had read when it revoked, so b starts where a stopped
        assert sum(a.committed(everything).values()) == 200
        assert all(b.position(tp) == a.committed([tp])[tp] for tp in b.assignment())
