"""Replicated cluster benchmark: a 3-broker Fabric cluster beside NATS JetStream R3, one run.

    python tools/bench_cluster.py                          # 1,000,000 × 100 B, e2e at 10,000/s, 20 kills
    python tools/bench_cluster.py --records 200000 --kills 5 --e2e-seconds 4
    python tools/bench_cluster.py --systems fabric --phases failover --kills 50 -v
    python tools/bench_cluster.py --scale-out              # issue 16: 1, 2, 3 brokers under one CPU share each

For each system, on loopback, in a fresh temporary directory: start 3 servers, then
- produce N records of 100 B with acks=all (RF 3, min ISR 2; NATS: a stream with 3 replicas)
  from one client with the bulk API, and consume them back;
- end to end at a fixed rate with acks=all, one record per send (``fabric perf e2e --acks all``);
- failover: under a steady keyed acks=all load, SIGKILL the leader of a partition (every other
  kill the controller's Raft leader too), time kill -> first acknowledged write sent after the
  kill, restart the victim, wait until in sync; ``--kills`` times.  Then every replica's disk is
  checked against the acknowledgements (``fabric/testing/cluster_check.py``; NATS: the stream
  read back).
Prints a table and writes tools/bench/results/cluster-latest.json.  ``FABRIC_BENCH_KEEP=1`` keeps
the directory (broker logs, ack logs).  See tools/bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.bench import deps  # noqa: E402
from tools.bench.failover import Failover  # noqa: E402

log = logging.getLogger("bench.cluster")
RESULTS = Path(__file__).resolve().parent / "bench" / "results"
PHASES = ("produce", "e2e", "failover")


def run_system(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from tools.bench.cluster_fabric import FabricCluster
    from tools.bench.cluster_nats import NatsCluster

    workdir = Path(tempfile.mkdtemp(prefix=f"fabric-bench-cluster-{name}-", dir=args.workdir))
    out: dict[str, Any] = {"name": name, "workdir": str(workdir)}
    system = FabricCluster(workdir, partitions=args.partitions) if name == "fabric" else NatsCluster(workdir)
    out["client"] = system.client
    try:
        system.start()
        if "produce" in args.phases:
            out["produce"] = system.produce(args.records, args.value_bytes).to_json()
            log.warning("%s produce: %.0f rec/s", name, out["produce"]["records_per_sec"])
            out["consume"] = system.consume(args.records).to_json()
            log.warning("%s consume: %.0f rec/s", name, out["consume"]["records_per_sec"])
        if "e2e" in args.phases and args.e2e_rate > 0:
            out["e2e"] = system.e2e(args.e2e_rate, args.e2e_seconds, args.value_bytes).to_json()
            log.warning("%s e2e: p50 %.2f p99 %.2f ms", name, out["e2e"]["latency_ms"]["p50"],
                        out["e2e"]["latency_ms"]["p99"])
        if "failover" in args.phases and args.kills > 0:
            run = Failover(workdir / "failover", kills=args.kills, rate=args.failover_rate, stall_s=args.stall_s,
                           restart_delay_s=args.restart_after)
            out["failover"] = system.failover(run)
            f = out["failover"]
            log.warning("%s failover: p50 %s max %s, stalls %d, check %s", name, f["failover_p50_s"],
                        f["failover_max_s"], f["stalls"], f.get("check", f["load"].get("check")))
    except Exception as e:  # noqa: BLE001 - a failed system is a row with its error
        log.exception("%s failed", name)
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        system.stop()
        if os.environ.get("FABRIC_BENCH_KEEP") == "1":
            log.warning("kept %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return out


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def render(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 180)
    t = Table(title=f"Replicated cluster: 3 servers, RF 3 acks=all, {args.records:,} × {args.value_bytes} B; "
                    f"e2e at {args.e2e_rate:,}/s; {args.kills} leader kills")
    for col in ("system", "produce rec/s", "consume rec/s", "e2e p50 ms", "e2e p99 ms", "failover p50 s",
                "failover max s", "stalls", "acked lost", "error"):
        t.add_column(col, justify="left" if col in ("system", "error") else "right")
    rows = {}
    for r in results:
        f = r.get("failover") or {}
        check = f.get("check") or (f.get("load") or {}).get("check") or {}
        e2e = (r.get("e2e") or {}).get("latency_ms", {})
        row = {"produce": (r.get("produce") or {}).get("records_per_sec"),
               "consume": (r.get("consume") or {}).get("records_per_sec"),
               "p50": e2e.get("p50"), "p99": e2e.get("p99"),
               "fp50": f.get("failover_p50_s"), "fmax": f.get("failover_max_s")}
        rows[r["name"]] = row
        t.add_row(r["name"], _fmt(row["produce"], ",.0f"), _fmt(row["consume"], ",.0f"), _fmt(row["p50"], ".2f"),
                  _fmt(row["p99"], ".2f"), _fmt(row["fp50"], ".2f"), _fmt(row["fmax"], ".2f"),
                  str(f.get("stalls", "—")), str(check.get("counts", {}).get("lost", "—")), r.get("error") or "")
    if "fabric" in rows and "nats" in rows:
        a, b = rows["fabric"], rows["nats"]
        ratio = lambda x, y, inv=False: "—" if not x or not y else f"{(y / x if inv else x / y):.1f}×"  # noqa: E731
        t.add_row("fabric vs nats", ratio(a["produce"], b["produce"]), ratio(a["consume"], b["consume"]),
                  ratio(a["p50"], b["p50"], True), ratio(a["p99"], b["p99"], True),
                  ratio(a["fp50"], b["fp50"], True), ratio(a["fmax"], b["fmax"], True), "", "",
                  "above 1×: fabric better")
    console.print(t)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", default="fabric,nats", help="comma-separated: fabric, nats (default both)")
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, from {', '.join(PHASES)}")
    p.add_argument("--records", type=int, default=1_000_000, help="records produced and consumed (default 1,000,000)")
    p.add_argument("--value-bytes", type=int, default=100)
    p.add_argument("--partitions", type=int, default=3, help="Fabric: partitions of the topics (default 3)")
    p.add_argument("--e2e-rate", type=int, default=10_000, help="records/s of the e2e test (0: skip)")
    p.add_argument("--e2e-seconds", type=float, default=8.0)
    p.add_argument("--kills", type=int, default=20, help="leader kills of the failover test (0: skip)")
    p.add_argument("--failover-rate", type=int, default=2000, help="records/s of the steady load while killing")
    p.add_argument("--stall-s", type=float, default=60.0, help="a kill not recovered within this is a stall")
    p.add_argument("--restart-after", type=float, metavar="S",
                   help="Fabric: restart the victim S seconds after the kill, during the failover "
                        "(default: once the failover is measured)")
    p.add_argument("--scale-out", action="store_true", help="issue 16's scale-out figures instead (Fabric only)")
    p.add_argument("--cpu", type=float, default=0.2, help="scale-out: CPUs per broker (cgroup cpu.max)")
    p.add_argument("--scale-partitions", type=int, default=6, help="scale-out: partitions of the topic")
    p.add_argument("--scale-clients", type=int, default=3, help="scale-out: producer processes at once")
    p.add_argument("--workdir", help="parent of the temporary directories")
    p.add_argument("--json", action="store_true", help="also print the JSON payload on stdout")
    p.add_argument("--json-out", type=Path, help="default tools/bench/results/cluster-latest.json")
    p.add_argument("--no-install", action="store_true")
    p.add_argument("-v", "--verbose", action="count", default=0)
    a = p.parse_args(argv)
    a.systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    a.phases = [s.strip() for s in a.phases.split(",") if s.strip()]
    if bad := [s for s in a.systems if s not in ("fabric", "nats")] + [x for x in a.phases if x not in PHASES]:
        p.error(f"unknown system or phase: {', '.join(bad)}")
    return a


def _sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _sigterm)
    args = parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr)
    if not args.no_install:
        deps.ensure(["fabric", *args.systems])
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "command": " ".join(sys.argv),
            "host": platform.node(), "cpus": os.cpu_count(), "loadavg_before": os.getloadavg()}
    if args.scale_out:
        from tools.bench import scale_out
        payload = meta | scale_out.run(args)
        name = "scale-out-latest.json"
    else:
        results = [run_system(s, args) for s in args.systems]
        payload = meta | {"args": {k: v for k, v in vars(args).items() if k not in ("json_out",)},
                          "results": results}
        render(results, args)
        name = "cluster-latest.json"
    payload["loadavg_after"] = os.getloadavg()
    out = args.json_out or RESULTS / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps(payload, default=str))
    print(f"JSON: {out}; load average before {meta['loadavg_before']}, after {payload['loadavg_after']}")
    return 1 if any(r.get("error") for r in payload.get("results", [])) else 0


if __name__ == "__main__":
    sys.exit(main())
