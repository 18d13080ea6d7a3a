"""Test helpers shipped with the log (trio's ``trio.testing`` idea): used by our tests and by
anyone testing code that sits on a ``PartitionLog``."""

from __future__ import annotations

import random
from pathlib import Path

from ..records.batch import encode_batch
from .files import LOG, segment_file
from .partition_log import PartitionLog


def crash(plog: PartitionLog) -> None:
    """Simulate the process dying: descriptors go away, nothing is flushed, no clean-shutdown
    marker is written.  (Written bytes stay in the page cache, as after a real process crash; to
    simulate losing unsynced bytes, cut the files afterwards.)"""
    with plog._lock:
        plog._close_descriptors()


def random_batch(rng: random.Random, ts: int, *, max_records: int = 8, max_value: int = 80,
                 keys: int = 20) -> tuple[bytes, list[tuple[int, bytes | None, bytes | None]]]:
    """A batch of 1..max_records records and the (timestamp, key, value) list it holds."""
    n = rng.randint(1, max_records)
    recs = []
    for _ in range(n):
        key = None if rng.random() < 0.1 else b"k%d" % rng.randrange(keys)
        value = None if rng.random() < 0.05 else rng.randbytes(rng.randint(0, max_value))
        recs.append((ts + rng.randint(-50, 50) if ts > 50 else ts + rng.randint(0, 50), key, value))
    return encode_batch([r[0] for r in recs], [r[1] for r in recs], [r[2] for r in recs]), recs


def log_files(directory: Path) -> list[Path]:
    """The ``.log`` files of a partition directory, oldest first."""
    return sorted(p for p in directory.iterdir() if p.name.endswith(LOG))


def segment_log_path(directory: Path, base_offset: int) -> Path:
    return segment_file(directory, base_offset, LOG)
