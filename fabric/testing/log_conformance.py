"""One conformance suite for every ``LogStore`` backend (trio's ``check_one_way_stream`` idea).

Each ``check_*`` function takes a ``LogFactory`` (how to make, restart and crash a log of the
backend under test) and asserts the behaviour the broker relies on; ``LOG_CHECKS`` lists them all.
A backend passes by passing every one: ``for check in LOG_CHECKS: check(factory)``.
``check_model`` drives random operations against a plain list oracle with a seed printed in every
failure.  ``EPOCH_CHECKS`` do the same for the leader-epoch table (``LeaderEpochs``) of a log.

Errors are recognised in one place, ``expect_error``, by the log's own exception classes
(``fabric/log/errors.py``; the broker maps them to wire codes, not the log).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ..log.config import LogConfig
from ..log.store import LogStore, ReplicaLogStore
from ..log.errors import (InvalidBatchError, LogClosedError, LogError, MalformedBatchError,
                          OffsetOutOfRangeError)
from ..records.batch import encode_batch, iter_headers, records_in
from .logs import random_batch

__all__ = ["EPOCH_CHECKS", "LOG_CHECKS", "LogFactory", "check_model", "expect_error"]


class LogFactory(Protocol):
    def open(self, config: LogConfig, now_ms: int) -> LogStore:
        """A new, empty log."""
        ...

    def restart(self, log: LogStore, now_ms: int) -> LogStore:
        """``close`` the log and open it again, as a clean restart does."""
        ...

    def crash(self, log: LogStore, now_ms: int) -> LogStore:
        """The log a restart after a crash finds (called only right after ``flush``, so every
        backend must keep everything)."""
        ...


def expect_error(kind: type[LogError], fn: Callable[..., Any], *args: Any) -> None:
    """``fn(*args)`` must fail with the log error ``kind``."""
    try:
        fn(*args)
    except LogError as exc:
        assert isinstance(exc, kind), \
            f"{getattr(fn, '__name__', fn)}{args}: expected {kind.__name__}, got {type(exc).__name__}: {exc}"
    else:
        raise AssertionError(f"{getattr(fn, '__name__', fn)}{args} should fail with {kind.__name__}")


def batch(*values: bytes, ts: int = 1000) -> bytearray:
    return bytearray(encode_batch([ts + i for i in range(len(values))], [None] * len(values), list(values)))


def offsets(data: bytes) -> list[int]:
    return [r.offset for r in records_in("t", 0, data)]


def bounds(log: LogStore) -> tuple[int, int]:
    return log.start_offset, log.end_offset


# ============================================================================ behaviour checks
def check_empty(factory: LogFactory) -> None:
    log = factory.open(LogConfig(), 0)
    assert bounds(log) == (0, 0) and log.size_bytes == 0
    assert log.read(0, 100) == b"" and log.read_upto(0, 100) == (b"", True)
    assert log.offset_for_timestamp(0) is None
    expect_error(OffsetOutOfRangeError, log.read, 1, 100)
    expect_error(OffsetOutOfRangeError, log.read, -1, 100)
    assert not log.unflushed
    log.close()


def check_append_stamps_offsets_and_epoch(factory: LogFactory) -> None:
    log = factory.open(LogConfig(), 0)
    b = batch(b"a", b"b", b"c")
    res = log.append(b, 5, leader_epoch=7)
    assert (res.base_offset, res.last_offset, res.max_timestamp, res.size) == (0, 2, 1002, len(b))
    res = log.append(bytes(batch(b"d")), 6, leader_epoch=8)  # bytes are copied, not refused
    assert (res.base_offset, res.last_offset) == (3, 3) and log.end_offset == 4
    data = log.read(0, 1 << 20)
    assert [(h.base_offset, h.leader_epoch) for _, h in iter_headers(data)] == [(0, 7), (3, 8)]
    assert bytes(b) == data[:len(b)]  # stamped in place: the log holds exactly these bytes
    assert [r.value for r in records_in("t", 0, data)] == [b"a", b"b", b"c", b"d"]
    assert log.size_bytes == len(data) and log.unflushed
    log.close()


def check_framing_is_checked(factory: LogFactory) -> None:
    log = factory.open(LogConfig(), 0)
    good = batch(b"x")
    expect_error(MalformedBatchError, log.append, bytearray(good[:40]), 0)
    expect_error(MalformedBatchError, log.append, good + b"\0", 0)  # the length field disagrees
    bad_count = bytearray(good)
    bad_count[57:61] = (2).to_bytes(4, "big")  # record_count 2, last_offset_delta 0
    expect_error(InvalidBatchError, log.append, bad_count, 0)
    assert bounds(log) == (0, 0) and log.size_bytes == 0
    log.close()


def check_log_append_time(factory: LogFactory) -> None:
    log = factory.open(LogConfig(timestamp_type="log_append_time"), 0)
    res = log.append(batch(b"a", b"b", ts=5), 777)
    assert res.max_timestamp == 777
    assert [r.timestamp for r in records_in("t", 0, log.read(0, 1 << 20))] == [777, 777]
    assert log.offset_for_timestamp(700) == (0, 777) and log.offset_for_timestamp(778) is None
    log.close()


def check_read_semantics(factory: LogFactory) -> None:
    log = factory.open(LogConfig(segment_bytes=300), 0)
    sizes = [log.append(batch(b"x" * 40, b"y" * 40), i).size for i in range(10)]  # offsets 2i, 2i+1
    assert offsets(log.read(5, 1))[:2] == [4, 5]  # the batch holding the offset comes first
    assert len(log.read(5, 1)) == sizes[2]  # at least one batch, never a partial one
    assert len(log.read(5, 0)) == sizes[2]
    assert len(log.read(5, sizes[2] + sizes[3] - 1)) == sizes[2]
    assert len(log.read(5, sizes[2] + sizes[3])) == sizes[2] + sizes[3]
    assert offsets(log.read(0, 1 << 20)) == list(range(20))
    assert offsets(log.read(0, 1 << 20, upto_offset=6)) == list(range(6))
    assert offsets(log.read(0, 1 << 20, upto_offset=7)) == list(range(8))  # batch 6-7 starts below 7
    assert log.read(6, 1 << 20, upto_offset=6) == b""
    assert log.read(20, 100) == b""
    assert log.read_upto(0, 1 << 20) == (log.read(0, 1 << 20), True)
    assert log.read_upto(0, 1 << 20, 6)[1] and log.read_upto(6, 100, 6) == (b"", True)
    assert not log.read_upto(0, sizes[0])[1]  # the budget ended the read, more follows
    assert log.read_upto(18, sizes[9])[1]  # the last batch, exactly within budget
    expect_error(OffsetOutOfRangeError, log.read, 21, 100)
    log.close()


def check_offset_for_timestamp(factory: LogFactory) -> None:
    log = factory.open(LogConfig(segment_bytes=200), 0)
    stamps = [5000, 1000, 3000, 3000, 2000, 9000, 100]
    for i in range(0, len(stamps), 2):
        part = stamps[i:i + 2]
        log.append(bytearray(encode_batch(part, [None] * len(part), [b"v"] * len(part))), 0)
    for target in (0, 100, 101, 999, 1000, 2999, 3000, 5000, 5001, 9000, 9001):
        want = next(((o, t) for o, t in enumerate(stamps) if t >= target), None)
        assert log.offset_for_timestamp(target) == want, target
    log.advance_start_offset(1)  # records before the log start do not count
    assert log.offset_for_timestamp(5000) == (5, 9000)
    log.close()


def check_truncate_to(factory: LogFactory) -> None:
    log = factory.open(LogConfig(segment_bytes=200), 0)
    for i in range(6):
        log.append(batch(b"a" * 30, b"b" * 30), i)  # batches at 0, 2, 4, 6, 8, 10
    log.truncate_to(12)  # at the end: nothing
    assert bounds(log) == (0, 12)
    log.truncate_to(7)  # the whole batch holding 7 goes
    assert bounds(log) == (0, 6) and offsets(log.read(0, 1 << 20)) == list(range(6))
    log.truncate_to(4)  # a batch boundary
    assert bounds(log) == (0, 4)
    assert log.append(batch(b"c"), 9).base_offset == 4
    assert offsets(log.read(0, 1 << 20)) == [0, 1, 2, 3, 4]
    log.advance_start_offset(3)
    log.truncate_to(1)  # below the start: the log empties and starts there
    assert bounds(log) == (1, 1) and log.read(1, 100) == b""
    assert log.append(batch(b"d"), 9).base_offset == 1
    log.close()


def check_truncate_fully_and_start_at(factory: LogFactory) -> None:
    log = factory.open(LogConfig(segment_bytes=200), 0)
    for i in range(5):
        log.append(batch(b"v" * 50), i)
    log.truncate_fully_and_start_at(1000)
    assert bounds(log) == (1000, 1000) and log.size_bytes == 0
    expect_error(OffsetOutOfRangeError, log.read, 0, 100)
    assert log.append(batch(b"z"), 9).base_offset == 1000
    assert offsets(log.read(1000, 100)) == [1000]
    expect_error(OffsetOutOfRangeError, log.truncate_fully_and_start_at, -1)
    log = factory.restart(log, 10)
    assert bounds(log) == (1000, 1001)
    log.close()


def check_advance_start_offset(factory: LogFactory) -> None:
    log = factory.open(LogConfig(segment_bytes=200), 0)
    for i in range(5):
        log.append(batch(b"a" * 30, b"b" * 30), i)  # 0-9
    log.advance_start_offset(5)
    assert bounds(log) == (5, 10)
    expect_error(OffsetOutOfRangeError, log.read, 4, 100)
    assert offsets(log.read(5, 1))[:2] == [4, 5]  # the batch holding the start, whole
    log.advance_start_offset(3)  # never backwards
    assert log.start_offset == 5
    expect_error(OffsetOutOfRangeError, log.advance_start_offset, 11)
    log = factory.restart(log, 10)
    assert bounds(log) == (5, 10)
    log.advance_start_offset(10)
    assert bounds(log) == (10, 10) and log.read(10, 100) == b""
    log.close()


def check_append_replicated(factory: LogFactory) -> None:
    leader = factory.open(LogConfig(), 0)
    leader.append(batch(b"a", b"b"), 0, leader_epoch=3)
    leader.append(batch(b"c"), 0, leader_epoch=4)
    follower = factory.open(LogConfig(timestamp_type="log_append_time"), 0)
    data = leader.read(0, 1 << 20)
    first = b""
    for pos, h in iter_headers(data):
        first = first or data[pos:pos + h.size]
        res = follower.append_replicated(bytearray(data[pos:pos + h.size]), 99)
        assert (res.base_offset, res.last_offset) == (h.base_offset, h.last_offset)
    assert follower.read(0, 1 << 20) == data  # byte for byte: no re-stamping, no append time
    gap = bytearray(encode_batch([5], [None], [b"after a gap"]))
    gap[0:8] = (10).to_bytes(8, "big")
    assert follower.append_replicated(gap, 0).base_offset == 10 and follower.end_offset == 11
    assert offsets(follower.read(4, 100)) == [10]  # a read in the gap gets the batch after it
    expect_error(OffsetOutOfRangeError, follower.append_replicated, bytearray(first), 0)  # below the end
    leader.close()
    follower.close()


def check_flush_policy(factory: LogFactory) -> None:
    log = factory.open(LogConfig(flush_interval_ms=100), 0)
    log.append(batch(b"a"), 10)
    assert log.unflushed and not log.needs_flush(109) and log.needs_flush(110)
    log.flush(120)
    assert not log.unflushed and not log.needs_flush(10**9) and log.last_flush_ms == 120
    log.append(batch(b"b"), 200, defer_flush=True)
    assert log.unflushed
    log.close()
    log = factory.open(LogConfig(flush_every_batch=True), 0)
    log.append(batch(b"a"), 10)
    assert not log.unflushed  # flushed before append returned
    log.append(batch(b"b"), 20, defer_flush=True)
    assert log.unflushed  # the caller promised to flush (group commit)
    log.flush()
    assert not log.unflushed
    log.close()


def check_closed_log_refuses(factory: LogFactory) -> None:
    log = factory.open(LogConfig(), 0)
    log.append(batch(b"a"), 0)
    log.close()
    log.close()  # twice is fine
    expect_error(LogClosedError, log.read, 0, 100)
    expect_error(LogClosedError, log.append, batch(b"b"), 0)
    expect_error(LogClosedError, log.truncate_to, 0)
    expect_error(LogClosedError, log.offset_for_timestamp, 0)


def check_restart_keeps_everything(factory: LogFactory) -> None:
    log = factory.open(LogConfig(segment_bytes=300), 0)
    for i in range(8):
        log.append(batch(b"r%d" % i, b"s%d" % i), i)
    before = log.read(0, 1 << 30)
    log = factory.restart(log, 100)
    assert bounds(log) == (0, 16) and log.read(0, 1 << 30) == before and log.recovery.clean
    assert log.append(batch(b"t"), 100).base_offset == 16
    log.flush()
    log = factory.crash(log, 200)
    assert bounds(log) == (0, 17) and log.read(0, 1 << 30)[:len(before)] == before
    log.close()


LOG_CHECKS: list[Callable[[LogFactory], None]] = [
    check_empty, check_append_stamps_offsets_and_epoch, check_framing_is_checked, check_log_append_time,
    check_read_semantics, check_offset_for_timestamp, check_truncate_to, check_truncate_fully_and_start_at,
    check_advance_start_offset, check_append_replicated, check_flush_policy, check_closed_log_refuses,
    check_restart_keeps_everything,
]


# ============================================================================ the model test
@dataclass
class _Batch:
    base: int
    size: int
    records: list[tuple[int, int, bytes | None, bytes | None]]  # (offset, ts, key, value)

    @property
    def last(self) -> int:
        return self.records[-1][0]


@dataclass
class Oracle:
    """The log as a plain list of batches."""

    start: int = 0
    end: int = 0
    batches: list[_Batch] = field(default_factory=list)

    def read(self, offset: int, max_bytes: int, upto: int | None) -> tuple[list[_Batch], bool]:
        out: list[_Batch] = []
        total = 0
        rest = [b for b in self.batches if b.last >= offset]
        for b in rest:
            if (upto is not None and b.base >= upto) or (out and total + b.size > max_bytes):
                break
            out.append(b)
            total += b.size
            if total > max_bytes:
                break
        remaining = rest[len(out):]
        return out, not remaining or (upto is not None and remaining[0].base >= upto)

    def truncate_to(self, offset: int) -> None:
        if offset >= self.end:
            return
        if offset < self.start:
            self.start = self.end = offset
            self.batches = []
            return
        dropped = [b for b in self.batches if b.last >= offset]
        self.batches = [b for b in self.batches if b.last < offset]
        self.end = min(offset, dropped[0].base) if dropped else offset
        self.start = min(self.start, self.end)


def check_model(factory: LogFactory, seed: int, steps: int = 300) -> None:
    """Random appends, reads, timestamp lookups, truncations, start advances, restarts and
    flush-then-crash against ``Oracle``; the seed is in every failure message."""
    rng = random.Random(seed)
    append_time = rng.random() < 0.25
    cfg = LogConfig(segment_bytes=rng.choice([150, 400, 1500]), index_interval_bytes=rng.choice([0, 100, 4096]),
                    timestamp_type="log_append_time" if append_time else "create_time")
    log = factory.open(cfg, 0)
    model = Oracle()
    now = 1000
    for step in range(steps):
        ctx = f"seed={seed} step={step}"
        now += rng.randint(0, 20)
        op = rng.random()
        if op < 0.45:
            data, recs = random_batch(rng, now)
            res = log.append(bytearray(data), now, leader_epoch=rng.randint(0, 3))
            assert res.base_offset == model.end, ctx
            model.batches.append(_Batch(model.end, len(data), [
                (model.end + i, now if append_time else ts, k, v) for i, (ts, k, v) in enumerate(recs)]))
            model.end += len(recs)
        elif op < 0.75:
            offset = rng.randint(model.start, model.end)
            max_bytes = rng.choice([0, 1, 60, 200, 700, 3000, 1 << 20])
            upto = rng.choice([None, None, rng.randint(model.start, model.end)])
            data, complete = log.read_upto(offset, max_bytes, upto)
            want, want_complete = model.read(offset, max_bytes, upto) if offset < model.end else ([], True)
            got = [(r.offset, r.timestamp, r.key, r.value) for r in records_in("t", 0, data)]
            assert got == [r for b in want for r in b.records], (ctx, offset, max_bytes, upto)
            assert len(data) == sum(b.size for b in want), (ctx, offset, max_bytes, upto)
            assert complete == want_complete, (ctx, offset, max_bytes, upto)
        elif op < 0.80:
            target = rng.randint(900, now + 60)
            want_ts = next(((o, t) for b in model.batches for o, t, _, _ in b.records
                            if t >= target and o >= model.start), None)
            assert log.offset_for_timestamp(target) == want_ts, (ctx, target)
        elif op < 0.85:
            target = rng.randint(max(0, model.start - 3), model.end + 2)
            log.truncate_to(target)
            model.truncate_to(target)
        elif op < 0.88:
            log = factory.restart(log, now)
        elif op < 0.90:
            log.flush(now)
            log = factory.crash(log, now)
        elif op < 0.93:
            target = rng.randint(model.start, model.end)
            log.advance_start_offset(target)
            model.start = max(model.start, target)
        elif op < 0.94:
            target = rng.randint(0, model.end + 50)
            log.truncate_fully_and_start_at(target)
            model = Oracle(target, target, [])
        else:
            log.flush(now)
        assert bounds(log) == (model.start, model.end), ctx
    log.close()


# ============================================================================ leader epochs
def check_epochs_follow_appends_and_truncation(factory: Callable[[LogConfig, int], ReplicaLogStore]) -> None:
    """A log with the ``LeaderEpochs`` hooks keeps its table in step with appends and truncation."""
    log = factory(LogConfig(), 0)
    assert log.leader_epochs() == [] and log.end_offset_for_epoch(0) == (-1, -1)
    log.append(batch(b"a", b"b"), 0, leader_epoch=1)  # 0-1
    log.append(batch(b"c"), 0, leader_epoch=1)  # 2
    log.append(batch(b"d", b"e"), 0, leader_epoch=3)  # 3-4
    assert [tuple(e) for e in log.leader_epochs()] == [(1, 0), (3, 3)]
    assert log.end_offset_for_epoch(1) == (1, 3)
    assert log.end_offset_for_epoch(2) == (1, 3)  # the largest epoch <= 2 is 1, ending where 3 starts
    assert log.end_offset_for_epoch(3) == (3, 5)  # the latest epoch ends at the log end
    assert log.end_offset_for_epoch(0) == (0, 0)  # older than any: the asked epoch, up to the first start
    assert log.end_offset_for_epoch(4) == (-1, -1)
    log.assign_epoch(5, 5)  # a new leader, before its first append
    assert log.end_offset_for_epoch(3) == (3, 5) and log.end_offset_for_epoch(5) == (5, 5)
    log.truncate_to(5)  # deposed before writing in epoch 5: a no-op truncation still drops it
    assert [tuple(e) for e in log.leader_epochs()] == [(1, 0), (3, 3)]
    log.assign_epoch(5, 5)
    log.truncate_to(3)  # the follower drops its divergent tail: epochs starting there go
    assert [tuple(e) for e in log.leader_epochs()] == [(1, 0)]
    follower_batch = bytearray(encode_batch([1], [None], [b"f"]))
    follower_batch[0:8] = (3).to_bytes(8, "big")
    follower_batch[12:16] = (6).to_bytes(4, "big")
    log.append_replicated(follower_batch, 0)  # a replicated batch carries its epoch into the table
    assert [tuple(e) for e in log.leader_epochs()] == [(1, 0), (6, 3)]
    log.advance_start_offset(2)
    assert [tuple(e) for e in log.leader_epochs()] == [(1, 2), (6, 3)]
    log.truncate_fully_and_start_at(50)
    assert log.leader_epochs() == []
    log.close()


EPOCH_CHECKS = [check_epochs_follow_appends_and_truncation]
