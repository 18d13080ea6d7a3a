#!/usr/bin/env python3
"""Run the seeded simulations over many seeds, or replay one.

Models (``--model``): ``raft`` (default: the Raft quorum alone, ``fabric.testing.raft_sim.run_chaos``),
``cluster`` (three whole combined-mode processes: Raft, metadata and partition replication together,
``fabric.testing.cluster_sim.run_cluster_chaos``), ``idempotence`` (the idempotent producer:
retries, lost replies and leader changes, ``fabric.testing.idempotence_sim.run_idempotence``;
also ``--idempotence``), ``all`` (each seed through every model).

    python tools/sim.py --seeds 10000                    # Raft, seeds 0..9999; prints every failing seed
    python tools/sim.py --model cluster --seeds 3000     # the whole cluster
    python tools/sim.py --model cluster --seed 42 --verbose   # replay seed 42 event by event
    python tools/sim.py --model idempotence --seeds 5000  # the idempotent producer

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

from fabric.testing.cluster_sim import run_cluster_chaos  # noqa: E402
from fabric.testing.idempotence_sim import run_idempotence  # noqa: E402
from fabric.testing.raft_sim import run_chaos  # noqa: E402

MODELS = {"raft": run_chaos, "cluster": run_cluster_chaos, "idempotence": run_idempotence}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=200, help="run seeds 0..N-1 (default 200)")
    parser.add_argument("--start", type=int, default=0, help="first seed of --seeds")
    parser.add_argument("--seed", type=int, help="run only this seed")
    parser.add_argument("--phases", type=int, help="random faults per run (default: the model's)")
    parser.add_argument("--model", choices=[*MODELS, "all"], default="raft",
                        help="which simulation: raft (default), cluster, idempotence, or all")
    parser.add_argument("--verbose", action="store_true", help="print every event (use with --seed)")
    parser.add_argument("--idempotence", action="store_true",
                        help="the same as --model idempotence")
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else range(args.start, args.start + args.seeds)
    log = print if args.verbose else None
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(message)s")
    failed = []
    started = time.monotonic()
    models = list(MODELS) if args.model == "all" else ["idempotence" if args.idempotence else args.model]
    extra = {} if args.phases is None else {"phases": args.phases}
    for seed in seeds:
        for model in models:
            try:
                sim = MODELS[model](seed, log=log, **({} if model == "idempotence" else extra))
            except Exception:
                failed.append(seed)
                print(f"FAIL seed {seed}: replay with: python tools/sim.py --model {model} --seed {seed} --verbose")
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
