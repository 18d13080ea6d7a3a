"""A consumer-group member in its own process, for tests and benchmarks.

``python -m fabric.testing.group_worker --bootstrap H:P --group G --topic T`` subscribes and prints
one JSON object per line on stdout (flushed at once, so a SIGKILL loses at most a partial line):

    {"event": "assigned"|"revoked"|"lost", "t": unix seconds, "partitions": [[topic, p], ...],
     "generation": int, "member_id": str}
    {"event": "subscribed", "t": ...}                   before the first poll (which joins)
    {"event": "records", "t": ..., "records": [[topic, partition, offset, key], ...]}
    {"event": "commit_failed", "t": ..., "error": str}  a rebalance refused a commit (it goes on)
    {"event": "closed", "t": ...}                       after SIGTERM/SIGINT: committed, left the group

``--commit sync`` commits after printing each batch (so at most one printed batch is uncommitted
when the process dies); ``auto`` uses auto-commit; ``none`` never commits.  A sync commit that a
rebalance refuses (``CommitFailedError``) is not fatal, as in Kafka's consumers: the worker keeps
polling, and the uncommitted records are delivered again to the partition's next owner.

``GroupWorkerProcess`` starts one, collects its events on a reader thread, and kills and reaps it
in ``kill``/``stop`` (call one in a ``finally``).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Sequence


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fabric.testing.group_worker")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--topic", action="append", required=True)
    p.add_argument("--instance-id")
    p.add_argument("--client-id", default="group-worker")
    p.add_argument("--session-timeout-ms", type=int, default=3000)
    p.add_argument("--heartbeat-interval-ms", type=int, default=300)
    p.add_argument("--max-poll-interval-ms", type=int, default=30_000)
    p.add_argument("--assignor", action="append")
    p.add_argument("--commit", choices=["sync", "auto", "none"], default="sync")
    p.add_argument("--auto-commit-interval-ms", type=int, default=200)
    p.add_argument("--offset-reset", default="earliest")
    args = p.parse_args(argv)

    from fabric.client import CommitFailedError, Consumer  # after parsing: --help stays fast

    def emit(obj: dict[str, Any]) -> None:
        obj["t"] = time.time()
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    consumer: Consumer | None = None

    def event(name: str) -> Callable[[list], None]:
        def callback(tps: list) -> None:
            meta = consumer.group_metadata() if consumer is not None else {}
            emit({"event": name, "partitions": [list(tp) for tp in tps],
                  "generation": meta.get("generation"), "member_id": meta.get("member_id")})
        return callback

    consumer = Consumer(args.bootstrap, group_id=args.group, group_instance_id=args.instance_id,
                        client_id=args.client_id, session_timeout_ms=args.session_timeout_ms,
                        heartbeat_interval_ms=args.heartbeat_interval_ms,
                        max_poll_interval_ms=args.max_poll_interval_ms,
                        assignors=tuple(args.assignor or ("cooperative-sticky", "range")),
                        enable_auto_commit=args.commit == "auto", auto_commit_interval_ms=args.auto_commit_interval_ms,
                        auto_offset_reset=args.offset_reset, fetch_max_wait_ms=100,
                        on_assigned=event("assigned"), on_revoked=event("revoked"), on_lost=event("lost"))
    with consumer.closing_on_signals() as stop:  # SIGTERM/SIGINT: finish the batch, commit, leave
        consumer.subscribe(args.topic)
        emit({"event": "subscribed"})
        while not stop.requested:
            records = consumer.poll(100, max_records=500)
            if records:
                emit({"event": "records", "records": [[r.topic, r.partition, r.offset,
                                                       None if r.key is None else r.key.decode()] for r in records]})
                if args.commit == "sync":
                    try:
                        consumer.commit()
                    except CommitFailedError as exc:
                        emit({"event": "commit_failed", "error": str(exc)})
    emit({"event": "closed"})
    return 0


class GroupWorkerProcess:
    """One ``group_worker`` process and the events it printed."""

    def __init__(self, bootstrap: str, group: str, topics: Sequence[str], *args: str, name: str = "") -> None:
        self.name = name
        self.cmd = [sys.executable, "-m", "fabric.testing.group_worker", "--bootstrap", bootstrap,
                    "--group", group, *(a for t in topics for a in ("--topic", t)), *args]
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> "GroupWorkerProcess":
        self._stderr = tempfile.TemporaryFile()  # a file, not a pipe: a chatty worker never blocks
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL)
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        return self

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue  # a line cut short by SIGKILL
            with self._cond:
                self.events.append(obj)
                self._cond.notify_all()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self.events)

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float, what: str = "") -> None:
        """Wait until ``predicate(events)`` holds; AssertionError (with stderr) after ``timeout`` s
        or once the process has exited without it holding."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.events):
                left = deadline - time.monotonic()
                if left <= 0 or (self._reader is not None and not self._reader.is_alive()):
                    raise AssertionError(f"worker {self.name}: {what or 'condition'} not reached; "
                                         f"exit code {self.proc and self.proc.poll()}; stderr:\n{self.stderr()}")
                self._cond.wait(min(left, 0.1))

    def assignment(self) -> set[tuple[str, int]]:
        """What the worker owns according to its callbacks."""
        owned: set[tuple[str, int]] = set()
        for e in self.snapshot():
            tps = {tuple(tp) for tp in e.get("partitions", [])}
            if e["event"] == "assigned":
                owned |= tps  # type: ignore[arg-type]
            elif e["event"] in ("revoked", "lost"):
                owned -= tps  # type: ignore[operator]
        return owned

    def records(self) -> list[tuple[str, int, int, str | None]]:
        return [tuple(r) for e in self.snapshot() if e["event"] == "records" for r in e["records"]]  # type: ignore

    def stderr(self) -> str:
        """The end of what the process logged."""
        try:
            self._stderr.seek(0)
            return self._stderr.read().decode(errors="replace")[-3000:]
        except (OSError, ValueError):
            return ""

    def kill(self) -> None:
        """SIGKILL and reap (a crash: no commit, no leave)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            if self._reader is not None:
                self._reader.join(5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (commit, leave, exit), SIGKILL if it takes longer than ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        code = self.proc.wait()
        if self._reader is not None:
            self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
