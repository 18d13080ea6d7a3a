"""Client throughput and latency, this tree against an earlier one (the client side only).

    python tools/bench_clients.py --baseline-tree /path/to/old/checkout --runs 3

Each run starts a fresh broker (the code of --broker-tree, default this one), then runs with
the client code of one tree (``PYTHONPATH``): ``fabric perf produce`` with ``--batch 1000``
(columnar bulk API) into topic ``p`` and per-record ``send`` into ``q`` (1,000,000 x 100 B
each), ``fabric perf consume`` of ``p`` with ``--columnar`` and of ``q`` without, and
``fabric perf e2e --rate 10000 --seconds 8``.  Trees alternate (old, new, new, old, ...) so a
drift of the machine's load hits both alike.  Prints the medians; writes nothing; every process
it starts is killed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.bench_watch import start_broker  # noqa: E402

CASES = [
    ("produce --batch 1000", ["produce", "--topic", "p", "--records", "1000000", "--batch", "1000"]),
    ("produce (per record)", ["produce", "--topic", "q", "--records", "1000000"]),
    ("consume --columnar", ["consume", "--topic", "p", "--records", "1000000", "--columnar"]),
    ("consume (per record)", ["consume", "--topic", "q", "--records", "1000000"]),
    ("e2e 10k/s 8 s", ["e2e", "--topic", "e", "--rate", "10000", "--seconds", "8"]),
]


def perf(tree: Path, bootstrap: str, args: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "fabric", "perf", *args, "--bootstrap", bootstrap, "--json"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree,
                         timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"fabric perf {' '.join(args)} ({tree}) failed: {out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline-tree", type=Path, required=True)
    ap.add_argument("--broker-tree", type=Path, default=ROOT)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    trees = {"old": args.baseline_tree.resolve(), "new": ROOT}
    results: dict[tuple[str, str], list[dict]] = {}
    order = []
    for i in range(args.runs):
        order += ["old", "new"] if i % 2 == 0 else ["new", "old"]
    for name in order:
        tmp = Path(tempfile.mkdtemp(prefix="bench-clients-"))
        proc, bootstrap = start_broker(args.broker_tree.resolve(), tmp / "data")
        try:
            for label, case in CASES:
                r = perf(trees[name], bootstrap, case)
                results.setdefault((label, name), []).append(r)
                print(name, label, json.dumps(r), flush=True)
        finally:
            proc.kill()
            proc.wait()
            shutil.rmtree(tmp, ignore_errors=True)
    print("\nmedians (old -> new):")
    for label, _ in CASES:
        for key in sorted(results[(label, "new")][0]):
            vals = {n: [r[key] for r in results[(label, n)] if isinstance(r.get(key), (int, float))] for n in trees}
            if all(vals.values()):
                old, new = statistics.median(vals["old"]), statistics.median(vals["new"])
                ratio = f"{new / old:6.3f}" if old else "   n/a"
                print(f"{label:22s} {key:28s} {old:14.2f} {new:14.2f} {ratio}")


if __name__ == "__main__":
    main()
