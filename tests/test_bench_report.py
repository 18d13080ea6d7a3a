"""The benchmark harness's judgement: goals, ratios and medians from figures, no servers.

The bench itself needs Redis and NATS and is run by hand (tools/bench/run.py); what is tested
here is the arithmetic that turns its figures into the table's claims, so a goal is never shown
as met on a missing or misread figure.
"""

from __future__ import annotations

import io
import math

from rich.console import Console

from tools.bench import report
from fabric.pacing import pace, stamp
from tools.bench.core import ConsumeResult, E2EResult, ProduceResult, SystemResult
from tools.bench.run import median_of


def _row(name: str, produce: float, consume: float | None, e2e_p50: float | None = None,
         e2e_rate: int = 10_000, error: str | None = None) -> SystemResult:
    lat = {"p50": 1.0, "p99": 2.0, "p999": 3.0, "max": 4.0, "count": 10}
    r = SystemResult(name=name, durability="fsync 1 s", client="c", latency_unit="u", error=error)
    r.produce = ProduceResult(records=1_000_000, value_bytes=100, seconds=1_000_000 / produce, latency_ms=lat)
    if consume is not None:
        r.consume = ConsumeResult(records=1_000_000, bytes=100_000_000, seconds=1_000_000 / consume)
    if e2e_p50 is not None:
        r.e2e = E2EResult(records=80_000, target_rate=e2e_rate, seconds=8.0,
                          latency_ms={"p50": e2e_p50, "p99": e2e_p50 * 4, "p999": 9.0, "max": 9.0, "count": 80_000})
        r.e2e_client = "perf e2e"
    return r


def _checks(judged: dict) -> dict[str, bool | None]:
    return {c["goal"]: c["met"] for c in judged["checks"]}


def test_goals_judge_each_figure_of_the_run() -> None:
    results = [_row("fabric", 1_500_000, 3_000_000, e2e_p50=0.8), _row("redis", 100_000, 700_000),
               _row("nats", 30_000, 20_000), _row("redis-benchmark", 300_000, None)]
    judged = report.goals(results, 1_000_000, 100, 10_000)
    checks = _checks(judged)
    assert judged["workload_matches"] is True
    assert checks["Fabric produce ≥ 1,000,000 rec/s"] is True
    assert checks["Fabric consume ≥ 2,000,000 rec/s"] is True
    assert checks["produce ≥ 10× redis"] is True  # 15×
    assert checks["consume ≥ 5× redis"] is False  # 3,000,000 / 700,000 = 4.3×
    assert checks["produce ≥ 10× nats"] is True
    assert checks["produce above redis-benchmark (C client)"] is True
    assert checks["end-to-end p50 ≤ 1 ms at 10,000/s"] is True
    assert checks["end-to-end p99 ≤ 5 ms at 10,000/s"] is True  # 3.2 ms


def test_a_missing_figure_is_never_a_met_goal() -> None:
    results = [_row("fabric", 1_500_000, 3_000_000), _row("redis", 1, 1, error="redis-server not found")]
    checks = _checks(report.goals(results, 100_000, 100, 10_000))
    assert checks["produce ≥ 10× redis"] is None
    assert checks["consume ≥ 5× nats"] is None
    assert checks["produce above redis-benchmark (C client)"] is None
    assert checks["end-to-end p50 ≤ 1 ms at 10,000/s"] is None  # e2e asked for, not measured


def test_e2e_at_another_rate_does_not_count_for_the_goal() -> None:
    results = [_row("fabric", 1_500_000, 3_000_000, e2e_p50=0.5, e2e_rate=1_000)]
    checks = _checks(report.goals(results, 1_000_000, 100, 1_000))
    assert checks["end-to-end p50 ≤ 1 ms at 10,000/s"] is None


def test_goals_report_the_workload_they_were_judged_on() -> None:
    assert report.goals([_row("fabric", 1e6, 2e6)], 100_000, 100, 0)["workload_matches"] is False


def test_e2e_table_shows_ratios_and_flags_a_producer_that_fell_behind() -> None:
    slow = _row("redis", 100_000, 500_000, e2e_p50=0.4)
    slow.e2e = E2EResult(records=30_000, target_rate=10_000, seconds=5.0, latency_ms=slow.e2e.latency_ms)
    out = io.StringIO()
    report.render_e2e(Console(file=out, width=200), [_row("fabric", 1e6, 2e6, e2e_p50=0.8), slow], 10_000, 3)
    text = out.getvalue()
    assert "0.5× / 0.5×" in text  # redis's latency ÷ Fabric's
    assert "6,000*" in text and "could not keep up" in text


def test_fabric_perf_json_is_read_as_an_e2e_result() -> None:
    obj = {"test": "e2e", "records": 80_000, "seconds": 8.01, "target_rate": 10_000,
           "latency_ms": {"p50": 0.8, "p99": 2.0, "p999": 3.5, "max": 6.0, "samples": 80_000}}
    e2e = E2EResult.from_json(obj, 1)
    assert e2e.target_rate == 10_000 and e2e.latency_ms["count"] == 80_000
    assert math.isclose(e2e.records_per_sec, 80_000 / 8.01)


def test_median_row_takes_the_median_e2e_run() -> None:
    runs = [_row("fabric", 1e6, 2e6, e2e_p50=p) for p in (0.9, 0.7, 1.4)]
    assert median_of(runs).e2e.latency_ms["p50"] == 0.9


def test_stamped_values_carry_their_send_time() -> None:
    make, age_ms = stamp(100)
    value = make()
    assert len(value) == 100 and value[:20].isdigit()
    assert 0 <= age_ms(value) < 1_000
    assert list(pace(1_000_000, 5)) == [0, 1, 2, 3, 4]
