"""Test helpers for logs (trio's ``trio.testing`` idea): random batches, a crash, file listings.

Everything here uses only the public API of a log and the file system, so it keeps working when
the log's internals change.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from ..log.files import LOG, segment_file
from ..log.partition_log import PartitionLog
from ..records.batch import encode_batch

__all__ = ["crash", "log_files", "random_batch", "segment_log_path"]


def crash(plog: PartitionLog) -> None:
    """Simulate the process dying: afterwards the directory holds exactly the bytes it held when
    this was called (as after a real process crash, where written bytes survive in the page
    cache), with no clean-shutdown marker and no checkpoint, index or segment written by a close.

    How, with the public API only: take an image of every file of the directory, ``close`` the
    log (which releases its descriptors and writes the shutdown files), then put the image back
    and remove every file the close created.  To simulate losing unsynced bytes, cut the files
    afterwards."""
    directory = Path(plog.directory)
    image = {entry.name: entry.read_bytes() for entry in directory.iterdir() if entry.is_file()}
    try:
        plog.close()
    except Exception:  # a log in a failed state may refuse to close cleanly; its files still go back
        pass
    for entry in directory.iterdir():
        if entry.is_file() and entry.name not in image:
            entry.unlink()
    for name, data in image.items():
        path = directory / name
        if not path.exists() or path.read_bytes() != data:
            with open(path, "wb") as f:
                f.write(data)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
