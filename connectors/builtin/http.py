"""HTTP: a webhook source (JSON POSTed to the worker becomes records) and an HTTP sink (records
POSTed in batches to a URL).  Standard library only (``http.server``, ``urllib``).

Webhook source.  The task listens on ``host:port`` (default 127.0.0.1).  ``POST <path>`` with a JSON
object (one record) or array (one record each) is answered ``401`` without the right
``X-Fabric-Secret`` header (when ``secret`` is set), ``400`` for a body that is not JSON, and ``429``
with ``Retry-After: 1`` while the buffer is full, which happens when the producer cannot keep up
(the worker stops polling while the producer's own buffer is full).  Accepted records are answered
according to ``ack``:

* ``written`` (the default): ``200 {"written": n}`` only once the broker has acknowledged every
  record of the request (the task's ``commit``, which the worker calls after the producer's flush:
  at most ``offset_flush_interval_ms`` later).  So a crash never loses an acknowledged webhook:
  the sender keeps (and retries) whatever was not answered 200.  A request not written within
  ``ack_timeout_ms`` (broker down, connector paused) or still waiting when the task stops is
  answered ``503`` with ``Retry-After: 1``; its records may still be written later, so the
  sender's retry can duplicate them (at-least-once; a ``key_field`` and an upsert sink absorb it).
* ``received``: ``202 {"accepted": n}`` as soon as the records are in the task's buffer: lower
  latency, but the records in the buffer at a crash are lost (at-most-once).

HTTP sink.  ``put`` buffers; ``flush`` (before each offset commit) and a full buffer POST JSON
arrays of at most ``batch_size`` values (``envelope: true``: objects with topic, partition, offset,
key and value).  5xx, 429 and network errors are retried ``max_retries`` times with exponential
backoff from ``retry_backoff_ms``; then the task fails (``RetriableError``) and nothing is committed.
"""

from __future__ import annotations

import hmac
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping

from ..api import ConnectError, Field, RetriableError, SinkConnector, SinkRecord, SinkTask, SourceConnector, \
    SourceRecord, SourceTask
from ..converters import JsonConverter

log = logging.getLogger("fabric.connect.http")

SECRET_HEADER = "X-Fabric-Secret"


class _WebhookHandler(BaseHTTPRequestHandler):
    task: "WebhookSourceTask"

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug(fmt, *args)

    def _answer(self, code: int, body: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        t = self.task
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.split("?")[0] != t.path:
            return self._answer(404, {"error": f"POST to {t.path}"})
        if t.secret and not hmac.compare_digest(self.headers.get(SECRET_HEADER, "").encode(), t.secret.encode()):
            return self._answer(401, {"error": f"missing or wrong {SECRET_HEADER} header"})
        try:
            doc = json.loads(body)
        except ValueError as exc:
            return self._answer(400, {"error": f"body is not JSON: {exc}"})
        items = doc if isinstance(doc, list) else [doc]
        req = _Request(len(items))
        with t.lock:
            if t.buffer.qsize() + len(items) > t.capacity:
                return self._answer(429, {"error": "buffer full, retry later"}, {"Retry-After": "1"})
            if t.closed:
                return self._answer(503, {"error": "stopping, retry later"}, {"Retry-After": "1"})
            for item in items:
                t.buffer.put_nowait((item, req))
        if t.ack == "received":
            return self._answer(202, {"accepted": len(items)})
        if not items or (req.done.wait(t.ack_timeout_s) and req.ok):
            return self._answer(200, {"written": len(items)})
        self._answer(503, {"error": "not written yet (broker unavailable, connector paused or stopping); "
                                    "retry later"}, {"Retry-After": "1"})


class _Request:
    """One POST waiting for its records to be written: ``left`` records not yet committed."""

    __slots__ = ("left", "done", "ok")

    def __init__(self, n: int) -> None:
        self.left = n
        self.done = threading.Event()
        self.ok = False


class WebhookSourceTask(SourceTask):
    def start(self, config: dict[str, Any]) -> None:
        self.topic = config["topic"]
        self.path = config["path"]
        self.secret = config.get("secret")
        self.key_field = config.get("key_field")
        self.capacity = config["buffer_records"]
        self.batch = config["batch_size"]
        self.ack = config["ack"]
        self.ack_timeout_s = config["ack_timeout_ms"] / 1000
        self.buffer: queue.Queue = queue.Queue()  # (item, its _Request)
        self.polled: list[_Request] = []  # one entry per record polled since the last commit
        self.lock = threading.Lock()
        self.closed = False
        self.received = 0
        handler = type("Handler", (_WebhookHandler,), {"task": self})
        self.httpd = ThreadingHTTPServer((config["host"], config["port"]), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.partition = {"webhook": f"{config['host']}:{self.port}{self.path}"}
        threading.Thread(target=self.httpd.serve_forever, name="connect-webhook", daemon=True).start()

    def poll(self) -> list[SourceRecord]:
        try:
            first = self.buffer.get(timeout=0.5)
        except queue.Empty:
            return []
        items = [first]
        while len(items) < self.batch:
            try:
                items.append(self.buffer.get_nowait())
            except queue.Empty:
                break
        out = []
        for item, req in items:
            self.received += 1
            key = item.get(self.key_field) if self.key_field and isinstance(item, dict) else None
            out.append(SourceRecord(self.partition, {"received": self.received}, self.topic, item, key=key))
            self.polled.append(req)
        return out

    def commit(self) -> None:
        """Every record polled so far is acknowledged by the broker: answer the requests whose
        records are all written."""
        polled, self.polled = self.polled, []
        for req in polled:
            req.left -= 1
            if req.left == 0:
                req.ok = True
                req.done.set()

    def close(self) -> None:
        if not hasattr(self, "httpd"):
            return
        with self.lock:
            self.closed = True
            waiting = self.polled + [req for _, req in list(self.buffer.queue)]
        for req in waiting:  # not written (as far as we know): answered 503, the sender retries
            req.done.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class WebhookSourceConnector(SourceConnector):
    CONFIG = {
        "topic": Field("str", required=True),
        "host": Field("str", default="127.0.0.1"),
        "port": Field("int", required=True, min=0),
        "path": Field("str", default="/"),
        "secret": Field("str", doc=f"required value of the {SECRET_HEADER} header"),
        "key_field": Field("str", doc="the record key is this field of the posted object"),
        "buffer_records": Field("int", default=10_000, min=1, doc="beyond this, 429"),
        "batch_size": Field("int", default=1000, min=1),
        "ack": Field("str", default="written", choices=("written", "received"),
                     doc="answer 200 once the records are in the topic (written) or 202 once buffered (received)"),
        "ack_timeout_ms": Field("int", default=30_000, min=1, doc="ack written: 503 when not written by then"),
    }
    task_class = WebhookSourceTask


class HttpSinkTask(SinkTask):
    def start(self, config: dict[str, Any]) -> None:
        self.config = config
        self.buffer: list[SinkRecord] = []
        self.json = JsonConverter()
        self._stop = threading.Event()

    def put(self, records: list[SinkRecord]) -> None:
        self.buffer.extend(records)
        if len(self.buffer) >= self.config["batch_size"]:
            self._send_all()

    def flush(self, offsets: Mapping[tuple[str, int], int]) -> None:
        self._send_all()

    def _send_all(self) -> None:
        n = self.config["batch_size"]
        while self.buffer:
            chunk = self.buffer[:n]
            if self.config["envelope"]:
                docs = [{"topic": r.topic, "partition": r.partition, "offset": r.offset, "timestamp": r.timestamp,
                         "key": r.key, "value": r.value} for r in chunk]
            else:
                docs = [r.value for r in chunk]
            self._post(self.json.to_bytes(docs) or b"[]")
            del self.buffer[:n]

    def _post(self, body: bytes) -> None:
        cfg = self.config
        headers = {"Content-Type": "application/json", **{str(k): str(v) for k, v in (cfg["headers"] or {}).items()}}
        attempt = 0
        while True:
            req = urllib.request.Request(cfg["url"], data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=cfg["timeout_ms"] / 1000) as resp:
                    resp.read()
                    return
            except urllib.error.HTTPError as exc:
                if exc.code < 500 and exc.code != 429:
                    raise ConnectError(f"{cfg['url']} answered {exc.code} {exc.reason}") from exc
                err: Exception = exc
            except (urllib.error.URLError, OSError) as exc:
                err = exc
            if attempt >= cfg["max_retries"] or self._stop.is_set():
                raise RetriableError(f"POST {cfg['url']} failed after {attempt + 1} attempts: {err}")
            wait = min(cfg["retry_backoff_ms"] * (2 ** attempt), 30_000) / 1000
            log.warning("POST %s failed (%s); retry %d in %.1f s", cfg["url"], err, attempt + 1, wait)
            self._stop.wait(wait)
            attempt += 1

    def stop(self) -> None:
        self._stop.set()


class HttpSinkConnector(SinkConnector):
    CONFIG = {
        "url": Field("str", required=True),
        "batch_size": Field("int", default=500, min=1, doc="values per POST"),
        "envelope": Field("bool", default=False, doc="POST {topic, partition, offset, key, value} objects"),
        "headers": Field("dict", default={}, doc="extra request headers"),
        "max_retries": Field("int", default=5, min=0),
        "retry_backoff_ms": Field("int", default=200, min=1),
        "timeout_ms": Field("int", default=10_000, min=1),
    }
    task_class = HttpSinkTask
