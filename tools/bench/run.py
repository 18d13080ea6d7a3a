"""Fabric vs Redis Streams vs NATS JetStream, side by side, from one command.

    python tools/bench/run.py                       # 1,000,000 × 100 B against all three
    python tools/bench/run.py --quick               # 100,000 records
    python tools/bench/run.py --systems redis,nats --records 200000 --repeat 3
    python tools/bench/run.py --scaling --quick     # Fabric-only scaling figures

For each system: install what is missing, start its server(s) on free loopback ports with data in
a temporary directory, produce N records then consume them with the system's best Python client
(each in a child process of its own), then time records end to end at 10,000 a second, stop the
servers (also on Ctrl-C) and remove the data.  Prints two tables (throughput, end-to-end
latency) and the goals of issue 3, and writes tools/bench/results/latest.json.  See README.md
beside this file.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tools.bench` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools.bench import deps
from tools.bench.core import System, SystemResult
from tools.bench.launch import GC_ENV, GC_POLICIES
from tools.bench.systems import load_all

log = logging.getLogger("bench")

HERE = Path(__file__).resolve().parent
DEFAULT_SYSTEMS = "fabric,fabric-per-record,redis,nats"
FULL_RECORDS = 1_000_000
QUICK_RECORDS = 100_000
E2E_RATE = 10_000  # records per second of the end-to-end test
E2E_SECONDS, QUICK_E2E_SECONDS = 8.0, 3.0
CONSOLE_WIDTH_PIPE = 180  # rich's 80 columns would wrap the table when stdout is a file or pipe


def run_system(cls: type[System], records: int, value_bytes: int, workroot: str | None,
               e2e_rate: int = 0, e2e_seconds: float = 0.0) -> SystemResult:
    """start → produce → consume → e2e → stop, in a fresh temp dir; failures become the row's
    error.  ``e2e_rate`` 0 skips the end-to-end test."""
    system = cls()
    result = SystemResult(name=system.name, durability=system.durability, client=system.client,
                          latency_unit=system.latency_unit, reference=system.reference,
                          e2e_client=system.e2e_client)
    workdir = Path(tempfile.mkdtemp(prefix=f"fabric-bench-{cls.name}-", dir=workroot))
    try:
        system.start(workdir)
        result.versions = _versions(system)
        result.produce = system.produce(records, value_bytes)
        result.consume = system.consume(records)
        if e2e_rate > 0:
            result.e2e = system.e2e(e2e_rate, e2e_seconds, value_bytes)
    except Exception as e:
        log.debug("%s failed", cls.name, exc_info=True)
        result.error = f"{type(e).__name__}: {e}"
    finally:
        system.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def _versions(system: System) -> dict[str, str]:
    try:
        return system.versions()
    except Exception as e:  # noqa: BLE001 - versions are for the record, never worth a failed row
        log.warning("%s: versions unknown: %s", system.name, e)
        return {}


def median_of(runs: list[SystemResult]) -> SystemResult:
    """One row from repeated runs: the median produce run's figures, the median consume run's,
    the end-to-end run with the median p50."""
    ok = [r for r in runs if not r.error]
    if not ok:
        return runs[-1]
    produced = sorted((r.produce for r in ok if r.produce), key=lambda p: p.records_per_sec)
    consumed = sorted((r.consume for r in ok if r.consume), key=lambda c: c.records_per_sec)
    timed = sorted((r.e2e for r in ok if r.e2e), key=lambda e: e.latency_ms["p50"])
    return dataclasses.replace(
        ok[0],
        produce=produced[(len(produced) - 1) // 2] if produced else None,
        consume=consumed[(len(consumed) - 1) // 2] if consumed else None,
        e2e=timed[(len(timed) - 1) // 2] if timed else None,
    )


def parse_args(argv: list[str] | None, known: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", default=DEFAULT_SYSTEMS,
                   help=f"comma-separated, from: {', '.join(known)} (default {DEFAULT_SYSTEMS})")
    p.add_argument("--records", type=int, help=f"records per run (default {FULL_RECORDS:,})")
    p.add_argument("--value-bytes", type=int, default=100, help="bytes per record value (default 100)")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_RECORDS:,} records; smaller scaling runs")
    p.add_argument("--repeat", type=int, default=1, help="runs per system, fresh server each; rows show medians")
    p.add_argument("--no-reference", action="store_true", help="skip reference rows (redis-benchmark)")
    p.add_argument("--e2e-rate", type=int, default=E2E_RATE,
                   help=f"records/s of the end-to-end latency test (default {E2E_RATE:,}; 0: skip it)")
    p.add_argument("--e2e-seconds", type=float,
                   help=f"length of the end-to-end test (default {E2E_SECONDS:g}, quick {QUICK_E2E_SECONDS:g})")
    p.add_argument("--client-gc", choices=GC_POLICIES, default="default",
                   help="CPython GC policy for every Python client, Fabric's included (see launch.py)")
    p.add_argument("--nats-consume", choices=["pull", "ordered"], default="pull",
                   help="NATS reader: pull fetch(1000) (default) or ordered push consumer (see README)")
    p.add_argument("--fabric-cmd", help="command prefix that runs Fabric's CLI (default: the repo's fabric.cli)")
    p.add_argument("--workdir", help="parent of the temporary data directories (default: system temp)")
    p.add_argument("--json-out", type=Path, help="default tools/bench/results/latest.json "
                   "(scaling-latest.json with --scaling)")
    p.add_argument("--no-install", action="store_true", help="do not install missing packages")
    p.add_argument("--scaling", action="store_true", help="Fabric scaling figures instead of the side-by-side")
    p.add_argument("--partitions", default="1,10,100,1000", help="scaling: partition counts")
    p.add_argument("--big-log-gb", type=float, help="scaling: size of the large log (default 5, quick 0.5)")
    p.add_argument("--big-record-bytes", type=int, default=1000, help="scaling: record size of the large log")
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v: progress logs, -vv: debug")
    a = p.parse_args(argv)
    a.records = a.records or (QUICK_RECORDS if a.quick else FULL_RECORDS)
    a.e2e_seconds = a.e2e_seconds or (QUICK_E2E_SECONDS if a.quick else E2E_SECONDS)
    if a.records <= 0 or a.value_bytes <= 0 or a.repeat <= 0 or a.e2e_seconds <= 0:
        p.error("--records, --value-bytes, --repeat and --e2e-seconds must be positive")
    if a.e2e_rate < 0:
        p.error("--e2e-rate must be 0 (skip) or positive")
    a.systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    unknown = [s for s in a.systems if s not in known]
    if unknown:
        p.error(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return a


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C does, so every ``finally`` stops its servers."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    registry = load_all()
    args = parse_args(argv, sorted(registry))
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr)
    os.environ[GC_ENV] = args.client_gc
    registry["nats"].consume_mode = args.nats_consume  # type: ignore[attr-defined]
    if args.fabric_cmd:
        os.environ["FABRIC_BENCH_CMD"] = args.fabric_cmd

    names = list(args.systems)
    if not args.no_reference and not args.scaling:
        names += [n for n, c in registry.items() if c.reference_for in args.systems and n not in names]
    if not args.no_install:
        deps.ensure(names)
    from rich.console import Console  # installed by deps.ensure if it was missing

    console = Console(highlight=False, width=None if sys.stdout.isatty() else CONSOLE_WIDTH_PIPE)

    if args.scaling:
        from tools.bench import scaling
        return scaling.main(args, console)

    from tools.bench import report

    if warning := report.busy_warning():
        console.print(f"[yellow]warning: {warning}[/yellow]")
    runs: dict[str, list[SystemResult]] = {}
    interrupted = False
    try:
        for name in names:
            for i in range(args.repeat):
                console.print(f"[bold]{name}[/bold]: run {i + 1}/{args.repeat}, "
                              f"{args.records:,} records × {args.value_bytes} B …")
                r = run_system(registry[name], args.records, args.value_bytes, args.workdir,
                               args.e2e_rate, args.e2e_seconds)
                runs.setdefault(name, []).append(r)
                console.print("  " + (f"[red]failed[/red]: {r.error}" if r.error else
                              f"produce {r.produce.records_per_sec:,.0f} rec/s"
                              + (f", consume {r.consume.records_per_sec:,.0f} rec/s" if r.consume else "")
                              + (f", end-to-end p50 {r.e2e.latency_ms['p50']:.2f} ms" if r.e2e else "")))
    except KeyboardInterrupt:
        interrupted = True
        console.print("[yellow]interrupted: servers stopped and data removed[/yellow]")
    results = [median_of(rs) for rs in runs.values()]
    if not results:
        return 130 if interrupted else 1
    report.render(console, results, args.records, args.value_bytes, args.client_gc)
    report.render_e2e(console, results, args.e2e_rate, args.e2e_seconds)
    report.render_goals(console, report.goals(results, args.records, args.value_bytes, args.e2e_rate))
    out = args.json_out or HERE / "results" / "latest.json"
    report.write_json(out, report.payload(results, runs, {
        "records": args.records, "value_bytes": args.value_bytes, "repeat": args.repeat,
        "client_gc": args.client_gc, "nats_consume": args.nats_consume, "systems": names,
        "e2e_rate": args.e2e_rate, "e2e_seconds": args.e2e_seconds, "interrupted": interrupted},
        report.goals(results, args.records, args.value_bytes, args.e2e_rate)))
    console.print(f"JSON: {out}")
    if warning := report.busy_warning():
        console.print(f"[yellow]warning: {warning}[/yellow]")
    if interrupted:
        return 130
    return 0 if all(not r.error for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
