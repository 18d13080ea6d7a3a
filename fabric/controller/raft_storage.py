"""Where a Raft node keeps what it must not forget: term, vote, log entries, the latest snapshot.

Why a protocol with two backends: the node (``raft.py``) is sans-I/O and only calls these methods,
then ``sync()`` before it lets out any message that depends on what it wrote (a vote, an append
acknowledgement).  ``FileRaftStorage`` makes that durable on disk; ``MemoryRaftStorage`` keeps it in
memory and can ``crash()`` - forget everything since the last ``sync()`` - so the simulator can
check that the node really syncs before it speaks.

Indices: entries are 1-based and contiguous; a snapshot replaces every entry up to its
``last_index``, so the log holds ``first_index() .. last_index()`` and ``term_at`` also knows the
snapshot's own (index, term), and index 0 (term 0, the empty log).
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Protocol, Sequence

import cbor2

from ..log.files import write_durably  # (tmp, fsync, rename, fsync the directory)
from .raft_messages import Entry, Snapshot

__all__ = ["RaftStorage", "MemoryRaftStorage", "FileRaftStorage"]
log = logging.getLogger(__name__)


class RaftStorage(Protocol):
    def hard_state(self) -> tuple[int, int | None]:
        """(current term, the node voted for in it or None)."""
    def set_hard_state(self, term: int, vote: int | None) -> None: ...
    def append(self, entries: Sequence[Entry]) -> None:
        """Add entries that continue the log exactly (first one at ``last_index() + 1``)."""
    def truncate_suffix(self, from_index: int) -> None:
        """Drop every entry at ``from_index`` or later (a conflict with the leader's log)."""
    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries ``lo <= index < hi``, all within ``first_index() .. last_index()``."""
    def term_at(self, index: int) -> int | None:
        """The term of entry ``index``; None when compacted away or beyond the log."""
    def first_index(self) -> int: ...
    def last_index(self) -> int: ...
    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` and drop entries up to its ``last_index``; when the log does not hold
        that entry with that term, the whole log goes (the snapshot replaces a diverged log)."""
    def snapshot(self) -> Snapshot | None: ...
    def sync(self) -> None:
        """Make everything written so far durable; only then may the node send what depends on it."""


class _LogInMemory:
    """The shared in-memory view both backends keep: snapshot + entries after it."""

    def __init__(self) -> None:
        self.term = 0
        self.vote: int | None = None
        self.snap: Snapshot | None = None
        self.log: list[Entry] = []

    def base(self) -> int:
        return self.snap.last_index if self.snap else 0

    def hard_state(self) -> tuple[int, int | None]:
        return self.term, self.vote

    def first_index(self) -> int:
        return self.base() + 1

    def last_index(self) -> int:
        return self.log[-1].index if self.log else self.base()

    def term_at(self, index: int) -> int | None:
        base = self.base()
        if index == base:
            return self.snap.last_term if self.snap else 0
        if base < index <= self.last_index():
            return self.log[index - base - 1].term
        return None

    def entries(self, lo: int, hi: int) -> list[Entry]:
        base = self.base()
        if lo <= base or hi > self.last_index() + 1:
            raise IndexError(f"entries [{lo}, {hi}) outside {base + 1}..{self.last_index()}")
        return self.log[lo - base - 1:hi - base - 1]

    def snapshot(self) -> Snapshot | None:
        return self.snap

    def do_append(self, entries: Sequence[Entry]) -> None:
        expected = self.last_index() + 1
        for e in entries:
            if e.index != expected:
                raise ValueError(f"append of entry {e.index} where {expected} is next")
            self.log.append(e)
            expected += 1

    def do_truncate(self, from_index: int) -> None:
        if from_index <= self.base():
            raise ValueError(f"cannot truncate at {from_index}: compacted up to {self.base()}")
        del self.log[from_index - self.base() - 1:]

    def do_snapshot(self, snapshot: Snapshot) -> None:
        keep = self.term_at(snapshot.last_index) == snapshot.last_term
        tail = [e for e in self.log if e.index > snapshot.last_index] if keep else []
        self.snap, self.log = snapshot, tail


class MemoryRaftStorage(_LogInMemory):
    """In memory, for the simulator: ``crash()`` forgets everything written since the last
    ``sync()``.  ``lose_next_sync`` makes the next ``sync()`` do nothing, to model power lost
    while the node was still writing (the sim then crashes the node and drops what it sent)."""

    def __init__(self) -> None:
        super().__init__()
        self.durable = _LogInMemory()
        self._pending: list[tuple[str, object]] = []
        self.lose_next_sync = False
        self.syncs = 0

    def set_hard_state(self, term: int, vote: int | None) -> None:
        self.term, self.vote = term, vote
        self._pending.append(("hard", (term, vote)))

    def append(self, entries: Sequence[Entry]) -> None:
        self.do_append(entries)
        self._pending.append(("append", list(entries)))

    def truncate_suffix(self, from_index: int) -> None:
        self.do_truncate(from_index)
        self._pending.append(("truncate", from_index))

    def save_snapshot(self, snapshot: Snapshot) -> None:
        self.do_snapshot(snapshot)
        self._pending.append(("snapshot", snapshot))

    def sync(self) -> None:
        """Replay the writes since the last sync on the durable copy (cost: what changed only)."""
        if self.lose_next_sync:
            self.lose_next_sync = False
            return
        d = self.durable
        for op, arg in self._pending:
            if op == "hard":
                d.term, d.vote = arg  # type: ignore[misc]
            elif op == "append":
                d.do_append(arg)  # type: ignore[arg-type]
            elif op == "truncate":
                d.do_truncate(arg)  # type: ignore[arg-type]
            else:
                d.do_snapshot(arg)  # type: ignore[arg-type]
        self._pending.clear()
        self.syncs += 1

    def crash(self) -> None:
        """Lose every write since the last ``sync()``, as a power cut loses the page cache."""
        d = self.durable
        self.term, self.vote, self.snap, self.log = d.term, d.vote, d.snap, list(d.log)
        self._pending.clear()
        self.lose_next_sync = False


_HEADER = struct.Struct(">II")  # payload length, CRC32 of the payload


class FileRaftStorage(_LogInMemory):
    """One directory: ``hardstate`` (atomic replace), ``log`` (append-only, each entry framed as
    length + CRC32 + CBOR [term, index, data]), ``snapshot`` (atomic replace).

    The log keeps a copy in memory (the metadata log is small and compacted by snapshots).  On open
    a torn or corrupt tail - a crash in the middle of an append - is cut off at the last whole
    entry: those entries were never synced, so no message depended on them.  Compaction rewrites
    the log atomically; a crash between writing the snapshot and the new log is repaired on open
    by skipping entries the snapshot covers."""

    def __init__(self, directory: str | os.PathLike) -> None:
        super().__init__()
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._hard_path, self._log_path, self._snap_path = (self.dir / n for n in ("hardstate", "log", "snapshot"))
        self._hard_dirty = self._log_dirty = False
        self._offsets: list[int] = []  # file offset of each entry in self.log
        self._load()
        self._file = open(self._log_path, "ab")

    def _load(self) -> None:
        if self._snap_path.exists():
            s = cbor2.loads(self._snap_path.read_bytes())
            self.snap = Snapshot(s["last_index"], s["last_term"], s["data"])
        if self._hard_path.exists():
            h = cbor2.loads(self._hard_path.read_bytes())
            self.term, self.vote = h["term"], h["vote"]
        if not self._log_path.exists():
            return
        raw = self._log_path.read_bytes()
        pos = good = 0
        while pos + _HEADER.size <= len(raw):
            length, crc = _HEADER.unpack_from(raw, pos)
            payload = raw[pos + _HEADER.size:pos + _HEADER.size + length]
            if len(payload) < length or zlib.crc32(payload) != crc:
                break
            entry = Entry.from_wire(cbor2.loads(payload))
            if entry.index > self.base():
                if entry.index != self.last_index() + 1:
                    break
                self.log.append(entry)
                self._offsets.append(pos)
            pos += _HEADER.size + length
            good = pos
        if good < len(raw):
            log.warning("raft log %s: cutting a torn tail of %d bytes at offset %d", self._log_path,
                        len(raw) - good, good)
            with open(self._log_path, "r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())

    def close(self) -> None:
        self._file.close()

    def set_hard_state(self, term: int, vote: int | None) -> None:
        self.term, self.vote = term, vote
        self._hard_dirty = True

    def append(self, entries: Sequence[Entry]) -> None:
        self.do_append(entries)
        for e in entries:
            payload = cbor2.dumps(e.to_wire())
            self._offsets.append(self._file.tell())
            self._file.write(_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
        self._log_dirty = True

    def truncate_suffix(self, from_index: int) -> None:
        keep = from_index - self.base() - 1
        self.do_truncate(from_index)
        if keep < len(self._offsets):
            self._file.flush()
            self._file.truncate(self._offsets[keep])
            self._file.seek(0, os.SEEK_END)
            del self._offsets[keep:]
            self._log_dirty = True

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Snapshot first, then the shortened log: both atomic, in an order that recovers (above)."""
        self.do_snapshot(snapshot)
        write_durably(self._snap_path, cbor2.dumps(
            {"last_index": snapshot.last_index, "last_term": snapshot.last_term, "data": snapshot.data}))
        self._file.close()
        chunks, self._offsets, pos = [], [], 0
        for e in self.log:
            payload = cbor2.dumps(e.to_wire())
            chunks.append(_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
            self._offsets.append(pos)
            pos += len(chunks[-1])
        write_durably(self._log_path, b"".join(chunks))
        self._file = open(self._log_path, "ab")

    def sync(self) -> None:
        """fsync only what changed: the node calls this after every step, most change nothing."""
        if self._log_dirty:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._log_dirty = False
        if self._hard_dirty:
            write_durably(self._hard_path, cbor2.dumps({"term": self.term, "vote": self.vote}))
            self._hard_dirty = False
