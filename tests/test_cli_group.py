"""``fabric consume --group`` and ``fabric group ...`` as a user runs them, against a real broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from fabric.client import Admin
from fabric.errors import FabricError

pytestmark = pytest.mark.process

FAST_GROUPS = ["--group-initial-rebalance-delay-ms", "200"]


def fabric(*args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fabric", *args], input=input, capture_output=True, timeout=timeout)


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fabric", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)


@pytest.fixture
def procs():
    """CLI processes started by a test: SIGKILLed and reaped at the end, pass or fail."""
    started: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        p = spawn(*args)
        started.append(p)
        return p

    try:
        yield start
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
            p.communicate()


def wait_until(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (got := fn()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return got


def describe(bs: list[str], group: str) -> dict:
    r = fabric("group", "describe", group, "--json", *bs)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_consume_with_group_then_describe_reset_and_delete(brokers, procs):
    broker = brokers(FAST_GROUPS)
    bs = ["--bootstrap", broker.bootstrap]
    assert fabric("topic", "create", "orders", "--partitions", "3", *bs).returncode == 0
    lines = [f"user-{i % 20}:order-{i}" for i in range(300)]
    r = fabric("produce", "orders", "--key-separator", ":", *bs, input="\n".join(lines).encode() + b"\n")
    assert r.returncode == 0, r.stderr

    # two consumers in one group share the partitions: every record once, then both exit when idle
    consumers = [procs("consume", "orders", "--group", "billing", "--from-beginning", "--format", "json",
                       "--idle-timeout-ms", "1500", *bs) for _ in range(2)]
    outputs = [c.communicate(timeout=60) for c in consumers]
    assert [c.returncode for c in consumers] == [0, 0], [e for _, e in outputs]
    recs = [json.loads(line) for out, _ in outputs for line in out.decode().splitlines()]
    assert sorted(x["value"] for x in recs) == sorted(line.split(":", 1)[1] for line in lines)

    g = describe(bs, "billing")
    assert (g["state"], g["members"], g["total_lag"], g["max_lag_seconds"]) == ("EMPTY", [], 0, 0)
    assert sorted((p["partition"], p["committed"]) for p in g["partitions"]) == \
        sorted((p["partition"], p["log_end"]) for p in g["partitions"])
    r = fabric("group", "describe", "billing", *bs)
    assert r.returncode == 0 and b"total lag=0" in r.stdout and b"orders" in r.stdout
    r = fabric("group", "list", *bs)
    assert r.returncode == 0 and b"billing" in r.stdout and b"EMPTY" in r.stdout

    # reset-offsets: a dry run changes nothing, --execute does; offsets are clamped to the log
    r = fabric("group", "reset-offsets", "billing", "--topic", "orders", "--to-earliest", *bs)
    assert r.returncode == 0 and b"dry run" in r.stdout, r.stderr
    assert describe(bs, "billing")["total_lag"] == 0
    r = fabric("group", "reset-offsets", "billing", "--topic", "orders", "--to-earliest", "--execute", *bs)
    assert r.returncode == 0 and b"committed new offsets" in r.stdout, r.stderr
    g = describe(bs, "billing")
    assert g["total_lag"] == 300 and g["max_lag_seconds"] > 0
    r = fabric("group", "reset-offsets", "billing", "--topic", "orders:0", "--to-offset", "999999", "--execute",
               "--json", *bs)
    row = json.loads(r.stdout)[0]
    assert row["partition"] == 0 and row["new"] == row["latest"]
    r = fabric("group", "reset-offsets", "billing", "--topic", "orders:0", "--shift-by", "-5", "--json", *bs)
    assert json.loads(r.stdout)[0]["new"] == row["latest"] - 5

    # a group with a live member: no reset, no delete; a dry run still works
    live = procs("consume", "orders", "--group", "billing", *bs)
    with Admin(broker.bootstrap) as admin:
        wait_until(lambda: _members(admin, "billing"), 20, "the live consumer to join")
    r = fabric("group", "reset-offsets", "billing", "--topic", "orders", "--to-latest", "--execute", *bs)
    assert r.returncode == 1 and b"GROUP_NOT_EMPTY" in r.stderr and b"stop them first" in r.stderr
    assert b"Traceback" not in r.stderr
    assert fabric("group", "reset-offsets", "billing", "--topic", "orders", "--to-latest", *bs).returncode == 0
    r = fabric("group", "delete", "billing", *bs)
    assert r.returncode == 1 and b"GROUP_NOT_EMPTY" in r.stderr
    r = fabric("group", "describe", "billing", *bs)
    assert r.returncode == 0 and b"fabric-cli" in r.stdout and b"STABLE" in r.stdout

    # Ctrl-C: the consumer commits what it printed and leaves the group (at once: no session timeout)
    live.send_signal(signal.SIGINT)
    live.communicate(timeout=20)
    assert live.returncode == 0
    with Admin(broker.bootstrap) as admin:
        assert not _members(admin, "billing")
    r = fabric("group", "delete", "billing", *bs)
    assert r.returncode == 0 and b"deleted group billing" in r.stdout, r.stderr
    r = fabric("group", "list", *bs)
    assert r.returncode == 0 and b"no groups" in r.stdout
    r = fabric("group", "delete", "billing", *bs)
    assert r.returncode == 1 and b"GROUP_ID_NOT_FOUND" in r.stderr


def test_group_cli_errors_are_one_line(broker):
    bs = ["--bootstrap", broker.bootstrap]
    r = fabric("group", "describe", "nobody", *bs)
    assert r.returncode == 1 and b"GROUP_ID_NOT_FOUND" in r.stderr and b"Traceback" not in r.stderr
    r = fabric("consume", "orders", "--group", "g", "--partition", "0", *bs)
    assert r.returncode == 2 and b"cannot be combined with --partition" in r.stderr  # a usage error
    r = fabric("group", "reset-offsets", "g", "--topic", "orders", *bs)
    assert r.returncode == 2 and b"--to-earliest" in r.stderr  # argparse: a strategy is required
    assert b"reset-offsets billing --topic orders --to-earliest" in fabric("group", "reset-offsets", "--help").stdout



def _ignore_sigint() -> None:
    """What a background job of a non-interactive shell inherits: SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("sig, inherited_ignore", [(signal.SIGTERM, False), (signal.SIGINT, False),
                                                   (signal.SIGINT, True)],
                         ids=["SIGTERM", "SIGINT", "SIGINT-inherited-as-ignored"])
def test_signal_stops_the_group_consumer_cleanly(brokers, tmp_path, sig, inherited_ignore):
    """SIGTERM (containers, service managers) and SIGINT (Ctrl-C, also when the shell started the
    consumer with SIGINT ignored) make `fabric consume --group` commit what it printed, leave the
    group at once (no waiting for the session timeout) and exit 0."""
    broker = brokers(FAST_GROUPS)
    bs = ["--bootstrap", broker.bootstrap]
    assert fabric("topic", "create", "orders", "--partitions", "2", *bs).returncode == 0
    r = fabric("produce", "orders", *bs, input=b"".join(b"order-%d\n" % i for i in range(50)))
    assert r.returncode == 0, r.stderr
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "fabric", "consume", "orders", "--group", "g",
                                 "--from-beginning", *bs], stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"},  # to see the lines as printed
                                preexec_fn=_ignore_sigint if inherited_ignore else None)
    try:
        wait_until(lambda: len(out.read_bytes().splitlines()) == 50, 30, "the consumer to print 50 records")
        sent = time.monotonic()
        proc.send_signal(sig)
        code = proc.wait(timeout=10)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert code == 0, err.read_text()
    assert took < 3, f"stopping took {took:.1f} s"
    g = describe(bs, "g")  # at once: the session timeout (10 s) has not passed
    assert (g["state"], g["members"], g["total_lag"]) == ("EMPTY", [], 0)
    assert sum(p["log_end"] for p in g["partitions"]) == 50
    assert all(p["committed"] == p["log_end"] for p in g["partitions"] if p["log_end"])
    r = fabric("group", "delete", "g", *bs)
    assert r.returncode == 0 and b"deleted group g" in r.stdout, r.stderr


def test_second_signal_exits_at_once_when_closing_hangs(brokers, procs):
    """With the broker frozen, the clean close (commit, leave) would wait for its timeouts; a
    second signal ends the process at once, killed by that signal."""
    broker = brokers(FAST_GROUPS)
    bs = ["--bootstrap", broker.bootstrap]
    assert fabric("topic", "create", "orders", "--partitions", "1", *bs).returncode == 0
    live = procs("consume", "orders", "--group", "g", "--timeout-ms", "30000", *bs)
    with Admin(broker.bootstrap) as admin:
        wait_until(lambda: [m for m in _members(admin, "g") if m["assignment"]], 20, "the consumer to join")
    broker.proc.send_signal(signal.SIGSTOP)
    try:
        live.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):  # the first signal: closing, and the broker is frozen
            live.wait(timeout=1)
        sent = time.monotonic()
        live.send_signal(signal.SIGTERM)
        assert live.wait(timeout=5) == -signal.SIGTERM
        assert time.monotonic() - sent < 2
    finally:
        broker.proc.send_signal(signal.SIGCONT)


def _members(admin: Admin, group: str) -> list:
    try:
        return admin.describe_group(group)["members"]
    except FabricError:
        return []
