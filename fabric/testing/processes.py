"""Start, stop, SIGKILL and restart real ``fabric broker`` processes.

Why processes and not threads: the tests that matter (SIGKILL during a produce, restart finds
the data) need a real process boundary and a real kernel page cache.  Readiness is polled with a
real ``api_versions`` request, never a sleep.  Every process is killed and reaped by ``stop`` /
``kill`` even when a test fails; use as a context manager or from a fixture's finally block.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from ..client.admin import Admin
from ..client.connection import RequestTimeoutError


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BrokerProcess:
    def __init__(self, data_dir: str | Path, port: int | None = None, extra_args: Sequence[str] = (),
                 log_path: str | Path | None = None, nofile: int | None = None, host: str = "127.0.0.1",
                 command_prefix: Sequence[str] = ()) -> None:
        """``nofile``: run the broker under this ``RLIMIT_NOFILE`` (soft and hard), as
        ``ulimit -n`` would.  ``host``: the address it binds and is polled at (another than
        127.0.0.1 only inside a network namespace, ``fabric.testing.netns``); ``command_prefix``:
        what runs the broker command (``ip netns exec NS``, which execs it: signals reach the broker)."""
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.log_path = Path(log_path) if log_path else self.data_dir.parent / f"broker-{self.port}.log"
        self.proc: subprocess.Popen | None = None
        self.nofile = nofile
        self.host = host
        self.command_prefix = list(command_prefix)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, wait: bool = True, timeout: float = 20.0) -> "BrokerProcess":
        cmd = [*self.command_prefix, sys.executable, "-m", "fabric", "broker", "--data-dir", str(self.data_dir),
               "--port", str(self.port), *(["--host", self.host] if self.host != "127.0.0.1" else []), *self.extra_args]
        self._log = open(self.log_path, "ab")
        nofile = self.nofile

        def limit() -> None:  # (in the child, before exec)
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=limit if nofile is not None else None)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        with Admin(self.bootstrap, timeout_ms=500) as admin:
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"broker exited with {self.proc.returncode}; log:\n{self.log_text()}")
                try:
                    admin.api_versions()
                    return
                except RequestTimeoutError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"broker not ready after {timeout} s; log:\n{self.log_text()}") from None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL and reap (a crash: no flush, no clean-shutdown marker)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self._reap()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful), then SIGKILL if it does not exit in time; returns the exit code."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self._reap()

    def _reap(self) -> int | None:
        code = None
        if self.proc is not None:
            code = self.proc.wait()
            self.proc = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None
        return code

    def restart(self, kill: bool = False) -> "BrokerProcess":
        self.kill() if kill else self.stop()
        return self.start()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def __enter__(self) -> "BrokerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def __del__(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
