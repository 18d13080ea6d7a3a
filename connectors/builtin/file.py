"""File source (tails a text file, line by line) and file sink (appends one line per record).

Source strategy: the file is read in binary from the committed byte position; only complete lines
(ending in ``\\n``) become records, so a line being written is never cut in two.  Each read of up to
1 MiB becomes one ``SourceBatch`` (the columnar fast path), committed whole.  The source offset
is ``{"position": byte after the line, "inode": the file's inode}``:

* resume: if the file at ``file`` still has the committed inode, reading continues at the
  committed position; if the inode differs (rotated while the worker was down) it starts at 0 of
  the new file (what was appended to the old file after the last commit is lost, as with any
  tailer that was not running at rotation time);
* rotation while running (``mv app.log app.log.1`` and a new ``app.log``): at end of file the task
  notices the path has a new inode, drains the old file to its end, then switches to the new one;
* truncation (``: > app.log``): a size below the position restarts at 0.

The sink writes each value followed by ``\\n`` (``str`` as UTF-8, ``bytes`` as is, others as JSON)
and ``flush`` fsyncs, so committed records are on disk.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

from ..api import Field, SinkConnector, SinkRecord, SinkTask, SourceBatch, SourceConnector, SourceTask

READ_CHUNK = 1 << 20


class FileSourceTask(SourceTask):
    def start(self, config: dict[str, Any]) -> None:
        self.path = str(Path(config["file"]).resolve())
        self.topic = config["topic"]
        self.batch_lines = config["batch_size"]
        self.poll_interval = config["poll_interval_ms"] / 1000
        self.partition = {"file": self.path}
        self.f: Any = None
        self.inode = -1
        self.pos = 0
        self.buf = b""
        committed = self.context.offset(self.partition)
        self._open(committed)

    def _open(self, committed: dict[str, Any] | None = None) -> bool:
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return False
        st = os.fstat(f.fileno())
        pos = 0
        if committed and committed.get("inode") == st.st_ino and committed.get("position", 0) <= st.st_size:
            pos = int(committed["position"])
        f.seek(pos)
        if self.f is not None:
            self.f.close()
        self.f, self.inode, self.pos, self.buf = f, st.st_ino, pos, b""
        return True

    def poll(self) -> list[SourceBatch]:
        if self.f is None and not self._open():
            time.sleep(self.poll_interval)
            return []
        out = self._read_lines()
        if out:
            return out
        # At the end of the file: truncated, rotated, or just nothing new yet.
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None and st.st_ino != self.inode:
            out = self._read_lines()  # drain what the old file got before the switch
            if not out:
                self._open()
            return out
        if st is not None and st.st_size < self.pos:
            self.f.seek(0)
            self.pos, self.buf = 0, b""
            return []
        time.sleep(self.poll_interval)
        return []

    def _read_lines(self) -> list[SourceBatch]:
        chunk = self.f.read(READ_CHUNK)
        if not chunk:
            return []
        data = self.buf + chunk
        end = data.rfind(b"\n")
        if end < 0:
            self.buf = data
            return []
        self.buf = data[end + 1:]
        self.pos += end + 1
        lines = data[:end].decode("utf-8", "replace").split("\n")
        return [SourceBatch(self.partition, {"position": self.pos, "inode": self.inode}, self.topic, lines)]

    def close(self) -> None:
        if getattr(self, "f", None) is not None:
            self.f.close()


class FileSourceConnector(SourceConnector):
    CONFIG = {
        "file": Field("str", required=True, doc="the file to tail"),
        "topic": Field("str", required=True),
        "batch_size": Field("int", default=10_000, min=1, doc="(unused bound, kept for symmetry)"),
        "poll_interval_ms": Field("int", default=100, min=1, doc="sleep at end of file before looking again"),
    }
    task_class = FileSourceTask


class FileSinkTask(SinkTask):
    def start(self, config: dict[str, Any]) -> None:
        self.f = open(config["file"], "ab")

    def put(self, records: list[SinkRecord]) -> None:
        parts = []
        for r in records:
            v = r.value
            if v is None:
                continue
            if isinstance(v, str):
                v = v.encode()
            elif not isinstance(v, bytes):
                v = json.dumps(v, separators=(",", ":"), default=str).encode()
            parts.append(v)
        if parts:
            parts.append(b"")
            self.f.write(b"\n".join(parts))

    def flush(self, offsets: Mapping[tuple[str, int], int]) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        if hasattr(self, "f"):
            self.f.close()


class FileSinkConnector(SinkConnector):
    CONFIG = {"file": Field("str", required=True, doc="appended to; created if missing")}
    task_class = FileSinkTask
