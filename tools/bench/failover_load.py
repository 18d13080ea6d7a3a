"""The steady keyed ``acks=all`` load of the failover benchmark, and how the harness reads it.

    python -m tools.bench.launch tools.bench.failover_load --bootstrap B --topic T --rate R \
        --ack-log FILE --stop-file FILE

Why a child process writing a file: the harness must SIGKILL brokers while the load runs and
must not share a GIL with the producer it times.  The child appends one line per acknowledged
record to the ack log as the acknowledgement arrives (the format of
``fabric/testing/cluster_check.py``, plus ``sent`` and ``acked``: ``time.monotonic()`` seconds of
the send call and of the acknowledgement, CLOCK_MONOTONIC, which every process of the machine
shares), so the harness can tail it to see when writes are acknowledged again after a kill, and
``cluster_check`` can judge it afterwards.  It stops when ``--stop-file`` exists, flushes, and
prints one JSON object (sent / acknowledged / failed counts).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fabric.testing.cluster_check import content_of

KEYS = 60  # distinct keys: every partition gets a steady share
STOP_CHECK_EVERY = 50  # records between looks at the stop file


def ack_record(topic: str, partition: int, offset: int, key: bytes, value: bytes, sent: float,
               acked: float) -> str:
    k, v = content_of(key, value)
    return json.dumps({"topic": topic, "partition": partition, "offset": offset, "key": k, "value_sha256": v,
                       "sent": round(sent, 6), "acked": round(acked, 6)}) + "\n"


def run(bootstrap: str, topic: str, rate: int, ack_log: Path, stop_file: Path, value_bytes: int) -> dict[str, Any]:
    from fabric.client.producer import Producer

    producer = Producer(bootstrap.split(","), acks="all")  # every other setting as a user gets it
    out = open(ack_log, "w", buffering=1)  # noqa: SIM115 - closed below; line-buffered for the tailing harness
    lock = threading.Lock()
    counts = {"sent": 0, "acked": 0, "failed": 0}
    errors: dict[str, int] = {}
    pad = b"x" * max(0, value_bytes - 24)

    def on_done(key: bytes, value: bytes, sent: float):
        def done(fut) -> None:
            try:
                md = fut.result()
            except Exception as e:  # noqa: BLE001 - counted and reported, the load goes on
                with lock:
                    counts["failed"] += 1
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                return
            line = ack_record(topic, md.partition, md.offset, key, value, sent, time.monotonic())
            with lock:
                counts["acked"] += 1
                out.write(line)
        return done

    start = time.monotonic()
    i = 0
    try:
        while True:
            if i % STOP_CHECK_EVERY == 0 and stop_file.exists():
                break
            while (delay := start + i / rate - time.monotonic()) > 0:
                time.sleep(min(delay, 0.002))
            key = b"k%d" % (i % KEYS)
            value = b"%s:%012d:" % (key, i) + pad
            sent = time.monotonic()
            producer.send(topic, value, key=key).add_done_callback(on_done(key, value, sent))
            i += 1
            counts["sent"] = i
        producer.flush(120)
    finally:
        producer.close(timeout=10)
        with lock:
            out.close()
    return {**counts, "errors": errors, "seconds": time.monotonic() - start}


@dataclass
class AckTail:
    """The harness's side: read the lines the load child has written so far, keep what the
    failover measurement needs (per partition, the acknowledgements in arrival order)."""

    path: Path
    position: int = 0
    by_partition: dict[int, list[tuple[float, float]]] = field(default_factory=dict)  # (sent, acked)
    total: int = 0

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.position)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        self.position += end + 1
        for line in data[:end].splitlines():
            row = json.loads(line)
            self.by_partition.setdefault(int(row["partition"]), []).append((row["sent"], row["acked"]))
            self.total += 1

    def first_ack_sent_after(self, partition: int, t: float) -> float | None:
        """Acknowledgement time of the earliest-acknowledged record of ``partition`` sent at or after
        ``t`` (a record sent after a kill can only be acknowledged by the new leader), or None."""
        best = None
        for sent, acked in reversed(self.by_partition.get(partition, ())):
            if acked < t:
                break
            if sent >= t and (best is None or acked < best):
                best = acked
        return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--rate", type=int, default=2000, help="records per second")
    p.add_argument("--value-bytes", type=int, default=100)
    p.add_argument("--ack-log", type=Path, required=True)
    p.add_argument("--stop-file", type=Path, required=True)
    a = p.parse_args()
    result = run(a.bootstrap, a.topic, a.rate, a.ack_log, a.stop_file, a.value_bytes)
    os.write(1, (json.dumps(result) + "\n").encode())


if __name__ == "__main__":
    main()
