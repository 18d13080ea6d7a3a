"""Flow control toward clients (broker/flow.py, SPEC "Flow control"): reply bytes ZeroMQ still
holds are counted per peer and in total; a congested peer gets THROTTLED instead of data, and the
broker's memory stays bounded while it keeps serving everyone else."""

from __future__ import annotations

import os
import time

import cbor2
import pytest
import zmq

from fabric.broker.config import BrokerConfig
from fabric.broker.core import BrokerCore
from fabric.broker.flow import MARK_BYTES, ReplyBudget
from fabric.client import Admin, Consumer, Producer
from fabric.log.config import LogConfig
from fabric.protocol.limits import Limits
from fabric.records.batch import encode_batch


class Mark:
    """A stand-in for a pyzmq MessageTracker."""

    def __init__(self) -> None:
        self.done = False


def _done(mark: Mark) -> bool:
    return mark.done


# ------------------------------------------------------------------ the budget, pure
def test_marks_confirm_everything_sent_before_them():
    budget = ReplyBudget(peer_bytes_max=1000, total_bytes_max=10_000)
    assert not budget.needs_mark(b"p", 100)
    budget.sent(b"p", 100)  # small, unmarked
    assert budget.needs_mark(b"p", MARK_BYTES - 100)  # it brings the unmarked bytes to MARK_BYTES
    first, second = Mark(), Mark()
    budget.sent(b"p", 900, first)
    budget.sent(b"p", 500, second)
    assert budget.queued(b"p") == 1500 and budget.marked_bytes == 1500 and budget.over(b"p")
    budget.settle(_done)
    assert budget.queued(b"p") == 1500  # nothing left yet
    first.done = True
    budget.settle(_done)
    assert budget.queued(b"p") == 500 and budget.marked_bytes == 500 and not budget.over(b"p")
    second.done = True
    budget.settle(_done, b"p")
    assert budget.queued(b"p") == 0 and budget.peers == 0  # a settled account is dropped


def test_congestion_is_per_peer_then_by_fair_share_then_broker_wide():
    budget = ReplyBudget(peer_bytes_max=1000, total_bytes_max=2000)
    budget.sent(b"a", 1200, Mark())
    assert budget.over(b"a") and budget.congested(b"a") and not budget.congested(b"b")
    budget.sent(b"b", 400, Mark())  # 1600 of 2000: past half, so shares count (1000 / 2 peers each)
    assert not budget.congested(b"b") and not budget.congested(b"c")  # below their share: served
    budget.sent(b"b", 200, Mark())
    assert budget.congested(b"b") and not budget.over(b"b") and not budget.congested(b"c")
    budget.sent(b"c", 300, Mark())  # 2100: full, data waits for everyone
    assert budget.full() and budget.congested(b"c") and budget.congested(b"d")
    budget.forget(b"a")  # its connection went: ZeroMQ drops what it held
    assert budget.marked_bytes == 900 and budget.queued(b"a") == 0
    assert not budget.congested(b"b") and not budget.congested(b"d")  # below half again


# ------------------------------------------------------------------ the core's decisions
@pytest.fixture
def core(tmp_path):
    limits = Limits(connection_reply_bytes_max=1000, reply_bytes_max=1_000_000)
    c = BrokerCore(BrokerConfig(data_dir=str(tmp_path / "d"), topic_defaults=LogConfig(flush_interval_ms=0),
                                limits=limits), 1000)
    yield c
    c.close()


def _call(core, peer, header, frames=(), now=1000):
    return core.handle(peer, [cbor2.dumps(header), *frames], now)


def _fetch(cid, offset=0, **extra):
    return {"op": "fetch", "v": 1, "cid": cid, "max_wait_ms": 0,
            "partitions": [{"topic": "t", "partition": 0, "offset": offset}], **extra}


def test_a_congested_peer_gets_throttled_not_data_and_others_are_served(core):
    batch = encode_batch([1], [None], [b"x" * 100])
    _call(core, b"w", {"op": "produce", "v": 1, "cid": 1, "acks": 1, "batches": [{"topic": "t", "partition": 0}]},
          [batch])
    core.flow.sent(b"slow", 5000, Mark())  # its replies wait unread
    [(_, rep)] = _call(core, b"slow", _fetch(2))
    meta = rep.header["partitions"][0]
    assert meta["error"]["name"] == "THROTTLED" and rep.frames == [b""]  # per partition: no data, retriable
    [(_, rep)] = _call(core, b"slow", {"op": "metadata", "v": 1, "cid": 3, "topics": ["t"]})
    assert rep.header["error"]["name"] == "THROTTLED" and rep.header["cid"] == 3  # other ops: whole request
    [(_, rep)] = _call(core, b"fast", _fetch(4))
    assert "error" not in rep.header["partitions"][0] and len(rep.frames[0]) == len(batch)
    assert core.metrics.errors["THROTTLED"] == 2


def test_parked_and_standing_fetches_of_a_congested_peer_end_throttled_when_woken(core):
    """Parked fetches are answered without a new request: the check is at reply time."""
    _call(core, b"w", {"op": "create_topics", "v": 1, "cid": 1, "topics": [{"name": "t", "partitions": 1}]})
    assert _call(core, b"slow", _fetch(2, max_wait_ms=30_000, min_bytes=1, answers=5)) == []  # parks
    core.flow.sent(b"slow", 5000, Mark())
    out = _call(core, b"w", {"op": "produce", "v": 1, "cid": 3, "acks": 1,
                             "batches": [{"topic": "t", "partition": 0}]}, [encode_batch([1], [None], [b"x"])])
    [rep] = [r for peer, r in out if peer == b"slow"]
    assert rep.header["partitions"][0]["error"]["name"] == "THROTTLED" and rep.header["answers_left"] == 0
    assert len(core.waiters) == 0 and not core.fetcher.parked(b"slow")  # the standing fetch ended


# ------------------------------------------------------------------ real broker processes
def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _poll(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, what
        time.sleep(0.05)  # polling a condition in another process


def test_thousands_of_unread_1mib_fetches_keep_the_broker_small_and_serving(broker):
    """The default limits: 64 MiB per connection, 256 MiB in all."""
    b = broker
    with Producer(b.bootstrap, linger_ms=0) as p:
        p.send("big", os.urandom(1 << 20)).result(10)
    base = _rss_mib(b.pid)
    fetches = 2500  # 2.5 GB of replies if the broker kept them all
    ctx = zmq.Context.instance()
    flood = ctx.socket(zmq.DEALER)
    flood.setsockopt(zmq.RCVHWM, 1)  # and it never reads
    flood.setsockopt(zmq.SNDHWM, fetches)
    flood.setsockopt(zmq.LINGER, 0)
    flood.connect(f"tcp://{b.bootstrap}")
    peak = base
    admin = Admin(b.bootstrap, timeout_ms=5000)
    try:
        for cid in range(1, fetches + 1):
            flood.send(cbor2.dumps({"op": "fetch", "v": 1, "cid": cid, "max_wait_ms": 0, "max_bytes": 2 << 20,
                                    "partitions": [{"topic": "big", "partition": 0, "offset": 0,
                                                    "max_bytes": 2 << 20}]}))
            if cid % 250 == 0:  # in steps, so a broker that keeps them is stopped before gigabytes
                stats = _poll(lambda: (s := admin.broker_stats())["requests"].get("fetch", 0) >= cid and s,
                              20, "the broker did not read every fetch")
                peak = max(peak, _rss_mib(b.pid))
                assert peak - base < 200, f"broker RSS grew {peak - base:.0f} MiB after {cid} unread fetches"
        assert stats["errors"]["THROTTLED"] > fetches // 2
        assert 64 << 20 <= stats["reply_bytes_queued"] < 66 << 20  # the limit plus one reply, at most
        # everyone else is served meanwhile, data included
        started = time.monotonic()
        assert admin.api_versions()["broker"]["node_id"] == 0
        with Consumer(b.bootstrap, auto_offset_reset="earliest") as consumer:
            consumer.assign([("big", 0)])
            got = _poll(lambda: consumer.poll(200), 10, "another consumer got no data")
            assert len(got[0].value) == 1 << 20
        assert time.monotonic() - started < 10
        flood.close()  # gone: everything it held is freed
        _poll(lambda: admin.broker_stats()["reply_bytes_queued"] == 0, 10, "its bytes stayed counted")
        _poll(lambda: _rss_mib(b.pid) - base < 40, 10, "its memory stayed held")
    finally:
        flood.close(linger=0)
        admin.close()


def test_a_produce_flood_without_reading_acks_is_held_back_by_tcp(broker):
    """Requests are read at most ``connection_requests_queued_max`` ahead per connection: a client
    sending faster than the broker appends waits in TCP, not in the broker's memory."""
    b = broker
    base = _rss_mib(b.pid)
    sends = 600
    batch = encode_batch([1], [None], [os.urandom(1 << 20)])
    flood = zmq.Context.instance().socket(zmq.DEALER)
    flood.setsockopt(zmq.RCVHWM, 1)  # never reads its acknowledgements
    flood.setsockopt(zmq.LINGER, 0)
    flood.connect(f"tcp://{b.bootstrap}")
    admin = Admin(b.bootstrap, timeout_ms=5000)
    peak = base
    try:
        for cid in range(1, sends + 1):
            flood.send_multipart([cbor2.dumps({"op": "produce", "v": 1, "cid": cid, "acks": 1,
                                               "batches": [{"topic": "p", "partition": 0}]}), batch])
            if cid % 25 == 0:
                peak = max(peak, _rss_mib(b.pid))
                assert peak - base < 120, f"broker RSS grew {peak - base:.0f} MiB after {cid} produce requests"

        def all_read():
            nonlocal peak
            peak = max(peak, _rss_mib(b.pid))
            assert peak - base < 120, f"broker RSS grew {peak - base:.0f} MiB"
            return admin.broker_stats()["requests"].get("produce", 0) >= sends
        _poll(all_read, 25, "the broker did not read every produce request")
        assert admin.api_versions()["broker"]["node_id"] == 0
    finally:
        flood.close(linger=0)
        admin.close()


def test_small_unread_replies_count_too(brokers, tmp_path):
    """Replies under 64 KiB are tracked one per 64 KiB (flow.py): unread, they still reach the
    connection's byte limit (the reply-count limit is set out of the way here)."""
    cfg = tmp_path / "broker.yaml"
    cfg.write_text("limits:\n  connection_reply_bytes_max: 4194304\n  connection_replies_queued_max: 100000\n")
    b = brokers(["--config", str(cfg)])
    with Producer(b.bootstrap, linger_ms=0) as p:
        p.send("mid", os.urandom(40 << 10)).result(10)
    fetches = 2000  # 80 MB of replies, 40 KiB each
    flood = zmq.Context.instance().socket(zmq.DEALER)
    flood.setsockopt(zmq.RCVHWM, 1)
    flood.setsockopt(zmq.SNDHWM, fetches)
    flood.setsockopt(zmq.LINGER, 0)
    flood.connect(f"tcp://{b.bootstrap}")
    try:
        with Admin(b.bootstrap, timeout_ms=5000) as admin:
            for cid in range(1, fetches + 1):
                flood.send(cbor2.dumps({"op": "fetch", "v": 1, "cid": cid, "max_wait_ms": 0,
                                        "partitions": [{"topic": "mid", "partition": 0, "offset": 0}]}))
            stats = _poll(lambda: (s := admin.broker_stats())["requests"].get("fetch", 0) >= fetches and s,
                          20, "the broker did not read every fetch")
            assert stats["errors"].get("THROTTLED", 0) > fetches // 2
            # the limit, one reply over it, and the small THROTTLED answers queued after it
            assert 4 << 20 <= stats["reply_bytes_queued"] <= (4 << 20) + (64 << 10) + fetches * 300
    finally:
        flood.close(linger=0)


def test_several_connections_flooding_unread_fetches_do_not_starve_a_reading_consumer(broker):
    """Five connections that read nothing could hold 5 x 64 MiB: past half of ``reply_bytes_max``
    each is held to its fair share, so the total stays below it and a consumer that reads gets data."""
    b = broker
    with Producer(b.bootstrap, linger_ms=0) as p:
        p.send("big", os.urandom(1 << 20)).result(10)
    base = _rss_mib(b.pid)
    ctx = zmq.Context.instance()
    floods = []
    for _ in range(5):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.RCVHWM, 1)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(f"tcp://{b.bootstrap}")
        floods.append(s)
    admin = Admin(b.bootstrap, timeout_ms=5000)
    try:
        sent = 0
        for step in range(4):  # 4 x 5 x 100 = 2,000 unread 1 MiB fetches
            for s in floods:
                for _ in range(100):
                    sent += 1
                    s.send(cbor2.dumps({"op": "fetch", "v": 1, "cid": sent, "max_wait_ms": 0,
                                        "partitions": [{"topic": "big", "partition": 0, "offset": 0}]}))
            stats = _poll(lambda: (st := admin.broker_stats())["requests"].get("fetch", 0) >= sent and st,
                          20, "the broker did not read every fetch")
            assert _rss_mib(b.pid) - base < 300, f"broker RSS grew {_rss_mib(b.pid) - base:.0f} MiB"
        assert (128 << 20) <= stats["reply_bytes_queued"] < (256 << 20)  # past half, not full
        with Consumer(b.bootstrap, auto_offset_reset="earliest") as consumer:
            consumer.assign([("big", 0)])
            got = _poll(lambda: consumer.poll(200), 10, "a consumer that reads got no data")
            assert len(got[0].value) == 1 << 20
        for s in floods:
            s.close(linger=0)
        # gone: what ZeroMQ held for them is freed, and the broker gives the memory back
        _poll(lambda: admin.broker_stats()["reply_bytes_queued"] == 0, 10, "their bytes stayed counted")
        _poll(lambda: _rss_mib(b.pid) - base < 40, 10, f"the memory stayed held: {_rss_mib(b.pid) - base:.0f} MiB")
    finally:
        for s in floods:
            s.close(linger=0)
        admin.close()
