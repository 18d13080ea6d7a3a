"""Fuzz a real broker process: N seeded hostile requests, then the checks that must hold.

Why a tool besides ``tests/test_fuzz.py``: CI can afford a few thousand cases per run; a campaign
before a release (or after a change to the codec, the schema or a handler) runs hundreds of
thousands, with a new seed each time.  The cases come from ``fabric.testing.fuzzing`` (tags,
bignums, integers beyond int64, claimed lengths of 2^64, nesting past the limit, invalid UTF-8,
wrong payload frames, batches whose CRC is right and whose header lies, mutations of a valid
request of every operation); the checks from ``fabric.testing.fuzz_runner``.

    python tools/fuzz.py --requests 50000 --seed 7        # start a broker, fuzz it, stop it
    python tools/fuzz.py --seed 7 --case 4711             # replay one case (on a fresh broker)
    python tools/fuzz.py --requests 20000 --bootstrap 127.0.0.1:7171   # a broker already running

It prints a summary (cases per kind, replies per error name, the broker's peak memory) and, for
every failure, the case index to replay with the same seed.  Exit status 0 when the broker
answered every case, never with UNKNOWN_ERROR, refused every lying batch, kept its data, stayed
under ``--rss-max-mib``, is still running and logged no traceback; 1 otherwise.  Loopback only.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fabric.testing import BrokerProcess  # noqa: E402
from fabric.testing.fuzz_runner import FuzzRun, socket_sender  # noqa: E402

PROGRESS_EVERY = 5000


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20_000, help="cases to send (default 20000)")
    ap.add_argument("--seed", type=int, default=None, help="seed (default: a random one, printed)")
    ap.add_argument("--case", type=int, default=None, help="replay only this case of the seed")
    ap.add_argument("--bootstrap", help="fuzz this running broker (127.0.0.1:PORT) instead of starting one; "
                                        "it must have no topics 'base' and 'fuzzed' yet")
    ap.add_argument("--reply-timeout-ms", type=int, default=5000, help="wait this long for each reply")
    ap.add_argument("--rss-max-mib", type=float, default=400.0, help="the broker's peak resident memory bound")
    ap.add_argument("--keep", action="store_true", help="keep the data directory and broker log")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    cases = range(args.case, args.case + 1) if args.case is not None else range(args.requests)
    print(f"fuzzing with seed {seed}: {len(cases)} cases", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="fabric-fuzz-"))
    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        broker = BrokerProcess(workdir / "data", extra_args=["--no-auto-create", "--group-initial-rebalance-delay-ms",
                                                             "0"], log_path=workdir / "broker.log").start()
        bootstrap = broker.bootstrap
    elif not bootstrap.startswith(("127.", "localhost")):
        ap.error("--bootstrap must be a loopback address")
    ctx = zmq.Context()
    send, sock = socket_sender(ctx, bootstrap, args.reply_timeout_ms)
    problems: list[str] = []
    run = FuzzRun(seed, send)
    try:
        run.prepare()
        started = time.monotonic()
        def gone() -> str | None:
            if broker is not None and (broker.proc is None or broker.proc.poll() is not None):
                return f"the broker exited (log: {broker.log_path})"
            return None

        for first in range(cases.start, cases.stop, PROGRESS_EVERY):
            run.run(range(first, min(first + PROGRESS_EVERY, cases.stop)), gone)
            if gone():
                break
            if len(cases) > PROGRESS_EVERY:
                done = min(first + PROGRESS_EVERY, cases.stop) - cases.start
                print(f"  {done} cases, {len(run.report.failures)} failures, "
                      f"{time.monotonic() - started:.0f} s", flush=True)
        print(run.report.summary())
        if not gone():
            problems += run.verify()
        if broker is not None:
            if broker.proc is None or broker.proc.poll() is not None:
                problems.append(f"the broker exited with {broker.proc.returncode if broker.proc else '?'}")
            else:
                rss = _peak_rss_mib(broker.pid)  # type: ignore[arg-type]
                print(f"broker peak resident memory: {rss:.0f} MiB (bound {args.rss_max_mib:.0f})")
                if rss > args.rss_max_mib:
                    problems.append(f"broker peak memory {rss:.0f} MiB above {args.rss_max_mib:.0f}")
            log = broker.log_path.read_text(errors="replace")
            if "Traceback" in log:
                problems.append(f"traceback in the broker log {broker.log_path}")
    finally:
        sock.close(linger=0)
        ctx.term()
        if broker is not None:
            broker.stop()
    if problems or run.report.failures:
        print(f"FAILED (seed {seed}):")
        for p in problems:
            print(f"  {p}")
        print(f"broker log and data kept in {workdir}")
        return 1
    if not args.keep:
        import shutil
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"OK (seed {seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
