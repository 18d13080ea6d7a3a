"""Judge a cluster run from its ack log and every replica's data directory (offline, read-only).

    python tools/cluster_check.py --acks acks.jsonl node1/data node2/data node3/data
    python tools/cluster_check.py --acks acks.jsonl node*/data --json

The ack log is JSON lines, one per acknowledged record, in acknowledgement order (the format is in
``fabric/testing/cluster_check.py``; ``ack_line`` writes it).  Reports lost acknowledged records,
per-key reordering, divergent replicas below the smallest log end, and duplicates.  Run it on
stopped brokers (a live one may be writing its newest segment).

Exit status: 0 when nothing was lost, reordered or divergent (duplicates alone are allowed);
1 when something was; 2 on a usage error (unreadable ack log or directory).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fabric.testing.cluster_check import check, read_acks, read_data_dir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--acks", required=True, metavar="FILE", help="the ack log (JSON lines)")
    ap.add_argument("data_dirs", nargs="+", metavar="DATA_DIR", help="one broker data directory per replica")
    ap.add_argument("--json", action="store_true", help="print the whole report as JSON")
    ap.add_argument("--max-shown", type=int, default=20, help="findings shown per kind (text output)")
    args = ap.parse_args(argv)
    try:
        with open(args.acks, encoding="utf-8") as f:
            acks = read_acks(f)
        replicas = {d: read_data_dir(Path(d)) for d in args.data_dirs}
    except (OSError, ValueError) as exc:
        print(f"cluster_check: {exc}", file=sys.stderr)
        return 2
    report = check(acks, replicas)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        summary = report.to_dict()
        print(f"{report.acks} acknowledged records, {report.partitions} partitions, {report.replicas} replicas")
        for kind, n in summary["counts"].items():
            print(f"  {kind}: {n}")
            for finding in report.of(kind)[: args.max_shown]:
                print(f"    {finding.topic}-{finding.partition} offset {finding.offset}: {finding.detail}")
        print("OK" if report.ok else "FAILED: acknowledged data was lost, reordered or diverged")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
