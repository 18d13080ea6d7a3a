"""The broker's view of connections: ``limits.connections_max`` (connections beyond it are closed
as they are accepted; the ones kept are served throughout, a slot freed is usable again), and a
connection that ends takes its peer's parked fetches with it."""

from __future__ import annotations

import socket
import time

import pytest
import zmq

from fabric.broker.connections import REFUSING_MAX, ConnectionGate
from fabric.client import Admin, Consumer, Producer
from fabric.protocol.errors import TooManyConnectionsError


def test_the_gate_keeps_up_to_its_limit_and_frees_slots():
    gate = ConnectionGate(2)
    assert gate.accepted(10).keep and gate.accepted(11).keep
    assert not gate.accepted(12).keep and gate.refused_total == 1  # nobody idle long enough to replace
    gate.disconnected(12)  # a refused one going away changes nothing
    assert gate.open_connections == 2 and not gate.accepted(13).keep
    gate.disconnected(10)
    assert gate.open_connections == 1 and gate.accepted(12).keep and gate.open_connections == 2
    assert gate.refused_total == 2


def test_the_gate_tells_which_peers_a_closed_connection_carried():
    gate = ConnectionGate(10)
    assert gate.accepted(7).keep and gate.accepted(8).keep
    gate.peer_seen(b"a", 7)
    gate.peer_seen(b"b", 8)
    gate.peer_seen(b"c", -1)  # descriptor unknown: nothing to remember
    assert gate.disconnected(7) == [b"a"] and gate.disconnected(7) == []
    assert gate.disconnected(8) == [b"b"] and gate.open_connections == 0


def test_at_the_limit_a_newcomer_replaces_the_connection_idle_longest():
    gate = ConnectionGate(3, replace_idle_ms=500)
    for fd in (1, 2, 3):
        assert gate.accepted(fd, now_ms=0).keep
        gate.peer_seen(bytes([fd]), fd, now_ms=0)
    gate.touch(b"\x01", 400)  # 1 sent a request: 2 is now the idlest, then 3
    assert gate.accepted(4, now_ms=450) == (False, (), True)  # nobody idle 500 ms yet: refused, to be told
    verdict = gate.accepted(5, now_ms=600)
    assert verdict.keep and verdict.close == (2,) and gate.replaced_total == 1
    assert gate.open_connections == 3
    # a connection whose peer has a fetch parked is busy, not idle: skipped, and counts as active now
    verdict = gate.accepted(6, now_ms=950, busy=lambda peers: peers == [b"\x03"])
    assert verdict.close == (1,)  # 3 was skipped; 1 (idle since 400) went
    assert not gate.accepted(7, now_ms=1000, busy=lambda peers: True).keep  # all busy or fresh
    assert gate.disconnected(2) == [b"\x02"]  # the replaced one's peers go with its DISCONNECTED event


def test_a_refused_connection_is_told_then_shut_down_and_storms_are_refused_without_a_word():
    gate = ConnectionGate(1, replace_idle_ms=10_000)
    assert gate.accepted(1, now_ms=0).keep
    assert gate.accepted(2, now_ms=0).tell and gate.refused(2) and gate.due_soon
    assert gate.due(50) == []
    gate.told(2, now_ms=50)
    assert gate.due(69) == [] and gate.due(70) == [2] and not gate.due_soon
    assert gate.refused(2)  # until its DISCONNECTED event: none of its requests may run
    gate.disconnected(2)
    assert not gate.refused(2)
    assert gate.accepted(3, now_ms=100).tell and gate.due(100 + 100) == [3]  # never spoke: grace over
    for fd in range(10, 10 + REFUSING_MAX):
        assert gate.accepted(fd, now_ms=300).tell
    assert gate.accepted(9999, now_ms=300) == (False, (), False)  # too many waiting: no word


def test_connections_idle_too_long_are_closed_unless_busy():
    gate = ConnectionGate(10, idle_ms_max=1000)
    for fd in (1, 2, 3):
        gate.accepted(fd, now_ms=0)
        gate.peer_seen(bytes([fd]), fd, now_ms=0)
    gate.touch(b"\x03", 900)
    assert gate.idle(999) == []
    assert gate.idle(1000, busy=lambda peers: peers == [b"\x01"]) == [2]
    assert gate.closed_idle_total == 1 and gate.open_connections == 2
    assert gate.idle(1900) == [3] and gate.idle(2000) == [1]  # 1 was busy at 1000: active from then


def _stats_until(admin: Admin, ok, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        stats = admin.broker_stats()
        if ok(stats):
            return stats
        assert time.monotonic() < deadline, f"broker stats never matched: {stats}"
        time.sleep(0.05)  # polling a condition (the broker's monitor events)


def _closed_by_peer(port: int, timeout: float = 5.0) -> bool:
    """A raw TCP connection: True if the broker ends it within ``timeout`` (EOF or reset);
    ZeroMQ's greeting bytes before that are read and ignored."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if raw.recv(4096) == b"":
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
    return False


def test_connections_over_the_limit_are_closed_and_the_others_keep_working(brokers, tmp_path):
    cfg = tmp_path / "broker.yaml"
    cfg.write_text("limits:\n  connections_max: 2\n  connection_replace_idle_ms: 600000\n")  # refuse, never replace
    b = brokers(["--config", str(cfg)])
    with Admin(b.bootstrap) as first:
        _stats_until(first, lambda s: s["connections"] == 1)  # (the readiness probe's one is gone)
        second = Admin(b.bootstrap)
        second.api_versions()
        _stats_until(first, lambda s: s["connections"] == 2)

        assert _closed_by_peer(b.port)  # a third one is closed as soon as it is accepted
        stats = _stats_until(first, lambda s: s["connections_refused"] >= 1)
        assert stats["connections"] == 2
        assert second.api_versions()["broker"]["node_id"] == 0  # both kept ones are still served

        second.close()
        _stats_until(first, lambda s: s["connections"] == 1)
        assert not _closed_by_peer(b.port, timeout=1.0)  # a free slot: kept (it is idle, not refused)
        with Admin(b.bootstrap) as third:
            assert third.api_versions()["broker"]["node_id"] == 0
    assert "connection limit (2) reached" in b.log_text()


def test_a_consumer_that_disconnects_leaves_no_parked_fetch_behind(broker):
    with Admin(broker.bootstrap) as admin:
        admin.create_topic("tail")
        consumer = Consumer(broker.bootstrap, auto_offset_reset="latest", fetch_max_wait_ms=30_000)
        consumer.assign([("tail", 0)])
        assert consumer.poll(300) == []  # its standing fetch now waits at the broker, for 30 s
        _stats_until(admin, lambda s: s["parked_fetches"] >= 1)
        consumer.close()
        # gone with the connection, long before the 30 s wait would have ended it
        _stats_until(admin, lambda s: s["parked_fetches"] == 0, timeout=10.0)
        with Producer(broker.bootstrap, linger_ms=0) as p:  # appends still work, nobody to answer
            assert p.send("tail", b"after").result(10).offset == 0
        with Consumer(broker.bootstrap, auto_offset_reset="earliest") as again:
            again.assign([("tail", 0)])
            got = []
            for _ in range(40):
                got += again.poll(250)
                if got:
                    break
            assert [r.value for r in got] == [b"after"]


def _idle_dealers(ctx, port: int, n: int) -> list:
    """``n`` DEALER sockets that connect and never send: libzmq reconnects them every 100 ms
    (its default) when the broker closes them."""
    out = []
    for _ in range(n):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(f"tcp://127.0.0.1:{port}")
        out.append(s)
    return out


def test_idle_connections_over_the_limit_do_not_lock_out_a_new_client(brokers, tmp_path):
    """The issue's 1,200 idle connections at a limit of 1,000, scaled down: 72 at a limit of 60."""
    cfg = tmp_path / "broker.yaml"
    cfg.write_text("limits:\n  connections_max: 60\n")
    b = brokers(["--config", str(cfg)])
    ctx = zmq.Context.instance()
    idle = _idle_dealers(ctx, b.port, 72)
    try:
        with Admin(b.bootstrap, timeout_ms=5000) as probe:  # (it may itself replace an idle one)
            _stats_until(probe, lambda s: s["connections_refused"] >= 12)  # the limit is held by idle sockets
        started = time.monotonic()
        with Admin(b.bootstrap, timeout_ms=10_000) as newcomer:
            assert newcomer.api_versions()["broker"]["node_id"] == 0
            assert newcomer.list_topics() == []  # and it keeps being served
            stats = newcomer.broker_stats()
        assert time.monotonic() - started < 5
        assert stats["connections"] <= 60
    finally:
        for s in idle:
            s.close(linger=0)


def test_a_refused_client_is_told_why_and_backs_off_exponentially(brokers, tmp_path):
    cfg = tmp_path / "broker.yaml"
    cfg.write_text("limits:\n  connections_max: 1\n  connection_replace_idle_ms: 600000\n")  # never replaced
    b = brokers(["--config", str(cfg)])
    with Admin(b.bootstrap) as holder:
        _stats_until(holder, lambda s: s["connections"] == 1)
        refused_before = holder.broker_stats()["connections_refused"]
        started = time.monotonic()
        with Admin(b.bootstrap, timeout_ms=3000) as refused:
            with pytest.raises(TooManyConnectionsError):
                refused.api_versions()
        elapsed = time.monotonic() - started
        attempts = holder.broker_stats()["connections_refused"] - refused_before
        # back-off 100, 200, 400, 800, 1600 ms (each x 0.5-1 jitter) in 3 s: at most about 7 tries,
        # where libzmq alone reconnects every 50 ms (about 60)
        assert 2 <= attempts <= 9, attempts
        assert elapsed < 6
        assert holder.api_versions()["broker"]["node_id"] == 0


def test_idle_connections_are_closed_after_connection_idle_ms_max(brokers, tmp_path):
    cfg = tmp_path / "broker.yaml"
    cfg.write_text("limits:\n  connection_idle_ms_max: 1000\n")
    b = brokers(["--config", str(cfg)])
    with Admin(b.bootstrap) as watcher:
        ctx = zmq.Context.instance()
        [idle] = _idle_dealers(ctx, b.port, 1)
        try:
            _stats_until(watcher, lambda s: s["connections_closed_idle"] >= 1, timeout=10)
        finally:
            idle.close(linger=0)
        assert watcher.api_versions()["broker"]["node_id"] == 0  # the active one is kept
