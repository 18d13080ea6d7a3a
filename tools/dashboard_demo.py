"""A broker with live traffic and a lagging consumer group, for trying ``fabric dashboard`` and for
the README's picture of it.

    python tools/dashboard_demo.py                    # runs 10 minutes; open `fabric dashboard -b ...`
    python tools/dashboard_demo.py --svg docs/dashboard.svg   # writes the README picture and stops

Starts a broker on a free port (data in a temporary directory), a producer whose rate rises and
falls (orders, clicks), a consumer group ``billing`` that reads orders more slowly than they
arrive (its lag grows), and a group ``audit`` that keeps up.  Everything it started is stopped
at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fabric.client import Admin, Consumer, Producer  # noqa: E402
from fabric.testing.processes import BrokerProcess  # noqa: E402


def producer(bootstrap: str, stop: threading.Event) -> None:
    with Producer(bootstrap, linger_ms=5) as p:
        started = time.monotonic()
        i = 0
        while not stop.is_set():
            t = time.monotonic() - started
            rate = 20_000 + 12_000 * math.sin(t / 4)  # records/s, rising and falling
            for _ in range(int(rate / 50)):
                p.send("orders", b'{"sku": "A-%d", "qty": 1}' % (i % 977), key=b"customer-%d" % (i % 500))
                p.send("clicks", b'{"page": "/p/%d"}' % (i % 97))
                i += 1
            stop.wait(0.02)


def consumer(bootstrap: str, group: str, topics: list[str], pause_s: float, stop: threading.Event) -> None:
    with Consumer(bootstrap, group_id=group, auto_offset_reset="earliest", auto_commit_interval_ms=1000) as c:
        c.subscribe(topics)
        while not stop.is_set():
            c.poll(timeout_ms=200, max_records=2000 if pause_s else None)
            if pause_s:
                stop.wait(pause_s)  # a slow application: it falls behind


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600, help="how long the traffic runs (default 600)")
    ap.add_argument("--svg", help="after 20 s of traffic, write a dashboard picture here and stop")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fabric-demo-"))
    broker = BrokerProcess(tmp / "data").start()
    stop = threading.Event()
    threads = []
    try:
        with Admin(broker.bootstrap) as admin:
            admin.create_topic("orders", partitions=3)
            admin.create_topic("clicks", partitions=2)
        threads = [threading.Thread(target=producer, args=(broker.bootstrap, stop)),
                   threading.Thread(target=consumer, args=(broker.bootstrap, "billing", ["orders"], 0.4, stop)),
                   threading.Thread(target=consumer, args=(broker.bootstrap, "audit", ["clicks"], 0.0, stop))]
        for t in threads:
            t.start()
        print(f"broker at {broker.bootstrap}: run  fabric dashboard -b {broker.bootstrap}", flush=True)
        if args.svg:
            stop.wait(8)
            subprocess.run([sys.executable, "-m", "fabric", "dashboard", "-b", broker.bootstrap, "--svg", args.svg,
                            "--samples", "12", "--width", "120"], check=True, cwd=ROOT)
            print(f"wrote {args.svg}")
        else:
            stop.wait(args.seconds)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        broker.kill()


if __name__ == "__main__":
    main()
