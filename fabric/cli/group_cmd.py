"""``fabric group list|describe|reset-offsets|delete``: consumer groups, their members and lag."""

from __future__ import annotations

import argparse
from typing import Any

from rich.text import Text

from ..client.admin import Admin
from .common import TIME_HELP, add_client_options, add_output_option, err_console, parse_time_ms, time_arg, usage_error
from .output import add_row, out, print_json, print_table, print_text, table

EPILOG = """examples:
  fabric consume orders --group billing --from-beginning    join group "billing" and read
  fabric group list
  fabric group describe billing                   members, committed offsets, lag (records and seconds)
  fabric group describe billing --output json
  fabric group reset-offsets billing --topic orders --to-earliest             dry run: show old -> new
  fabric group reset-offsets billing --topic orders --to-datetime -1h --execute
  fabric group reset-offsets billing --topic orders:0,2 --shift-by -100 --execute
  fabric group delete billing

Offsets can be reset only while the group has no members (stop its consumers first)."""

RESET_EPILOG = """examples:
  fabric group reset-offsets billing --topic orders --to-earliest             dry run (default)
  fabric group reset-offsets billing --topic orders --to-latest --execute     skip everything unread
  fabric group reset-offsets billing --topic orders:1 --to-offset 5000 --execute
  fabric group reset-offsets billing --topic orders --to-datetime 2026-11-25T10:00:00 --execute
  fabric group reset-offsets billing --topic orders --shift-by -100 --execute  re-read the last 100

New offsets are clamped to [earliest, latest] of each partition.  --execute commits them, and only
while the group has no members."""


def register(sub: Any) -> None:
    group = sub.add_parser("group", help="list, describe, reset and delete consumer groups", epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    gsub = group.add_subparsers(dest="group_command", metavar="ACTION")
    gsub.required = True

    p = gsub.add_parser("list", help="list consumer groups", epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state", action="append", metavar="STATE",
                   help="only groups in this state (EMPTY, STABLE, PREPARING_REBALANCE, ...), repeatable")
    add_output_option(p)
    add_client_options(p)
    p.set_defaults(func=list_groups)

    p = gsub.add_parser("describe", help="members, assignments, committed offsets and lag of a group",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("group")
    add_output_option(p)
    add_client_options(p)
    p.set_defaults(func=describe)

    p = gsub.add_parser("reset-offsets", help="move a group's committed offsets (dry run unless --execute)",
                        epilog=RESET_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("group")
    p.add_argument("--topic", action="append", required=True, metavar="TOPIC[:P,P]",
                   help="a topic (every partition) or TOPIC:0,2 (those partitions), repeatable")
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true", help="the first offset still stored")
    to.add_argument("--to-latest", action="store_true", help="the end of the log (skip what is unread)")
    to.add_argument("--to-offset", type=int, metavar="N", help="this offset")
    to.add_argument("--to-datetime", metavar="T", type=time_arg, help=f"the first record at or after T ({TIME_HELP})")
    to.add_argument("--shift-by", type=int, metavar="N", help="committed offset + N (N may be negative)")
    p.add_argument("--execute", action="store_true", help="commit the new offsets (default: only show them)")
    add_output_option(p)
    add_client_options(p)
    p.set_defaults(func=reset_offsets, validate=lambda args: _targets(args.topic))

    p = gsub.add_parser("delete", help="delete groups without members, with their committed offsets",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("groups", nargs="+", metavar="GROUP")
    add_output_option(p)
    add_client_options(p)
    p.set_defaults(func=delete)


def _admin(args: argparse.Namespace) -> Admin:
    return Admin(args.bootstrap, timeout_ms=args.timeout_ms)


def _dash(v: Any) -> str:
    return "-" if v is None else str(v)


def _tps(assignment: list[dict[str, Any]]) -> str:
    return " ".join(f"{t['topic']}:{','.join(map(str, t['partitions']))}" for t in assignment) or "-"


def list_groups(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        groups = admin.list_groups(args.state)
    if args.output == "json":
        print_json(groups)
        return 0
    if not groups:
        print_text("no groups")
        return 0
    t = table("group", "state", "protocol", "members")
    for g in groups:
        add_row(t, g["group_id"], g["state"], g["protocol"], g["members"])
    print_table(t)
    return 0


def describe(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        g = admin.group_lag(args.group)
    if args.output == "json":
        print_json(g)
        return 0
    out.print(Text.assemble((g["group_id"], "bold"),
                            f"  state={g['state']}  protocol={_dash(g['protocol'])}  generation={g['generation']}  "
                            f"members={len(g['members'])}  total lag={g['total_lag']}  "
                            f"max lag={g['max_lag_seconds']:.1f} s"))
    if g["members"]:
        t = table("member", "instance", "client id", "host", "assignment")
        for m in g["members"]:
            add_row(t, m["member_id"], m["group_instance_id"], m["client_id"], m["host"], _tps(m["assignment"]))
        print_table(t)
    if g["partitions"]:
        t = table("topic", "partition", "committed", "log end", "lag", "lag (s)", "owner")
        for r in g["partitions"]:
            secs = None if r["lag_seconds"] is None else f"{r['lag_seconds']:.1f}"
            add_row(t, r["topic"], r["partition"], r["committed"], r["log_end"], r["lag"], secs,
                    r["client_id"] and f"{r['client_id']} ({r['owner']})")
        print_table(t)
    return 0


def _targets(specs: list[str]) -> list[Any]:
    targets: list[Any] = []
    for spec in specs:
        topic, _, parts = spec.partition(":")
        if not topic:
            usage_error(f"--topic {spec!r}: name a topic")
        if not parts:
            targets.append(topic)
            continue
        try:
            targets += [(topic, int(p)) for p in parts.split(",")]
        except ValueError:
            usage_error(f"--topic {spec!r}: partitions are numbers, like {topic}:0,2")
    return targets


def reset_offsets(args: argparse.Namespace) -> int:
    if args.to_earliest:
        strategy, value = "earliest", None
    elif args.to_latest:
        strategy, value = "latest", None
    elif args.to_offset is not None:
        strategy, value = "offset", args.to_offset
    elif args.to_datetime is not None:
        strategy, value = "datetime", parse_time_ms(args.to_datetime)
    else:
        strategy, value = "shift-by", args.shift_by
    with _admin(args) as admin:
        rows = admin.reset_group_offsets(args.group, _targets(args.topic), strategy, value, execute=args.execute)
    if args.output == "json":
        print_json(rows)
        return 0
    t = table("topic", "partition", "current", "new", "earliest", "latest")
    for r in rows:
        add_row(t, r["topic"], r["partition"], r["current"], r["new"], r["earliest"], r["latest"])
    print_table(t)
    print_text(f"committed new offsets for group {args.group}" if args.execute
               else "dry run: nothing changed (add --execute to commit these offsets)")
    return 0


def delete(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        results = admin.delete_groups(args.groups)
    rows = [{"group_id": res.group_id, "deleted": res.error is None,
             "error": None if res.error is None else res.error.name} for res in results]
    if args.output == "json":
        print_json(rows)
    for res in results:
        if res.error is None:
            if args.output != "json":
                print_text(f"deleted group {res.group_id}")
        else:
            err_console.print(Text.assemble(("error:", "bold red"),
                                            f" group {res.group_id}: {res.error.name}: {res.error.message}"))
    return 1 if any(res.error is not None for res in results) else 0
