"""Metrics, ``stats``, Prometheus and ``fabric dashboard`` against real broker processes.

The interactive tests drive the dashboard in a real terminal (tmux ``send-keys`` /
``capture-pane``) and poll the screen for what must appear, with deadlines, never sleeping.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from fabric.client import Admin, Consumer, Producer
from fabric.testing import BrokerProcess
from fabric.testing.processes import free_port
from fabric.testing.terminal import Terminal, wait_for

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]


def produce(bootstrap: str, topic: str, n: int, partitions: int) -> None:
    with Producer(bootstrap, acks=1) as p:
        for i in range(n):
            p.send(topic, b"v" * 20, partition=i % partitions)
        p.flush(30)


def consume_and_commit(bootstrap: str, group: str, topic: str, n: int) -> None:
    with Consumer(bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False) as c:
        c.subscribe([topic])
        got = 0
        deadline = time.monotonic() + 30
        while got < n and time.monotonic() < deadline:
            got += len(c.poll(timeout_ms=200))
        assert got == n
        c.commit()


def test_stats_count_what_was_produced_fetched_and_committed_and_gauges_survive_a_restart(brokers):
    b = brokers()
    with Admin(b.bootstrap) as admin:
        admin.create_topic("acc", partitions=2)
    produce(b.bootstrap, "acc", 1000, 2)
    consume_and_commit(b.bootstrap, "g-acc", "acc", 1000)
    with Admin(b.bootstrap) as admin:  # the consumer's parked fetches end with its connection
        wait_for("the consumer's fetches to end", lambda: admin.stats(["acc"])["parked"]["fetches"] == 0)
    produce(b.bootstrap, "acc", 300, 2)  # not consumed: the group's lag
    with Admin(b.bootstrap) as admin:
        s = admin.stats(["acc"])
    t = s["topics"][0]
    parts = s["partitions"]
    assert (t["name"], t["records_in"], t["records_out"]) == ("acc", 1300, 1000)
    assert t["bytes_in"] == t["size_bytes"] == sum(p["size_bytes"] for p in parts)
    assert [p["log_end_offset"] for p in parts] == [650, 650]
    assert sum(p["records_in"] for p in parts) == 1300 and sum(p["batches_in"] for p in parts) >= 2
    assert s["totals"]["records_in"] == 1300 and s["totals"]["records_out"] == 1000
    [g] = [g for g in s["groups"] if g["group_id"] == "g-acc"]
    assert g["lag"] == 300 and sorted(p["committed_offset"] for p in g["partitions"]) == [500, 500]
    assert all(p["lag"] == 150 and p["lag_ms"] >= 0 for p in g["partitions"])
    ops = {o["op"]: o for o in s["operations"]}
    assert ops["produce"]["requests"] >= 2 and ops["produce"]["latency_us"]["count"] == ops["produce"]["requests"]
    assert 0 < ops["produce"]["latency_us"]["p50"] <= ops["produce"]["latency_us"]["max"]
    assert ops["offset_commit"]["requests"] >= 1

    b.restart(kill=True)  # counters start again; offsets, sizes, commits and lag are on disk
    with Admin(b.bootstrap) as admin:
        s2 = admin.stats(["acc"])
    assert s2["totals"]["records_in"] == 0 and s2["topics"][0]["records_in"] == 0
    assert s2["topics"][0]["size_bytes"] == t["size_bytes"]
    assert [p["log_end_offset"] for p in s2["partitions"]] == [650, 650]
    [g2] = [g for g in s2["groups"] if g["group_id"] == "g-acc"]
    assert g2["lag"] == 300 and g2["lag_ms"] > 0 and g2["members"] == 0


def test_prometheus_endpoint_serves_the_stats_in_text_format(brokers):
    port = free_port()
    b = brokers(extra_args=["--metrics-port", str(port)])
    produce(b.bootstrap, "prom", 50, 1)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert body.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.read().decode()
    assert 'fabric_partition_records_in_total{topic="prom",partition="0"} 50' in text
    assert "# TYPE fabric_request_duration_seconds histogram" in text
    assert 'fabric_requests_total{op="produce"}' in text
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing", timeout=10)
    assert e.value.code == 404


@pytest.fixture
def busy_broker(brokers):
    """A broker with steady traffic into ``orders`` and a group ``billing`` that lags behind."""
    b = brokers()
    with Admin(b.bootstrap) as admin:
        admin.create_topic("orders", partitions=2)
    produce(b.bootstrap, "orders", 200, 2)
    consume_and_commit(b.bootstrap, "billing", "orders", 200)
    stop = threading.Event()

    def steady() -> None:
        with Producer(b.bootstrap, acks=1, linger_ms=5) as p:
            while not stop.is_set():
                for _ in range(50):
                    p.send("orders", b"x" * 50, key=b"k")
                stop.wait(0.01)

    t = threading.Thread(target=steady, daemon=True)
    t.start()
    try:
        wait_for("traffic", lambda: Admin(b.bootstrap).stats(["orders"])["totals"]["records_in"] > 500)
        yield b
    finally:
        stop.set()
        t.join(10)


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fabric", *args], capture_output=True, text=True, timeout=timeout)


def test_once_frame_shows_topics_rates_and_the_lagging_group(busy_broker, tmp_path):
    r = run_cli("dashboard", "-b", busy_broker.bootstrap, "--once", "--width", "160", "--interval", "0.5")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "● OK" in out and "Busiest topics" in out
    [orders] = [ln for ln in out.splitlines() if ln.startswith("orders ")]
    in_rate = orders.split()[1]
    assert in_rate.endswith("/s") and in_rate != "0/s", orders
    [billing] = [ln for ln in out.splitlines() if ln.startswith("billing ")]
    lag = int(billing.split()[3].replace(",", ""))
    assert lag > 0, billing
    r = run_cli("dashboard", "-b", busy_broker.bootstrap, "--once", "--group", "billing", "--width", "160")
    assert r.returncode == 0 and "Group billing" in r.stdout and "orders" in r.stdout, r.stdout + r.stderr
    r = run_cli("dashboard", "-b", busy_broker.bootstrap, "--once", "--output", "json", "--interval", "0.5")
    assert r.returncode == 0, r.stderr
    numbers = json.loads(r.stdout)
    assert numbers["health"] == "ok" and numbers["rates"]["records_in"] > 0
    [orders] = [t for t in numbers["topics"] if t["name"] == "orders"]
    assert orders["records_in_rate"] > 0 and orders["partitions"] == 2
    [billing] = [g for g in numbers["groups"] if g["group_id"] == "billing"]
    assert billing["lag"] > 0 and billing["partitions"][0]["topic"] == "orders"
    svg = tmp_path / "frame.svg"
    r = run_cli("dashboard", "-b", busy_broker.bootstrap, "--svg", str(svg))
    assert r.returncode == 0, r.stderr
    assert svg.read_text().startswith("<svg") and "billing" in svg.read_text()


def test_once_without_a_broker_fails_fast_but_the_live_view_waits_for_one():
    dead = f"127.0.0.1:{free_port()}"
    r = run_cli("dashboard", "-b", dead, "--once")
    assert r.returncode == 1 and f"cannot reach broker at {dead}" in r.stderr


tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is installed by .ci/run")


def dashboard_command(bootstrap: str) -> list[str]:
    return [sys.executable, "-m", "fabric", "dashboard", "-b", bootstrap, "--interval", "0.5"]


@tmux
def test_interactive_dashboard_opens_a_topic_and_a_group(busy_broker):
    term = Terminal(dashboard_command(busy_broker.bootstrap))
    try:
        term.wait("Busiest topics")
        term.keys("2")
        term.wait("Topics (1)")
        term.keys("Enter")
        term.wait("Topic orders: partitions (2)", "high watermark", "log end")
        term.keys("Escape")
        term.wait("Topics (1)")
        term.keys("3")
        term.wait("Consumer groups (1)")
        term.keys("Enter")
        term.wait("Group billing", "Committed offsets and lag per partition")
        term.keys("?")
        term.wait("show or hide this help")
        term.keys("q")
        wait_for("the dashboard to quit", lambda: not term.alive())
    finally:
        term.close()


@tmux
def test_dashboard_shows_a_dead_broker_keeps_running_and_recovers(tmp_path):
    b = BrokerProcess(tmp_path / "data")
    term = Terminal(dashboard_command(b.bootstrap))  # started before its broker: it waits
    try:
        term.wait("DOWN: reconnecting")
        b.start()
        term.wait("● OK")
        b.kill()
        term.wait("DOWN: reconnecting")
        assert term.alive()
        b.start()
        wait_for("the broker back up", lambda: "● OK" in (s := term.screen()) and "DOWN" not in s, timeout=30)
        term.keys("q")
        wait_for("the dashboard to quit", lambda: not term.alive())
    finally:
        term.close()
        b.kill()
