"""Per-key order of the default producer through many broker SIGKILLs (and SIGTERMs, stalls).

A default ``Producer()`` streams keyed records (record ``g`` has key ``k{g % keys}``) to a real
broker that is SIGKILLed and restarted (same port, same data directory) ``--kills`` times,
spread over the stream; then every record is read back and checked
(``fabric.testing.order_check``): zero per-key inversions among first copies, no acknowledged
record missing, and the duplicates counted (re-sent runs, which the producer's promise allows
until the idempotent producer exists).  ``tests/test_producer_order.py`` runs a short version.

    python tools/producer_crash_order.py                          # 300,000 records, 20 kills
    python tools/producer_crash_order.py --records 1000000 --kills 50 --flush-every-batch
    python tools/producer_crash_order.py --linger-ms 0 --batch-bytes 4096   # full in-flight window
    python tools/producer_crash_order.py --faults kill,term,stop --request-timeout-ms 2000

Exit status 0 if the order held and nothing was lost, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from fabric.testing.order_check import run_crash_test


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--linger-ms", type=int, help="producer setting (default: the producer's default)")
    ap.add_argument("--batch-bytes", type=int, help="producer setting (default: the producer's default)")
    ap.add_argument("--max-in-flight", type=int, help="producer setting (default: the producer's default)")
    ap.add_argument("--flush-every-batch", action="store_true", help="broker fsyncs each batch before its reply")
    ap.add_argument("--faults", default="kill",
                    help="comma-separated, used in turn: kill (SIGKILL + restart), term (SIGTERM + restart), "
                         "stop (SIGSTOP for --stall-s, then SIGCONT)")
    ap.add_argument("--stall-s", type=float, default=3.0, help="length of a stop fault")
    ap.add_argument("--request-timeout-ms", type=int, help="producer setting (default: the producer's default)")
    ap.add_argument("--workdir", help="keep the broker's data and log here (default: a temporary directory)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = {name: value for name, value in (("linger_ms", args.linger_ms), ("batch_bytes", args.batch_bytes),
                                              ("max_in_flight", args.max_in_flight),
                                              ("request_timeout_ms", args.request_timeout_ms)) if value is not None}
    broker_args = ["--flush-every-batch"] if args.flush_every_batch else []
    with tempfile.TemporaryDirectory(prefix="fabric-crash-order-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        res = run_crash_test(workdir, args.records, args.kills, keys=args.keys, partitions=args.partitions,
                             log_every=1, producer_config=config, broker_args=broker_args,
                             faults=args.faults.split(","), stall_s=args.stall_s)
    rep = res.report
    print(f"producer settings: {config or 'defaults'}; broker: {broker_args or 'defaults'}")
    print(f"{res.sent} records sent, {res.failed} failed, {res.kills} faults, {res.resent_requests} requests "
          f"re-sent, {res.seconds:.1f} s")
    print(rep.summary())
    for line in rep.examples:
        print("  inversion:", line)
    if rep.missing:
        print(f"  missing: {rep.missing[:10]}{' …' if len(rep.missing) > 10 else ''}")
    return 0 if rep.inversions == 0 and not rep.missing and res.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
