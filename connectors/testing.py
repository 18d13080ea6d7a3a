"""Test and benchmark helpers for Connect: a private PostgreSQL server.

``PostgresServer`` runs Debian's PostgreSQL binaries (``apt-get install postgresql``) on a free
loopback port with its own data directory in a fresh temporary folder, and removes both when
stopped.  PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` system
user the package creates (``runuser``); as any other user it runs as that user.  Authentication is
``trust`` on 127.0.0.1 only: the server is private to the test.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from fabric.testing import free_port

START_TIMEOUT_S = 30


def pg_bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    def __init__(self) -> None:
        bindir = pg_bin_dir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql")
        self.bin = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="fabric-pg-"))
        self.data = self.root / "data"
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self.user = "postgres"
        self.dsn = f"host=127.0.0.1 port={self.port} dbname=postgres user={self.user}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, stdin=subprocess.DEVNULL)

    def start(self) -> "PostgresServer":
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8",
                      "--no-sync")
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off")
        r = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", opts, "-w",
                      "-t", str(START_TIMEOUT_S), "start", check=False)
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {r.stdout}{r.stderr}\n{self.log_text()}")
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (keeping its data: ``start`` again works)."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return (self.root / "log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        import psycopg
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.dsn, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, what: str = "condition",
               interval: float = 0.05) -> object:
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def read_topic(bootstrap: str, topic: str, count: int | None = None, timeout: float = 30.0) -> list:
    """Every record of ``topic`` (all partitions) up to its current end, or until ``count`` records."""
    from fabric.client import Admin, Consumer
    from fabric.errors import FabricError

    def offsets() -> list | None:
        try:
            return admin.topic_offsets(topic)
        except FabricError:
            return None  # not created yet (by the connector under test)
    with Admin(bootstrap) as admin:
        ends = {o["partition"]: o["latest"] for o in wait_until(offsets, timeout, f"topic {topic}")}
    want = count if count is not None else sum(ends.values())
    out: list = []
    with Consumer(bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=100) as c:
        c.assign([(topic, p) for p in ends])
        c.seek_to_beginning()
        deadline = time.monotonic() + timeout
        while len(out) < want:
            if time.monotonic() > deadline:
                raise AssertionError(f"read {len(out)} of {want} records of {topic} in {timeout} s")
            out.extend(c.poll(200))
    return out


@contextlib.contextmanager
def running_worker(yaml_text: str, env: dict[str, str] | None = None) -> Iterator[Any]:
    """An in-process worker (threads) from YAML text; stopped at the end, pass or fail."""
    from .config import load_text
    from .worker import Worker
    worker = Worker(load_text(yaml_text, env if env is not None else dict(os.environ)))
    try:
        worker.start()
        yield worker
    finally:
        worker.stop()
