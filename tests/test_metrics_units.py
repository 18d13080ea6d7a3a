"""Unit tests of the metrics pieces: histogram buckets and percentiles, Prometheus text."""

from __future__ import annotations

import random
import re

from fabric.broker.histogram import BUCKETS, Histogram, bucket_of, lower_bound
from fabric.broker.prometheus import StatsExchange, render


def test_every_value_falls_in_the_bucket_whose_bounds_hold_it():
    rng = random.Random(7)
    values = list(range(0, 300)) + [rng.randrange(1 << rng.randrange(1, 40)) for _ in range(5000)]
    for v in values:
        i = bucket_of(v)
        assert lower_bound(i) <= v, (v, i)
        if i + 1 < BUCKETS:
            assert v < lower_bound(i + 1), (v, i)
            # relative width under 12.5%: the promise SPEC 5.14 makes
            assert lower_bound(i + 1) - lower_bound(i) <= max(1, lower_bound(i) // 8), (v, i)


def test_percentiles_against_sorted_values():
    rng = random.Random(11)
    h = Histogram()
    values = [int(rng.lognormvariate(5, 1.5)) for _ in range(20_000)]
    for v in values:
        h.observe(v)
    values.sort()
    assert h.count == len(values) and h.total == sum(values) and h.max == values[-1]
    for q in (0.5, 0.9, 0.99, 0.999, 1.0):
        exact = values[max(0, -(-int(q * len(values)) // 1) - 1)]
        got = h.percentile(q)
        assert exact <= got <= max(exact + 1, exact * 1.125), (q, exact, got)
    assert h.percentile(1.0) == values[-1]


def test_empty_histogram_reports_zeros():
    assert Histogram().summary() == {"count": 0, "sum": 0, "max": 0, "p50": 0, "p99": 0, "p999": 0}


def _stats() -> dict:
    latency = {"count": 3, "sum": 1500, "max": 900, "p50": 400, "p99": 900, "p999": 900,
               "buckets": [[96, 1], [384, 1], [896, 1]]}
    return {
        "broker": {"node_id": 0, "cluster_id": "c1", "version": "0.1.0", "now_ms": 2000, "uptime_ms": 1000},
        "connections": {"open": 2, "refused": 1}, "parked": {"fetches": 1, "group_requests": 0},
        "totals": {"records_in": 10, "bytes_in": 100, "records_out": 4, "bytes_out": 40, "requests": 3, "errors": 1},
        "operations": [{"op": "produce", "requests": 3, "latency_us": latency}],
        "errors": {"INVALID_FIELD": 1},
        "fsync": {"failures": 0, "latency_us": {**latency, "count": 0, "sum": 0, "buckets": []}},
        "topics": [], "cluster": None,
        "partitions": [{"topic": 'we"ird', "partition": 0, "leader": 0, "leader_epoch": 0, "replicas": [0],
                        "isr": [0], "log_start_offset": 0, "log_end_offset": 10, "high_watermark": 10,
                        "size_bytes": 100, "segments": 1, "batches_in": 1, "records_in": 10, "bytes_in": 100,
                        "records_out": 4, "bytes_out": 40}],
        "groups": [{"group_id": "g", "state": "STABLE", "protocol": "range", "generation": 1, "members": 1,
                    "lag": 6, "lag_ms": 1500,
                    "partitions": [{"topic": "t", "partition": 0, "committed_offset": 4, "log_end_offset": 10,
                                    "lag": 6, "lag_ms": 1500}]}],
    }


def test_prometheus_text_follows_the_exposition_format():
    text = render(_stats())
    line = re.compile(r'^[a-z_]+(\{([a-z_]+="([^"\\]|\\.)*",?)+\})? -?[0-9.e+-]+$|^# (HELP|TYPE) ')
    for ln in text.splitlines():
        assert line.match(ln), ln
    assert 'fabric_partition_bytes_in_total{topic="we\\"ird",partition="0"} 100' in text
    assert 'fabric_group_lag_records{group="g",topic="t",partition="0"} 6' in text
    assert 'fabric_group_lag_seconds{group="g",topic="t",partition="0"} 1.5' in text
    assert 'fabric_request_duration_seconds_bucket{op="produce",le="0.0005"} 2' in text
    assert 'fabric_request_duration_seconds_bucket{op="produce",le="+Inf"} 3' in text
    assert 'fabric_request_duration_seconds_count{op="produce"} 3' in text
    assert text.count("# TYPE fabric_partition_bytes_in_total counter") == 1
    # cumulative buckets never decrease
    counts = [int(m) for m in re.findall(r'fabric_request_duration_seconds_bucket\{op="produce",le="[^"]+"\} (\d+)', text)]
    assert counts == sorted(counts)


def test_stats_exchange_answers_every_waiter_with_one_build():
    import threading

    ex = StatsExchange()
    got: list = []
    threads = [threading.Thread(target=lambda: got.append(ex.ask(5.0))) for _ in range(3)]
    for t in threads:
        t.start()
    builds = []
    while len(ex._waiting) < 3:  # noqa: SLF001 (the test waits until all three asked)
        threading.Event().wait(0.001)
    assert ex.pending
    ex.answer(lambda: builds.append(1) or {"n": 1})
    for t in threads:
        t.join(5)
    assert got == [{"n": 1}] * 3 and builds == [1] and not ex.pending
