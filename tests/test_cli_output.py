"""What the ``fabric`` commands print, run as a user runs them against a real broker: the
README's "Try it" block line by line as written, ``--output json`` on every command that prints
data, and tables that are not cut when stdout is a pipe."""

from __future__ import annotations

import json
import os
import pathlib
import re
import select
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.process

ROOT = pathlib.Path(__file__).resolve().parent.parent
FABRIC_BIN = pathlib.Path(sys.executable).parent  # where `pip install -e .` put the `fabric` script
FAST_GROUPS = ["--group-initial-rebalance-delay-ms", "200"]


def fabric(*args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fabric", *args], input=input, capture_output=True, timeout=timeout)


def readme_try_it() -> list[str]:
    """The command lines of the README's "Try it" block, exactly as a reader copies them."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Try it\n.*?```bash\n(.*?)```", text, re.S)
    assert block, "README has no Try it block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def shell_env(bootstrap: str) -> dict[str, str]:
    assert (FABRIC_BIN / "fabric").exists(), "the fabric script is installed beside this python (pip install -e .)"
    return {**os.environ, "PATH": f"{FABRIC_BIN}{os.pathsep}{os.environ['PATH']}", "FABRIC_BOOTSTRAP": bootstrap}


def test_readme_try_it_runs_as_written(brokers):
    broker = brokers(FAST_GROUPS)
    env = shell_env(broker.bootstrap)
    lines = readme_try_it()
    outputs: dict[str, str] = {}
    for line in lines:
        if "--group billing" in line and "consume" in line:
            # Runs until Ctrl-C (the README says so): run it, wait for the three records, then Ctrl-C.
            p = subprocess.Popen(line, shell=True, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 start_new_session=True)
            try:
                got = b""
                deadline = time.monotonic() + 30
                while got.count(b"\n") < 3 and time.monotonic() < deadline:
                    if select.select([p.stdout], [], [], 0.5)[0]:
                        got += os.read(p.stdout.fileno(), 4096) or b"<eof>\n"
                assert sorted(got.decode().splitlines()) == ["alice\tbook", "alice\tpen", "bob\tlamp"], got
                os.killpg(p.pid, signal.SIGINT)  # Ctrl-C in its shell
                p.wait(timeout=20)
            finally:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                p.communicate()
            continue
        r = subprocess.run(line, shell=True, env=env, capture_output=True, timeout=60)
        assert r.returncode == 0, (line, r.stderr)
        assert b"Traceback" not in r.stderr
        outputs[line] = r.stdout.decode()

    def output(fragment: str) -> str:
        [line] = [k for k in outputs if fragment in k]
        return outputs[line]

    assert sorted(output("--max 3 --print-key").splitlines()) == ["alice\tbook", "alice\tpen", "bob\tlamp"]
    rows = [line.split(" ") for line in output("--format '%p %o %k %s'").splitlines()]
    assert sorted((k, v) for _, _, k, v in rows) == [("alice", "book"), ("alice", "pen"), ("bob", "lamp")]
    assert all(p.isdigit() and o.isdigit() for p, o, _, _ in rows)
    assert len([json.loads(x) for x in output("--from-time -10m").splitlines()]) == 3
    assert json.loads(output("describe orders --output json"))[0]["name"] == "orders"
    assert "retention_ms=86400000" in output("alter orders")
    assert "billing" in output("group describe billing")
    [dry_run] = [k for k in outputs if "reset-offsets" in k and "--execute" not in k]
    assert "dry run: nothing changed" in outputs[dry_run]
    assert "committed new offsets" in output("--to-earliest --execute")


def test_every_data_command_prints_json(brokers):
    broker = brokers(FAST_GROUPS)
    bs = ["--bootstrap", broker.bootstrap]
    r = fabric("topic", "create", "orders", "--partitions", "2", "--output", "json", *bs)
    assert r.returncode == 0 and json.loads(r.stdout) == {"name": "orders", "partitions": 2, "created": True}
    r = fabric("topic", "create", "orders", "--if-not-exists", "-o", "json", *bs)
    assert json.loads(r.stdout) == {"name": "orders", "partitions": 2, "created": False}
    assert fabric("produce", "orders", "-k", ":", *bs, input=b"a:1\nb:2\n").returncode == 0
    commands = [
        ("topic", "list"), ("topic", "describe", "orders"), ("offsets", "orders", "--time", "-1h"),
        ("topic", "alter", "orders", "--set", "retention_ms=60000"),
        ("group", "reset-offsets", "g1", "--topic", "orders", "--to-earliest", "--execute"),
        ("group", "list"), ("group", "describe", "g1"), ("group", "delete", "g1"),
        ("perf", "produce", "--topic", "perf", "--records", "100"),
        ("perf", "consume", "--topic", "perf", "--records", "100"),
        ("perf", "e2e", "--topic", "perf-e2e", "--rate", "200", "--seconds", "0.5"),
        ("topic", "delete", "perf"),
    ]
    docs = {}
    for argv in commands:
        for flag in (["--output", "json"], ["--json"]) if argv[-1] == "list" else (["--output", "json"],):
            r = fabric(*argv, *flag, *bs)
            assert r.returncode == 0, (argv, r.stderr)
            docs[argv] = json.loads(r.stdout)  # one document, nothing else on stdout
    assert docs[("topic", "alter", "orders", "--set", "retention_ms=60000")] == \
        {"name": "orders", "configs": {"retention_ms": 60000}, "partitions": None}
    assert docs[("group", "delete", "g1")] == [{"group_id": "g1", "deleted": True, "error": None}]
    assert docs[("topic", "delete", "perf")] == [{"name": "perf", "deleted": True, "error": None}]
    assert {r["partition"] for r in docs[("offsets", "orders", "--time", "-1h")]} == {0, 1}
    r = fabric("consume", "orders", "--from-beginning", "--max", "2", "--output", "json", *bs)
    assert sorted(json.loads(x)["value"] for x in r.stdout.decode().splitlines()) == ["1", "2"]


def test_tables_are_not_cut_when_piped(broker):
    """stdout is a pipe here, as in `fabric topic list | grep ...`: rich would cut at 80 columns."""
    bs = ["--bootstrap", broker.bootstrap]
    topic = "orders-" + "x" * 150
    group = "billing-" + "y" * 150
    assert fabric("topic", "create", topic, "--partitions", "2", *bs).returncode == 0
    assert fabric("produce", topic, *bs, input=b"a\n").returncode == 0
    r = fabric("group", "reset-offsets", group, "--topic", topic, "--to-latest", "--execute", *bs)
    assert r.returncode == 0, r.stderr
    for argv in (("topic", "list"), ("topic", "describe", topic), ("offsets", topic, "--time", "-1h"),
                 ("group", "list"), ("group", "describe", group),
                 ("group", "reset-offsets", group, "--topic", topic, "--to-earliest")):
        r = fabric(*argv, *bs)
        assert r.returncode == 0, (argv, r.stderr)
        text = r.stdout.decode()
        assert "…" not in text, (argv, text)
        if argv[0] == "offsets":  # no name in it, but wider than 80 columns with --time
            assert re.search(r" \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", text), text
        else:
            assert topic in text or group in text, (argv, text)
