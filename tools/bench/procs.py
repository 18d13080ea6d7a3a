"""Processes of a benchmark run: servers we start and stop, clients we run for their JSON.

Rules this module keeps:
- Every server is a ``ServerProcess``; ``stop()`` sends SIGTERM, waits, then SIGKILL and waits
  again, and is idempotent.  Servers run in their own session (a Ctrl-C reaches only the
  harness, whose ``finally`` stops them in order) and get ``PR_SET_PDEATHSIG`` = SIGKILL, so even
  a SIGKILLed harness leaves no server behind.
- Readiness is polled against a deadline (port accepts, or a probe command exits 0), never slept.
- Clients run as child processes (same session: a Ctrl-C reaches them too; also
  ``PR_SET_PDEATHSIG``) with a timeout, and print one JSON object on stdout.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from tools.bench.launch import GC_ENV

log = logging.getLogger("bench.procs")

REPO_ROOT = Path(__file__).resolve().parents[2]
STOP_TERM_TIMEOUT_S = 10.0  # SIGTERM grace before SIGKILL
READY_TIMEOUT_S = 30.0  # default deadline for a server to accept connections
POLL_INTERVAL_S = 0.05  # readiness poll period (a poll, not a sleep-and-hope)
LOG_TAIL_CHARS = 2000  # server log included in an error message


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the harness dies (Linux); harmless elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class ServerProcess:
    """One server process, its log file in the run's workdir, and how to stop it."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log.info("starting %s: %s", name, " ".join(self.argv))
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - open until stop()
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=child_env(client=False), cwd=REPO_ROOT, start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - children are spawned from the main thread
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with code {code}; log tail:\n{self.log_tail()}")

    def wait_until(self, ready: Callable[[], bool], what: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll ``ready()`` until true; fail if the process exits or the deadline passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.check_alive()
            if ready():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {what} not ready after {timeout_s:.0f}s; "
                                   f"log tail:\n{self.log_tail()}")
            time.sleep(POLL_INTERVAL_S)

    def wait_port(self, port: int, timeout_s: float = READY_TIMEOUT_S) -> None:
        self.wait_until(lambda: port_accepts(port), f"port {port}", timeout_s)

    def stop(self) -> None:
        """SIGTERM, wait, SIGKILL, wait.  Safe to call twice."""
        if self.proc.poll() is None:
            log.info("stopping %s (pid %d)", self.name, self.proc.pid)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TERM_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.0fs; SIGKILL", self.name, STOP_TERM_TIMEOUT_S)
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def rss_kb(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def python_argv(target: str, *args: object) -> list[str]:
    """argv that runs ``target`` (``module`` or ``module:function``) through ``launch``."""
    return [sys.executable, "-m", "tools.bench.launch", target, *map(str, args)]


client_argv = python_argv  # a client child: the GC policy of the run applies (see launch.py)


def child_env(client: bool = True) -> dict[str, str]:
    """Environment for children: the repo root importable (``tools.bench`` and ``fabric``).

    Servers (``client=False``) run without the harness's client GC policy."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    if not client:
        env.pop(GC_ENV, None)
    return env


def run_json(argv: Sequence[str], timeout_s: float, what: str) -> dict[str, Any]:
    """Run a client child to completion and return the last JSON object line of its stdout."""
    log.info("running %s: %s", what, " ".join(argv))
    try:
        done = subprocess.run(list(argv), check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout_s, env=child_env(), cwd=REPO_ROOT,
                              preexec_fn=_die_with_parent)
    except subprocess.TimeoutExpired as e:
        raise TimeoutError(f"{what} did not finish within {timeout_s:.0f}s") from e
    if done.stderr.strip():
        log.debug("%s stderr:\n%s", what, done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"{what} exited with code {done.returncode}: "
                           f"{(done.stderr or done.stdout).strip()[-LOG_TAIL_CHARS:]}")
    for line in reversed(done.stdout.splitlines()):
        if line.lstrip().startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"{what} printed no JSON object; stdout: {done.stdout.strip()[-LOG_TAIL_CHARS:]!r}")


def emit_json(obj: dict[str, Any]) -> None:
    """Client side of ``run_json``: one JSON object on one line of stdout."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
