"""The replication side of a reassignment: a leader's replica set changing under one leader epoch
(``LeaderReplica.set_replicas``), and the throttle of a follower joining by reassignment
(``fabric/replication/throttle.py``, follower rule 8)."""

from __future__ import annotations

from fabric.log import LogConfig
from fabric.log.memory import MemoryLog
from fabric.replication.throttle import FetchThrottle

from tests.test_replication_follower import batch, leader_log, make_follower, reply_to
from tests.test_replication_leader import fetch, make_leader


def test_a_joining_replica_is_tracked_and_proposed_for_the_isr_once_caught_up():
    leader = make_leader(isr=(1, 2, 3), min_isr=2)
    leader.append(batch(), 0)
    leader.set_replicas((4, 2, 3, 1), (1, 2, 3), partition_epoch=1)  # adding 4, removing 1 (still leading)
    assert set(leader.state.followers) == {2, 3, 4} and leader.partition_epoch == 1
    for r in (2, 3):
        leader.on_fetch(fetch(replica=r, offset=2), 10)
    assert leader.tick(10) is None  # 4 has not fetched: not a candidate yet
    reply = leader.on_fetch(fetch(replica=4, offset=0), 20)
    assert reply.error is None and reply.batches  # served as any follower
    leader.on_fetch(fetch(replica=4, offset=2), 30)
    change = leader.tick(30)
    assert change is not None and change.isr == frozenset({1, 2, 3, 4})
    leader.set_replicas((1, 2, 3), (1, 2, 3), partition_epoch=3)  # a cancel: 4 is forgotten
    assert set(leader.state.followers) == {2, 3} and leader.tick(40) is None


def test_the_throttle_spaces_fetches_by_the_bytes_received():
    t = FetchThrottle(1000)
    assert t.max_bytes(8 << 20) == 50 and t.ready(0)
    t.spent(500, 0)
    assert not t.ready(499) and t.ready(500)
    t.spent(500, 100)  # (behind schedule: from the end of the previous wait, not from now)
    assert not t.ready(999) and t.ready(1000)
    assert FetchThrottle(0).max_bytes(123) == 123 and FetchThrottle(0).ready(0)


def test_a_throttled_follower_waits_before_fetching_the_rest():
    log, batches = leader_log((2, 1), (2, 1), (2, 1))
    size = len(batches[0])
    f = make_follower(log=MemoryLog(LogConfig()))
    f.throttle.rate = size * 20  # one batch per fetch (rate / 20), one fetch per 50 ms
    [first] = f.tick(0)
    assert first.max_bytes == size
    out = f.on_fetch_reply(reply_to(first, batches=batches[0], log_end=6), 0)
    assert out == [] and f.log.end_offset == 2  # more to fetch, but the throttle holds it
    assert f.tick(40) == []
    [second] = f.tick(50)
    assert second.fetch_offset == 2
