"""``fabric cluster up|down|status`` (and ``decommission``/``rebalance-leaders``: ``reassign_cmd.py``): a local cluster of real broker processes, and its health.

Why in the CLI: a new user should see replication and failover in two commands, without writing
configs; ``up`` writes the same YAML an operator would (``configs/cluster/`` shows it commented),
starts one process per broker in the background and waits until every broker is registered.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from ..client.admin import Admin
from ..client.connection import ClientError
from ..protocol.errors import FabricError
from . import reassign_cmd
from .common import add_client_options, add_output_option, fail, positive_int
from .output import add_row, print_json, print_table, print_text, table

EPILOG = """examples:
  fabric cluster up                                3 brokers on 127.0.0.1:7171-7173, data in ./fabric-cluster
  fabric cluster up --brokers 5 --data-dir /tmp/c  5 brokers (3 controller voters)
  fabric cluster status                            controllers, brokers, partition health
  fabric cluster status --output json              the same, for scripts
  fabric cluster down                              stop every broker the last `up` started
  fabric cluster decommission 1 --wait             empty broker 1 (waits; then stop the broker)
  fabric cluster rebalance-leaders                 each partition led by its preferred (first) replica"""

STATE_FILE = "cluster.json"
READY_TIMEOUT_S = 60


def register(sub: Any) -> None:
    p = sub.add_parser("cluster", help="run a local cluster; its health", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    csub = p.add_subparsers(dest="cluster_command", metavar="ACTION")
    csub.required = True
    up = csub.add_parser("up", help="start a local cluster of broker processes in the background")
    up.add_argument("--brokers", type=positive_int, default=3, help="how many brokers (default 3)")
    up.add_argument("--data-dir", default="fabric-cluster", help="one sub-directory per broker (default ./fabric-cluster)")
    up.add_argument("--host", default="127.0.0.1", help="address every broker listens on (default 127.0.0.1)")
    up.add_argument("--base-port", type=positive_int, default=7171,
                    help="broker N listens on BASE+N-1, publishes on BASE+100+N-1, its controller on BASE+200+N-1")
    up.set_defaults(func=run_up)
    down = csub.add_parser("down", help="stop the brokers `fabric cluster up` started")
    down.add_argument("--data-dir", default="fabric-cluster", help="the --data-dir given to `up`")
    down.set_defaults(func=run_down)
    st = csub.add_parser("status", help="controllers (Raft role, term, commit), brokers, partition health")
    add_client_options(st)
    add_output_option(st)
    st.set_defaults(func=run_status)
    reassign_cmd.register_cluster_actions(csub)


def broker_configs(brokers: int, data_dir: Path, host: str, base_port: int,
                   cluster_id: str | None = None) -> dict[int, dict[str, Any]]:
    """The config of each broker of a local cluster: the first min(brokers, 3) are voters."""
    cluster_id = cluster_id or uuid.uuid4().hex
    voters = {i: f"{host}:{base_port + 200 + i - 1}" for i in range(1, min(brokers, 3) + 1)}
    return {i: {"node_id": i, "cluster_id": cluster_id, "host": host, "port": base_port + i - 1, "pub_port": base_port + 100 + i - 1,
                **({"controller_port": base_port + 200 + i - 1} if i in voters else {}),
                "data_dir": str(data_dir / f"broker-{i}"), "controller_voters": voters,
                "default_replication_factor": min(brokers, 3), "min_insync_replicas": 2 if brokers >= 3 else 1}
            for i in range(1, brokers + 1)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_up(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    state_path = data_dir / STATE_FILE
    if state_path.exists():
        state = json.loads(state_path.read_text())
        running = [b for b in state["brokers"] if _alive(b["pid"])]
        if running:
            fail(f"a cluster started from {data_dir} is running (pids {[b['pid'] for b in running]}): "
                 f"`fabric cluster down --data-dir {args.data_dir}` first")
    data_dir.mkdir(parents=True, exist_ok=True)
    configs = broker_configs(args.brokers, data_dir, args.host, args.base_port)
    started = []
    for i, cfg in configs.items():
        path = data_dir / f"broker-{i}.yaml"
        path.write_text("# written by `fabric cluster up`; see configs/cluster/ for a commented example\n"
                        + yaml.safe_dump(cfg, sort_keys=False))
        log = open(data_dir / f"broker-{i}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "fabric", "broker", "--config", str(path)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        log.close()
        started.append({"node_id": i, "pid": proc.pid, "address": f"{args.host}:{cfg['port']}",
                        "config": str(path), "log": str(data_dir / f"broker-{i}.log")})
    state_path.write_text(json.dumps({"brokers": started}, indent=2))
    bootstrap = ",".join(b["address"] for b in started)
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        dead = [b for b in started if not _alive(b["pid"])]
        if dead:
            fail(f"broker {dead[0]['node_id']} exited at start: see {dead[0]['log']}")
        try:
            with Admin(started[0]["address"], timeout_ms=2000) as admin:
                status = admin.cluster_status()
            live = [b for b in status.get("brokers", []) if not b.get("fenced")]
            if len(live) == args.brokers:
                break
            last = f"{len(live)} of {args.brokers} brokers registered"
        except (ClientError, FabricError) as exc:
            last = str(exc)
        time.sleep(0.2)
    else:
        fail(f"the cluster did not come up within {READY_TIMEOUT_S} s ({last}); logs in {data_dir}")
    t = table("broker", "address", "pid", "log")
    for b in started:
        add_row(t, b["node_id"], b["address"], b["pid"], b["log"])
    print_table(t)
    print_text(f"bootstrap: {bootstrap}   (`fabric cluster status -b {started[0]['address']}`)")
    return 0


def _brokers_using(data_dir: Path) -> list[int]:
    """Broker processes started with one of this cluster's configs (Linux: /proc), e.g. a broker
    an operator restarted by hand after `up`."""
    found = []
    marker = str(data_dir / "broker-").encode()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"fabric\0broker" in cmd and marker in cmd:
            found.append(int(entry.name))
    return found


def run_down(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    state_path = data_dir / STATE_FILE
    if not state_path.exists():
        fail(f"no cluster was started from {data_dir} (no {STATE_FILE})")
    state = json.loads(state_path.read_text())
    pids = [b["pid"] for b in state["brokers"] if _alive(b["pid"])]
    pids += [p for p in _brokers_using(data_dir) if p not in pids]  # (restarted by hand since `up`)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    state_path.unlink()
    print_text(f"stopped {len(pids)} brokers (data kept in {data_dir})")
    return 0


def broker_state(b: dict[str, Any]) -> str:
    """A status row's state: fenced or up, and decommissioning (still holds replicas) or
    decommissioned (holds none: it may be stopped)."""
    state = "fenced" if b.get("fenced") else "up"
    if b.get("decommissioned"):
        state += ", decommissioning" if b.get("replicas") else ", decommissioned"
    return state


def run_status(args: argparse.Namespace) -> int:
    with Admin(args.bootstrap, timeout_ms=args.timeout_ms) as admin:
        status = admin.cluster_status()
    if args.output == "json":
        print_json(status)
        return 0
    ctl = status.get("controller", {})
    t = table("controller", "role", "term", "commit index", "lag")
    add_row(t, ctl.get("node_id"), ctl.get("role"), ctl.get("term"), ctl.get("commit_index"), 0)
    for vid, match in sorted((ctl.get("followers") or {}).items(), key=lambda kv: int(kv[0])):
        add_row(t, vid, "follower", ctl.get("term"), match, max(0, int(ctl.get("commit_index", 0)) - int(match)))
    print_table(t)
    t = table("broker", "address", "rack", "state", "replicas", "leads")
    for b in status.get("brokers", []):
        add_row(t, b["node_id"], f"{b['host']}:{b['port']}", b.get("rack") or "-", broker_state(b),
                b.get("replicas", "-"), b.get("leaders", "-"))
    print_table(t)
    total = status.get("partitions_total", 0)
    print_text(f"partitions: {total}   under-replicated: {len(status.get('under_replicated', []))}   "
               f"under min ISR: {len(status.get('under_min_isr', []))}   offline: {len(status.get('offline', []))}")
    if status.get("reassigning"):
        print_text(f"reassigning: {len(status['reassigning'])} partitions (`fabric reassign --list`)")
    for kind in ("offline", "under_min_isr", "under_replicated"):
        for row in status.get(kind, [])[:20]:
            print_text(f"  {kind.replace('_', ' ')}: {row['topic']}-{row['partition']} leader {row['leader']} "
                       f"replicas {row['replicas']} isr {row['isr']}")
    return 0
