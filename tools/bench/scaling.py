"""Fabric scaling figures (``run.py --scaling``): what changes as partitions and the log grow.

1. Partitions: produce then consume the same N records into topics of 1, 10, 100, 1000
   partitions (``fabric perf produce`` spreads unkeyed records over all partitions).
2. Large log: fill one partition to ``--big-log-gb`` (5 GB; 0.5 GB with --quick) while a thread
   samples the broker's VmRSS (/proc/PID/status) and the data dir's size every second: memory
   should stay flat as the log grows (the log lives on disk and in the page cache, not the heap).
3. Position: read N records from the start of that log, then N from its tail
   (``--start-offset``): with a sparse offset index both should be equally fast.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tools.bench import report
from tools.bench.procs import rss_kb
from tools.bench.systems.fabric_system import FabricSystem

log = logging.getLogger("bench.scaling")

SAMPLE_INTERVAL_S = 1.0  # RSS sampling period while the big log grows
SAMPLES_SHOWN = 10  # rows of the RSS table (evenly spaced over the samples)
QUICK_BIG_LOG_GB = 0.5
FULL_BIG_LOG_GB = 5.0
GB = 1_000_000_000


class RssSampler(threading.Thread):
    """Samples (seconds, broker RSS KiB, data dir bytes) until stopped."""

    def __init__(self, system: FabricSystem) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.system = system
        self.samples: list[dict[str, float]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        pid = self.system.broker_pid()
        while True:
            rss = rss_kb(pid)
            if rss is None:
                return
            self.samples.append({"seconds": time.monotonic() - started, "rss_kb": rss,
                                 "log_bytes": self.system.data_bytes()})
            if self._stop_event.wait(SAMPLE_INTERVAL_S):
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _partitions(system: FabricSystem, counts: list[int], records: int, value_bytes: int,
                console: Console, rows: list[dict[str, Any]]) -> None:
    for count in counts:
        topic = f"scale-p{count}"
        console.print(f"partitions={count}: {records:,} records …")
        system.create_topic(topic, count)
        prod = system.perf_produce(topic, records, value_bytes)
        cons = system.perf_consume(topic, records)
        rows.append({"partitions": count, "produce": prod, "consume": cons})


def _big_log(system: FabricSystem, gb: float, record_bytes: int, read_records: int,
             console: Console, big: dict[str, Any]) -> None:
    """Fills ``big`` step by step, so a failure keeps what was measured before it."""
    total = int(gb * GB) // record_bytes
    read_records = min(read_records, total)
    system.create_topic("big", 1)
    console.print(f"large log: {total:,} records × {record_bytes} B ({gb:g} GB), sampling broker RSS …")
    big.update(records=total, record_bytes=record_bytes)
    sampler = RssSampler(system)
    sampler.start()
    try:
        big["fill"] = system.perf_produce("big", total, record_bytes)
    finally:
        sampler.stop()
        big["rss_samples"] = sampler.samples
    console.print(f"read {read_records:,} from the start, then from the tail …")
    big["read_head"] = system.perf_consume("big", read_records)
    big["read_tail"] = system.perf_consume("big", read_records, start_offset=total - read_records)


def _render(console: Console, out: dict[str, Any]) -> None:
    if out.get("partitions"):
        _render_partitions(console, out["partitions"])
    if out.get("big_log", {}).get("rss_samples") is not None:
        _render_big_log(console, out["big_log"])


def _render_partitions(console: Console, rows: list[dict[str, Any]]) -> None:
    t = Table(title="Fabric: throughput by partition count")
    for h in ("partitions", "produce rec/s", "produce MB/s", "consume rec/s", "consume MB/s", "p99 ms"):
        t.add_column(h, justify="right")
    for r in rows:
        p, c = r["produce"], r["consume"]
        t.add_row(str(r["partitions"]), f"{p['records_per_sec']:,.0f}", f"{p['mb_per_sec']:.1f}",
                  f"{c['records_per_sec']:,.0f}", f"{c['mb_per_sec']:.1f}",
                  f"{p.get('latency_ms', {}).get('p99', float('nan')):.1f}")
    console.print(t)


def _render_big_log(console: Console, big: dict[str, Any]) -> None:
    t = Table(title=f"Fabric: reading a {big['records']:,}-record log")
    for h in ("where", "records", "rec/s", "MB/s"):
        t.add_column(h, justify="right")
    for label, key in (("fill (produce)", "fill"), ("from start", "read_head"), ("from tail", "read_tail")):
        if (r := big.get(key)) is None:
            t.add_row(label, "—", "not measured", "—")
            continue
        t.add_row(label, f"{r['records']:,}", f"{r['records_per_sec']:,.0f}", f"{r['mb_per_sec']:.1f}")
    console.print(t)
    samples = big["rss_samples"]
    step = max(1, len(samples) // SAMPLES_SHOWN)
    t = Table(title="Fabric broker memory while the log grows (VmRSS)")
    for h in ("seconds", "log on disk GB", "broker RSS MB"):
        t.add_column(h, justify="right")
    for s in samples[::step] + ([samples[-1]] if samples and (len(samples) - 1) % step else []):
        t.add_row(f"{s['seconds']:.0f}", f"{s['log_bytes'] / GB:.2f}", f"{s['rss_kb'] / 1024:.0f}")
    console.print(t)


def main(args: argparse.Namespace, console: Console) -> int:
    counts = [int(x) for x in args.partitions.split(",") if x.strip()]
    gb = args.big_log_gb or (QUICK_BIG_LOG_GB if args.quick else FULL_BIG_LOG_GB)
    out: dict[str, Any] = {"workload": {"records": args.records, "value_bytes": args.value_bytes,
                                        "partitions": counts, "big_log_gb": gb,
                                        "big_record_bytes": args.big_record_bytes,
                                        "client_gc": args.client_gc},
                           "host": report.host_info()}
    system = FabricSystem()
    workdir = Path(tempfile.mkdtemp(prefix="fabric-bench-scaling-", dir=args.workdir))
    status = 0
    try:
        system.start(workdir)
        _partitions(system, counts, args.records, args.value_bytes, console, out.setdefault("partitions", []))
        _big_log(system, gb, args.big_record_bytes, args.records, console, out.setdefault("big_log", {}))
    except Exception as e:
        log.debug("scaling failed", exc_info=True)
        out["error"] = f"{type(e).__name__}: {e}"
        console.print(f"[red]scaling run failed:[/red] {out['error']}")
        status = 1
    except KeyboardInterrupt:
        out["error"] = "interrupted"
        status = 130
    finally:
        system.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    _render(console, out)
    path = args.json_out or Path(__file__).resolve().parent / "results" / "scaling-latest.json"
    report.write_json(path, out)
    console.print(f"JSON: {path}")
    return status
