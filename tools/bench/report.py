"""Render a run as rich tables (plus definitions) and as JSON.

The tables are the product: one row per system, failed systems included with their error, and
Fabric's ratio to each peer (above 1 always means Fabric is better); then the goals of issue 3,
each met or not, from this run's figures only.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tools.bench.core import SystemResult

GOAL_RECORDS, GOAL_VALUE_BYTES, GOAL_E2E_RATE = 1_000_000, 100, 10_000  # the goals' workload
GOAL_PRODUCE, GOAL_CONSUME = 1_000_000, 2_000_000  # records/s, Fabric bulk APIs, one process each
GOAL_PRODUCE_RATIO, GOAL_CONSUME_RATIO = 10.0, 5.0  # Fabric ÷ each peer through its Python client
GOAL_E2E_P50_MS, GOAL_E2E_P99_MS = 1.0, 5.0
E2E_KEPT_UP = 0.98  # an e2e row received at least this share of the target rate
PEERS = ("redis", "nats")
NATIVE_REFERENCE = "redis-benchmark"

FABRIC = "fabric"
BUSY_LOAD_PER_CPU = 0.5  # 1-minute load average per CPU above which a run is flagged as noisy
LATENCY_DEFINITION = (
    "Produce latency = the time one acknowledgement takes as the client sees it: from handing "
    "the client library the record(s) of one acknowledgement unit to holding that acknowledgement. "
    "The unit differs by system, as each client batches differently (see 'latency unit')."
)


def _num(x: float | None, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:,.{digits}f}"


def _ms(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "—"
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def ratios(results: list[SystemResult]) -> dict[str, dict[str, float | None]]:
    """Fabric ÷ peer for produce and consume rec/s, per peer; empty if Fabric has no figures."""
    fabric = next((r for r in results if r.name == FABRIC and not r.error), None)
    if fabric is None:
        return {}
    out: dict[str, dict[str, float | None]] = {}
    for r in results:
        if r.name.startswith(FABRIC) or r.error:
            continue
        prod = cons = None
        if fabric.produce and r.produce:
            prod = fabric.produce.records_per_sec / r.produce.records_per_sec
        if fabric.consume and r.consume:
            cons = fabric.consume.records_per_sec / r.consume.records_per_sec
        out[r.name] = {"produce": prod, "consume": cons}
    return out


def render(console: Console, results: list[SystemResult], records: int, value_bytes: int,
           client_gc: str) -> None:
    table = Table(title=f"{records:,} records × {value_bytes} B values, one client, loopback",
                  caption=f"MB = 10^6 bytes of record values; Python clients' GC: {client_gc}")
    for header, justify in [("system", "left"), ("durability (fsync policy)", "left"),
                            ("produce rec/s", "right"), ("produce MB/s", "right"),
                            ("consume rec/s", "right"), ("consume MB/s", "right"),
                            ("p50 ms", "right"), ("p99 ms", "right"), ("p99.9 ms", "right"),
                            ("max ms", "right"), ("Fabric ÷ this\nproduce / consume", "right")]:
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    rel = ratios(results)
    for r in results:
        name = f"{r.name} (reference)" if r.reference else r.name
        if r.error:
            table.add_row(f"[red]{name}[/red]", r.durability, "[red]failed[/red]",
                          *["—"] * 8)
            continue
        p, c = r.produce, r.consume
        lat = p.latency_ms if p else {}
        ratio = rel.get(r.name)
        ratio_text = "—" if not ratio else " / ".join(
            "—" if v is None else f"{v:.2f}×" for v in (ratio["produce"], ratio["consume"]))
        table.add_row(
            name, r.durability,
            _num(p.records_per_sec if p else None), _num(p.mb_per_sec if p else None, 1),
            _num(c.records_per_sec if c else None), _num(c.mb_per_sec if c else None, 1),
            _ms(lat.get("p50")), _ms(lat.get("p99")), _ms(lat.get("p999")), _ms(lat.get("max")),
            ratio_text,
        )
    console.print(table)
    console.print(LATENCY_DEFINITION, style="dim")
    for r in results:
        count = int(r.produce.latency_ms.get("count", 0)) if r.produce else 0
        samples = f" ({count:,} samples)" if count else ""
        console.print(f"  [bold]{r.name}[/bold] latency unit: {r.latency_unit}{samples}; "
                      f"client: {r.client}", style="dim", highlight=False)
    console.print("  p99.9 from fewer than 1,000 samples is the max.", style="dim")
    for r in results:
        if r.error:
            console.print(f"[red]{r.name} failed:[/red] {r.error}", highlight=False)


def render_e2e(console: Console, results: list[SystemResult], rate: int, seconds: float) -> None:
    """The end-to-end table: one row per system that has the test."""
    rows = [r for r in results if r.e2e or (r.error and r.e2e_client)]
    if not rows or rate <= 0:
        return
    table = Table(title=f"End-to-end latency at {rate:,} records/s for {seconds:g} s: send call → "
                        f"record in the consumer's hands",
                  caption="one record per send call; producer and consumer in one client process")
    for header in ("system", "received rec/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms",
                   "this ÷ Fabric\np50 / p99"):
        table.add_column(header, justify="left" if header == "system" else "right")
    fabric = next((r.e2e for r in results if r.name == FABRIC and r.e2e), None)
    behind = False
    for r in rows:
        if not r.e2e:
            table.add_row(f"[red]{r.name}[/red]", "[red]failed[/red]", *["—"] * 5)
            continue
        lat = r.e2e.latency_ms
        ratio = "—"
        if fabric and r.name != FABRIC and fabric.latency_ms["p50"] > 0 and fabric.latency_ms["p99"] > 0:
            ratio = (f"{lat['p50'] / fabric.latency_ms['p50']:.1f}× / "
                     f"{lat['p99'] / fabric.latency_ms['p99']:.1f}×")
        received = _num(r.e2e.records_per_sec)
        if r.e2e.records_per_sec < E2E_KEPT_UP * rate:
            received, behind = f"[yellow]{received}*[/yellow]", True
        table.add_row(r.name, received, _ms(lat["p50"]), _ms(lat["p99"]),
                      _ms(lat["p999"]), _ms(lat["max"]), ratio)
    console.print(table)
    for r in rows:
        console.print(f"  [bold]{r.name}[/bold]: {r.e2e_client}", style="dim", highlight=False)
    console.print("  this ÷ Fabric above 1× means Fabric's latency is lower.", style="dim")
    if behind:
        console.print(f"  * below {E2E_KEPT_UP:.0%} of the target rate: the producer could not keep "
                      "up, so records waited before their send call, where no latency is counted.",
                      style="yellow")


def goals(results: list[SystemResult], records: int, value_bytes: int, e2e_rate: int) -> dict[str, Any]:
    """Issue 3's goals, each judged on this run's figures: ``met`` is None where a figure is
    missing (a system failed or was not run), so nothing is claimed that was not measured."""
    by_name = {r.name: r for r in results if not r.error}
    fabric = by_name.get(FABRIC)
    produce = fabric.produce.records_per_sec if fabric and fabric.produce else None
    consume = fabric.consume.records_per_sec if fabric and fabric.consume else None
    rel = ratios(results)
    checks: list[dict[str, Any]] = [
        _check(f"Fabric produce ≥ {GOAL_PRODUCE:,} rec/s", produce, GOAL_PRODUCE, f"{produce or 0:,.0f} rec/s"),
        _check(f"Fabric consume ≥ {GOAL_CONSUME:,} rec/s", consume, GOAL_CONSUME, f"{consume or 0:,.0f} rec/s"),
    ]
    for peer in PEERS:
        ratio = rel.get(peer, {})
        checks.append(_check(f"produce ≥ {GOAL_PRODUCE_RATIO:g}× {peer}", ratio.get("produce"),
                             GOAL_PRODUCE_RATIO, f"{ratio.get('produce') or 0:.2f}×"))
        checks.append(_check(f"consume ≥ {GOAL_CONSUME_RATIO:g}× {peer}", ratio.get("consume"),
                             GOAL_CONSUME_RATIO, f"{ratio.get('consume') or 0:.2f}×"))
    native = rel.get(NATIVE_REFERENCE, {}).get("produce")
    checks.append(_check(f"produce above {NATIVE_REFERENCE} (C client)", native, 1.0, f"{native or 0:.2f}×",
                         strictly=True))
    e2e = fabric.e2e if fabric and fabric.e2e else None
    if e2e_rate == GOAL_E2E_RATE or e2e:
        p50 = e2e.latency_ms["p50"] if e2e and e2e.target_rate == GOAL_E2E_RATE else None
        p99 = e2e.latency_ms["p99"] if e2e and e2e.target_rate == GOAL_E2E_RATE else None
        checks.append(_check(f"end-to-end p50 ≤ {GOAL_E2E_P50_MS:g} ms at {GOAL_E2E_RATE:,}/s", p50,
                             GOAL_E2E_P50_MS, f"{p50 or 0:.2f} ms", at_most=True))
        checks.append(_check(f"end-to-end p99 ≤ {GOAL_E2E_P99_MS:g} ms at {GOAL_E2E_RATE:,}/s", p99,
                             GOAL_E2E_P99_MS, f"{p99 or 0:.2f} ms", at_most=True))
    return {"workload_matches": (records, value_bytes) == (GOAL_RECORDS, GOAL_VALUE_BYTES),
            "checks": checks}


def _check(goal: str, value: float | None, target: float, shown: str, *, at_most: bool = False,
           strictly: bool = False) -> dict[str, Any]:
    if value is None or math.isnan(value):
        return {"goal": goal, "measured": None, "met": None}
    met = value <= target if at_most else value > target if strictly else value >= target
    return {"goal": goal, "measured": shown, "met": met}


def render_goals(console: Console, judged: dict[str, Any]) -> None:
    table = Table(title="Goals (issue 3), judged on this run")
    table.add_column("goal")
    table.add_column("this run", justify="right")
    table.add_column("met", justify="center")
    for c in judged["checks"]:
        mark = "—" if c["met"] is None else "[green]yes[/green]" if c["met"] else "[red]no[/red]"
        table.add_row(c["goal"], c["measured"] or "not measured", mark)
    console.print(table)
    if not judged["workload_matches"]:
        console.print(f"  The goals are stated for {GOAL_RECORDS:,} records × {GOAL_VALUE_BYTES} B; "
                      "this run's workload differs.", style="yellow")


def host_info() -> dict[str, Any]:
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "machine": platform.machine(),
            "loadavg_1m_at_end": round(os.getloadavg()[0], 2)}


def busy_warning() -> str | None:
    """A warning when other work is running: every figure here is CPU-bound on a small machine."""
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load > BUSY_LOAD_PER_CPU * cpus:
        return (f"load average {load:.2f} on {cpus} CPUs: other processes are running, "
                f"figures will be low and noisy (use --repeat)")
    return None


def payload(results: list[SystemResult], runs: dict[str, list[SystemResult]], workload: dict[str, Any],
            judged: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": host_info(),
        "workload": workload,
        "latency_definition": LATENCY_DEFINITION,
        "results": [r.to_json() for r in results],
        "fabric_ratio": ratios(results),
        "goals": judged,
        "runs": {name: [r.to_json() for r in rs] for name, rs in runs.items()},
    }


def write_json(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_finite(obj), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)


def _finite(obj: Any) -> Any:
    """NaN (a figure a system does not report) becomes null: JSON has no NaN."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
