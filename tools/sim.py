#!/usr/bin/env python3
"""Run the Raft simulation (``fabric.testing.raft_sim.run_chaos``) over many seeds, or replay one.

    python tools/sim.py --seeds 10000            # seeds 0..9999; prints every failing seed
    python tools/sim.py --seed 42 --verbose      # replay seed 42 event by event
    python tools/sim.py --idempotence --seeds 5000   # the idempotent producer's simulation
                                                     # (fabric.testing.idempotence_sim) instead

Why a tool beside the pytest tier: CI runs a few hundred seeds; this hunts through thousands, and
a failure it finds replays exactly with ``--seed`` (here or ``pytest tests/sim --seed N``).
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys
import time
import traceback

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from fabric.testing.idempotence_sim import run_idempotence  # noqa: E402
from fabric.testing.raft_sim import run_chaos  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=200, help="run seeds 0..N-1 (default 200)")
    parser.add_argument("--start", type=int, default=0, help="first seed of --seeds")
    parser.add_argument("--seed", type=int, help="run only this seed")
    parser.add_argument("--phases", type=int, default=6, help="random faults per run")
    parser.add_argument("--verbose", action="store_true", help="print every event (use with --seed)")
    parser.add_argument("--idempotence", action="store_true",
                        help="run the idempotent producer's simulation (retries, lost replies, leader changes)")
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else range(args.start, args.start + args.seeds)
    log = print if args.verbose else None
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(message)s")
    failed = []
    started = time.monotonic()
    for seed in seeds:
        try:
            sim = run_idempotence(seed, log=log) if args.idempotence else run_chaos(seed, phases=args.phases, log=log)
        except Exception:
            failed.append(seed)
            flag = " --idempotence" if args.idempotence else ""
            print(f"FAIL seed {seed}: replay with: python tools/sim.py{flag} --seed {seed} --verbose")
            traceback.print_exc(limit=3)
            continue
        if args.verbose:
            print(f"seed {seed} ok: {sim!r}")
    elapsed = time.monotonic() - started
    print(f"{len(seeds)} seeds, {len(failed)} failed{': ' + ' '.join(map(str, failed)) if failed else ''}, "
          f"{elapsed:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
