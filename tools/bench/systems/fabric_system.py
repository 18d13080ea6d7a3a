"""Fabric, driven by its own CLI: one broker and the ``fabric perf`` tools.

The contract with the Fabric CLI (the only thing this module assumes):
    fabric broker --data-dir DIR --port PORT --flush-interval-ms 1000
        a broker on tcp://127.0.0.1:PORT that fsyncs its log once per second
    fabric topic list   --bootstrap 127.0.0.1:PORT              exit 0 once the broker serves
    fabric topic create T --partitions P --bootstrap 127.0.0.1:PORT
    fabric perf produce --bootstrap 127.0.0.1:PORT --topic T --records N --record-size B --acks 1 --json
    fabric perf consume --bootstrap 127.0.0.1:PORT --topic T --records N [--start-offset K] --json
    fabric perf e2e --bootstrap 127.0.0.1:PORT --topic T --rate R --seconds S --record-size B --json
        each prints one JSON object on stdout:
        {"records": N, "seconds": s, "records_per_sec": x, "mb_per_sec": y,
         "latency_ms": {"p50": .., "p99": .., "p999": .., "max": ..}}
    ``perf produce`` spreads records over all partitions of T when no key is given; ``perf
    consume`` reads all partitions from offset 0 (``--start-offset K``: from K, scaling mode only).

``fabric`` is the repo's own ``fabric.cli:main`` run through ``tools.bench.launch`` (so the
run's client GC policy applies to ``fabric perf`` as to the peers' clients), not whatever
``fabric`` is on PATH (PyPI's unrelated "fabric" SSH tool installs one).  ``--fabric-cmd`` or
FABRIC_BENCH_CMD replaces the prefix.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

from tools.bench.core import ConsumeResult, E2EResult, ProduceResult, System, register
from tools.bench.procs import (
    REPO_ROOT,
    ServerProcess,
    child_env,
    free_port,
    python_argv,
    run_json,
)

log = logging.getLogger("bench.fabric")

TOPIC = "bench"
E2E_TOPIC = "bench-e2e"
FLUSH_INTERVAL_MS = 1000
READY_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 5.0  # one `fabric topic list` attempt
ADMIN_TIMEOUT_S = 120.0  # topic create (1,000 partitions is many files)
CLIENT_TIMEOUT_S = 3600.0


def fabric_argv(*args: object) -> list[str]:
    """argv of one ``fabric`` command."""
    prefix = os.environ.get("FABRIC_BENCH_CMD")
    base = shlex.split(prefix) if prefix else python_argv("fabric.cli:main")
    return [*base, *map(str, args)]


@register
class FabricSystem(System):
    """Fabric through its columnar bulk APIs, 1,000 records per call: ``Producer.send_batch`` and
    ``Consumer.poll_batches`` (the peers batch by 1,000 too: Redis pipelines, NATS ack windows
    and fetches).  ``fabric-per-record`` below is the same broker driven one record at a time."""

    name = "fabric"
    durability = f"fsync 1 s (--flush-interval-ms {FLUSH_INTERVAL_MS})"
    client = "fabric perf, Producer.send_batch(1000) / Consumer.poll_batches, acks=1"
    latency_unit = "one send_batch call of 1,000 records: call to the acknowledgement of all"
    e2e_client = ("fabric perf e2e: Producer.send() per record (linger 0, acks=1) on a thread; "
                  "Consumer.poll() on the main thread, standing fetches")
    produce_args: tuple[object, ...] = ("--batch", 1000)
    consume_args: tuple[object, ...] = ("--columnar",)

    def __init__(self) -> None:
        self.broker: ServerProcess | None = None
        self.port = 0
        self.data_dir: Path | None = None
        self.value_bytes = 0  # record size of the last perf_produce

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    # ----------------------------------------------------------------- lifecycle

    def start(self, workdir: Path) -> None:
        self.port = free_port()
        self.data_dir = workdir / "data"
        self.data_dir.mkdir()
        self.broker = ServerProcess("fabric broker", fabric_argv(
            "broker", "--data-dir", self.data_dir, "--port", self.port,
            "--flush-interval-ms", FLUSH_INTERVAL_MS), workdir / "broker.log")
        self.broker.wait_until(self._serves, "fabric topic list", READY_TIMEOUT_S)
        self.create_topic(TOPIC, partitions=1)

    def stop(self) -> None:
        if self.broker:
            self.broker.stop()

    def _serves(self) -> bool:
        try:
            done = subprocess.run(fabric_argv("topic", "list", "--bootstrap", self.bootstrap), check=False,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=PROBE_TIMEOUT_S, env=child_env(), cwd=REPO_ROOT)
        except subprocess.TimeoutExpired:
            return False
        if done.returncode != 0:
            log.debug("fabric topic list: exit %d: %s", done.returncode, done.stderr.strip()[-300:])
            if "No module named" in done.stderr or "invalid choice" in done.stderr:
                raise RuntimeError(f"fabric CLI unusable: {done.stderr.strip()[-300:]}")
        return done.returncode == 0

    # ----------------------------------------------------------------- workload

    def produce(self, records: int, value_bytes: int) -> ProduceResult:
        return ProduceResult.from_json(self.perf_produce(TOPIC, records, value_bytes), value_bytes)

    def consume(self, records: int) -> ConsumeResult:
        # fabric perf consume need not report bytes; the values are the ones produce() wrote.
        return ConsumeResult.from_json(self.perf_consume(TOPIC, records), self.value_bytes)

    def e2e(self, rate: int, seconds: float, value_bytes: int) -> E2EResult:
        obj = run_json(fabric_argv("perf", "e2e", "--bootstrap", self.bootstrap, "--topic", E2E_TOPIC,
                                   "--rate", rate, "--seconds", seconds, "--record-size", value_bytes,
                                   "--json"), CLIENT_TIMEOUT_S, "fabric perf e2e")
        return E2EResult.from_json(obj, rate)

    # ----------------------------------------------------------------- building blocks (scaling)

    def create_topic(self, topic: str, partitions: int) -> None:
        argv = fabric_argv("topic", "create", topic, "--partitions", partitions,
                           "--bootstrap", self.bootstrap)
        done = subprocess.run(argv, check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=ADMIN_TIMEOUT_S, env=child_env(), cwd=REPO_ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"fabric topic create {topic} exited {done.returncode}: "
                               f"{(done.stderr or done.stdout).strip()[-500:]}")

    def perf_produce(self, topic: str, records: int, record_size: int) -> dict[str, Any]:
        self.value_bytes = record_size
        return run_json(fabric_argv("perf", "produce", "--bootstrap", self.bootstrap, "--topic", topic,
                                    "--records", records, "--record-size", record_size,
                                    "--acks", 1, *self.produce_args, "--json"), CLIENT_TIMEOUT_S,
                        "fabric perf produce")

    def perf_consume(self, topic: str, records: int, start_offset: int | None = None) -> dict[str, Any]:
        extra = [] if start_offset is None else ["--start-offset", start_offset]
        return run_json(fabric_argv("perf", "consume", "--bootstrap", self.bootstrap, "--topic", topic,
                                    "--records", records, *extra, *self.consume_args, "--json"),
                        CLIENT_TIMEOUT_S, "fabric perf consume")

    def broker_pid(self) -> int:
        assert self.broker is not None, "broker not started"
        return self.broker.pid

    def data_bytes(self) -> int:
        """Bytes under the broker's data dir (the log's size on disk)."""
        total = 0
        for root, _, files in os.walk(self.data_dir or ()):
            for name in files:
                try:
                    total += os.stat(os.path.join(root, name)).st_size
                except OSError:
                    pass  # a segment deleted or renamed mid-walk
        return total

    def versions(self) -> dict[str, str]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return {"fabric": version("fabric-streams")}
        except PackageNotFoundError:
            return {"fabric": "source tree (fabric-streams not installed)"}



@register
class FabricPerRecordSystem(FabricSystem):
    """Fabric driven one record per call: ``Producer.send`` and ``Consumer.poll`` (a ``Record``
    object per event)."""

    name = "fabric-per-record"
    client = "fabric perf, Producer.send() per record / Consumer.poll() Records, acks=1"
    latency_unit = "one record (every 1,000th is sampled): send() call to its acknowledgement"
    produce_args = ()
    consume_args = ()
    e2e_client = ""  # fabric perf e2e sends one record per call already: the fabric row has it

    def e2e(self, rate: int, seconds: float, value_bytes: int) -> None:
        return None
