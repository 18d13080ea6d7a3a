"""PartitionLog: API behaviour, and a seeded model test against a plain list oracle."""

from __future__ import annotations

import os
import random
import threading
from dataclasses import dataclass, field

import pytest

from fabric.log import LogConfig, PartitionLog
from fabric.log.handles import FilePool
from fabric.testing.logs import crash, random_batch
from fabric.log.errors import LogClosedError, MalformedBatchError, OffsetOutOfRangeError, StorageFailure
from fabric.protocol.errors import FabricError
from fabric.testing.log_conformance import expect_error
from fabric.records.batch import encode_batch, iter_headers, parse_header, records_in
from fabric.testing.seeds import seeds

# ---------------------------------------------------------------------------------------- config


def test_config_from_mapping_overrides_base():
    base = LogConfig(retention_ms=5)
    cfg = LogConfig.from_mapping({"segment_bytes": 1024.0, "cleanup_policy": "compact,delete"}, base)
    assert cfg.segment_bytes == 1024 and isinstance(cfg.segment_bytes, int)
    assert cfg.retention_ms == 5 and cfg.cleanup_policy == "delete,compact" and cfg.compact and cfg.delete
    assert LogConfig.from_mapping({}).to_mapping() == LogConfig().to_mapping()
    assert LogConfig.from_mapping(cfg.to_mapping()) == cfg


@pytest.mark.parametrize("values, word", [
    ({"segment_byte": 1}, "segment_byte"),
    ({1: 1}, "1"),
    ({"retention_ms": True}, "retention_ms"),
    ({"retention_ms": "5"}, "retention_ms"),
    ({"retention_ms": 1.5}, "retention_ms"),
    ({"retention_ms": -2}, "retention_ms"),
    ({"segment_bytes": 0}, "segment_bytes"),
    ({"segment_bytes": 2**31}, "segment_bytes"),
    ({"flush_every_batch": 1}, "flush_every_batch"),
    ({"cleanup_policy": "compact,compact"}, "cleanup_policy"),
    ({"cleanup_policy": "remove"}, "cleanup_policy"),
    ({"timestamp_type": "now"}, "timestamp_type"),
    ({"max_batch_bytes": 10}, "max_batch_bytes"),
])
def test_config_rejects_bad_values(values, word):
    with pytest.raises(FabricError) as info:
        LogConfig.from_mapping(values)
    assert info.value.name == "INVALID_CONFIG" and word in info.value.message


# ---------------------------------------------------------------------------------------- basics


def batch(*values: bytes, ts: int = 1000, key: bytes | None = None) -> bytearray:
    return bytearray(encode_batch([ts] * len(values), [key] * len(values), list(values)))


def offsets(data: bytes) -> list[int]:
    return [r.offset for r in records_in("t", 0, data)]


def test_empty_log(tmp_path):
    log = PartitionLog.open(tmp_path / "p", LogConfig(), 0)
    assert (log.start_offset, log.end_offset, log.size_bytes, log.segment_count) == (0, 0, 0, 1)
    assert log.read(0, 100) == b""
    assert log.offset_for_timestamp(0) is None
    expect_error(OffsetOutOfRangeError, log.read, 1, 100)
    assert log.recovery.clean
    log.close()
    log = PartitionLog.open(tmp_path / "p", LogConfig(), 0)
    assert (log.start_offset, log.end_offset) == (0, 0) and log.recovery.clean
    log.close()


def test_append_stamps_offsets_and_epoch(tmp_path):
    log = PartitionLog.open(tmp_path, LogConfig(), 0)
    b = batch(b"a", b"b", b"c")
    res = log.append(b, 5, leader_epoch=7)
    assert (res.base_offset, res.last_offset, res.max_timestamp, res.size) == (0, 2, 1000, len(b))
    res = log.append(batch(b"d"), 6, leader_epoch=7)
    assert (res.base_offset, res.last_offset) == (3, 3)
    assert log.end_offset == 4
    data = log.read(0, 1 << 20)
    headers = [h for _, h in iter_headers(data)]
    assert [(h.base_offset, h.leader_epoch) for h in headers] == [(0, 7), (3, 7)]
    assert bytes(b) == data[:len(b)]  # stamped in place; the disk holds exactly the wire bytes
    assert [r.value for r in records_in("t", 0, data)] == [b"a", b"b", b"c", b"d"]
    log.close()


def test_read_semantics(tmp_path):
    log = PartitionLog.open(tmp_path, LogConfig(segment_bytes=300), 0)
    sizes = []
    for i in range(10):
        sizes.append(log.append(batch(b"x" * 40, b"y" * 40), i).size)  # offsets 2i, 2i+1
    assert log.segment_count > 3
    # the batch CONTAINING the offset comes first
    assert offsets(log.read(5, 1))[:2] == [4, 5]
    # at least one batch even if max_bytes is smaller; never a partial batch
    assert len(log.read(5, 1)) == sizes[2]
    assert len(log.read(5, sizes[2] + sizes[3] - 1)) == sizes[2]
    assert len(log.read(5, sizes[2] + sizes[3])) == sizes[2] + sizes[3]
    # spans segments
    assert offsets(log.read(0, 1 << 20)) == list(range(20))
    # upto_offset (high watermark): no batch whose base is >= it
    assert offsets(log.read(0, 1 << 20, upto_offset=6)) == list(range(6))
    assert offsets(log.read(0, 1 << 20, upto_offset=7)) == list(range(8))
    assert log.read(6, 1 << 20, upto_offset=6) == b""
    assert log.read(20, 100) == b""
    for bad in (-1, 21):
        expect_error(OffsetOutOfRangeError, log.read, bad, 100)
    log.close()


def test_truncate_fully_and_start_at(tmp_path):
    log = PartitionLog.open(tmp_path, LogConfig(segment_bytes=200), 0)
    for i in range(5):
        log.append(batch(b"v" * 50), i)
    log.truncate_fully_and_start_at(1000)
    assert (log.start_offset, log.end_offset, log.segment_count) == (1000, 1000, 1)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".log") == ["00000000000000001000.log"]
    assert log.append(batch(b"z"), 9).base_offset == 1000
    assert offsets(log.read(1000, 100)) == [1000]
    log.close()
    log = PartitionLog.open(tmp_path, LogConfig(segment_bytes=200), 10)
    assert (log.start_offset, log.end_offset) == (1000, 1001)
    log.truncate_fully_and_start_at(5)
    crash(log)
    log = PartitionLog.open(tmp_path, LogConfig(), 10)
    assert (log.start_offset, log.end_offset) == (5, 5)
    log.close()


def test_truncate_to_drops_whole_batches(tmp_path):
    log = PartitionLog.open(tmp_path, LogConfig(segment_bytes=250), 0)
    for i in range(8):
        log.append(batch(b"a" * 30, b"b" * 30, b"c" * 30), i)  # batches at 0, 3, 6, ...
    log.truncate_to(10)  # inside the batch at 9: it goes entirely
    assert log.end_offset == 9
    assert offsets(log.read(0, 1 << 20)) == list(range(9))
    log.truncate_to(6)  # a batch boundary
    assert log.end_offset == 6
    assert log.append(batch(b"n"), 9).base_offset == 6
    log.truncate_to(100)  # beyond the end: nothing happens
    assert log.end_offset == 7
    log.close()
    log = PartitionLog.open(tmp_path, LogConfig(segment_bytes=250), 10)
    assert offsets(log.read(0, 1 << 20)) == list(range(7))
    log.close()


def test_log_append_time(tmp_path):
    log = PartitionLog.open(tmp_path, LogConfig(timestamp_type="log_append_time"), 0)
    res = log.append(bytearray(encode_batch([5, 6], [None, None], [b"a", b"b"])), 123_456)
    assert res.max_timestamp == 123_456
    recs = records_in("t", 0, log.read(0, 1000))
    assert [r.timestamp for r in recs] == [123_456, 123_456]
    assert parse_header(log.read(0, 1000)).attributes & 0x08
    assert log.offset_for_timestamp(100) == (0, 123_456)
    log.close()


def test_offset_for_timestamp_against_oracle(tmp_path):
    rng = random.Random(7)
    log = PartitionLog.open(tmp_path, LogConfig(segment_bytes=700, index_interval_bytes=150), 0)
    records: list[tuple[int, int]] = []  # (offset, ts)
    for _ in range(120):
        n = rng.randint(1, 5)
        stamps = [rng.randint(0, 10_000) for _ in range(n)]
        res = log.append(bytearray(encode_batch(stamps, [None] * n, [b"v" * rng.randint(0, 40)] * n)), 0)
        records.extend((res.base_offset + i, t) for i, t in enumerate(stamps))
    for target in [rng.randint(-10, 10_010) for _ in range(300)] + [t for _, t in records[:50]]:
        expected = next(((o, t) for o, t in records if t >= target), None)
        assert log.offset_for_timestamp(target) == expected, target
    log.advance_start_offset(100)
    for target in [rng.randint(-10, 10_010) for _ in range(100)]:
        expected = next(((o, t) for o, t in records if t >= target and o >= 100), None)
        assert log.offset_for_timestamp(target) == expected, target
    log.close()


def test_append_replicated_keeps_leader_offsets(tmp_path):
    leader = PartitionLog.open(tmp_path / "leader", LogConfig(), 0)
    follower = PartitionLog.open(tmp_path / "follower", LogConfig(segment_bytes=200), 0)
    for i in range(6):
        leader.append(batch(b"v%d" % i, b"w" * 60), i, leader_epoch=3)
    data = leader.read(0, 1 << 20)
    for pos, h in iter_headers(data):
        if h.base_offset != 4:  # a gap, as after compaction on the leader
            follower.append_replicated(bytearray(data[pos:pos + h.size]), 0)
    assert follower.end_offset == 12
    got = follower.read(0, 1 << 20)
    assert [h.leader_epoch for _, h in iter_headers(got)] == [3] * 5
    assert offsets(got) == [0, 1, 2, 3, 6, 7, 8, 9, 10, 11]
    assert offsets(follower.read(4, 1)) == [6, 7]
    with pytest.raises(OffsetOutOfRangeError):
        follower.append_replicated(bytearray(data[:parse_header(data).size]), 0)
    leader.close()
    follower.close()


def test_tail_positions_come_from_recent_batches_and_agree_with_a_scan(tmp_path):
    """A segment remembers where its newest batches are (a tail fetch asks for just those); the
    answer must be the one a scan from the index gives, also across gaps and truncation."""
    from fabric.log.segment import RECENT_BATCHES
    rng = random.Random(7)
    source = PartitionLog.open(tmp_path / "source", LogConfig(), 0)
    log = PartitionLog.open(tmp_path / "p", LogConfig(index_interval_bytes=512), 0)
    for i in range(3 * RECENT_BATCHES):
        source.append(bytearray(random_batch(rng, 1000)[0]), i)
    data = source.read(0, 1 << 30)
    for k, (pos, h) in enumerate(iter_headers(data)):
        if k % 7 != 3:  # gaps, as a compacted leader's log has
            log.append_replicated(bytearray(data[pos:pos + h.size]), 0)

    def check(seg) -> None:
        remembered = seg._recent
        for offset in range(seg.base_offset, seg.next_offset + 2):
            cached = seg.find_position(offset)
            seg._recent = ([], [], [])  # the same question answered by a scan
            assert cached == seg.find_position(offset), offset
            seg._recent = remembered

    assert 0 < len(log._segments[-1]._recent[0]) <= 2 * RECENT_BATCHES
    check(log._segments[-1])
    log.truncate_to(log.end_offset - 10)  # the segment forgets, and a new one is rolled
    for _ in range(5):
        log.append(bytearray(random_batch(rng, 1000)[0]), 0)
    for seg in log._segments[-2:]:
        check(seg)
    source.close()
    log.close()


def test_newest_batch_is_served_from_memory_exactly_as_from_disk(tmp_path):
    """A consumer at the tail reads the batch just appended: from memory (``_tail``), with the
    same bytes and completeness a disk read gives; never after truncation, never a big batch."""
    from fabric.log.partition_log import TAIL_BATCH_BYTES_MAX
    rng = random.Random(11)
    log = PartitionLog.open(tmp_path / "p", LogConfig(segment_bytes=4096), 0)

    def from_disk(offset, upto):
        tail, log._tail = log._tail, None
        try:
            return log.read_upto(offset, 1, upto)
        finally:
            log._tail = tail

    for i in range(60):  # rolls segments along the way
        base = log.end_offset
        log.append(bytearray(random_batch(rng, 1000)[0]), i)
        assert log._tail is not None and log._tail[0] == base
        for upto in (log.end_offset, None):
            assert log.read_upto(base, 1, upto) == from_disk(base, upto)
            assert log.read_upto(base, 1, upto)[0] is log._tail[2]  # served from memory
        assert log.read_upto(base, 1, base) == (b"", True) == from_disk(base, base)  # nothing below upto
    log.truncate_to(log.end_offset - 1)  # the newest batch is gone: never served again
    assert log._tail is None
    base = log.end_offset
    big = encode_batch([1], [None], [b"v" * TAIL_BATCH_BYTES_MAX])
    log.append(bytearray(big), 0)
    assert log._tail is None and log.read(base, 1)[:len(big)] != b""
    assert parse_header(log.read(base, 1)).base_offset == base
    log.close()


def test_bytes_batch_is_accepted_and_bad_framing_rejected(tmp_path):
    log = PartitionLog.open(tmp_path, LogConfig(), 0)
    assert log.append(bytes(batch(b"x")), 0).base_offset == 0
    bad = batch(b"x") + b"extra"
    expect_error(MalformedBatchError, log.append, bad, 0)
    log.close()
    expect_error(LogClosedError, log.append, batch(b"x"), 0)


def test_segments_describe(tmp_path):
    log = PartitionLog.open(tmp_path, LogConfig(segment_bytes=200), 0)
    for i in range(6):
        log.append(batch(b"q" * 80, ts=100 + i), i)
    segs = log.segments()
    assert len(segs) == log.segment_count >= 3
    assert [s["base_offset"] for s in segs] == sorted(s["base_offset"] for s in segs)
    assert segs[-1]["next_offset"] == log.end_offset
    assert sum(s["size_bytes"] for s in segs) == log.size_bytes
    assert max(s["max_timestamp"] for s in segs) == 105
    log.close()


def test_flush_policy(tmp_path):
    log = PartitionLog.open(tmp_path, LogConfig(flush_interval_ms=100), 0)
    assert not log.unflushed and not log.needs_flush(10**9)
    log.append(batch(b"a"), 1000)
    assert log.unflushed and not log.needs_flush(1099) and log.needs_flush(1100)
    log.flush(1100)
    assert not log.unflushed and log.last_flush_ms == 1100
    every = PartitionLog.open(tmp_path / "e", LogConfig(flush_every_batch=True), 0)
    every.append(batch(b"a"), 5)
    assert not every.unflushed
    every.close()
    log.close()


def test_flush_from_another_thread_while_appending_and_rolling(tmp_path):
    cfg = LogConfig(segment_bytes=400, index_interval_bytes=100, retention_bytes=20_000)
    log = PartitionLog.open(tmp_path, cfg, 0)
    stop = threading.Event()
    errors: list[BaseException] = []
    flushes = 0

    def flusher():
        nonlocal flushes
        while not stop.is_set():
            try:
                log.flush()
                flushes += 1
            except BaseException as exc:  # noqa: BLE001 - any exception fails the test
                errors.append(exc)
                return

    t = threading.Thread(target=flusher)
    t.start()
    try:
        values = []
        for i in range(3000):
            v = b"%06d" % i + b"." * (i % 50)
            values.append(v)
            log.append(batch(v), i)
            if i % 500 == 499:
                log.apply_retention(i)
                log.maybe_roll(i)
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    assert flushes > 0 and log.segment_count > 10
    got = [r.value for r in records_in("t", 0, log.read(log.start_offset, 1 << 30))]
    assert got == values[log.start_offset:]
    log.close()
    log = PartitionLog.open(tmp_path, cfg, 0)
    assert log.recovery.clean
    assert [r.value for r in records_in("t", 0, log.read(log.start_offset, 1 << 30))] == values[log.start_offset:]
    log.close()


# ---------------------------------------------------------------------------------------- model


@dataclass
class Batch:
    base: int
    size: int
    records: list[tuple[int, int, bytes | None, bytes | None]]  # (offset, ts, key, value)

    @property
    def last(self) -> int:
        return self.records[-1][0]


@dataclass
class Model:
    start: int = 0
    end: int = 0
    batches: list[Batch] = field(default_factory=list)

    def expected_read(self, offset: int, max_bytes: int, upto: int | None) -> list[Batch]:
        out: list[Batch] = []
        total = 0
        for b in self.batches:
            if b.last < offset:
                continue
            if (upto is not None and b.base >= upto) or (out and total + b.size > max_bytes):
                break
            out.append(b)
            total += b.size
        return out

    def truncate_to(self, offset: int) -> None:
        if offset >= self.end:
            return
        if offset < self.start:
            self.start = self.end = offset
            self.batches = []
            return
        kept = [b for b in self.batches if b.last < offset]
        dropped = [b for b in self.batches if b.last >= offset]
        self.end = min(offset, dropped[0].base) if dropped else offset
        self.batches = kept
        self.start = min(self.start, self.end)


def check_read(log: PartitionLog, model: Model, rng: random.Random, ctx: str) -> None:
    offset = rng.randint(model.start, model.end)
    max_bytes = rng.choice([0, 1, 60, 200, 700, 3000, 1 << 20])
    upto = rng.choice([None, None, rng.randint(model.start, model.end)])
    data = log.read(offset, max_bytes, upto)
    want = model.expected_read(offset, max_bytes, upto) if offset < model.end else []
    assert len(data) == sum(b.size for b in want), (ctx, offset, max_bytes, upto)
    got = [(r.offset, r.timestamp, r.key, r.value) for r in records_in("t", 0, data)]
    assert got == [r for b in want for r in b.records], (ctx, offset, max_bytes, upto)


def run_model(tmp_path, seed: int, steps: int, files: FilePool | None = None) -> None:
    rng = random.Random(seed)
    append_time = rng.random() < 0.25
    cfg = LogConfig(segment_bytes=rng.choice([150, 400, 1500]), index_interval_bytes=rng.choice([0, 100, 500, 4096]),
                    segment_ms=rng.choice([50, 10**6]),
                    timestamp_type="log_append_time" if append_time else "create_time")
    directory = tmp_path / f"seed{seed}"
    log = PartitionLog.open(directory, cfg, 0, files)
    model = Model()
    now = 1000
    for step in range(steps):
        ctx = f"seed={seed} step={step}"
        now += rng.randint(0, 20)
        op = rng.random()
        if op < 0.45:
            data, recs = random_batch(rng, now)
            res = log.append(bytearray(data), now, leader_epoch=rng.randint(0, 3))
            assert res.base_offset == model.end, ctx
            model.batches.append(Batch(model.end, len(data), [
                (model.end + i, now if append_time else ts, k, v) for i, (ts, k, v) in enumerate(recs)]))
            model.end += len(recs)
        elif op < 0.75:
            check_read(log, model, rng, ctx)
        elif op < 0.80:
            target = rng.randint(900, now + 60)
            expected = next(((o, t) for b in model.batches for o, t, _, _ in b.records
                             if t >= target and o >= model.start), None)
            assert log.offset_for_timestamp(target) == expected, (ctx, target)
        elif op < 0.85:
            target = rng.randint(max(0, model.start - 3), model.end + 2)
            log.truncate_to(target)
            model.truncate_to(target)
        elif op < 0.88:
            log.close()
            log = PartitionLog.open(directory, cfg, now, files)
            assert log.recovery.clean and log.recovery.truncated_bytes == 0, ctx
            assert log.recovery.rebuilt_indexes == 0, ctx  # indexes were left consistent
        elif op < 0.91:
            crash(log)
            log = PartitionLog.open(directory, cfg, now, files)
            assert not log.recovery.clean and log.recovery.truncated_bytes == 0, ctx
        elif op < 0.93:
            log.maybe_roll(now)
        elif op < 0.95:
            target = rng.randint(model.start, model.end)
            log.advance_start_offset(target)
            model.start = max(model.start, target)
        elif op < 0.96:
            target = rng.randint(0, model.end + 50)
            log.truncate_fully_and_start_at(target)
            model = Model(target, target, [])
        else:
            log.flush(now)
        assert (log.start_offset, log.end_offset) == (model.start, model.end), ctx
    for _ in range(20):
        check_read(log, model, rng, f"seed={seed} final")
    log.close()


@pytest.mark.parametrize("seed", seeds(range(12)))
def test_model(tmp_path, seed):
    run_model(tmp_path, seed, 400)


@pytest.mark.parametrize("seed", seeds([15, 16, 17, 22, 28, 36]))  # seeds whose logs outgrow the pool
def test_model_with_a_tiny_file_pool(tmp_path, seed):
    """The same, with the log's segments sharing 8 descriptors: reads, truncations, rolls,
    restarts and recovery keep reopening segments the pool closed."""
    files = FilePool(8)
    run_model(tmp_path, seed, 400, files)
    assert files.open_count == 0 and files.evictions_total > 0 and files.overflows == 0


def test_model_truncate_oracle(tmp_path):
    """truncate_to's result is the oracle's (the model test above trusts the log's end offset)."""
    rng = random.Random(99)
    for trial in range(30):
        log = PartitionLog.open(tmp_path / f"t{trial}", LogConfig(segment_bytes=300), 0)
        model = Model()
        for _ in range(rng.randint(1, 30)):
            data, recs = random_batch(rng, 1000)
            log.append(bytearray(data), 0)
            model.batches.append(Batch(model.end, len(data),
                                       [(model.end + i, t, k, v) for i, (t, k, v) in enumerate(recs)]))
            model.end += len(recs)
        target = rng.randint(0, model.end + 2)
        log.truncate_to(target)
        model.truncate_to(target)
        assert log.end_offset == model.end, (trial, target)
        got = [(r.offset, r.timestamp, r.key, r.value) for r in records_in("t", 0, log.read(0, 1 << 30))]
        assert got == [r for b in model.batches for r in b.records]
        log.close()


def test_write_failure_is_reported_and_fences_appends(tmp_path):
    log = PartitionLog.open(tmp_path, LogConfig(), 0)
    for i in range(3):
        log.append(batch(b"ok%d" % i), i)
    # Fault injection: the active segment's descriptor now refers to a read-only file.
    ro = os.open(os.devnull, os.O_RDONLY)
    os.dup2(ro, log._segments[-1].fd)
    os.close(ro)
    expect_error(StorageFailure, log.append, batch(b"lost"), 5)
    expect_error(StorageFailure, log.append, batch(b"fenced"), 6)  # refused until reopened
    assert log.end_offset == 3
    crash(log)
    log = PartitionLog.open(tmp_path, LogConfig(), 7)
    assert [r.value for r in records_in("t", 0, log.read(0, 1 << 20))] == [b"ok0", b"ok1", b"ok2"]
    assert log.append(batch(b"again"), 8).base_offset == 3
    log.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_segments_hold_at_most_one_descriptor_and_the_pool_bounds_them(tmp_path):
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    files = FilePool(8)
    before = open_fds()
    log = PartitionLog.open(tmp_path, LogConfig(segment_bytes=200), 0, files)
    for i in range(40):
        log.append(batch(b"d" * 100), i)
    log.flush()
    assert log.segment_count > 10
    assert open_fds() - before <= 8  # was one per segment, plus two for the active indexes
    assert len(records_in("t", 0, log.read(0, 1 << 20))) == 40  # closed segments reopen to be read
    assert open_fds() - before <= 8
    log.close()
    assert open_fds() == before and files.open_count == 0
    log = PartitionLog.open(tmp_path, LogConfig(segment_bytes=200), 0, files)
    assert open_fds() - before <= 8
    log.truncate_to(5)  # an older segment becomes active again
    assert open_fds() - before <= 8
    log.append(batch(b"e"), 50)
    log.close()
    assert open_fds() == before
    log = PartitionLog.open(tmp_path, LogConfig(segment_bytes=200), 0, files)
    assert log.recovery.rebuilt_indexes == 0 and log.end_offset == 6
    log.close()
