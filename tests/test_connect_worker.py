"""Connect end to end against a real broker: files, dead letters, restarts, datagen, HTTP, mirror."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connectors.testing import read_topic, running_worker, wait_until
from fabric.client import Admin, Producer
from fabric.testing import free_port


@pytest.fixture
def broker(brokers, tmp_path):
    """A broker whose empty groups start their first rebalance after 100 ms, not 3 s: every sink
    task (and distributed worker) joins a group, and the tests start many."""
    cfg = tmp_path / "broker.yaml"
    cfg.write_text("group_initial_rebalance_delay_ms: 100\n")
    return brokers(extra_args=["--config", str(cfg)])


def test_file_to_topic_to_file_is_byte_identical_and_survives_rotation_and_truncation(broker, tmp_path):
    src, dst = tmp_path / "in.txt", tmp_path / "out.txt"
    first = b"".join(f"line {i} caf\xc3\xa9 \t tab\n".encode() for i in range(20_000))
    src.write_bytes(first)
    yaml_text = f"""
worker: {{bootstrap: "{broker.bootstrap}", rest_port: 0, offset_flush_interval_ms: 200}}
connectors:
  - {{name: fin, class: file-source, value_converter: string, config: {{file: "{src}", topic: lines,
      poll_interval_ms: 20}}}}
  - {{name: fout, class: file-sink, value_converter: string, topics: [lines], config: {{file: "{dst}"}}}}
"""
    with running_worker(yaml_text) as w:
        wait_until(lambda: dst.exists() and dst.stat().st_size == len(first), 60, "the first copy")
        assert dst.read_bytes() == first
        with open(src, "ab") as f:  # a partial line is held back until its newline arrives
            f.write(b"partial")
            f.flush()
            f.write(b" line\n")
        os.rename(src, tmp_path / "in.txt.1")  # rotation: the old file gets one more line after the move
        with open(tmp_path / "in.txt.1", "ab") as f:
            f.write(b"late line of the old file\n")
        src.write_bytes(b"new file 1\nnew file 2\n")
        expected = first + b"partial line\nlate line of the old file\nnew file 1\nnew file 2\n"
        wait_until(lambda: dst.read_bytes() == expected, 30, "the rotated file's lines")
        src.write_bytes(b"")  # truncation: the source starts again at 0
        with open(src, "ab") as f:
            f.write(b"after truncate\n")
        wait_until(lambda: dst.read_bytes() == expected + b"after truncate\n", 30, "the line after truncation")
        assert w.connector_status("fin")["tasks"][0]["state"] == "RUNNING"
    # Resume from the committed byte position: a restarted worker copies only what is new.
    with open(src, "ab") as f:
        f.write(b"while stopped\n")
    with running_worker(yaml_text):
        wait_until(lambda: dst.read_bytes().endswith(b"after truncate\nwhile stopped\n"), 30, "the resumed line")
    assert dst.read_bytes() == expected + b"after truncate\nwhile stopped\n"


def test_poison_record_goes_to_dead_letter_topic_with_error_headers(broker, tmp_path):
    db = tmp_path / "copy.db"
    with Admin(broker.bootstrap) as admin:
        admin.create_topic("orders", partitions=1)
    with Producer(broker.bootstrap) as p:
        for i in range(100):
            value = b"{not json" if i == 40 else (b'"a string"' if i == 70 else json.dumps({"id": i, "q": i}).encode())
            p.send("orders", value, key=str(i).encode(), partition=0)
        p.flush()
    yaml_text = f"""
worker: {{bootstrap: "{broker.bootstrap}", rest_port: 0, offset_flush_interval_ms: 200}}
connectors:
  - name: out
    class: sqlite-sink
    topics: [orders]
    key_converter: json
    errors: {{tolerance: all, dead_letter_topic: orders-dlq}}
    config: {{database: "{db}", table: orders, insert_mode: upsert, pk_mode: record_key, pk_fields: [id],
              auto_create: true}}
"""
    with running_worker(yaml_text):
        def copied() -> int:
            if not db.exists():
                return 0
            with sqlite3.connect(db) as c:
                try:
                    return c.execute("SELECT count(*) FROM orders").fetchone()[0] == 98
                except sqlite3.OperationalError:
                    return 0
        wait_until(copied, 30, "98 good rows")
        dead = read_topic(broker.bootstrap, "orders-dlq", 2)
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT min(id), max(id), sum(q) FROM orders").fetchone() == (0, 99, sum(range(100)) - 110)
    h0, h1 = dict(dead[0].headers), dict(dead[1].headers)
    assert (dead[0].key, dead[0].value) == (b"40", b"{not json")
    assert h0["error.stage"] == b"convert" and h0["error.class"] == b"ConversionError"
    assert h0["error"].startswith(b"json: not valid JSON")
    assert (h0["error.topic"], h0["error.partition"], h0["error.offset"]) == (b"orders", b"0", b"40")
    assert h1["error.stage"] == b"put" and h1["error.offset"] == b"70" and b"not an object" in h1["error"]


def test_failed_task_restarts_with_backoff_and_recovers_or_gives_up(broker, tmp_path):
    """The sink's database directory is missing: the task fails, restarts by itself with backoff
    (status says so), and runs once the directory appears; a second connector gives up."""
    with Producer(broker.bootstrap) as p:
        p.send("t", b'{"id": 1}', key=b"1")
        p.flush()
    missing = tmp_path / "later"
    yaml_text = f"""
worker: {{bootstrap: "{broker.bootstrap}", rest_port: 0}}
connectors:
  - name: recovers
    class: sqlite-sink
    topics: [t]
    key_converter: json
    errors: {{retry_timeout_ms: 0}}
    restart: {{max_tries: 50, backoff_initial_ms: 50, backoff_max_ms: 200}}
    config: {{database: "{missing}/a.db", table: t, auto_create: true}}
  - name: gives-up
    class: sqlite-sink
    topics: [t]
    errors: {{retry_timeout_ms: 0}}
    restart: {{max_tries: 2, backoff_initial_ms: 20, backoff_max_ms: 20}}
    config: {{database: "{tmp_path}/never/b.db", table: t}}
"""
    with running_worker(yaml_text) as w:
        wait_until(lambda: w.connector_status("recovers")["tasks"][0]["restarts"] >= 2, 20, "restarts")
        st = w.connector_status("recovers")["tasks"][0]
        assert st["state"] in ("FAILED", "RESTARTING") and "unable to open database file" in st["trace"]
        missing.mkdir()
        wait_until(lambda: w.connector_status("recovers")["tasks"][0]["state"] == "RUNNING", 20, "recovery")

        def rows():
            with sqlite3.connect(missing / "a.db") as c:
                try:
                    return c.execute("SELECT id FROM t").fetchall() == [(1,)]
                except sqlite3.OperationalError:
                    return False
        wait_until(rows, 20, "the row")
        gave_up = wait_until(lambda: (s := w.connector_status("gives-up"))["state"] == "FAILED" and s, 20, "give up")
        assert gave_up["tasks"][0]["trace"].startswith("gave up after 2 restarts; last error: RetriableError")


def test_datagen_at_a_rate_and_resumes_its_sequence(broker):
    yaml_text = f"""
worker: {{bootstrap: "{broker.bootstrap}", rest_port: 0, offset_flush_interval_ms: 100}}
connectors:
  - {{name: gen, class: datagen, key_converter: json,
      config: {{kind: sensors, topic: s, rate: 0, max_records: 300, batch_size: 100}}}}
"""
    with running_worker(yaml_text):
        recs = read_topic(broker.bootstrap, "s", 300)
    with running_worker(yaml_text.replace("max_records: 300", "max_records: 350")):
        recs = read_topic(broker.bootstrap, "s", 350)
    ids = sorted(json.loads(r.value)["reading_id"] for r in recs)
    assert ids == list(range(1, 351))
    first = json.loads(min(recs, key=lambda r: json.loads(r.value)["reading_id"]).value)
    assert first["sensor_id"] == "sensor-00" and 5 < first["temperature_c"] < 40


class _Collector(BaseHTTPRequestHandler):
    bodies: list = []
    fail_first = 0

    def log_message(self, *a) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        if cls.fail_first > 0:
            cls.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        cls.bodies.append(json.loads(body))
        self.send_response(200)
        self.end_headers()


def test_webhook_source_to_http_sink_with_secret_429_and_retries(broker):
    collector = type("C", (_Collector,), {"bodies": [], "fail_first": 2})
    server = ThreadingHTTPServer(("127.0.0.1", 0), collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = free_port()
    yaml_text = f"""
worker: {{bootstrap: "{broker.bootstrap}", rest_port: 0, offset_flush_interval_ms: 100}}
connectors:
  - {{name: hook, class: webhook-source, key_converter: json,
      config: {{topic: events, port: {hook}, path: /events, secret: s3cret, key_field: id, buffer_records: 5,
                ack: received}}}}
  - {{name: post, class: http-sink, topics: [events],
      config: {{url: "http://127.0.0.1:{server.server_address[1]}/in", batch_size: 100, retry_backoff_ms: 10}}}}
"""

    def post(doc, secret="s3cret") -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{hook}/events", data=json.dumps(doc).encode(),
                                     headers={"X-Fabric-Secret": secret}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    try:
        with running_worker(yaml_text) as w:
            wait_until(lambda: w.connector_status("hook")["tasks"][0]["state"] == "RUNNING", 20, "webhook up")
            assert post({"id": 1}, secret="wrong") == 401
            assert post([{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]) == 202
            wait_until(lambda: sum(len(b) for b in collector.bodies) == 2, 30, "two posted events")
            w.control("hook", "pause")  # nothing drains the buffer now: it fills, then 429
            wait_until(lambda: w.connector_status("hook")["tasks"][0]["state"] == "PAUSED", 20, "paused")
            assert post([{"id": i} for i in range(3, 8)]) == 202
            assert post({"id": 8}) == 429
            w.control("hook", "resume")
            wait_until(lambda: sum(len(b) for b in collector.bodies) == 7, 30, "seven events")
    finally:
        server.shutdown()
        server.server_close()
    assert [e["id"] for b in collector.bodies for e in b] == [1, 2, 3, 4, 5, 6, 7]
    assert collector.fail_first == 0  # the two 503s were retried


def _post(port: int, doc) -> tuple[int, dict, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/events", data=json.dumps(doc).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def test_webhook_answers_only_once_the_records_are_in_the_topic(broker):
    """ack: written (the default): a 200 means the broker has acknowledged the request's records,
    so they are in the topic the moment the sender sees it (a crash after that loses nothing); a
    request that cannot be written in time (connector paused) is answered 503, never 2xx; and a
    request whose records a transform filters out is acknowledged too."""
    hook = free_port()
    yaml_text = f"""
worker: {{bootstrap: "{broker.bootstrap}", rest_port: 0, offset_flush_interval_ms: 100}}
connectors:
  - name: hook
    class: webhook-source
    transforms: [{{type: filter, predicate: {{type: field_equals, field: drop, value: true}}}}]
    config: {{topic: events, port: {hook}, path: /events, ack_timeout_ms: 1000}}
"""

    def in_topic() -> int:
        with Admin(broker.bootstrap) as a:
            return sum(o["latest"] for o in a.topic_offsets("events"))

    with running_worker(yaml_text) as w:
        wait_until(lambda: w.connector_status("hook")["tasks"][0]["state"] == "RUNNING", 20, "webhook up")
        for n in range(1, 4):
            status, body, _ = _post(hook, [{"id": 2 * n - 1}, {"id": 2 * n}])
            assert (status, body) == (200, {"written": 2})
            assert in_topic() == 2 * n  # already there when the answer came: no polling
        assert _post(hook, {"id": 99, "drop": True})[:2] == (200, {"written": 1})  # filtered: done too
        w.control("hook", "pause")
        wait_until(lambda: w.connector_status("hook")["tasks"][0]["state"] == "PAUSED", 20, "paused")
        status, body, headers = _post(hook, {"id": 7})
        assert status == 503 and headers.get("Retry-After") == "1" and "retry" in body["error"]
        assert in_topic() == 6
        w.control("hook", "resume")  # the unanswered record is written after all: the sender's
        wait_until(lambda: in_topic() == 7, 30, "the 503'd record")  # retry would duplicate it
        assert _post(hook, {"id": 7})[:2] == (200, {"written": 1})
    got = [json.loads(r.value)["id"] for r in read_topic(broker.bootstrap, "events", 8)]
    assert got == [1, 2, 3, 4, 5, 6, 7, 7]


def test_mirror_keeps_keys_headers_timestamps_partitions(brokers):
    upstream, downstream = brokers(), brokers()
    with Admin(upstream.bootstrap) as a:
        a.create_topic("orders", partitions=3)
    with Producer(upstream.bootstrap) as p:
        for i in range(300):
            p.send("orders", f"v{i}".encode(), key=f"k{i % 17}".encode(), partition=i % 3,
                   timestamp_ms=1_700_000_000_000 + i, headers=[("h", str(i).encode())])
        p.flush()
    yaml_text = f"""
worker: {{bootstrap: "{downstream.bootstrap}", rest_port: 0, offset_flush_interval_ms: 100}}
connectors:
  - {{name: m, class: mirror-source, key_converter: bytes, value_converter: bytes,
      config: {{source_bootstrap: "{upstream.bootstrap}", topics: [orders], offset_header: true}}}}
"""
    with running_worker(yaml_text):
        got = read_topic(downstream.bootstrap, "orders", 300)
    with Producer(upstream.bootstrap) as p:  # more upstream while the mirror is down: resumes at its checkpoint
        p.send("orders", b"late", key=b"k", partition=1, timestamp_ms=1_700_000_001_000)
        p.flush()
    with running_worker(yaml_text):
        got = read_topic(downstream.bootstrap, "orders", 301)
    src = {(r.partition, r.offset): r for r in read_topic(upstream.bootstrap, "orders", 301)}
    assert len(got) == 301 and len({(r.partition, r.offset) for r in got}) == 301
    for r in got:
        up = src[(r.partition, r.offset)]  # same partition; offsets match here since the target started empty
        assert (r.key, r.value, r.timestamp) == (up.key, up.value, up.timestamp)
        assert list(r.headers) == [*up.headers, ("mirror.offset", f"orders/{r.partition}@{r.offset}".encode())]


@pytest.mark.parametrize("output", ["json", "table"])
def test_cli_status_pause_resume_restart_against_a_worker_process(broker, tmp_path, output):
    import subprocess
    import sys
    port = free_port()
    src = tmp_path / "in.txt"
    src.write_text("a\nb\n")
    env = {**os.environ, "FABRIC_BOOTSTRAP": broker.bootstrap, "FABRIC_CONNECT_PORT": str(port),
           "FABRIC_CONNECT_FILE": str(src)}
    proc = subprocess.Popen([sys.executable, "-m", "fabric", "connect", "run", "configs/connect/file-source.yaml"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fabric", "connect", *args, "--worker", f"127.0.0.1:{port}",
                               "--output", output], capture_output=True, text=True, env=env, timeout=30)

    try:
        def state() -> str | None:
            r = cli("status", "lines-in")
            if r.returncode != 0:
                return None
            if output == "table":
                return r.stdout
            return json.loads(r.stdout)["tasks"][0]["state"]
        if output == "table":
            table = wait_until(lambda: (s := state()) and "RUNNING" in s and s, 30, "worker up")
            assert "lines-in" in table and "file-source" not in table and "source" in table
            assert cli("pause", "lines-in").stdout.strip() == "lines-in: pause requested"
            return
        wait_until(lambda: state() == "RUNNING", 30, "worker up")
        assert json.loads(cli("pause", "lines-in").stdout) == {"name": "lines-in", "action": "pause"}
        wait_until(lambda: state() == "PAUSED", 20, "PAUSED")
        assert json.loads(cli("status").stdout)[0]["state"] == "PAUSED"
        cli("resume", "lines-in")
        wait_until(lambda: state() == "RUNNING", 20, "RUNNING again")
        cli("restart", "lines-in")
        wait_until(lambda: state() == "RUNNING", 20, "RUNNING after restart")
        bad = cli("pause", "nope")
        assert bad.returncode == 1 and "no connector named 'nope' on this worker" in bad.stderr
        assert [r.value for r in read_topic(broker.bootstrap, "lines", 2)] == [b"a", b"b"]
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_cli_validate_prints_every_error(tmp_path):
    import subprocess
    import sys
    bad = tmp_path / "bad.yaml"
    bad.write_text("connectors:\n  - {name: a, class: file-source, transforms: [{type: maskk, fields: [x]}],\n"
                   "     config: {topic: t}}\n")
    r = subprocess.run([sys.executable, "-m", "fabric", "connect", "validate", str(bad)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1
    assert "connectors[0].transforms[0].type: unknown transform 'maskk' (did you mean 'mask'?)" in r.stderr
    assert "connectors[0].config.file: required" in r.stderr
    assert "2 error(s); nothing was started" in r.stderr


def test_two_workers_share_tasks_and_a_killed_workers_tasks_move(broker, tmp_path):
    """Distributed mode: two worker processes with one group split a two-table source; a pause sent
    to one reaches the other's task; after SIGKILL of one, the survivor runs both tasks and the
    rows inserted afterwards still arrive."""
    import signal
    import sqlite3
    import subprocess
    import sys
    db = tmp_path / "shop.db"
    with sqlite3.connect(db) as c:
        for t in ("a", "b"):
            c.execute(f"CREATE TABLE {t} (id INTEGER PRIMARY KEY, v TEXT)")
            c.executemany(f"INSERT INTO {t} VALUES (?, ?)", [(i, f"{t}{i}") for i in range(1, 11)])
    cfg = tmp_path / "dist.yaml"
    cfg.write_text(f"""
worker: {{bootstrap: "{broker.bootstrap}", group: g1, rest_port: "${{PORT}}", session_timeout_ms: 1500,
          offset_flush_interval_ms: 100}}
connectors:
  - {{name: sq, class: sqlite-source, tasks_max: 2,
      config: {{database: "{db}", tables: [a, b], mode: incrementing, incrementing_column: id,
                topic_prefix: "sq.", poll_interval_ms: 50}}}}
""".replace('"${PORT}"', "${PORT}"))
    ports = [free_port(), free_port()]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    procs = [subprocess.Popen([sys.executable, "-m", "fabric", "connect", "run", str(cfg)], cwd=root,
                              env={**os.environ, "PORT": str(p)}, stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / f"w{p}.log", "wb")) for p in ports]

    def status(port: int) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/connectors/sq/status", timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def split_between_two(port: int) -> dict | None:
        s = status(port)
        ok = s and all(t["state"] == "RUNNING" for t in s["tasks"]) and len({t["worker"] for t in s["tasks"]}) == 2
        return s if ok else None

    try:
        s = wait_until(lambda: split_between_two(ports[0]), 60, "two workers with a task each")
        assert len(read_topic(broker.bootstrap, "sq.a", 10)) == 10 and len(read_topic(broker.bootstrap, "sq.b", 10)) == 10
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{ports[0]}/connectors/sq/pause",
                                                      data=b"", method="POST"), timeout=10).close()
        wait_until(lambda: (s := status(ports[1])) and all(t["state"] == "PAUSED" for t in s["tasks"]), 30,
                   "both tasks paused, one of them through the forwarded request")
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{ports[1]}/connectors/sq/resume",
                                                      data=b"", method="POST"), timeout=10).close()
        wait_until(lambda: split_between_two(ports[0]), 30, "both running again")
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        survivor = status(ports[1])["worker"]
        wait_until(lambda: (s := status(ports[1])) and all(t["worker"] == survivor and t["state"] == "RUNNING"
                                                            for t in s["tasks"]), 60, "the survivor running both")
        with sqlite3.connect(db) as c:
            for t in ("a", "b"):
                c.executemany(f"INSERT INTO {t} VALUES (?, ?)", [(i, f"{t}{i}") for i in range(11, 16)])

        def ids(topic: str) -> set:
            return {json.loads(r.value)["id"] for r in read_topic(broker.bootstrap, topic)}
        wait_until(lambda: ids("sq.a") == set(range(1, 16)) and ids("sq.b") == set(range(1, 16)), 30,
                   "rows inserted after the kill")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
