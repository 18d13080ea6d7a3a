"""Unit tests of the Raft core (``fabric.controller``): elections, pre-vote, check-quorum, log
repair, snapshots, storage, and the paper's Figure 8.  Scenarios are driven message by message
with ``ManualCluster``; its checker raises ``Violation`` on any safety invariant broken on the way."""

from __future__ import annotations

import random

import cbor2
import pytest

from fabric.controller import (AppendRequest, AppendResponse, Entry, FileRaftStorage, MemoryRaftStorage,
                               RaftConfig, RaftNode, Role, Snapshot, SnapshotRequest, SnapshotResponse,
                               VoteRequest, VoteResponse, message_from_wire)
from fabric.testing.raft_sim import ManualCluster, RaftSim, StateMachine

VOTES = (VoteRequest, VoteResponse)


def elect(c: ManualCluster, node_id: int) -> None:
    c.timeout(node_id)
    c.deliver(c.nodes)
    c.heartbeat(node_id)
    c.deliver(c.nodes)
    assert c.nodes[node_id].role is Role.LEADER


def logs(c: ManualCluster) -> dict[int, list[int]]:
    return {i: c.log_terms(i) for i in c.ids}


# ---------------------------------------------------------------------------- elections
def test_a_node_that_times_out_is_elected_and_everyone_follows_it():
    c = ManualCluster(3)
    elect(c, 2)
    assert {i: (n.role, n.term, n.leader_id) for i, n in c.nodes.items()} == {
        1: (Role.FOLLOWER, 1, 2), 2: (Role.LEADER, 1, 2), 3: (Role.FOLLOWER, 1, 2)}
    assert all(n.commit_index == 1 for n in c.nodes.values())  # the new leader's empty entry


def test_election_timeout_is_drawn_from_the_injected_rng_within_the_configured_range():
    config = RaftConfig()
    deadlines = []
    for _ in range(2):
        node = RaftNode(1, [1, 2, 3], MemoryRaftStorage(), config, random.Random(7))
        node.tick(0)
        fired = next(t for t in range(0, 3000, 10) if node.tick(t).messages)
        deadlines.append(fired)
    assert deadlines[0] == deadlines[1]  # same seed, same timeout: replayable
    assert config.election_timeout_min_ms <= deadlines[0] <= config.election_timeout_max_ms + 10


@pytest.mark.parametrize("writes_meanwhile", [True, False])
def test_pre_vote_keeps_a_partitioned_node_from_disrupting_the_cluster_when_it_rejoins(writes_meanwhile):
    """Without writes meanwhile the outcast's log is as up to date as anyone's: then only the
    leader lease (a follower that hears its leader refuses pre-votes) keeps the leader in place."""
    sim = RaftSim(seed=5)
    sim.run(4000, propose_every_ms=100)
    leader = sim.leader()
    assert leader is not None
    term, outcast = leader.term, next(i for i in sim.ids if i != leader.id)
    sim.isolate(outcast)
    # Several election timeouts: the outcast only sends pre-votes, and all are lost.
    sim.run(10_000, propose_every_ms=100 if writes_meanwhile else 0)
    assert sim.nodes[outcast].term == term and sim.nodes[outcast].role is Role.PRE_CANDIDATE
    # Heal just before the outcast's timer fires, so its pre-vote reaches the others at once.
    sim.run(max(0, sim.nodes[outcast]._election_deadline - sim.now - sim.step_ms))
    sim.heal()
    sim.run(5000)
    assert sim.leader() is leader and leader.term == term, sim  # never deposed, no new term
    assert sim.nodes[outcast].leader_id == leader.id and sim.nodes[outcast].term == term
    assert sim.applied()[outcast] >= leader.commit_index - 10


def test_a_leader_that_cannot_reach_a_quorum_steps_down_within_an_election_timeout():
    c = ManualCluster(3)
    elect(c, 1)
    leader = c.nodes[1]
    for _ in range(c.config.election_timeout_min_ms // c.config.heartbeat_ms + 1):
        c.heartbeat(1)
        c.drop()  # nobody answers
    assert leader.role is Role.FOLLOWER and leader.leader_id is None
    assert leader.propose(b"x", c.now)[0] is None


def test_a_vote_is_synced_before_the_answer_leaves_the_node():
    storage = MemoryRaftStorage()
    node = RaftNode(2, [1, 2, 3], storage, RaftConfig(), random.Random(1))
    node.tick(0)
    out = node.receive(1, VoteRequest(5, 1, 0, 0, False), 5000)
    assert out.messages == [(1, VoteResponse(5, True, False))]
    storage.crash()
    assert storage.hard_state() == (5, 1)


def test_a_stale_leader_learns_the_new_term_from_a_rejected_append():
    node = RaftNode(2, [1, 2, 3], MemoryRaftStorage(), RaftConfig(), random.Random(1))
    node.receive(3, AppendRequest(4, 3, 0, 0, (), 0), 0)
    out = node.receive(1, AppendRequest(2, 1, 0, 0, (), 0), 10)
    assert out.messages == [(1, AppendResponse(4, False, 0, 0))]


# ---------------------------------------------------------------------------- replication
def test_a_diverged_log_is_repaired_to_the_leaders_with_fast_backtracking():
    c = ManualCluster(3)
    elect(c, 1)
    for k in range(6):
        c.propose(1, b"old%d" % k)  # never leave node 1
    c.drop()
    c.crash(1)
    c.timeout(2)
    c.deliver({2, 3})
    for k in range(3):
        c.propose(2, b"new%d" % k)
    c.deliver({2, 3})
    c.restart(1)
    assert logs(c)[1] == [1] * 7 and logs(c)[2] == [1, 2, 2, 2, 2]
    c.heartbeat(2)
    c.deliver(c.ids)
    c.heartbeat(2)
    c.deliver(c.ids)
    assert logs(c)[1] == logs(c)[2] == logs(c)[3] == [1, 2, 2, 2, 2]
    assert c.nodes[1].commit_index == 5 and c.sms[1].digest == c.sms[2].digest
    assert [e.data for e in c.nodes[1].entries(3, 10)] == [b"new0", b"new1", b"new2"]


def test_a_rejection_hints_past_the_whole_conflicting_term():
    """Fast backtracking: the leader retries after the hint, not one entry back per round trip."""
    storage = MemoryRaftStorage()
    storage.set_hard_state(2, None)
    storage.append([Entry(t, i, b"") for i, t in enumerate([1, 1, 2, 2, 2, 2, 2], start=1)])
    node = RaftNode(3, [1, 2, 3], storage, RaftConfig(), random.Random(1))
    out = node.receive(1, AppendRequest(3, 1, 7, 3, (), 0), 0)
    assert out.messages == [(1, AppendResponse(3, False, 7, 2))]  # retry after index 2
    out = node.receive(1, AppendRequest(3, 1, 9, 3, (), 0), 10)
    assert out.messages == [(1, AppendResponse(3, False, 9, 7))]  # our log ends at 7
    out = node.receive(1, AppendRequest(3, 1, 2, 1, (Entry(3, 3, b"x"),), 3), 20)
    assert out.messages == [(1, AppendResponse(3, True, 3, 0))] and node.commit_index == 3
    assert storage.last_index() == 3  # the conflicting suffix is gone


def test_a_lagging_follower_gets_a_snapshot_of_compacted_entries():
    c = ManualCluster(3)
    elect(c, 1)
    c.crash(3)
    for k in range(10):
        c.propose(1, b"e%d" % k)
    c.deliver({1, 2})
    c.drop()
    leader = c.nodes[1]
    assert leader.commit_index == 11
    leader.compact(8, _snapshot_at(c, 8))
    assert leader.entries(5, 10) is None and [e.data for e in leader.entries(9, 10)] == [b"e7", b"e8", b"e9"]
    c.restart(3)
    c.heartbeat(1)
    c.deliver(c.ids)
    assert c.storages[3].snapshot() == leader.snapshot() and leader.snapshot().last_index == 8
    c.heartbeat(1)
    c.deliver(c.ids)
    assert c.nodes[3].commit_index == 11 and c.sms[3].index == 11 and c.sms[3].digest == c.sms[1].digest


def _snapshot_at(c: ManualCluster, index: int) -> bytes:
    """The state machine of node 2 replayed to ``index`` (node 1's has applied further)."""
    sm = StateMachine()
    for e in c.storages[2].entries(1, index + 1):
        sm.apply(e)
    return sm.snapshot()


# ---------------------------------------------------------------------------- Figure 8
def figure8_until_c() -> ManualCluster:
    """The Raft paper's Figure 8, (a) to (c), with terms renumbered (paper term 2 -> 1, 3 -> 2,
    4 -> 3) and index 1 committed everywhere first.  One entry per append, so each step is exact."""
    c = ManualCluster(5, RaftConfig(max_entries_per_append=1))
    elect(c, 1)
    # (a) S1 leads term 1 and replicates index 2 to S2 only.
    assert c.propose(1, b"a") == 2
    c.deliver_one(1, 2)
    c.drop()
    # (b) S1 crashes; S5 wins term 2 with S3 and S4 and writes index 2 (term 2) only locally.
    c.crash(1)
    c.timeout(5)
    c.deliver({3, 4, 5}, only=VOTES)
    c.drop()
    assert c.nodes[5].role is Role.LEADER and c.log_terms(5) == [1, 2]
    # (c) S5 crashes; S1 restarts and wins term 3 (its first pre-vote only teaches it term 2),
    c.crash(5)
    c.restart(1)
    c.timeout(1)
    c.deliver({1, 2, 3, 4}, only=VOTES)
    c.timeout(1)
    c.deliver({1, 2, 3, 4}, only=VOTES)
    assert c.nodes[1].role is Role.LEADER and c.nodes[1].term == 3
    # ...S2 takes index 3 (term 3), and S1 repairs S3 up to index 2 (term 1) only.
    c.deliver({1, 2})
    for _ in range(2):
        c.deliver_one(1, 3)
        c.deliver_one(3, 1)
    c.drop()
    return c


def test_figure8_an_entry_of_an_older_term_is_not_committed_by_counting_replicas():
    c = figure8_until_c()
    assert logs(c) == {1: [1, 1, 3], 2: [1, 1, 3], 3: [1, 1], 4: [1], 5: [1, 2]}
    # Index 2 (term 1) is on S1, S2 and S3, a majority, and S1 knows it - but it is not committed:
    assert c.nodes[1].commit_index < 2
    # (d) because S1 may crash and S5 win term 4 with S3 and S4, and overwrite index 2 everywhere.
    c.crash(1)
    c.restart(5)
    for _ in range(2):  # its first pre-vote only teaches S5 the current term
        c.timeout(5)
        c.deliver({2, 3, 4, 5})
    c.heartbeat(5)
    c.deliver({2, 3, 4, 5})
    assert c.nodes[5].role is Role.LEADER and c.nodes[5].term == 4
    assert {i: c.log_terms(i) for i in (2, 3, 4, 5)} == {i: [1, 2, 4] for i in (2, 3, 4, 5)}
    assert c.check.committed[2] == (2, b"")  # never (1, b"a"): nothing committed was lost


def test_figure8_an_entry_of_an_older_term_commits_indirectly_with_one_of_the_current_term():
    c = figure8_until_c()
    # (e) S1 replicates index 3 (term 3) to S3 as well: that commits 3, and 2 with it.
    c.heartbeat(1)
    c.deliver({1, 3})
    assert c.nodes[1].commit_index == 3
    assert c.check.committed[2] == (1, b"a") and c.sms[1].index == 3
    # Now S5 can never win: a majority has a log more up to date than its own.
    c.crash(1)
    c.restart(5)
    for _ in range(3):
        c.timeout(5)
        c.deliver({2, 3, 4, 5})
    assert c.nodes[5].role is not Role.LEADER


# ---------------------------------------------------------------------------- messages and storage
@pytest.mark.parametrize("message", [
    VoteRequest(3, 1, 10, 2, True), VoteResponse(3, False, False),
    AppendRequest(3, 1, 9, 2, (Entry(3, 10, b"x"), Entry(3, 11, b"")), 8), AppendResponse(3, False, 9, 4),
    SnapshotRequest(3, 1, 10, 2, b"snap"), SnapshotResponse(3, 10)])
def test_messages_survive_a_cbor_round_trip(message):
    assert message_from_wire(cbor2.loads(cbor2.dumps(message.to_wire()))) == message


def test_a_malformed_or_unknown_message_is_a_value_error():
    with pytest.raises(ValueError):
        message_from_wire({"kind": "nope"})
    with pytest.raises(ValueError):
        message_from_wire({"kind": "vote", "term": 1})
    good = SnapshotRequest(3, 1, 10, 2, b"snap").to_wire()
    for field, bad in [("data", 10**9), ("term", "3"), ("last_index", 1.5)]:
        with pytest.raises(ValueError):  # never converted: bytes(10**9) would allocate a gigabyte
            message_from_wire({**good, field: bad})
    append = AppendRequest(3, 1, 9, 2, (), 8).to_wire()
    for entries in ([[3, 10]], [[3, 10, "text"]], 7):
        with pytest.raises(ValueError):
            message_from_wire({**append, "entries": entries})
    with pytest.raises(ValueError):
        message_from_wire({**VoteResponse(1, True, False).to_wire(), "granted": 1})


def test_memory_storage_crash_forgets_what_was_not_synced():
    s = MemoryRaftStorage()
    s.set_hard_state(1, 2)
    s.append([Entry(1, 1, b"a")])
    s.sync()
    s.append([Entry(1, 2, b"b")])
    s.set_hard_state(2, None)
    s.crash()
    assert s.hard_state() == (1, 2) and s.last_index() == 1


def _entries(n: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, b"data%d" % i) for i in range(1, n + 1)]


def test_file_storage_cuts_a_torn_tail_and_keeps_every_whole_entry(tmp_path):
    s = FileRaftStorage(tmp_path)
    s.append(_entries(5))
    s.sync()
    s.close()
    log_file = tmp_path / "log"
    whole = log_file.stat().st_size
    with open(log_file, "ab") as f:
        f.write(b"\x00\x00\x00\x30\x12\x34")  # a header cut short by a crash
    s = FileRaftStorage(tmp_path)
    assert s.entries(1, 6) == _entries(5) and log_file.stat().st_size == whole
    s.append([Entry(2, 6, b"after")])
    s.sync()
    s.close()
    raw = bytearray(log_file.read_bytes())
    raw[-1] ^= 0xFF  # the last entry's payload no longer matches its CRC
    log_file.write_bytes(bytes(raw))
    assert FileRaftStorage(tmp_path).last_index() == 5


def test_file_storage_hard_state_is_replaced_atomically(tmp_path):
    s = FileRaftStorage(tmp_path)
    s.set_hard_state(3, 2)
    s.sync()
    s.set_hard_state(4, None)  # not synced: a crash now keeps term 3
    assert FileRaftStorage(tmp_path).hard_state() == (3, 2)
    (tmp_path / "hardstate.tmp").write_bytes(b"\xff half a write")  # a crash mid-replace
    assert FileRaftStorage(tmp_path).hard_state() == (3, 2)
    s.sync()
    assert FileRaftStorage(tmp_path).hard_state() == (4, None)


def test_file_storage_truncates_compacts_and_reopens(tmp_path):
    s = FileRaftStorage(tmp_path)
    s.append(_entries(6))
    s.truncate_suffix(5)
    s.append([Entry(2, 5, b"new")])
    s.save_snapshot(Snapshot(3, 1, b"state@3"))
    s.sync()
    s.close()
    s = FileRaftStorage(tmp_path)
    assert (s.first_index(), s.last_index(), s.term_at(3), s.term_at(2)) == (4, 5, 1, None)
    assert s.entries(4, 6) == [Entry(1, 4, b"data4"), Entry(2, 5, b"new")]
    assert s.snapshot() == Snapshot(3, 1, b"state@3")
    s.save_snapshot(Snapshot(9, 3, b"diverged"))  # beyond the log: the whole log goes
    s.close()
    s = FileRaftStorage(tmp_path)
    assert (s.first_index(), s.last_index(), s.entries(10, 10)) == (10, 9, [])
