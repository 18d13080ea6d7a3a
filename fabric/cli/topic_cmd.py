"""``fabric topic create|list|describe|delete|alter`` and ``fabric offsets``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.table import Table

from ..client.admin import Admin
from ..protocol.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError
from .common import add_client_options, format_ms, human_bytes, out, parse_config_pairs, parse_time_ms

EPILOG = """examples:
  fabric topic create orders --partitions 3
  fabric topic create audit --config retention_ms=86400000 --config flush_every_batch=true
  fabric topic list
  fabric topic describe orders
  fabric topic alter orders --set retention_bytes=1073741824
  fabric topic delete orders"""


def register(sub: Any) -> None:
    topic = sub.add_parser("topic", help="create, list, describe, alter and delete topics", epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    tsub = topic.add_subparsers(dest="topic_command", metavar="ACTION")
    tsub.required = True

    p = tsub.add_parser("create", help="create a topic", epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name")
    p.add_argument("--partitions", "-p", type=int, help="number of partitions (default: the broker's)")
    p.add_argument("--replication-factor", "-r", type=int, help="copies of each partition (default 1)")
    p.add_argument("--config", action="append", metavar="KEY=VALUE",
                   help="topic setting, repeatable (retention_ms, retention_bytes, segment_bytes, cleanup_policy, "
                        "flush_every_batch, flush_interval_ms, max_batch_bytes, timestamp_type, ...)")
    p.add_argument("--if-not-exists", action="store_true", help="succeed quietly if the topic exists")
    add_client_options(p)
    p.set_defaults(func=create)

    p = tsub.add_parser("list", help="list topics")
    p.add_argument("--internal", action="store_true", help="include internal topics")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_client_options(p)
    p.set_defaults(func=list_topics)

    p = tsub.add_parser("describe", help="partitions, offsets, sizes and settings of topics")
    p.add_argument("names", nargs="*", metavar="NAME", help="topics (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    add_client_options(p)
    p.set_defaults(func=describe)

    p = tsub.add_parser("alter", help="change topic settings")
    p.add_argument("name")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="setting to set, repeatable")
    p.add_argument("--delete", action="append", metavar="KEY", default=[], help="setting to reset, repeatable")
    p.add_argument("--partitions", type=int, help="grow the topic to this many partitions")
    add_client_options(p)
    p.set_defaults(func=alter)

    p = tsub.add_parser("delete", help="delete topics and their data")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--if-exists", action="store_true", help="succeed quietly for missing topics")
    add_client_options(p)
    p.set_defaults(func=delete)

    p = sub.add_parser("offsets", help="earliest and latest offsets of a topic's partitions",
                       epilog="examples:\n  fabric offsets orders\n  fabric offsets orders --time -1h",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("topic")
    p.add_argument("--time", metavar="T", help="also show the first offset at or after time T "
                                                "(epoch ms, ISO 8601, or -15m/-2h/-1d)")
    p.add_argument("--json", action="store_true")
    add_client_options(p)
    p.set_defaults(func=offsets)


def _admin(args: argparse.Namespace) -> Admin:
    return Admin(args.bootstrap, timeout_ms=args.timeout_ms)


def create(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        try:
            admin.create_topic(args.name, args.partitions, parse_config_pairs(args.config), args.replication_factor)
        except TopicAlreadyExistsError:
            if args.if_not_exists:
                return 0
            raise
        n = admin.partitions_for(args.name)
    out.print(f"created topic {args.name} with {n} partition{'s' if n != 1 else ''}")
    return 0


def list_topics(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        topics = admin.list_topics(internal=args.internal)
    if args.json:
        out.print(json.dumps(topics))
        return 0
    table = Table("topic", "partitions", "internal", box=None)
    for t in topics:
        table.add_row(t["name"], str(t["partitions"]), "yes" if t["internal"] else "")
    out.print(table if topics else "no topics")
    return 0


def describe(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        topics = admin.describe_topics(args.names or None)
    if args.json:
        out.print(json.dumps(topics))
        return 0
    for t in topics:
        size = sum(p["size_bytes"] for p in t["partitions"])
        records = sum(p["end_offset"] - p["start_offset"] for p in t["partitions"])
        out.print(f"[bold]{t['name']}[/]  partitions={len(t['partitions'])}  records={records}  "
                  f"size={human_bytes(size)}  id={t['topic_id']}" + ("  (internal)" if t["internal"] else ""))
        if t["configs"]:
            out.print("  overrides: " + ", ".join(f"{k}={v}" for k, v in sorted(t["configs"].items())))
        table = Table("partition", "leader", "replicas", "isr", "start", "end", "records", "size", "segments",
                      box=None, padding=(0, 2))
        for p in t["partitions"]:
            table.add_row(str(p["partition"]), str(p["leader"]), ",".join(map(str, p["replicas"])),
                          ",".join(map(str, p["isr"])), str(p["start_offset"]), str(p["end_offset"]),
                          str(p["end_offset"] - p["start_offset"]), human_bytes(p["size_bytes"]),
                          str(p["segments"]))
        out.print(table)
    return 0


def alter(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        if args.set or args.delete:
            rep = admin.alter_topic_configs(args.name, parse_config_pairs(args.set), args.delete)
            out.print(f"{args.name} overrides: " + (", ".join(f"{k}={v}" for k, v in sorted(rep["configs"].items()))
                                                  or "none"))
        if args.partitions:
            n = admin.create_partitions(args.name, args.partitions)
            out.print(f"{args.name} now has {n} partitions")
    return 0


def delete(args: argparse.Namespace) -> int:
    status = 0
    with _admin(args) as admin:
        for res in admin.delete_topics(args.names):
            if res.error is None:
                out.print(f"deleted topic {res.name}")
            elif isinstance(res.error, UnknownTopicOrPartitionError) and args.if_exists:
                continue
            else:
                raise res.error
    return status


def offsets(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        rows = admin.topic_offsets(args.topic)
        if args.time:
            at = parse_time_ms(args.time)
            found = admin.list_offsets([(args.topic, r["partition"], at) for r in rows])
            for r, f in zip(rows, found):
                r["at_time"] = f["offset"] if f["offset"] >= 0 else r["latest"]
                r["at_time_timestamp"] = f["timestamp"]
    if args.json:
        out.print(json.dumps(rows))
        return 0
    cols = ["partition", "earliest", "latest", "records"] + (["offset at time", "its timestamp"] if args.time else [])
    table = Table(*cols, box=None, padding=(0, 2))
    for r in rows:
        cells = [str(r["partition"]), str(r["earliest"]), str(r["latest"]), str(r["records"])]
        if args.time:
            cells += [str(r["at_time"]), format_ms(r["at_time_timestamp"])]
        table.add_row(*cells)
    out.print(table)
    return 0
