"""``fabric connect run|validate|status|pause|resume|restart|plugins``: the Connect worker and its
control commands.  The worker does the work (``connectors/``); this module parses, calls, renders."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import urllib.error
import urllib.request
from typing import Any

from rich.table import Table

from .common import err_console, fail, out

DEFAULT_WORKER = os.environ.get("FABRIC_CONNECT_WORKER", "127.0.0.1:8083")

EPILOG = """examples:
  fabric connect validate configs/connect/file-source.yaml     check the whole file, print every error
  fabric connect run configs/connect/file-source.yaml          run a standalone worker (Ctrl-C stops it)
  fabric connect status                                        every connector of the worker on :8083
  fabric connect status orders-in --output json                one connector, its tasks, their errors
  fabric connect pause orders-in
  fabric connect resume orders-in
  fabric connect restart orders-in                             restart every task of the connector
  fabric connect plugins                                       built-in and installed connector classes

Control commands talk to the worker's API on 127.0.0.1 (worker.rest_port in the YAML, default
8083): --worker HOST:PORT or env FABRIC_CONNECT_WORKER."""


def register(sub: Any) -> None:
    connect = sub.add_parser("connect", help="run Connect workers and control their connectors", epilog=EPILOG,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    csub = connect.add_subparsers(dest="connect_command", metavar="ACTION")
    csub.required = True
    p = csub.add_parser("run", help="validate CONFIG.yaml, then run its connectors until stopped", epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", metavar="CONFIG.yaml")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=run)
    p = csub.add_parser("validate", help="check CONFIG.yaml and print every error with its path")
    p.add_argument("config", metavar="CONFIG.yaml")
    p.set_defaults(func=validate)
    p = csub.add_parser("status", help="state of the worker's connectors and tasks", epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="one connector (default: all)")
    _control_options(p)
    p.set_defaults(func=status)
    for action, text in (("pause", "pause a connector's tasks"), ("resume", "resume a paused connector"),
                         ("restart", "restart every task of a connector (also one that gave up)")):
        p = csub.add_parser(action, help=text, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("name")
        _control_options(p)
        p.set_defaults(func=control, action=action)
    p = csub.add_parser("plugins", help="list connector classes usable in YAML (built-in and installed)")
    p.set_defaults(func=plugins)


def _control_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--worker", "-w", default=DEFAULT_WORKER, metavar="HOST:PORT",
                   help=f"the worker's control API (default {DEFAULT_WORKER}; env FABRIC_CONNECT_WORKER)")
    p.add_argument("--output", "-o", choices=["table", "json"], default="table")


def _load(path: str) -> Any:
    from connectors.config import ConfigError, load_file
    try:
        return load_file(path)
    except ConfigError as exc:
        for p, reason in exc.errors:
            err_console.print(f"[red]error:[/red] {p}: {reason}", markup=True)
        fail(f"{path}: {len(exc.errors)} error(s); nothing was started")


def validate(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    out.print(f"{args.config}: valid ({len(cfg.connectors)} connector(s): "
              f"{', '.join(c.name for c in cfg.connectors)})")
    return 0


def run(args: argparse.Namespace) -> int:
    from connectors.worker import Worker
    cfg = _load(args.config)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = Worker(cfg)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        worker.start()
    except OSError as exc:
        worker.stop()
        fail(f"cannot start the worker: {exc}")
    err_console.print(f"worker {worker.worker_id}: {len(cfg.connectors)} connector(s) running; "
                      f"control API on 127.0.0.1:{worker.rest.port if worker.rest else '-'}")
    while not stop.wait(0.5):
        pass
    worker.stop()
    return 0


def _call(worker: str, method: str, path: str) -> tuple[int, Any]:
    url = f"http://{worker}{path}"
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except (urllib.error.URLError, OSError) as exc:
        fail(f"no Connect worker answers at {worker} ({getattr(exc, 'reason', exc)}); "
             "is `fabric connect run` running, and is --worker its rest_port?")


def status(args: argparse.Namespace) -> int:
    if args.name:
        code, body = _call(args.worker, "GET", f"/connectors/{args.name}/status")
        if code != 200:
            fail(body.get("error", f"HTTP {code}"))
        conns = [body]
    else:
        code, body = _call(args.worker, "GET", "/connectors")
        conns = body["connectors"]
    if args.output == "json":
        print(json.dumps(conns[0] if args.name else conns, indent=2))
        return 0
    table = Table("connector", "type", "state", "task", "task state", "restarts", "error")
    for c in conns:
        for t in c["tasks"] or [{"id": "-", "state": "-", "restarts": 0, "trace": None}]:
            trace = (t.get("trace") or "").strip().splitlines()
            table.add_row(c["name"], c["type"], c["state"], str(t["id"]), t["state"], str(t["restarts"]),
                          trace[0] if trace else "")
    out.print(table)
    return 0


def control(args: argparse.Namespace) -> int:
    code, body = _call(args.worker, "POST", f"/connectors/{args.name}/{args.action}")
    if code != 202:
        fail(body.get("error", f"HTTP {code}"))
    if args.output == "json":
        print(json.dumps(body))
    else:
        out.print(f"{args.name}: {args.action} requested")
    return 0


def plugins(args: argparse.Namespace) -> int:
    from connectors.plugins import BUILTIN, known_names
    for name in known_names():
        out.print(f"{name:18} {'built-in' if name in BUILTIN else 'installed plugin'}")
    return 0
