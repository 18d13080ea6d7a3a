"""``fabric dashboard``: the live terminal dashboard (and ``--once`` / ``--svg`` for scripts)."""

from __future__ import annotations

import argparse
import io
import os
import sys
from typing import Any

from rich.console import Console

from .common import add_client_options, add_output_option, fail, usage_error
from .output import print_json

EPILOG = """examples:
  fabric dashboard                                live, full screen: 1-5 switch views, ? for the keys, q quits
  fabric dashboard --view groups                  start on the consumer groups
  fabric dashboard --topic orders                 start on the partitions of topic orders
  fabric dashboard --once                         print one frame (two polls, a second apart) and exit
  fabric dashboard --once --view groups --width 160 > groups.txt
  fabric dashboard --svg frame.svg                write a picture of one frame
  fabric dashboard --once --output json           the numbers behind the frame (rates, lag, health)"""

VIEWS = ("overview", "topics", "groups", "connect", "cluster")


def register(sub: Any) -> None:
    p = sub.add_parser("dashboard", help="live terminal dashboard: throughput, lag, health",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_client_options(p)
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between polls (default 1)")
    p.add_argument("--view", choices=VIEWS, default="overview", help="the view to start on")
    p.add_argument("--topic", metavar="NAME", help="start on this topic's partitions")
    p.add_argument("--group", metavar="ID", help="start on this consumer group's lag per partition")
    p.add_argument("--internal", action="store_true", help="list internal topics (__consumer_offsets, ...)")
    p.add_argument("--once", action="store_true", help="print one frame to stdout and exit (no keys, no colour "
                                                     "unless the output is a terminal)")
    p.add_argument("--svg", metavar="FILE", help="write one frame as an SVG picture and exit")
    p.add_argument("--samples", type=int, default=2, metavar="N",
                   help="--once/--svg: poll N times, --interval apart, before drawing (default 2: rates need "
                        "two; more fill the sparklines and trends)")
    add_output_option(p, "text")
    p.add_argument("--width", type=int, default=None, metavar="COLUMNS",
                   help="frame width for --once/--svg (default: the terminal's, or 140)")
    p.set_defaults(func=run, validate=_validate)


def _validate(args: argparse.Namespace) -> None:
    if args.interval <= 0:
        usage_error("--interval must be above 0 seconds")
    if not 2 <= args.samples <= 600:
        usage_error("--samples must be 2 to 600")
    if args.width is not None and args.width < 40:
        usage_error("--width must be at least 40 columns")
    # The live dashboard starts (and keeps running) without a broker: it shows it DOWN and
    # reconnects.  --once/--svg are for scripts: like every command, they fail fast instead.
    if args.output == "json" and not args.once:
        usage_error("--output json goes with --once (one sample of the numbers, for scripts)")
    args.waits_for_broker = not (args.once or args.svg)


def run(args: argparse.Namespace) -> int:
    from ..dashboard.app import Dashboard
    from ..dashboard.state import NavState, View

    nav = NavState(view=View(args.view), show_internal=args.internal)
    if args.topic:
        nav = NavState(view=View.PARTITIONS, topic=args.topic, show_internal=args.internal)
    elif args.group:
        nav = NavState(view=View.GROUP, group=args.group, show_internal=args.internal)
    dash = Dashboard(args.bootstrap, interval_s=args.interval, timeout_ms=min(args.timeout_ms, 2000), nav=nav,
                     connectors=_connect_status_reader(args.bootstrap))
    try:
        if args.once and args.output == "json":
            dash.snapshot(args.samples)
            print_json(dash.numbers())
            return 0 if dash.model.samples and dash.model.down_since_ms is None else 1
        if args.once or args.svg:
            width = args.width or (None if sys.stdout.isatty() and not args.svg else 140)
            console = Console(width=width, record=bool(args.svg), highlight=False,
                              file=io.StringIO() if args.svg and not args.once else None)
            console.print(dash.snapshot(args.samples))
            if args.svg:
                console.save_svg(args.svg, title="fabric dashboard")
            return 0 if dash.model.down_since_ms is None else 1
        if not sys.stdin.isatty() or not sys.stdout.isatty():
            fail("the live dashboard needs a terminal: use --once (text) or --svg FILE (picture) in scripts")
        # The live screen follows the real terminal size (and its resizes), not a COLUMNS/LINES
        # inherited from whatever started us.
        os.environ.pop("COLUMNS", None)
        os.environ.pop("LINES", None)
        dash.run_interactive(Console(highlight=False))
        return 0
    finally:
        dash.close()


def _connect_status_reader(bootstrap: str) -> Any:
    """Connector states for the Connect view, from Connect's status topic."""
    from ..dashboard.connect_status import ConnectStatusReader

    return ConnectStatusReader(bootstrap).read
