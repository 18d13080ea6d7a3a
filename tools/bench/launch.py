"""Start a client child process under the harness's Python settings, then run its entry point.

    python -m tools.bench.launch MODULE[:FUNCTION] ARGS...

Why: every Python client of a run (ours for the peers, and ``fabric perf``) must run under the
same interpreter settings, or a ratio measures the settings.  The one setting is the cyclic
garbage collector: clients that keep thousands of futures or records in flight spend a large
share of their time in gen-2 collections with CPython's default thresholds (measured here:
nats-py publish_async ~17k msg/s by default, ~25k with ``relaxed``).  ``BENCH_CLIENT_GC``:
``default`` (leave CPython alone; what a user gets) or ``relaxed`` (``RELAXED_GC_THRESHOLD``).
"""

from __future__ import annotations

import gc
import importlib
import os
import runpy
import sys

GC_ENV = "BENCH_CLIENT_GC"
GC_POLICIES = ("default", "relaxed")
RELAXED_GC_THRESHOLD = (50_000, 20, 100)  # gen0 allocations, gen1 and gen2 collection ratios


def apply_gc_policy(policy: str) -> None:
    if policy not in GC_POLICIES:
        raise SystemExit(f"{GC_ENV}={policy!r}: expected one of {', '.join(GC_POLICIES)}")
    if policy == "relaxed":
        gc.set_threshold(*RELAXED_GC_THRESHOLD)


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    apply_gc_policy(os.environ.get(GC_ENV, "default"))
    target, args = sys.argv[1], sys.argv[2:]
    module, _, function = target.partition(":")
    sys.argv = [module.rsplit(".", 1)[-1], *args]
    if function:
        result = getattr(importlib.import_module(module), function)()
        raise SystemExit(result if isinstance(result, int) else 0)
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
