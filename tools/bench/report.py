"""Render a run as one rich table (plus definitions) and as JSON.

The table is the product: one row per system, failed systems included with their error, and
Fabric's ratio to each peer (Fabric ÷ peer: above 1 means Fabric is faster).
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


def payload(results: list[SystemResult], runs: dict[str, list[SystemResult]], workload: dict[str, Any]
            ) -> dict[str, Any]:
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": host_info(),
        "workload": workload,
        "latency_definition": LATENCY_DEFINITION,
        "results": [r.to_json() for r in results],
        "fabric_ratio": ratios(results),
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
