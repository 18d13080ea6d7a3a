"""Retention by time and size, log start offset, age-based rolls."""

from __future__ import annotations

from fabric.log import LogConfig, PartitionLog
from fabric.log.errors import OffsetOutOfRangeError
from fabric.testing.log_conformance import expect_error
from fabric.records.batch import encode_batch, records_in

HOUR = 3600_000


def fill(log: PartitionLog, count: int, ts_start: int, now: int, step: int = 1000) -> None:
    for i in range(count):
        log.append(bytearray(encode_batch([ts_start + i * step], [None], [b"v" * 100])), now)


def first_offset(log: PartitionLog) -> int:
    return records_in("t", 0, log.read(log.start_offset, 1))[0].offset


def test_retention_by_time(tmp_path):
    cfg = LogConfig(segment_bytes=500, retention_ms=HOUR)
    log = PartitionLog.open(tmp_path, cfg, 0)
    fill(log, 30, ts_start=0, now=0)  # ~3 batches per segment, timestamps 0..29s
    segs = log.segments()
    assert len(segs) >= 8
    assert log.apply_retention(HOUR) == 0  # nothing older than an hour yet
    # at now = HOUR + 10.5s, segments whose newest record is older than 10.5s are gone
    now = HOUR + 10_500
    expired = [s for s in segs[:-1] if now - s["max_timestamp"] > HOUR]
    assert log.apply_retention(now) == len(expired) > 0
    assert log.start_offset == segs[len(expired)]["base_offset"] == first_offset(log)
    expect_error(OffsetOutOfRangeError, log.read, log.start_offset - 1, 100)
    # far in the future: everything but the active segment goes
    assert log.apply_retention(10 * HOUR) == len(segs) - 1 - len(expired)
    assert log.segment_count == 1 and log.start_offset == segs[-1]["base_offset"]
    assert log.apply_retention(100 * HOUR) == 0  # never the active segment
    log.close()
    log = PartitionLog.open(tmp_path, cfg, 0)
    assert log.start_offset == segs[-1]["base_offset"] and log.end_offset == 30
    log.close()


def test_retention_by_time_stops_at_first_unexpired_segment(tmp_path):
    log = PartitionLog.open(tmp_path, LogConfig(segment_bytes=300, retention_ms=HOUR), 0)
    fill(log, 4, ts_start=0, now=0)
    fill(log, 4, ts_start=5 * HOUR, now=0)  # a young segment ...
    fill(log, 4, ts_start=0, now=0)  # ... then old ones again: retention deletes only a prefix
    before = log.segment_count
    deleted = log.apply_retention(2 * HOUR)
    assert 0 < deleted < before - 1
    assert log.segments()[0]["max_timestamp"] >= 5 * HOUR
    log.close()


def test_retention_by_size(tmp_path):
    cfg = LogConfig(segment_bytes=500, retention_bytes=1500, retention_ms=-1)
    log = PartitionLog.open(tmp_path, cfg, 0)
    fill(log, 40, ts_start=0, now=0)
    deleted = log.apply_retention(10**12)
    segs = log.segments()
    assert deleted > 0
    assert log.size_bytes >= 1500 and log.size_bytes - segs[0]["size_bytes"] < 1500
    assert log.start_offset == segs[0]["base_offset"] == first_offset(log)
    assert log.apply_retention(10**12) == 0
    log.reconfigure(LogConfig(segment_bytes=500, retention_bytes=0, retention_ms=-1))
    log.apply_retention(0)
    assert log.segment_count == 1  # the active segment stays even at retention_bytes 0
    log.close()


def test_compact_only_topics_are_not_deleted_by_retention(tmp_path):
    log = PartitionLog.open(tmp_path, LogConfig(segment_bytes=300, retention_ms=0, retention_bytes=0,
                                                cleanup_policy="compact"), 0)
    fill(log, 20, ts_start=0, now=0)
    assert log.apply_retention(10 * HOUR) == 0
    log.reconfigure(LogConfig(segment_bytes=300, retention_ms=0, cleanup_policy="delete,compact"))
    assert log.apply_retention(10 * HOUR) > 0
    log.close()


def test_advance_start_offset(tmp_path):
    cfg = LogConfig(segment_bytes=500)
    log = PartitionLog.open(tmp_path, cfg, 0)
    fill(log, 30, ts_start=0, now=0)
    segs = log.segments()
    target = segs[3]["base_offset"] + 1  # inside the fourth segment
    log.advance_start_offset(target)
    assert log.start_offset == target
    assert log.segments()[0]["base_offset"] == segs[3]["base_offset"]
    assert records_in("t", 0, log.read(target, 1), target)[0].offset == target
    expect_error(OffsetOutOfRangeError, log.read, target - 1, 1)
    log.advance_start_offset(2)  # never moves backwards
    assert log.start_offset == target
    expect_error(OffsetOutOfRangeError, log.advance_start_offset, 31)
    log.close()
    log = PartitionLog.open(tmp_path, cfg, 0)
    assert log.start_offset == target  # durable, even mid-segment
    log.advance_start_offset(30)  # the whole log: only the active segment remains, empty for readers
    assert log.read(30, 100) == b"" and log.start_offset == log.end_offset == 30
    log.close()


def test_age_based_roll(tmp_path):
    cfg = LogConfig(segment_ms=HOUR)
    log = PartitionLog.open(tmp_path, cfg, 0)
    assert not log.maybe_roll(10 * HOUR)  # empty active segment: nothing to roll
    fill(log, 2, ts_start=0, now=1000)
    assert not log.maybe_roll(1000 + HOUR - 1)
    assert log.maybe_roll(1000 + HOUR)
    assert log.segment_count == 2 and log.segments()[-1]["base_offset"] == 2
    assert not log.maybe_roll(1000 + 2 * HOUR)  # the new one is empty
    # a roll on append when the active segment is old
    fill(log, 1, ts_start=0, now=2 * HOUR)
    fill(log, 1, ts_start=0, now=3 * HOUR)
    assert [s["base_offset"] for s in log.segments()] == [0, 2, 3]
    log.close()


def test_age_clock_survives_restart(tmp_path):
    """After a restart the active segment's age counts from its first batch's timestamp."""
    cfg = LogConfig(segment_ms=HOUR)
    log = PartitionLog.open(tmp_path, cfg, 0)
    fill(log, 1, ts_start=1000, now=1000)
    log.close()
    log = PartitionLog.open(tmp_path, cfg, 10 * HOUR)
    assert log.maybe_roll(10 * HOUR)
    log.close()


def test_retention_after_truncate_fully(tmp_path):
    log = PartitionLog.open(tmp_path, LogConfig(segment_bytes=300, retention_ms=HOUR), 0)
    fill(log, 10, ts_start=0, now=0)
    log.truncate_fully_and_start_at(500)
    fill(log, 10, ts_start=0, now=0)
    assert log.apply_retention(2 * HOUR) > 0
    assert log.start_offset >= 500 and log.end_offset == 510
    log.close()
