"""``fabric reassign`` (move partitions between brokers), ``fabric cluster decommission`` and
``fabric cluster rebalance-leaders``.

Why the CLI waits only when asked: a reassignment of a large log takes as long as the copy at the
throttle's rate; ``--wait`` (or ``--verify`` later, from any shell) shows the progress, and
``--verify`` removes the throttle once everything it moved is done, as Kafka's tool does.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..client import reassign as ra
from ..client.admin import Admin
from .common import add_client_options, add_output_option, positive_int, usage_error
from .output import add_row, print_json, print_table, print_text, table

EPILOG = """examples:
  fabric reassign --topic orders --partition 0 --replicas 2,3,4      move one partition (2 leads)
  fabric reassign --generate --topics orders --brokers 2,3,4 > plan.json
                                                   propose a balanced plan over brokers 2-4
  fabric reassign --plan plan.json --throttle 10000000 --wait
                                                   execute it, copying at most 10 MB/s per new replica
  fabric reassign --verify --plan plan.json        done yet? (removes the throttle when it is)
  fabric reassign --list                           reassignments in progress
  fabric reassign --cancel --plan plan.json        back to the replicas before the move
  fabric cluster decommission 1 --wait             empty broker 1 (waits; then stop the broker)
  fabric cluster decommission 1 --cancel           broker 1 takes new replicas again
  fabric cluster rebalance-leaders                 give each partition back to its preferred leader"""

POLL_S = 0.5


def _ids(text: str) -> list[int]:
    try:
        ids = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be broker ids like 1,2,3") from None
    if not ids or len(set(ids)) != len(ids) or min(ids) < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be distinct broker ids like 1,2,3")
    return ids


def register(sub: Any) -> None:
    p = sub.add_parser("reassign", help="move partitions between brokers (cluster)", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--generate", action="store_true", help="print a balanced plan (JSON) over --brokers")
    what.add_argument("--verify", action="store_true", help="is the plan (or every move) done? removes the throttle")
    what.add_argument("--cancel", action="store_true", help="cancel the plan's (or --topic/--partition's) move")
    what.add_argument("--list", action="store_true", help="the reassignments in progress")
    p.add_argument("--topic", help="the topic of one partition to move")
    p.add_argument("--partition", type=int, help="its partition")
    p.add_argument("--replicas", type=_ids, help="the partition's new replicas, preferred leader first: 1,2,3")
    p.add_argument("--plan", help="a plan file: {\"version\": 1, \"partitions\": [{topic, partition, replicas}]}")
    p.add_argument("--topics", help="with --generate: the topics to place (comma-separated)")
    p.add_argument("--brokers", type=_ids, help="with --generate: the brokers to place them on")
    p.add_argument("--throttle", type=positive_int, metavar="BYTES_PER_S",
                   help="copy at most this many bytes/s per joining replica (the moved topics' "
                        "replication_throttle_bytes; --verify removes it)")
    p.add_argument("--wait", action="store_true", help="wait until the moves complete, showing progress")
    add_client_options(p)
    add_output_option(p)
    p.set_defaults(func=run_reassign, validate=_check)


def register_cluster_actions(csub: Any) -> None:
    """``decommission`` and ``rebalance-leaders`` under ``fabric cluster``."""
    d = csub.add_parser("decommission", help="move every replica off a broker (then it may be stopped)",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("broker", type=int, help="the broker's node id")
    d.add_argument("--wait", action="store_true", help="wait until it holds no replica, showing progress")
    d.add_argument("--cancel", action="store_true",
                   help="no longer decommissioned: new replicas may go there again (moves started go on)")
    add_client_options(d)
    d.set_defaults(func=run_decommission)
    r = csub.add_parser("rebalance-leaders", help="preferred-leader election: each partition led by its first replica")
    r.add_argument("--topics", help="only these topics (comma-separated; default all)")
    add_client_options(r)
    r.set_defaults(func=run_rebalance)


def _check(args: argparse.Namespace) -> None:
    one = args.topic is not None or args.partition is not None or args.replicas is not None
    if args.generate:
        if not args.topics or not args.brokers:
            usage_error("--generate needs --topics and --brokers")
    elif args.verify or args.list:
        pass
    elif args.cancel:
        if not args.plan and (args.topic is None or args.partition is None):
            usage_error("--cancel needs --plan, or --topic and --partition")
    elif args.plan:
        if one:
            usage_error("give --plan or --topic/--partition/--replicas, not both")
    elif args.topic is None or args.partition is None or args.replicas is None:
        usage_error("say what to move: --topic T --partition P --replicas 1,2,3, or --plan FILE "
                    "(or --generate, --verify, --cancel, --list)")


def _plan(args: argparse.Namespace) -> ra.Plan:
    if args.plan:
        return ra.load_plan(args.plan)
    return {(args.topic, args.partition): args.replicas}


def run_reassign(args: argparse.Namespace) -> int:
    with Admin(args.bootstrap, timeout_ms=args.timeout_ms) as admin:
        if args.generate:
            topics = [t for t in args.topics.split(",") if t]
            current = ra.current_assignment(admin, topics)
            retired = sorted(ra.decommissioned(admin) & set(args.brokers))
            if retired:  # (the controller would keep new replicas off them anyway)
                print(f"# leaving out decommissioned brokers {retired}", file=sys.stderr)
            proposed = ra.propose(current, [b for b in args.brokers if b not in retired])
            print(ra.plan_json(proposed))  # (plain: a file to redirect, never wrapped)
            moved = sum(1 for k in proposed if proposed[k] != current[k])
            print(f"# {moved} of {len(proposed)} partitions change; current assignment (to roll back):\n"
                  f"# {ra.plan_json(current).replace(chr(10), ' ')}", file=sys.stderr)
            return 0
        if args.list:
            return _show(args, ra.reassignments(admin))
        if args.verify:
            return _verify(args, admin)
        plan = _plan(args)
        if args.cancel:
            plan = {k: None for k in plan}
        elif args.throttle:
            for topic in sorted({t for t, _ in plan}):
                admin.alter_topic_configs(topic, set={"replication_throttle_bytes": args.throttle})
        results = ra.reassign(admin, plan)
        bad = [r for r in results if r.get("error")]
        for r in bad:
            print_text(f"{r['topic']}-{r['partition']}: {r['error'].get('name')}: {r['error'].get('message')}")
        print_text(f"{'cancelled' if args.cancel else 'started'}: {len(results) - len(bad)} of {len(results)} "
                   f"partitions")
        if args.wait and not args.cancel:
            _wait(admin, {k for k in plan}, "reassignment")
        return 1 if bad else 0


def _show(args: argparse.Namespace, rows: list[dict[str, Any]]) -> int:
    if args.output == "json":
        print_json(rows)
        return 0
    t = table("topic", "partition", "replicas", "adding", "removing", "isr", "leader")
    for r in rows:
        add_row(t, r["topic"], r["partition"], r["replicas"], r["adding"], r["removing"], r["isr"], r["leader"])
    print_table(t)
    return 0


def _verify(args: argparse.Namespace, admin: Admin) -> int:
    moving = {(r["topic"], r["partition"]) for r in ra.reassignments(admin)}
    if not args.plan:
        print_text(f"{len(moving)} partitions are being reassigned" if moving else "no reassignment in progress")
        return 1 if moving else 0
    plan = ra.load_plan(args.plan)
    current = ra.current_assignment(admin, sorted({t for t, _ in plan}))
    pending = 0
    for key, reps in sorted(plan.items()):
        state = "in progress" if key in moving else ("done" if current.get(key) == reps else "differs")
        pending += state != "done"
        print_text(f"{key[0]}-{key[1]}: {state} (replicas {current.get(key)})")
    if not pending:
        for topic in sorted({t for t, _ in plan}):
            admin.alter_topic_configs(topic, delete=["replication_throttle_bytes"])
        print_text("every move is done; throttle removed")
    return 1 if pending else 0


def _wait(admin: Admin, keys: set[tuple[str, int]], what: str) -> None:
    started = time.monotonic()
    while True:
        left = [r for r in ra.reassignments(admin) if (r["topic"], r["partition"]) in keys]
        if not left:
            print_text(f"{what} complete in {time.monotonic() - started:.1f} s")
            return
        print_text(f"{len(left)} partitions still moving ({time.monotonic() - started:.0f} s)")
        time.sleep(POLL_S)


def _held_by(admin: Admin, broker: int) -> list[tuple[str, int]]:
    names = [t["name"] for t in admin.list_topics(internal=True)]
    current = ra.current_assignment(admin, names) if names else {}
    return sorted(k for k, reps in current.items() if broker in reps)


def run_decommission(args: argparse.Namespace) -> int:
    with Admin(args.bootstrap, timeout_ms=args.timeout_ms) as admin:
        moving = ra.decommission(admin, args.broker, cancel=args.cancel)
        if args.cancel:
            print_text(f"broker {args.broker} is no longer decommissioned")
            return 0
        print_text(f"broker {args.broker}: {moving} partitions move off it")
        if not args.wait:
            return 0
        started = time.monotonic()
        while True:
            held = _held_by(admin, args.broker)
            if not held:
                break
            print_text(f"broker {args.broker} still holds {len(held)} replicas ({time.monotonic() - started:.0f} s)")
            time.sleep(POLL_S)
        print_text(f"broker {args.broker} holds no replica: it can be stopped "
                   f"({time.monotonic() - started:.1f} s)")
    return 0


def run_rebalance(args: argparse.Namespace) -> int:
    topics = [t for t in args.topics.split(",") if t] if args.topics else None
    with Admin(args.bootstrap, timeout_ms=args.timeout_ms) as admin:
        elected = ra.elect_leaders(admin, topics)
    print_text(f"{elected} leaderships moved to their preferred replica")
    return 0

