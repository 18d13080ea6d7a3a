"""``fabric log verify DIR``: check stored batches and indexes offline (``fabric.log.verify``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..log.verify import partition_dirs, verify_partition
from .common import fail, out

EPILOG = """examples:
  fabric log verify ./fabric-data                 every partition of a (stopped) broker's data dir
  fabric log verify ./fabric-data/orders-0        one partition
  fabric log verify ./fabric-data --output json   machine-readable; exit status 1 if anything is damaged

Checks every batch (length, magic, CRC, record count against the records, offsets moving
forward) and both indexes of every segment; prints each damaged spot as file, byte position and
offset, and where readable data starts again.  Consumers meeting the damage get a
CorruptRecordError naming the same offset (skip it with `fabric consume --skip-corrupt` or
Consumer.seek).  Damaged .index/.timeindex files can be deleted: the broker rebuilds them."""


def register(sub: Any) -> None:
    group = sub.add_parser("log", help="inspect stored partition logs (offline)", epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    lsub = group.add_subparsers(dest="log_command", metavar="ACTION")
    lsub.required = True
    p = lsub.add_parser("verify", help="check every batch and index; exit status 1 on damage", epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", metavar="DIR", help="a broker data directory, or one partition's directory")
    p.add_argument("--output", "-o", choices=["text", "json"], default="text")
    p.set_defaults(func=verify)


def verify(args: argparse.Namespace) -> int:
    path = Path(args.dir)
    try:
        dirs = partition_dirs(path)
    except OSError as exc:
        fail(f"cannot read {path}: {exc}")
    if not dirs:
        fail(f"{path} holds no partition logs (no *.log segment files in it or its sub-directories)")
    reports = [verify_partition(d) for d in dirs]
    damaged = [r for r in reports if r.damaged]
    if args.output == "json":
        print(json.dumps({"damaged": bool(damaged), "partitions": [r.to_dict() for r in reports]}, indent=2))
        return 1 if damaged else 0
    for r in reports:
        offsets = "empty" if r.first_offset is None else f"offsets {r.first_offset}-{(r.next_offset or 0) - 1}"
        state = "[bold red]DAMAGED[/]" if r.damaged else "[green]ok[/]"
        out.print(f"{state} {r.directory}: {r.segments} segments, {r.batches} batches, {r.records} records, {offsets}",
                  markup=True)
        for p in r.problems:
            where = f"byte {p.position}" if p.position >= 0 else "whole file"
            at = f" offset {p.offset}" if p.offset is not None else ""
            out.print(f"  {p.file} {where}{at}: {p.message}", markup=False)
    out.print(f"{len(reports)} partitions checked, {len(damaged)} damaged", markup=False)
    return 1 if damaged else 0
