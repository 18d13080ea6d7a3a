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
import time
from pathlib import Path

from tools.bench.core import (
    ConsumeResult,
    ProduceResult,
    System,
    latency_summary,
    register,
)
from tools.bench.procs import ServerProcess, client_argv, emit_json, free_port, run_json

log = logging.getLogger("bench.redis")

STREAM = "bench"
FIELD = "v"
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


def main() -> None:
    p = argparse.ArgumentParser(description="Redis Streams benchmark client (one measurement).")
    p.add_argument("op", choices=["produce", "consume"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--records", type=int, required=True)
    p.add_argument("--value-bytes", type=int, default=100)
    a = p.parse_args()
    if a.op == "produce":
        emit_json(client_produce(a.port, a.records, a.value_bytes))
    else:
        emit_json(client_consume(a.port, a.records))


if __name__ == "__main__":
    main()
