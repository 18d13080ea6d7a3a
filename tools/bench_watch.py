"""What watching a broker costs: broker CPU with the dashboard and a Prometheus scraper, and the
metrics' own cost on throughput against an earlier release.

    python tools/bench_watch.py                       # both parts (~3 min)
    python tools/bench_watch.py --part watch          # CPU with and without watchers
    python tools/bench_watch.py --part throughput --baseline 40c12b1 --runs 3

Part "watch": one broker with a steady load (a producer at --rate records/s and a consumer at
the tail, separate processes), its CPU time read from /proc over --seconds, first with nobody
watching, then with a dashboard polling at 1 Hz (the real ``Dashboard`` class, drawing into
nothing) and a Prometheus scrape every 5 s, then nobody again.  Goal: watching costs < 1% of a
core.

Part "throughput": ``fabric perf produce`` / ``consume`` (bulk APIs, 1,000,000 x 100 B) against
a broker of this tree and one of --baseline (a git ref, checked out into a temporary worktree),
alternating, --runs times each on fresh brokers; the medians and their ratio.  Goal: < 3% slower.

Prints a table; writes nothing.  Every process it starts is killed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fabric.client import Admin  # noqa: E402
from fabric.testing.processes import BrokerProcess, free_port  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def measure_cpu(pid: int, seconds: float) -> float:
    """Share of one core the process used over ``seconds``."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def perf(args: list[str], env: dict[str, str] | None = None) -> dict:
    out = subprocess.run([sys.executable, "-m", "fabric", "perf", *args, "--json"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"fabric perf {' '.join(args)} failed: {out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def part_watch(rate: int, seconds: float) -> None:
    from rich.console import Console

    from fabric.dashboard.app import Dashboard

    tmp = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    metrics_port = free_port()
    broker = BrokerProcess(tmp / "data", extra_args=["--metrics-port", str(metrics_port)]).start()
    load: list[subprocess.Popen] = []
    try:
        with Admin(broker.bootstrap) as admin:
            admin.create_topic("watch", partitions=4)
        records = int(rate * (seconds * 3 + 30))
        load.append(subprocess.Popen([sys.executable, "-m", "fabric", "perf", "produce", "--topic", "watch",
                                      "--records", str(records), "--throughput", str(rate), "-b", broker.bootstrap],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT))
        load.append(subprocess.Popen([sys.executable, "-m", "fabric", "consume", "watch", "--group", "watchers",
                                      "-b", broker.bootstrap, "--format", "plain"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT))
        time.sleep(5)  # let the load settle (group joined, producer at its rate)
        pid = broker.pid
        assert pid is not None
        quiet1 = measure_cpu(pid, seconds)
        stop = threading.Event()
        polls = [0, 0]

        def dashboard() -> None:
            dash = Dashboard(broker.bootstrap, interval_s=1.0)
            console = Console(file=open(os.devnull, "w"), width=160)
            while not stop.is_set():
                dash.poll()
                console.print(dash.frame())
                polls[0] += 1
                stop.wait(1.0)
            dash.close()

        def scraper() -> None:
            while not stop.is_set():
                urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
                polls[1] += 1
                stop.wait(5.0)

        threads = [threading.Thread(target=dashboard), threading.Thread(target=scraper)]
        for t in threads:
            t.start()
        time.sleep(2)
        watched = measure_cpu(pid, seconds)
        stop.set()
        for t in threads:
            t.join()
        quiet2 = measure_cpu(pid, seconds)
        quiet = (quiet1 + quiet2) / 2
        print(f"\nbroker CPU under {rate:,} rec/s produced and consumed, {seconds:.0f} s windows:")
        print(f"  nobody watching   {quiet1 * 100:6.2f}% and {quiet2 * 100:6.2f}% of a core (mean {quiet * 100:.2f}%)")
        print(f"  dashboard 1 Hz + Prometheus every 5 s   {watched * 100:6.2f}% "
              f"({polls[0]} dashboard polls, {polls[1]} scrapes)")
        print(f"  cost of watching  {(watched - quiet) * 100:+.2f}% of a core (goal < 1%)")
    finally:
        for p in load:
            p.kill()
            p.wait()
        broker.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def start_broker(tree: Path, data: Path) -> tuple[subprocess.Popen, str]:
    """A broker running the code of ``tree`` (PYTHONPATH), ready to serve."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fabric", "broker", "--data-dir", str(data), "--port", str(port)],
                            env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    bootstrap = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    with Admin(bootstrap, timeout_ms=500) as admin:
        while True:
            try:
                admin.api_versions()
                return proc, bootstrap
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    proc.kill()
                    raise RuntimeError(f"the broker of {tree} did not start") from None


def part_throughput(baseline: str, runs: int, records: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    base_tree = tmp / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_tree), baseline], check=True,
                   capture_output=True)
    results: dict[str, dict[str, list[float]]] = {"this tree": {"produce": [], "consume": []},
                                                  baseline: {"produce": [], "consume": []}}
    try:
        for run in range(runs):
            for label, tree in (("this tree", ROOT), (baseline, base_tree)):
                data = tmp / f"d-{run}-{label.replace(' ', '_')}"
                proc, bootstrap = start_broker(tree, data)
                try:
                    p = perf(["produce", "--topic", "t", "--records", str(records), "--batch", "1000",
                              "--partitions", "1", "-b", bootstrap])
                    c = perf(["consume", "--topic", "t", "--records", str(records), "--columnar",
                              "-b", bootstrap])
                    results[label]["produce"].append(p["records_per_sec"])
                    results[label]["consume"].append(c["records_per_sec"])
                    print(f"  run {run + 1} {label:>10}: produce {p['records_per_sec']:>12,.0f}  "
                          f"consume {c['records_per_sec']:>12,.0f} rec/s")
                finally:
                    proc.kill()
                    proc.wait()
        print(f"\nmedians of {runs} runs, {records:,} x 100 B, bulk APIs:")
        for what in ("produce", "consume"):
            ours = statistics.median(results["this tree"][what])
            theirs = statistics.median(results[baseline][what])
            print(f"  {what:8} this tree {ours:>12,.0f}   {baseline} {theirs:>12,.0f}   "
                  f"change {(ours / theirs - 1) * 100:+.1f}% (goal: no worse than -3%)")
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["watch", "throughput", "both"], default="both")
    ap.add_argument("--rate", type=int, default=20_000, help="records/s of the steady load (watch part)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each CPU window (watch part)")
    ap.add_argument("--baseline", default="40c12b1", help="git ref to compare throughput with")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--records", type=int, default=1_000_000)
    args = ap.parse_args()
    if args.part in ("watch", "both"):
        part_watch(args.rate, args.seconds)
    if args.part in ("throughput", "both"):
        part_throughput(args.baseline, args.runs, args.records)


if __name__ == "__main__":
    main()
