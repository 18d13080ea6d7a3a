"""The worker's control API: a tiny JSON-over-HTTP server on 127.0.0.1 (``worker.rest_port``).

Why HTTP on loopback rather than a control topic: the answer must come from the worker that runs
the tasks *now*, synchronously ("paused" means paused), and a person can use ``curl`` too.  It
binds to 127.0.0.1 only: it controls the worker and has no authentication.

  GET  /connectors                     {"worker": ID, "connectors": [status, ...]}
  GET  /connectors/NAME/status         {"name", "state", "class", "worker", "tasks": [{"id", "state",
                                        "trace", "worker", "restarts"}]}
  POST /connectors/NAME/pause          202 {"name", "action"}   (404 for an unknown name)
  POST /connectors/NAME/resume         202
  POST /connectors/NAME/restart        202 (every task of the connector starts afresh)
  (distributed mode: a POST is applied here and forwarded to the group's other workers, with
  ``?local=1`` so that they do not forward it again)
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

log = logging.getLogger("fabric.connect.rest")


class Controlled(Protocol):
    worker_id: str

    def connector_names(self) -> list[str]: ...

    def connector_status(self, name: str) -> dict[str, Any] | None: ...

    def control(self, name: str, action: str, forward: bool = True) -> bool: ...


ACTIONS = ("pause", "resume", "restart")


class ControlServer:
    def __init__(self, target: Controlled, port: int, host: str = "127.0.0.1") -> None:
        handler = type("Handler", (_Handler,), {"target": target})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="connect-rest", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    target: Controlled

    def log_message(self, fmt: str, *args: Any) -> None:  # noqa: D401 - quiet by default
        log.debug("%s " + fmt, self.address_string(), *args)

    def _reply(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _parts(self) -> list[str]:
        return [p for p in self.path.split("?")[0].split("/") if p]

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        parts = self._parts()
        t = self.target
        if parts == ["connectors"]:
            self._reply(200, {"worker": t.worker_id, "connectors": [t.connector_status(n) for n in t.connector_names()]})
        elif len(parts) == 3 and parts[0] == "connectors" and parts[2] == "status":
            st = t.connector_status(parts[1])
            if st is None:
                self._reply(404, {"error": f"no connector named {parts[1]!r} on this worker",
                                  "connectors": t.connector_names()})
            else:
                self._reply(200, st)
        else:
            self._reply(404, {"error": f"no such resource {self.path!r}"})

    def do_POST(self) -> None:  # noqa: N802
        parts = self._parts()
        if len(parts) == 3 and parts[0] == "connectors" and parts[2] in ACTIONS:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            forward = "local=1" not in self.path.partition("?")[2]  # a peer's forward: do not forward again
            if self.target.control(parts[1], parts[2], forward):
                self._reply(202, {"name": parts[1], "action": parts[2]})
            else:
                self._reply(404, {"error": f"no connector named {parts[1]!r} on this worker",
                                  "connectors": self.target.connector_names()})
        else:
            self._reply(404, {"error": f"no such resource {self.path!r}"})
