"""`fabric produce` while the broker runs and while it is gone: acknowledgements reach stdout as
they happen, and giving up says how long it tried and how much was not acknowledged."""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import sys
import time


def _start_produce(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fabric", "produce", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _read_lines(proc: subprocess.Popen, n: int, timeout: float) -> list[str]:
    """Read ``n`` lines from the running process's stdout (a pipe: block-buffered unless flushed)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while buf.count(b"\n") < n:
            left = deadline - time.monotonic()
            assert left > 0, f"fewer than {n} lines on stdout after {timeout} s: {buf!r}"
            if sel.select(left):
                chunk = os.read(fd, 65536)
                assert chunk, "stdout closed"
                buf += chunk
    return buf.decode().splitlines()


def test_print_metadata_is_on_stdout_as_soon_as_acknowledged(broker):
    proc = _start_produce("acks", "--print-metadata", "--key-separator", ":", "--bootstrap", broker.bootstrap)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"k1:a\nk1:b\nk2:c\n")
        proc.stdin.flush()
        # stdin stays open: the command is still running, and its acknowledgements are already out
        lines = _read_lines(proc, 3, timeout=20)
        assert [json.loads(x)["offset"] for x in lines if json.loads(x)["key"] == "k1"] == [0, 1]
        assert proc.poll() is None
        proc.stdin.write(b"k2:d\n")
        proc.stdin.close()
        assert proc.wait(30) == 0
        assert proc.stdout is not None and b"offset" in proc.stdout.read()
    finally:
        proc.kill()
        proc.wait()


def test_giving_up_says_how_long_it_tried_and_how_many_records_are_unacknowledged(broker):
    proc = _start_produce("outage", "--print-metadata", "--timeout-ms", "1000", "--delivery-timeout-ms", "3000",
                          "--bootstrap", broker.bootstrap)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"before\n")
        proc.stdin.flush()
        assert len(_read_lines(proc, 1, timeout=20)) == 1
        broker.kill()
        proc.stdin.write(b"x\ny\nz\n")
        proc.stdin.close()
        assert proc.wait(60) == 1
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait()
    assert "3 of 4 records were not acknowledged" in err, err
    m = re.search(r"gave up after (\d+\.\d) s", err)
    assert m and 3.0 <= float(m.group(1)) < 30, err
    assert "delivery_timeout_ms=3000" in err and re.search(r"over \d+\.\d s", err), err
    assert "Traceback" not in err
