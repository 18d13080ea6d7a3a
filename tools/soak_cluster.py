"""A long run of a 3-broker cluster under steady load: does anything change that should not?

    python tools/soak_cluster.py                      # 10 minutes, 2,000 keyed acks=all records/s
    python tools/soak_cluster.py --minutes 2 --rate 5000 --json

Issue 15's goal: no spurious leader change in a 10-minute run under load on this noisy 2-core
machine, with the default timeouts.  Nothing is killed here: every controller election, every
partition leader change, every broker fenced and every ISR shrink seen during the run is
spurious, and the run fails (exit 1) if there is one, or if the checker finds an acknowledged
record lost, reordered or divergent afterwards.

What runs: three broker processes (`fabric.testing.cluster.ClusterProcesses`, default settings),
a topic of ``--partitions`` partitions (RF 3, ``min_insync_replicas`` 2), the failover
benchmark's keyed ``acks=all`` producer (a child process writing every acknowledgement to an
ack log) and a consumer-group member reading the topic (a second child: group heartbeats and
fetches are load too).  Every ``--sample-s`` seconds the tool asks a broker for
``cluster_status`` and ``metadata`` and records the controller's leader and term, each
partition's leader, epoch and ISR, and fenced brokers; it also records the machine's load
average, so a report says how noisy the run was.  At the end the load stops, the brokers are
stopped, and ``fabric.testing.cluster_check`` judges the ack log against every replica's files.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fabric.client.admin import Admin  # noqa: E402
from fabric.testing.cluster import ClusterProcesses, wait_until  # noqa: E402
from fabric.testing.cluster_check import check, read_acks, read_data_dir  # noqa: E402

log = logging.getLogger("soak")
TOPIC = "soak"
GROUP = "soak-readers"


@dataclass
class Changes:
    """What changed between samples (each is spurious: nothing was killed)."""

    samples: int = 0
    unanswered: int = 0  # samples no broker answered (a stalled cluster)
    controller_leaders: list[tuple[float, int | None, int]] = field(default_factory=list)  # (t, leader, term)
    partition_leaders: list[tuple[float, int, int, int]] = field(default_factory=list)  # (t, partition, leader, epoch)
    isr_shrinks: list[tuple[float, int, list[int]]] = field(default_factory=list)  # (t, partition, isr)
    fenced: list[tuple[float, int]] = field(default_factory=list)  # (t, broker)
    load_averages: list[float] = field(default_factory=list)
    _controller: tuple[int | None, int] | None = None
    _leaders: dict[int, tuple[int, int]] = field(default_factory=dict)
    _isr: dict[int, int] = field(default_factory=dict)

    def observe(self, t: float, status: dict[str, Any], partitions: list[dict[str, Any]]) -> None:
        self.samples += 1
        ctl = status.get("controller") or {}
        now_ctl = (ctl.get("leader_id"), int(ctl.get("term", -1)))
        if self._controller is not None and now_ctl != self._controller:
            self.controller_leaders.append((t, *now_ctl))
        self._controller = now_ctl
        for b in status.get("brokers", ()):
            if b.get("fenced"):
                self.fenced.append((t, b["node_id"]))
        for p in partitions:
            n = p["partition"]
            lead = (p["leader"], p.get("leader_epoch", 0))
            if n in self._leaders and lead != self._leaders[n]:
                self.partition_leaders.append((t, n, *lead))
            self._leaders[n] = lead
            isr = list(p.get("isr") or [])
            if isr and n in self._isr and len(isr) < self._isr[n]:
                self.isr_shrinks.append((t, n, isr))
            if isr:
                self._isr[n] = len(isr)

    @property
    def spurious(self) -> int:
        return len(self.controller_leaders) + len(self.partition_leaders) + len(self.isr_shrinks) + len(self.fenced)


def _sample(bootstrap: str, changes: Changes, t: float) -> None:
    try:
        with Admin(bootstrap, timeout_ms=5000) as admin:
            status = admin.cluster_status()
            meta = admin.metadata([TOPIC])
    except Exception as exc:  # noqa: BLE001 - an unanswered sample is a finding, not a crash
        changes.unanswered += 1
        log.warning("sample at %.0f s: no answer (%s)", t, exc)
        return
    topic = next((x for x in meta.get("topics", ()) if x.get("name") == TOPIC), {})
    changes.observe(t, status, list(topic.get("partitions") or ()))
    changes.load_averages.append(os.getloadavg()[0])


def _child(argv: list[str], out: Path, keep_stdout: bool = True) -> subprocess.Popen:
    with open(out, "wb") as f:  # (the child keeps its own descriptor)
        return subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=f if keep_stdout else subprocess.DEVNULL,
                                stderr=f, start_new_session=True)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    cluster = ClusterProcesses(work / "cluster", 3)
    load = reader = None
    changes = Changes()
    try:
        cluster.start()
        wait_until(cluster.registered, 60, "every broker registered")
        bootstrap = cluster.bootstrap
        with Admin(bootstrap) as admin:
            admin.create_topic(TOPIC, partitions=args.partitions, replication_factor=3,
                               configs={"min_insync_replicas": 2})
        wait_until(lambda: cluster.in_sync(), 60, "the topic in sync")
        ack_log, stop_file = work / "acks.jsonl", work / "stop"
        load = _child(["-m", "tools.bench.launch", "tools.bench.failover_load", "--bootstrap", bootstrap,
                       "--topic", TOPIC, "--rate", str(args.rate), "--ack-log", str(ack_log),
                       "--stop-file", str(stop_file)], work / "load.out")
        reader = _child(["-m", "fabric", "consume", TOPIC, "--group", GROUP, "--from-beginning",
                         "-b", bootstrap], work / "reader.err", keep_stdout=False)
        start = time.monotonic()
        end = start + args.minutes * 60
        next_report = start + 60
        while (now := time.monotonic()) < end:
            _sample(bootstrap, changes, now - start)
            if now >= next_report:
                log.warning("%.0f s: %d samples, %d spurious changes, load %.1f", now - start, changes.samples,
                            changes.spurious, changes.load_averages[-1] if changes.load_averages else -1)
                next_report += 60
            time.sleep(args.sample_s)
        stop_file.touch()
        load_result: dict[str, Any] = {}
        try:
            load.wait(timeout=180)
            text = (work / "load.out").read_text().strip().splitlines()
            load_result = json.loads(text[-1]) if text else {}
        except (subprocess.TimeoutExpired, ValueError) as exc:
            log.warning("the load did not end cleanly: %s", exc)
        reader.send_signal(signal.SIGTERM)
        reader.wait(timeout=30)
        for n in cluster.node_ids:
            cluster.stop(n)
        with open(ack_log, encoding="utf-8") as f:
            acks = read_acks(f)
        report = check(acks, {str(s.data_dir): read_data_dir(s.data_dir) for s in cluster})
    finally:
        for child in (load, reader):
            if child is not None and child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        cluster.close()
    judged = report.to_dict()
    judged["findings"] = judged["findings"][:20]  # (the counts are whole)
    loads = changes.load_averages
    return {"minutes": args.minutes, "rate": args.rate, "partitions": args.partitions, "samples": changes.samples,
            "unanswered_samples": changes.unanswered, "load": load_result,
            "load_average": {"min": min(loads, default=0), "median": sorted(loads)[len(loads) // 2] if loads else 0,
                             "max": max(loads, default=0)},
            "controller_leader_changes": changes.controller_leaders, "partition_leader_changes": changes.partition_leaders,
            "isr_shrinks": changes.isr_shrinks, "fenced_seen": changes.fenced, "spurious": changes.spurious,
            "check": judged}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=2000, help="keyed acks=all records per second")
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--sample-s", type=float, default=1.0, help="seconds between status samples")
    p.add_argument("--workdir", type=Path, help="keep the run's files here (default: a temporary directory)")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="fabric-soak-") as d:
            result = run(args, Path(d))
    if args.json:
        print(json.dumps(result, indent=1))
    check_ = result["check"]
    bad = sum(check_["counts"][k] for k in ("lost", "reordered", "divergent"))
    print(f"{result['minutes']} min at {result['rate']} rec/s ({result['load'].get('acked', '?')} acknowledged, "
          f"{result['load'].get('failed', '?')} failed), load average {result['load_average']['min']:.1f}–"
          f"{result['load_average']['max']:.1f}: {result['spurious']} spurious changes "
          f"(controller {len(result['controller_leader_changes'])}, partition leaders "
          f"{len(result['partition_leader_changes'])}, ISR shrinks {len(result['isr_shrinks'])}, fenced "
          f"{len(result['fenced_seen'])}), {result['unanswered_samples']} unanswered samples; checker: {bad} lost/"
          f"reordered/divergent, {check_['counts']['duplicate']} duplicates")
    clean = result["spurious"] == 0 and bad == 0 and result["unanswered_samples"] == 0 and check_["acks"] > 0
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
