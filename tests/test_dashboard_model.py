"""The dashboard's arithmetic and navigation, from hand-made ``stats`` replies and key names."""

from __future__ import annotations

from fabric.dashboard.keys import decode
from fabric.dashboard.model import Health, Model, sparkline
from fabric.dashboard.state import NavState, View, handle_key


def snap(now_ms: int, uptime_ms: int, records_in: int, records_out: int, committed: int, log_end: int,
         members: int = 1, state: str = "STABLE") -> dict:
    part = {"topic": "orders", "partition": 0, "leader": 0, "leader_epoch": 0, "replicas": [0], "isr": [0],
            "log_start_offset": 0, "log_end_offset": log_end, "high_watermark": log_end, "size_bytes": log_end * 10,
            "segments": 1, "batches_in": 1, "records_in": records_in, "bytes_in": records_in * 10,
            "records_out": records_out, "bytes_out": records_out * 10}
    return {
        "broker": {"node_id": 0, "cluster_id": "c", "version": "t", "now_ms": now_ms, "uptime_ms": uptime_ms},
        "connections": {"open": 1, "refused": 0}, "parked": {"fetches": 0, "group_requests": 0},
        "totals": {"records_in": records_in, "bytes_in": records_in * 10, "records_out": records_out,
                   "bytes_out": records_out * 10, "requests": 5, "errors": 0},
        "operations": [{"op": "produce", "requests": records_in // 10,
                        "latency_us": {"count": 1, "sum": 5, "max": 5, "p50": 5, "p99": 5, "p999": 5}}],
        "errors": {}, "fsync": {"failures": 0, "latency_us": {"count": 0, "sum": 0, "max": 0, "p50": 0, "p99": 0,
                                                              "p999": 0}},
        "topics": [{"name": "orders", "internal": False, "partitions": 1, "records_in": records_in,
                    "bytes_in": records_in * 10, "records_out": records_out, "bytes_out": records_out * 10,
                    "size_bytes": log_end * 10},
                   {"name": "__consumer_offsets", "internal": True, "partitions": 1, "records_in": 0, "bytes_in": 0,
                    "records_out": 0, "bytes_out": 0, "size_bytes": 0}],
        "partitions": [part],
        "groups": [{"group_id": "billing", "state": state, "protocol": "range", "generation": 1, "members": members,
                    "lag": log_end - committed, "lag_ms": 2000 if log_end > committed else 0,
                    "partitions": [{"topic": "orders", "partition": 0, "committed_offset": committed,
                                    "log_end_offset": log_end, "lag": log_end - committed,
                                    "lag_ms": 2000 if log_end > committed else 0}]}],
        "cluster": None,
    }


def test_rates_come_from_the_brokers_clock_not_the_poll_time():
    m = Model()
    m.observe(snap(10_000, 1000, 0, 0, 0, 0))
    m.observe(snap(12_000, 3000, 2000, 1000, 500, 2000))  # two broker seconds later
    assert m.total_rate("records_in") == 1000.0 and m.total_rate("records_out") == 500.0
    [t] = m.topics()
    assert (t.name, t.records_in_rate, t.bytes_in_rate, t.lag) == ("orders", 1000.0, 10_000.0, 1500)
    assert [t.name for t in m.topics(internal=True)] == ["orders", "__consumer_offsets"]
    [p] = m.partitions("orders")
    assert (p.records_in_rate, p.records_out_rate, p.high_watermark) == (1000.0, 500.0, 2000)
    assert m.operations()[0].rate == 100.0


def test_a_restarted_broker_starts_a_new_series_instead_of_a_negative_rate():
    m = Model()
    m.observe(snap(10_000, 50_000, 5000, 5000, 0, 5000))
    m.observe(snap(11_000, 500, 100, 0, 0, 5100))  # uptime went down: restarted
    assert len(m.samples) == 1 and m.total_rate("records_in") == 0.0
    m.observe(snap(12_000, 1500, 600, 0, 0, 5600))
    assert m.total_rate("records_in") == 500.0


def test_health_of_broker_and_groups():
    m = Model()
    assert m.health is Health.DOWN  # nothing heard yet
    for i, lag in enumerate((10, 20, 30)):
        m.observe(snap(10_000 + i * 1000, 1000 + i * 1000, 100 * i, 0, 0, lag))
    assert m.health is Health.OK
    [g] = m.groups()
    assert (g.lag, g.lag_trend, g.health) == (30, [10, 20, 30], Health.WARN)  # falling behind
    assert m.group("billing").partitions[0].trend == [10, 20, 30]
    m.observe(snap(14_000, 5000, 400, 0, 0, 30, members=0, state="EMPTY"))
    assert m.groups()[0].health is Health.BAD  # lag and nobody consuming
    m.broker_down(15_000, "timed out")
    assert m.health is Health.DOWN and m.last_error == "timed out"
    m.observe(snap(16_000, 7000, 400, 0, 0, 30))
    assert m.health is Health.OK


def test_navigation_rules():
    s = NavState()
    s = handle_key(s, "2", [])
    assert s.view is View.TOPICS
    s = handle_key(s, "down", ["a", "b", "c"])
    s = handle_key(s, "down", ["a", "b", "c"])
    s = handle_key(s, "down", ["a", "b", "c"])
    assert s.selected == 2  # clamped to the rows
    s = handle_key(s, "enter", ["a", "b", "c"])
    assert (s.view, s.topic, s.selected) == (View.PARTITIONS, "c", 0)
    s = handle_key(s, "esc", [])
    assert s.view is View.TOPICS
    s = handle_key(s, "tab", [])
    assert s.view is View.GROUPS
    s = handle_key(s, "enter", ["billing"])
    assert (s.view, s.group) == (View.GROUP, "billing")
    s = handle_key(s, "backtab", [])
    assert s.view is View.TOPICS  # from a detail view, Tab moves from its list's tab
    s = handle_key(s, "/", [])
    for k in "ord":
        s = handle_key(s, k, [])
    s = handle_key(s, "q", [])  # while typing, q is text
    assert (s.typing, s.filter, s.quit) == (True, "ordq", False)
    s = handle_key(s, "backspace", [])
    s = handle_key(s, "enter", [])
    assert (s.typing, s.filter) == (False, "ord")
    s = handle_key(s, "?", [])
    assert s.show_help
    s = handle_key(s, "esc", [])
    assert not s.show_help
    assert handle_key(s, "q", []).quit and handle_key(s, "ctrl-c", []).quit


def test_terminal_input_decodes_to_key_names():
    assert decode("\x1b[A\x1b[Bq\r\t\x1b[Z\x1b\x7f/x") == ["up", "down", "q", "enter", "tab", "backtab", "esc",
                                                           "backspace", "/", "x"]
    assert decode("\x1bOA\x1b[1;5C2") == ["up", "2"]  # an unknown CSI sequence is skipped whole


def test_sparkline_scales_to_its_maximum():
    assert sparkline([0, 0], 10) == "▁▁"
    assert sparkline([1, 2, 4, 8], 10) == "▁▂▄█"
    assert len(sparkline(range(100), 20)) == 20


def test_connect_statuses_become_one_row_per_connector():
    from fabric.dashboard.connect_status import summarize

    rows = summarize({
        "status-connector-pg-in": {"state": "RUNNING", "worker": "w1"},
        "status-task-pg-in-0": {"state": "RUNNING", "worker": "w1"},
        "status-task-pg-in-1": {"state": "FAILED", "worker": "w2", "trace": "Traceback...\nOperationalError: down"},
        "status-task-files-out-0": {"state": "PAUSED", "worker": "w1"},
    })
    assert rows == [
        {"name": "files-out", "state": "?", "tasks": "0/1 running", "worker": "w1", "error": ""},
        {"name": "pg-in", "state": "RUNNING", "tasks": "1/2 running", "worker": "w1, w2",
         "error": "OperationalError: down"},
    ]
