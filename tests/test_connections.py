"""The broker's view of connections: ``limits.connections_max`` (connections beyond it are closed
as they are accepted; the ones kept are served throughout, a slot freed is usable again), and a
connection that ends takes its peer's parked fetches with it."""

from __future__ import annotations

import socket
import time

from fabric.broker.connections import ConnectionGate
from fabric.client import Admin, Consumer, Producer


def test_the_gate_keeps_up_to_its_limit_and_frees_slots():
    gate = ConnectionGate(2)
    assert gate.accepted(10) and gate.accepted(11)
    assert not gate.accepted(12) and gate.refused_total == 1
    gate.disconnected(12)  # a refused one going away changes nothing
    assert gate.open_connections == 2 and not gate.accepted(13)
    gate.disconnected(10)
    assert gate.open_connections == 1 and gate.accepted(12) and gate.open_connections == 2
    assert gate.refused_total == 2


def test_the_gate_tells_which_peers_a_closed_connection_carried():
    gate = ConnectionGate(10)
    assert gate.accepted(7) and gate.accepted(8)
    gate.peer_seen(b"a", 7)
    gate.peer_seen(b"b", 8)
    gate.peer_seen(b"c", -1)  # descriptor unknown: nothing to remember
    assert gate.disconnected(7) == [b"a"] and gate.disconnected(7) == []
    assert gate.disconnected(8) == [b"b"] and gate.open_connections == 0


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
    cfg.write_text("limits:\n  connections_max: 2\n")
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
