"""The bounded pool of segment descriptors (fabric/log/handles.py) under many partition logs.

What matters: however many partitions and segments, the descriptors held stay within the pool's
capacity; a closed descriptor comes back transparently (appends, reads, rolls, flushes,
recovery); a descriptor is never closed under another thread that holds its log's lock.
"""

from __future__ import annotations

import os
import random
import threading

import pytest

from fabric.log import LogConfig, PartitionLog, compact
from fabric.log.handles import FilePool
from fabric.testing.logs import crash
from fabric.records.batch import encode_batch, records_in

needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")


def batch(value: bytes, ts: int = 1000) -> bytearray:
    return bytearray(encode_batch([ts], [None], [value]))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def values(plog: PartitionLog) -> list[bytes]:
    return [r.value for r in records_in("t", 0, plog.read(plog.start_offset, 1 << 24))]


@needs_proc
def test_many_logs_share_a_small_pool(tmp_path):
    """60 partitions, each rolling several segments, through 8 descriptors: every append, read
    and flush works and the process never holds more than the pool's capacity for them."""
    files = FilePool(8)
    before = open_fds()
    config = LogConfig(segment_bytes=300)
    logs = [PartitionLog.open(tmp_path / f"p{i}", config, 0, files) for i in range(60)]
    expected: list[list[bytes]] = [[] for _ in logs]
    rng = random.Random(7)
    most = 0
    for step in range(1200):
        i = rng.randrange(len(logs))
        value = b"%d-%d" % (i, step) + b"x" * rng.randrange(100)
        logs[i].append(batch(value), step)
        expected[i].append(value)
        if step % 100 == 0:
            logs[rng.randrange(len(logs))].flush(step)
        most = max(most, open_fds() - before)
    assert most <= 8, most
    assert files.open_count <= 8 and files.evictions_total > 0 and files.overflows == 0
    assert sum(plog.segment_count for plog in logs) > 150  # rolls happened (each opens a file)
    for plog, want in zip(logs, expected):
        assert values(plog) == want
        plog.flush()
    assert open_fds() - before <= 8
    for plog in logs:
        plog.close()
    assert files.open_count == 0 and open_fds() == before
    # A clean restart trusts the indexes written when segments rolled and when the logs closed.
    logs = [PartitionLog.open(tmp_path / f"p{i}", config, 0, files) for i in range(60)]
    assert all(plog.recovery.clean and plog.recovery.rebuilt_indexes == 0 for plog in logs)
    assert [values(plog) for plog in logs] == expected
    assert open_fds() - before <= 8
    for plog in logs:
        plog.close()


@needs_proc
def test_recovery_of_many_logs_needs_no_more_than_the_pool(tmp_path):
    """After a crash, opening thousands of segments (every one re-checked) stays within the pool."""
    files = FilePool(8)
    config = LogConfig(segment_bytes=200)
    logs = [PartitionLog.open(tmp_path / f"p{i}", config, 0, files) for i in range(20)]
    for i, plog in enumerate(logs):
        for j in range(30):
            plog.append(batch(b"v%d-%d" % (i, j) + b"y" * 80), j)
    counts = [plog.segment_count for plog in logs]
    for plog in logs:
        crash(plog)  # no flush, no checkpoint: the whole log is re-checked on open
    assert files.open_count == 0
    before = open_fds()
    reopened = [PartitionLog.open(tmp_path / f"p{i}", config, 0, files) for i in range(20)]
    assert open_fds() - before <= 8
    assert [plog.segment_count for plog in reopened] == counts
    assert not any(plog.recovery.clean for plog in reopened)
    for i, plog in enumerate(reopened):
        assert values(plog) == [b"v%d-%d" % (i, j) + b"y" * 80 for j in range(30)]
        plog.close()


def test_a_descriptor_in_use_on_another_thread_is_not_closed(tmp_path):
    """The pool closes a log's descriptor only if it can take that log's lock (rule 3)."""
    files = FilePool(8)
    busy = PartitionLog.open(tmp_path / "busy", LogConfig(), 0, files)
    busy.append(batch(b"keep"), 0)
    seg = busy._segments[-1]
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with busy._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        others = [PartitionLog.open(tmp_path / f"o{i}", LogConfig(), 0, files) for i in range(30)]
        for i, plog in enumerate(others):
            plog.append(batch(b"%d" % i), 0)
        assert seg._fd >= 0  # passed over every time: its lock was taken
        assert files.open_count <= 8
    finally:
        release.set()
        holder.join(10)
    for i, plog in enumerate(others * 2):  # now it can go
        plog.append(batch(b"again"), 1)
    assert seg._fd < 0
    assert values(busy) == [b"keep"]  # reopened on use
    for plog in [busy, *others]:
        plog.close()


def test_all_guards_busy_goes_over_capacity_instead_of_failing(tmp_path):
    files = FilePool(8)
    logs = [PartitionLog.open(tmp_path / f"p{i}", LogConfig(), 0, files) for i in range(8)]
    for plog in logs:
        plog._lock.acquire()  # as if each were in use on another thread
    try:
        extra = PartitionLog.open(tmp_path / "extra", LogConfig(), 0, files)
        assert files.open_count == 9 and files.overflows == 1
    finally:
        for plog in logs:
            plog._lock.release()
    extra.append(batch(b"x"), 0)
    assert values(extra) == [b"x"]
    for plog in [*logs, extra]:
        plog.close()
    assert files.open_count == 0


def test_concurrent_flushes_and_appends_across_logs(tmp_path):
    """A flusher thread syncing (and reopening) descriptors while the main thread appends to
    other logs through the same tiny pool: no error, nothing lost, nothing closed under a user."""
    files = FilePool(8)
    config = LogConfig(segment_bytes=500)
    logs = [PartitionLog.open(tmp_path / f"p{i}", config, 0, files) for i in range(24)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def flusher() -> None:
        try:
            while not stop.is_set():
                for plog in logs:
                    plog.flush()
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=flusher)
    thread.start()
    try:
        for step in range(3000):
            logs[step % len(logs)].append(batch(b"s%d" % step + b"z" * 40), step)
            if step % 7 == 0:
                assert values(logs[(step * 5) % len(logs)]) is not None
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    for i, plog in enumerate(logs):
        assert values(plog) == [b"s%d" % s + b"z" * 40 for s in range(i, 3000, len(logs))]
        plog.close()
    assert files.open_count == 0


def test_pool_refuses_a_capacity_too_small():
    with pytest.raises(ValueError):
        FilePool(2)


def test_compaction_of_a_log_with_more_segments_than_the_pool(tmp_path):
    """Compaction reads every closed segment (duplicated descriptors) and swaps fresh ones in
    (opened through the pool): the latest value per key survives, the pool stays bounded."""
    files = FilePool(8)
    config = LogConfig(segment_bytes=300, cleanup_policy="compact")
    plog = PartitionLog.open(tmp_path / "c", config, 0, files)
    for i in range(120):
        key = b"k%d" % (i % 5)
        plog.append(bytearray(encode_batch([1000 + i], [key], [b"v%d" % i + b"." * 60])), 1000 + i)
    assert plog.segment_count > 20
    result = compact(plog, 10**6)
    assert result.segments_cleaned > 0 and files.open_count <= 8
    latest = {r.key: r.value for r in records_in("t", 0, plog.read(0, 1 << 24))}
    assert latest == {b"k%d" % k: b"v%d" % (115 + k) + b"." * 60 for k in range(5)}
    plog.close()
    assert files.open_count == 0
