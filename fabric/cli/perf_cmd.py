"""``fabric perf produce|consume|e2e``: throughput and latency, like Kafka's perf tools.

Latency is sampled, not measured per record: every ``--sample-every``-th record gets a delivery
callback that notes its send-to-acknowledgement time, so measuring costs the producer nothing
noticeable.  ``e2e`` stamps each value with its send time and measures send-to-receive in a
consumer running beside the producer (both in this process, on loopback).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from typing import Any

from ..client.admin import Admin
from ..client.consumer import Consumer
from ..client.producer import Producer
from ..protocol.errors import TopicAlreadyExistsError
from .common import add_client_options, add_output_option
from ..pacing import pace, stamp

EPILOG = """examples:
  fabric perf produce --topic perf --records 1000000 --record-size 100
  fabric perf produce --topic perf --records 200000 --throughput 50000 --acks 1 --linger-ms 5
  fabric perf consume --topic perf --records 1000000
  fabric perf e2e --topic perf-e2e --rate 10000 --seconds 10
  fabric perf e2e --topic perf-e2e --rate 10000 --seconds 10 --pace-ms 1     records in 1 ms bursts
  fabric perf e2e --topic lat1 --rate 10000 --acks all     on a replicated topic: latency includes replication
  add --output json (or --json) for one machine-readable line (used by tools/bench)"""


def register(sub: Any) -> None:
    perf = sub.add_parser("perf", help="measure throughput and latency", epilog=EPILOG,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    psub = perf.add_subparsers(dest="perf_command", metavar="TEST")
    psub.required = True

    p = psub.add_parser("produce", help="producer throughput and acknowledgement latency", epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topic", required=True)
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--record-size", type=int, default=100, help="value bytes per record (default 100)")
    p.add_argument("--keys", type=int, default=0, metavar="N", help="use N distinct keys (default: no keys)")
    p.add_argument("--acks", choices=["0", "1", "all"], default="1")
    p.add_argument("--linger-ms", type=int, default=5)
    p.add_argument("--batch-bytes", type=int, default=256 << 10)
    p.add_argument("--max-in-flight", type=int, default=5)
    p.add_argument("--buffer-bytes", type=int, default=4 << 20,
                   help="producer buffer (default 4 MiB): how much may queue before send blocks; "
                        "at full speed latency is mostly time spent in this queue")
    p.add_argument("--throughput", type=int, default=-1, metavar="REC/S", help="target rate (-1: unlimited)")
    p.add_argument("--batch", type=int, default=0, metavar="N",
                   help="use Producer.send_batch with N records per call (the columnar bulk API) instead of "
                        "one send() per record")
    p.add_argument("--partitions", type=int, default=1, help="partitions if the topic must be created")
    p.add_argument("--sample-every", type=int, default=1000, metavar="N", help="latency sample interval")
    add_output_option(p)
    add_client_options(p)
    p.set_defaults(func=perf_produce)

    p = psub.add_parser("consume", help="consumer throughput from the beginning of a topic")
    p.add_argument("--topic", required=True)
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--fetch-max-bytes", type=int, default=32 << 20)
    p.add_argument("--partition-fetch-bytes", type=int, default=8 << 20)
    p.add_argument("--columnar", action="store_true",
                   help="read with Consumer.poll_batches (columns, no object per record) instead of poll()")
    p.add_argument("--start-offset", type=int, metavar="K",
                   help="start every partition at offset K instead of the beginning (e.g. near the tail)")
    add_output_option(p)
    add_client_options(p)
    p.set_defaults(func=perf_consume)

    p = psub.add_parser("e2e", help="end-to-end latency (send to receive) at a fixed rate")
    p.add_argument("--topic", required=True)
    p.add_argument("--rate", type=int, default=10_000, help="records per second (default 10000)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--record-size", type=int, default=100)
    p.add_argument("--linger-ms", type=int, default=0)
    p.add_argument("--acks", choices=["0", "1", "all"], default="1",
                   help="the producer's acks (default 1); 'all' waits for the in-sync replicas, so on a "
                        "replicated topic the latency includes replication")
    p.add_argument("--pace-ms", type=float, default=0.0, metavar="MS",
                   help="how the producer keeps the rate: 0 (default) sends every record at its own "
                        "time (a wake-up per record, the hardest case); MS > 0 sleeps off its deficit "
                        "at least MS at a time, so records come in small bursts, as Kafka's "
                        "ThroughputThrottler does (2 ms). Latency is timed from each record's send()")
    p.add_argument("--pipeline-depth", type=int, default=None, metavar="N",
                   help="fetches the consumer keeps in flight at the tail (1: no pipelining; "
                        "default: the Consumer's)")
    p.add_argument("--standing-answers", type=int, default=None, metavar="N",
                   help="replies each tail fetch may have (1: a request per reply; default: the Consumer's)")
    add_output_option(p)
    add_client_options(p)
    p.set_defaults(func=perf_e2e)


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"p50": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0, "samples": 0}
    s = sorted(samples)

    def at(q: float) -> float:  # nearest rank, as tools/bench reports its peers' percentiles
        return round(s[max(0, math.ceil(q * len(s)) - 1)], 3)
    return {"p50": at(0.50), "p99": at(0.99), "p999": at(0.999), "max": round(s[-1], 3), "samples": len(s)}


def _ensure_topic(bootstrap: str, topic: str, partitions: int, timeout_ms: int) -> None:
    with Admin(bootstrap, timeout_ms=timeout_ms) as admin:
        try:
            admin.create_topic(topic, partitions=partitions)
        except TopicAlreadyExistsError:
            pass


class _Progress:
    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled
        self.start = time.perf_counter()
        self.last = self.start
        self.last_count = 0

    def update(self, count: int, nbytes_per: int) -> None:
        now = time.perf_counter()
        if not self.enabled or now - self.last < 2.0:
            return
        rate = (count - self.last_count) / (now - self.last)
        sys.stderr.write(f"{self.label}: {count} records, {rate:,.0f} rec/s, "
                         f"{rate * nbytes_per / 1e6:.1f} MB/s\n")
        self.last, self.last_count = now, count


def _report(args: argparse.Namespace, result: dict[str, Any]) -> None:
    if args.output == "json":
        sys.stdout.write(json.dumps(result) + "\n")
        return
    lat = result.get("latency_ms")
    line = (f"{result['records']} records in {result['seconds']:.2f} s: {result['records_per_sec']:,.0f} rec/s, "
            f"{result['mb_per_sec']:.1f} MB/s")
    if lat:
        line += f"; latency ms p50 {lat['p50']} p99 {lat['p99']} p99.9 {lat['p999']} max {lat['max']}"
    print(line)


def perf_produce(args: argparse.Namespace) -> int:
    _ensure_topic(args.bootstrap, args.topic, args.partitions, args.timeout_ms)
    value = b"x" * args.record_size
    keys = [f"key-{i}".encode() for i in range(args.keys)] if args.keys else None
    latencies: list[float] = []
    producer = Producer(args.bootstrap, acks=-1 if args.acks == "all" else int(args.acks),
                        linger_ms=args.linger_ms, batch_bytes=args.batch_bytes, max_in_flight=args.max_in_flight,
                        buffer_bytes=max(args.buffer_bytes, args.batch_bytes))
    progress = _Progress("produce", args.output != "json")
    n, every, rate = args.records, max(1, args.sample_every), args.throughput
    send, topic, perf = producer.send, args.topic, time.perf_counter
    start = perf()
    try:
        if args.batch > 0:
            _produce_bulk(producer, args, value, keys, latencies, progress, start)
        else:
            for i in range(n):
                fut = send(topic, value, keys[i % len(keys)] if keys else None)
                if i % every == 0:
                    t0 = perf()
                    fut.add_done_callback(lambda f, t0=t0: latencies.append((perf() - t0) * 1000))
                    progress.update(i, args.record_size)
                    if rate > 0:
                        ahead = i / rate - (perf() - start)
                        if ahead > 0:
                            time.sleep(ahead)
            producer.flush(timeout=600)
            fut.result(timeout=600)
    finally:
        producer.close(timeout=10)
    elapsed = perf() - start
    _report(args, {"test": "produce", "records": n, "seconds": elapsed, "records_per_sec": n / elapsed,
                   "mb_per_sec": n * args.record_size / elapsed / 1e6, "latency_ms": percentiles(latencies),
                   "acks": args.acks, "linger_ms": args.linger_ms, "batch_bytes": args.batch_bytes,
                   "api": f"send_batch({args.batch})" if args.batch > 0 else "send"})
    return 0


def _produce_bulk(producer: Producer, args: argparse.Namespace, value: bytes, keys: list[bytes] | None,
                  latencies: list[float], progress: "_Progress", start: float) -> None:
    """Records in calls of ``args.batch``; the latency of each call is sampled (send to ack)."""
    perf = time.perf_counter
    chunk = [value] * args.batch
    key_chunk = [keys[i % len(keys)] for i in range(args.batch)] if keys else None
    futures = []
    sent = 0
    while sent < args.records:
        n = min(args.batch, args.records - sent)
        t0 = perf()
        fut = producer.send_batch(args.topic, chunk[:n] if n < args.batch else chunk,
                                  None if key_chunk is None else key_chunk[:n])
        futures.append((t0, fut))
        sent += n
        progress.update(sent, args.record_size)
        if args.throughput > 0:
            ahead = sent / args.throughput - (perf() - start)
            if ahead > 0:
                time.sleep(ahead)
        while futures and futures[0][1].done():
            t0, done = futures.pop(0)
            latencies.append((perf() - t0) * 1000)
    producer.flush(timeout=600)
    for t0, fut in futures:
        fut.wait(timeout=600)
        latencies.append((perf() - t0) * 1000)


def perf_consume(args: argparse.Namespace) -> int:
    consumer = Consumer(args.bootstrap, auto_offset_reset="earliest", fetch_max_bytes=args.fetch_max_bytes,
                        max_partition_fetch_bytes=args.partition_fetch_bytes, request_timeout_ms=args.timeout_ms)
    progress = _Progress("consume", args.output != "json")
    count = nbytes = 0
    try:
        tps = consumer.assign_topic(args.topic)
        consumer.seek_to_beginning()
        if args.start_offset is not None:
            for tp in tps:
                consumer.seek(tp, args.start_offset)
        start = time.perf_counter()
        idle_since = start
        while count < args.records:
            if args.columnar:
                batches = consumer.poll_batches(1000, max_records=args.records - count)
                got = sum(len(c) for c in batches)
                got_bytes = sum(sum(map(len, c.values)) for c in batches)
            else:
                recs = consumer.poll(1000, max_records=args.records - count)
                got = len(recs)
                got_bytes = sum(len(r.value) for r in recs if r.value is not None)
            if got:
                count += got
                nbytes += got_bytes
                idle_since = time.perf_counter()
                progress.update(count, nbytes // max(count, 1))
            elif time.perf_counter() - idle_since > 10:
                sys.stderr.write(f"only {count} of {args.records} records arrived; stopping\n")
                break
        elapsed = time.perf_counter() - start
    finally:
        consumer.close()
    _report(args, {"test": "consume", "records": count, "seconds": elapsed, "records_per_sec": count / elapsed,
                   "mb_per_sec": nbytes / elapsed / 1e6, "api": "poll_batches" if args.columnar else "poll"})
    return 0 if count >= args.records else 1


def perf_e2e(args: argparse.Namespace) -> int:
    # Producer, its sender thread and the consumer share one interpreter here; the default 5 ms
    # GIL switch interval would be measured instead of Fabric.  (Separate processes, as in a real
    # deployment, do not share a GIL at all.)
    sys.setswitchinterval(0.0002)
    _ensure_topic(args.bootstrap, args.topic, 1, args.timeout_ms)
    total = int(args.rate * args.seconds)
    make_value, age_ms = stamp(args.record_size)
    latencies: list[float] = []
    depth = {} if args.pipeline_depth is None else {"fetch_pipeline_depth": args.pipeline_depth}
    if args.standing_answers is not None:
        depth["standing_fetch_answers"] = args.standing_answers
    consumer = Consumer(args.bootstrap, auto_offset_reset="latest", fetch_max_wait_ms=100, **depth)
    consumer.assign_topic(args.topic)  # every partition: the producer spreads records over them
    consumer.seek_to_end()
    consumer.poll(0)  # sends the first (parked) fetch before producing starts
    acks = -1 if args.acks == "all" else int(args.acks)
    producer = Producer(args.bootstrap, linger_ms=args.linger_ms, acks=acks)
    done = threading.Event()

    def produce() -> None:
        for _ in pace(args.rate, total, args.pace_ms / 1000):
            producer.send(args.topic, make_value())
        producer.flush(60)
        done.set()

    t = threading.Thread(target=produce, daemon=True)
    start = time.perf_counter()
    t.start()
    received = 0
    deadline = start + args.seconds + 30
    try:
        while received < total and time.perf_counter() < deadline:
            for r in consumer.poll(100):
                latencies.append(age_ms(r.value))
                received += 1
    finally:
        t.join(timeout=60)
        producer.close(timeout=5)
        consumer.close()
    elapsed = time.perf_counter() - start
    _report(args, {"test": "e2e", "records": received, "seconds": elapsed, "records_per_sec": received / elapsed,
                   "mb_per_sec": received * args.record_size / elapsed / 1e6, "target_rate": args.rate,
                   "acks": args.acks, "pace_ms": args.pace_ms, "pipeline_depth": consumer.fetch_pipeline_depth,
                   "standing_answers": consumer.standing_fetch_answers,
                   "latency_ms": percentiles(latencies)})
    return 0 if received >= total else 1
