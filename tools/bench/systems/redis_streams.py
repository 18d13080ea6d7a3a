"""Redis Streams, driven by redis-py with hiredis, plus ``redis-benchmark`` as a C reference row.

Server: ``redis-server`` with the append-only file on and ``appendfsync everysec`` (fsync of the
AOF once per second by a background thread: an acknowledged XADD can be lost with up to ~1 s of
writes on power loss) and RDB snapshots off, so the AOF is the only durability.

Client (the best redis-py usage we know for a log workload):
- ``redis.Redis(protocol=2)``; hiredis installed, so replies are parsed in C.
- produce: ``pipeline(transaction=False)`` of 1,000 ``XADD bench * v <value>`` per round trip;
  one latency sample = one pipeline's ``execute()`` (1,000 records acknowledged together).
- consume: ``XRANGE bench (<last-id> + COUNT 1000`` pages from the start until N records read
  (``XREAD COUNT`` does the same scan with a heavier reply shape).
- e2e: one ``XADD bench-e2e * v <stamp>`` per record from a thread (each waits for its reply,
  as a service publishing one event would); the main thread, on a second connection, waits in
  ``XREAD BLOCK 100 COUNT 1000 STREAMS bench-e2e <last-id>``.  One process, GIL switch
  interval 0.2 ms, as ``fabric perf e2e``.

Run as ``python -m tools.bench.systems.redis_streams produce|consume --port P ...`` this module is
the client child process and prints one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from fabric.pacing import pace, stamp
from tools.bench.core import (
    ConsumeResult,
    E2EResult,
    ProduceResult,
    System,
    latency_summary,
    register,
)
from tools.bench.procs import ServerProcess, client_argv, emit_json, free_port, run_json

log = logging.getLogger("bench.redis")

STREAM = "bench"
E2E_STREAM = "bench-e2e"
E2E_BLOCK_MS = 100  # XREAD BLOCK: how long one read waits for new entries
E2E_GRACE_S = 30.0  # after the last send, how long the reader may still wait
SWITCH_INTERVAL_S = 0.0002  # as fabric perf e2e: two threads share one GIL
FIELD = "v"
FIELD_KEY = FIELD.encode()  # how redis-py (RESP2, bytes) hands the field back
PIPELINE_RECORDS = 1000  # XADDs per pipeline round trip
PAGE_RECORDS = 1000  # records per XRANGE page
CLIENT_TIMEOUT_S = 3600.0


def _start_redis(workdir: Path) -> tuple[ServerProcess, int]:
    port = free_port()
    server = ServerProcess("redis-server", [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
        "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
        "--protected-mode", "no", "--daemonize", "no",
    ], workdir / "redis.log")
    try:
        server.wait_port(port)
    except BaseException:
        server.stop()
        raise
    return server, port


def _redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], check=False, capture_output=True, text=True).stdout
    return out.split("v=")[1].split()[0] if "v=" in out else out.strip()


@register
class RedisStreams(System):
    name = "redis"
    durability = "fsync 1 s (AOF everysec)"
    client = "redis-py + hiredis, RESP2; pipelines of 1,000 XADD; XRANGE pages of 1,000"
    latency_unit = "one pipeline of 1,000 XADDs: execute() call to all replies parsed"
    e2e_client = (f"redis-py + hiredis: XADD per record (waits for its reply) on a thread; "
                  f"XREAD BLOCK {E2E_BLOCK_MS} COUNT 1000 on the main thread")

    def __init__(self) -> None:
        self.server: ServerProcess | None = None
        self.port = 0

    def start(self, workdir: Path) -> None:
        self.server, self.port = _start_redis(workdir)

    def produce(self, records: int, value_bytes: int) -> ProduceResult:
        obj = run_json(client_argv(__name__, "produce", "--port", self.port, "--records", records,
                                   "--value-bytes", value_bytes), CLIENT_TIMEOUT_S, "redis produce")
        return ProduceResult.from_json(obj, value_bytes)

    def consume(self, records: int) -> ConsumeResult:
        obj = run_json(client_argv(__name__, "consume", "--port", self.port, "--records", records),
                       CLIENT_TIMEOUT_S, "redis consume")
        return ConsumeResult.from_json(obj, 0)

    def e2e(self, rate: int, seconds: float, value_bytes: int) -> E2EResult:
        obj = run_json(client_argv(__name__, "e2e", "--port", self.port, "--rate", rate,
                                   "--seconds", seconds, "--value-bytes", value_bytes),
                       CLIENT_TIMEOUT_S, "redis e2e")
        return E2EResult.from_json(obj, rate)

    def stop(self) -> None:
        if self.server:
            self.server.stop()

    def versions(self) -> dict[str, str]:
        import hiredis
        import redis
        return {"redis-server": _redis_version(), "redis-py": redis.__version__,
                "hiredis": getattr(hiredis, "__version__", "?")}


@register
class RedisBenchmark(System):
    """Redis's own C client as a ceiling for what the server can take; produce only."""

    name = "redis-benchmark"
    durability = RedisStreams.durability
    client = "redis-benchmark (C), 1 connection, -P 1000 XADD"
    latency_unit = ("redis-benchmark's own figure: a pipeline of 1,000 starts being written to its "
                    "first reply arriving (not comparable with the rows above)")
    reference = True
    reference_for = "redis"

    def __init__(self) -> None:
        self.server: ServerProcess | None = None
        self.port = 0

    def start(self, workdir: Path) -> None:
        if shutil.which("redis-benchmark") is None:
            raise RuntimeError("redis-benchmark not found (Debian package redis-tools)")
        self.server, self.port = _start_redis(workdir)

    def produce(self, records: int, value_bytes: int) -> ProduceResult:
        argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(self.port), "-c", "1",
                "-P", str(PIPELINE_RECORDS), "-n", str(records), "--csv",
                "XADD", STREAM, "*", FIELD, "x" * value_bytes]
        log.info("running redis-benchmark: %s", " ".join(argv[:-1] + ["<value>"]))
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"redis-benchmark exited {done.returncode}: {done.stderr.strip()}")
        rows = list(csv.DictReader(io.StringIO(done.stdout)))
        if not rows or "rps" not in rows[-1]:
            raise RuntimeError(f"unexpected redis-benchmark output: {done.stdout!r}")
        row = rows[-1]
        rps = float(row["rps"])
        lat = {"p50": float(row.get("p50_latency_ms", "nan")),
               "p99": float(row.get("p99_latency_ms", "nan")),
               "p999": float("nan"), "max": float(row.get("max_latency_ms", "nan")), "count": 0}
        return ProduceResult(records=records, value_bytes=value_bytes, seconds=records / rps,
                             latency_ms=lat)

    def consume(self, records: int) -> None:
        return None

    def stop(self) -> None:
        if self.server:
            self.server.stop()

    def versions(self) -> dict[str, str]:
        return {"redis-server": _redis_version()}


# --------------------------------------------------------------------------- client child process

def _connect(port: int):
    import redis
    from redis.utils import HIREDIS_AVAILABLE

    if not HIREDIS_AVAILABLE:
        raise RuntimeError("hiredis is not installed: redis-py would parse replies in Python")
    r = redis.Redis(host="127.0.0.1", port=port, protocol=2)
    r.ping()
    return r


def client_produce(port: int, records: int, value_bytes: int) -> dict:
    r = _connect(port)
    value = b"x" * value_bytes
    pipe = r.pipeline(transaction=False)
    samples: list[float] = []
    clock = time.perf_counter
    started = clock()
    remaining = records
    while remaining:
        n = min(PIPELINE_RECORDS, remaining)
        for _ in range(n):
            pipe.xadd(STREAM, {FIELD: value})
        t0 = clock()
        replies = pipe.execute()  # execute() also resets the pipeline for the next round
        samples.append((clock() - t0) * 1e3)
        if len(replies) != n:
            raise RuntimeError(f"pipeline returned {len(replies)} replies for {n} XADDs")
        remaining -= n
    seconds = clock() - started
    if (length := r.xlen(STREAM)) < records:
        raise RuntimeError(f"stream holds {length} entries after {records} acknowledged XADDs")
    return {"records": records, "value_bytes": value_bytes, "seconds": seconds,
            "latency_ms": latency_summary(samples)}


def client_consume(port: int, records: int) -> dict:
    r = _connect(port)
    clock = time.perf_counter
    started = clock()
    got = nbytes = 0
    lower = "-"
    while got < records:
        page = r.xrange(STREAM, min=lower, max="+", count=min(PAGE_RECORDS, records - got))
        if not page:
            raise RuntimeError(f"stream ended after {got} of {records} records")
        for _, fields in page:
            nbytes += len(fields[b"v"])
        got += len(page)
        lower = b"(" + page[-1][0]
    seconds = clock() - started
    return {"records": got, "bytes": nbytes, "seconds": seconds}


def client_e2e(port: int, rate: int, seconds: float, value_bytes: int) -> dict:
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    writer, reader = _connect(port), _connect(port)
    total = int(rate * seconds)
    make, age_ms = stamp(value_bytes)
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            for _ in pace(rate, total):
                writer.xadd(E2E_STREAM, {FIELD: make()})
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            failure.append(e)

    latencies: list[float] = []
    last_id: bytes | str = "0-0"  # a fresh stream: everything in it is this run's
    sender = threading.Thread(target=produce, name="redis-e2e-producer", daemon=True)
    started = time.perf_counter()
    sender.start()
    deadline = started + seconds + E2E_GRACE_S
    while len(latencies) < total and time.perf_counter() < deadline and not failure:
        for _, entries in reader.xread({E2E_STREAM: last_id}, count=1000, block=E2E_BLOCK_MS) or ():
            for _, fields in entries:
                latencies.append(age_ms(fields[FIELD_KEY]))
            last_id = entries[-1][0]
    elapsed = time.perf_counter() - started
    sender.join(timeout=E2E_GRACE_S)
    if failure:
        raise RuntimeError(f"XADD failed: {failure[0]!r}")
    return {"records": len(latencies), "target_rate": rate, "seconds": elapsed,
            "latency_ms": latency_summary(latencies)}


def main() -> None:
    p = argparse.ArgumentParser(description="Redis Streams benchmark client (one measurement).")
    p.add_argument("op", choices=["produce", "consume", "e2e"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--records", type=int, help="produce, consume: how many")
    p.add_argument("--value-bytes", type=int, default=100)
    p.add_argument("--rate", type=int, default=10_000, help="e2e: records per second")
    p.add_argument("--seconds", type=float, default=8.0, help="e2e: how long to send")
    a = p.parse_args()
    if a.op == "e2e":
        emit_json(client_e2e(a.port, a.rate, a.seconds, a.value_bytes))
    elif a.records is None:
        p.error(f"{a.op} needs --records")
    elif a.op == "produce":
        emit_json(client_produce(a.port, a.records, a.value_bytes))
    else:
        emit_json(client_consume(a.port, a.records))


if __name__ == "__main__":
    main()
