"""``fabric topic create|list|describe|delete|alter`` and ``fabric offsets``."""

from __future__ import annotations

import argparse
from typing import Any

from rich.text import Text

from ..client.admin import Admin
from ..protocol.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError
from .common import (TIME_HELP, add_client_options, add_output_option, config_pair_arg, format_ms, human_bytes,
                     parse_config_pairs, parse_time_ms, time_arg, usage_error)
from .output import add_row, out, print_json, print_table, print_text, table

EPILOG = """examples:
  fabric topic create orders --partitions 3
  fabric topic create audit --config retention_ms=86400000 --config flush_every_batch=true
  fabric topic list
  fabric topic describe orders
  fabric topic describe orders --output json      every field, for scripts (any command that prints data)
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
    p.add_argument("--config", action="append", metavar="KEY=VALUE", type=config_pair_arg,
                   help="topic setting, repeatable (retention_ms, retention_bytes, segment_bytes, cleanup_policy, "
                        "flush_every_batch, flush_interval_ms, max_batch_bytes, timestamp_type, ...)")
    p.add_argument("--if-not-exists", action="store_true", help="succeed quietly if the topic exists")
    add_output_option(p)
    add_client_options(p)
    p.set_defaults(func=create)

    p = tsub.add_parser("list", help="list topics")
    p.add_argument("--internal", action="store_true", help="include internal topics")
    add_output_option(p)
    add_client_options(p)
    p.set_defaults(func=list_topics)

    p = tsub.add_parser("describe", help="partitions, offsets, sizes and settings of topics")
    p.add_argument("names", nargs="*", metavar="NAME", help="topics (default: all)")
    add_output_option(p)
    add_client_options(p)
    p.set_defaults(func=describe)

    p = tsub.add_parser("alter", help="change topic settings")
    p.add_argument("name")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", type=config_pair_arg, help="setting to set, repeatable")
    p.add_argument("--delete", action="append", metavar="KEY", default=[], help="setting to reset, repeatable")
    p.add_argument("--partitions", type=int, help="grow the topic to this many partitions")
    add_output_option(p)
    add_client_options(p)
    p.set_defaults(func=alter, validate=_check_alter_args)

    p = tsub.add_parser("delete", help="delete topics and their data")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--if-exists", action="store_true", help="succeed quietly for missing topics")
    add_output_option(p)
    add_client_options(p)
    p.set_defaults(func=delete)

    p = sub.add_parser("offsets", help="earliest and latest offsets of a topic's partitions",
                       epilog="examples:\n  fabric offsets orders\n  fabric offsets orders --time -1h\n"
                              "  fabric offsets orders --output json",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("topic")
    p.add_argument("--time", metavar="T", type=time_arg,
                   help=f"also show the first offset at or after time T ({TIME_HELP})")
    add_output_option(p)
    add_client_options(p)
    p.set_defaults(func=offsets)


def _admin(args: argparse.Namespace) -> Admin:
    return Admin(args.bootstrap, timeout_ms=args.timeout_ms)


def create(args: argparse.Namespace) -> int:
    created = True
    with _admin(args) as admin:
        try:
            admin.create_topic(args.name, args.partitions, parse_config_pairs(args.config), args.replication_factor)
        except TopicAlreadyExistsError:
            if not args.if_not_exists:
                raise
            created = False
        n = admin.partitions_for(args.name)
    if args.output == "json":
        print_json({"name": args.name, "partitions": n, "created": created})
    elif created:
        print_text(f"created topic {args.name} with {n} partition{'s' if n != 1 else ''}")
    return 0


def list_topics(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        topics = admin.list_topics(internal=args.internal)
    if args.output == "json":
        print_json(topics)
        return 0
    if not topics:
        print_text("no topics")
        return 0
    t = table("topic", "partitions", "internal")
    for topic in topics:
        add_row(t, topic["name"], topic["partitions"], "yes" if topic["internal"] else "")
    print_table(t)
    return 0


def describe(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        topics = admin.describe_topics(args.names or None)
    if args.output == "json":
        print_json(topics)
        return 0
    for topic in topics:
        size = sum(p["size_bytes"] for p in topic["partitions"])
        records = sum(p["end_offset"] - p["start_offset"] for p in topic["partitions"])
        out.print(Text.assemble((topic["name"], "bold"),
                                f"  partitions={len(topic['partitions'])}  records={records}  "
                                f"size={human_bytes(size)}  id={topic['topic_id']}"
                                + ("  (internal)" if topic["internal"] else "")))
        if topic["configs"]:
            print_text("  overrides: " + ", ".join(f"{k}={v}" for k, v in sorted(topic["configs"].items())))
        t = table("partition", "leader", "replicas", "isr", "start", "end", "records", "size", "segments")
        for p in topic["partitions"]:
            add_row(t, p["partition"], p["leader"], ",".join(map(str, p["replicas"])), ",".join(map(str, p["isr"])),
                    p["start_offset"], p["end_offset"], p["end_offset"] - p["start_offset"],
                    human_bytes(p["size_bytes"]), p["segments"])
        print_table(t)
    return 0


def _check_alter_args(args: argparse.Namespace) -> None:
    if not (args.set or args.delete or args.partitions):
        usage_error("nothing to change: give --set KEY=VALUE, --delete KEY or --partitions N")


def alter(args: argparse.Namespace) -> int:
    result: dict[str, Any] = {"name": args.name, "configs": None, "partitions": None}
    with _admin(args) as admin:
        if args.set or args.delete:
            result["configs"] = admin.alter_topic_configs(args.name, parse_config_pairs(args.set),
                                                          args.delete)["configs"]
        if args.partitions:
            result["partitions"] = admin.create_partitions(args.name, args.partitions)
    if args.output == "json":
        print_json(result)
        return 0
    if result["configs"] is not None:
        print_text(f"{args.name} overrides: " + (", ".join(f"{k}={v}" for k, v in sorted(result["configs"].items()))
                                               or "none"))
    if result["partitions"] is not None:
        print_text(f"{args.name} now has {result['partitions']} partitions")
    return 0


def delete(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        results = admin.delete_topics(args.names)
    rows = [{"name": res.name, "deleted": res.error is None, "error": None if res.error is None else res.error.name}
            for res in results]
    failures = [res.error for res in results if res.error is not None
                and not (isinstance(res.error, UnknownTopicOrPartitionError) and args.if_exists)]
    if args.output == "json":
        print_json(rows)
    else:
        for row in rows:
            if row["deleted"]:
                print_text(f"deleted topic {row['name']}")
    if failures:
        raise failures[0]
    return 0


def offsets(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        rows = admin.topic_offsets(args.topic)
        if args.time:
            at = parse_time_ms(args.time)
            found = admin.list_offsets([(args.topic, r["partition"], at) for r in rows])
            for r, f in zip(rows, found):
                r["at_time"] = f["offset"] if f["offset"] >= 0 else r["latest"]
                r["at_time_timestamp"] = f["timestamp"]
    if args.output == "json":
        print_json(rows)
        return 0
    cols = ["partition", "earliest", "latest", "records"] + (["offset at time", "its timestamp"] if args.time else [])
    t = table(*cols)
    for r in rows:
        cells = [r["partition"], r["earliest"], r["latest"], r["records"]]
        if args.time:
            cells += [r["at_time"], format_ms(r["at_time_timestamp"])]
        add_row(t, *cells)
    print_table(t)
    return 0
