"""``fabric group list|describe|reset-offsets|delete``: consumer groups, their members and lag."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.table import Table

from ..client.admin import Admin
from .common import add_client_options, err_console, fail, out, parse_time_ms

EPILOG = """examples:
  fabric consume orders --group billing --from-beginning    join group "billing" and read
  fabric group list
  fabric group describe billing                   members, committed offsets, lag (records and seconds)
  fabric group describe billing --json
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
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_client_options(p)
    p.set_defaults(func=list_groups)

    p = gsub.add_parser("describe", help="members, assignments, committed offsets and lag of a group",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("group")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
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
    to.add_argument("--to-datetime", metavar="T",
                    help="the first record at or after T (epoch ms, ISO 8601, or -15m/-2h/-1d)")
    to.add_argument("--shift-by", type=int, metavar="N", help="committed offset + N (N may be negative)")
    p.add_argument("--execute", action="store_true", help="commit the new offsets (default: only show them)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_client_options(p)
    p.set_defaults(func=reset_offsets)

    p = gsub.add_parser("delete", help="delete groups without members, with their committed offsets",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("groups", nargs="+", metavar="GROUP")
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
    if args.json:
        out.print(json.dumps(groups))
        return 0
    table = Table("group", "state", "protocol", "members", box=None, padding=(0, 2))
    for g in groups:
        table.add_row(g["group_id"], g["state"], _dash(g["protocol"]), str(g["members"]))
    out.print(table if groups else "no groups")
    return 0


def describe(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        g = admin.group_lag(args.group)
    if args.json:
        out.print(json.dumps(g))
        return 0
    out.print(f"[bold]{g['group_id']}[/]  state={g['state']}  protocol={_dash(g['protocol'])}  "
              f"generation={g['generation']}  members={len(g['members'])}  total lag={g['total_lag']}  "
              f"max lag={g['max_lag_seconds']:.1f} s")
    if g["members"]:
        table = Table("member", "instance", "client id", "host", "assignment", box=None, padding=(0, 2))
        for m in g["members"]:
            table.add_row(m["member_id"], _dash(m["group_instance_id"]), m["client_id"], m["host"],
                          _tps(m["assignment"]))
        out.print(table)
    if g["partitions"]:
        table = Table("topic", "partition", "committed", "log end", "lag", "lag (s)", "owner",
                      box=None, padding=(0, 2))
        for r in g["partitions"]:
            secs = "-" if r["lag_seconds"] is None else f"{r['lag_seconds']:.1f}"
            table.add_row(r["topic"], str(r["partition"]), _dash(r["committed"]), _dash(r["log_end"]),
                          _dash(r["lag"]), secs, _dash(r["client_id"] and f"{r['client_id']} ({r['owner']})"))
        out.print(table)
    return 0


def _targets(specs: list[str]) -> list[Any]:
    targets: list[Any] = []
    for spec in specs:
        topic, _, parts = spec.partition(":")
        if not topic:
            fail(f"--topic {spec!r}: name a topic")
        if not parts:
            targets.append(topic)
            continue
        try:
            targets += [(topic, int(p)) for p in parts.split(",")]
        except ValueError:
            fail(f"--topic {spec!r}: partitions are numbers, like {topic}:0,2")
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
    if args.json:
        out.print(json.dumps(rows))
    else:
        table = Table("topic", "partition", "current", "new", "earliest", "latest", box=None, padding=(0, 2))
        for r in rows:
            table.add_row(r["topic"], str(r["partition"]), _dash(r["current"]), str(r["new"]), str(r["earliest"]),
                          str(r["latest"]))
        out.print(table)
        out.print(f"committed new offsets for group {args.group}" if args.execute
                  else "dry run: nothing changed (add --execute to commit these offsets)")
    return 0


def delete(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        results = admin.delete_groups(args.groups)
    status = 0
    for res in results:
        if res.error is None:
            out.print(f"deleted group {res.group_id}")
        else:
            status = 1
            err_console.print(f"[bold red]error:[/] group {res.group_id}: {res.error.name}: {res.error.message}")
    return status
