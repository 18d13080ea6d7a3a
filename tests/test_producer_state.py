"""The idempotent producer's partition state (``fabric.log.producer_state``) and its log wrapper
(``fabric.log.producer_log``): duplicates, gaps, epochs, the 5-batch window, snapshots, recovery
and expiration."""

from __future__ import annotations

import pytest

from fabric.log.config import LogConfig
from fabric.log.producer_log import SNAPSHOT_FILE, ProducerLog
from fabric.log.producer_state import (OutOfOrderSequenceError, ProducerFencedError, ProducerStateTable,
                                       SnapshotError, UnknownProducerError, decode_snapshot)
from fabric.records.batch import encode_batch

NOW = 1_700_000_000_000


def appended(t: ProducerStateTable, pid: int, epoch: int, seq: int, n: int, base: int) -> None:
    assert t.check(pid, epoch, seq, n) is None
    t.update(pid, epoch, seq, n, base, NOW)


def test_duplicate_is_answered_with_the_original_offsets():
    t = ProducerStateTable()
    appended(t, 7, 0, 0, 3, 100)
    appended(t, 7, 0, 3, 2, 200)
    dup = t.check(7, 0, 0, 3)
    assert (dup.base_offset, dup.last_offset) == (100, 102)
    assert t.check(7, 0, 3, 2).base_offset == 200


def test_gap_and_partial_overlap_are_out_of_order():
    t = ProducerStateTable()
    appended(t, 7, 0, 0, 3, 0)
    with pytest.raises(OutOfOrderSequenceError, match="expected 3"):
        t.check(7, 0, 4, 1)
    with pytest.raises(OutOfOrderSequenceError):
        t.check(7, 0, 1, 2)  # overlaps the written batch without being it


def test_unknown_producer_must_start_at_zero():
    t = ProducerStateTable()
    with pytest.raises(UnknownProducerError):
        t.check(9, 0, 5, 1)
    assert t.check(9, 0, 0, 1) is None


def test_older_epoch_is_fenced_and_a_new_epoch_starts_at_zero():
    t = ProducerStateTable()
    appended(t, 7, 1, 0, 2, 0)
    with pytest.raises(ProducerFencedError):
        t.check(7, 0, 2, 1)
    with pytest.raises(OutOfOrderSequenceError, match="new epoch"):
        t.check(7, 2, 2, 1)
    appended(t, 7, 2, 0, 1, 2)
    with pytest.raises(ProducerFencedError):
        t.check(7, 1, 0, 2)


def test_only_the_last_five_batches_are_remembered():
    t = ProducerStateTable()
    for i in range(6):
        appended(t, 7, 0, i, 1, 10 + i)
    assert t.check(7, 0, 5, 1).base_offset == 15
    assert t.check(7, 0, 1, 1).base_offset == 11
    with pytest.raises(OutOfOrderSequenceError):
        t.check(7, 0, 0, 1)  # fell out of the window: no longer recognised


def test_sequences_wrap():
    t = ProducerStateTable()
    t.update(7, 0, 2**31 - 2, 2, 1, NOW)  # sequences 2147483646, 2147483647
    assert t.check(7, 0, 0, 1) is None  # 0 comes next
    with pytest.raises(OutOfOrderSequenceError):
        t.check(7, 0, 1, 1)


def test_snapshot_round_trip_and_checks():
    t = ProducerStateTable()
    appended(t, 7, 0, 0, 3, 0)
    appended(t, 8, 2, 0, 1, 3)
    t.end_offset = 4
    back = decode_snapshot(t.encode())
    assert back.end_offset == 4
    assert back.check(7, 0, 0, 3).base_offset == 0 and back.check(8, 2, 0, 1).base_offset == 3
    data = bytearray(t.encode())
    data[20] ^= 1
    with pytest.raises(SnapshotError, match="CRC"):
        decode_snapshot(bytes(data))
    with pytest.raises(SnapshotError):
        decode_snapshot(t.encode()[:10])


def test_expiration_forgets_idle_producers():
    t = ProducerStateTable()
    t.update(7, 0, 0, 1, 0, NOW)
    t.update(8, 0, 0, 1, 1, NOW + 5000)
    assert t.expire(NOW + 6000, 5500) == [7]
    with pytest.raises(UnknownProducerError):
        t.check(7, 0, 1, 1)
    assert t.check(8, 0, 1, 1) is None


def _batch(pid: int, seq: int, n: int = 2, epoch: int = 0) -> bytearray:
    return bytearray(encode_batch([NOW] * n, [None] * n, [b"v"] * n, producer_id=pid, producer_epoch=epoch,
                                  base_sequence=seq))


def _open(d) -> ProducerLog:
    return ProducerLog.open(d, LogConfig(segment_bytes=4096), NOW)


def test_state_is_rebuilt_from_the_log_after_a_reopen(tmp_path):
    plog = _open(tmp_path)
    plog.append(_batch(5, 0), NOW)
    plog.append(_batch(5, 2), NOW)
    plog.log.close()  # as a crash: no snapshot written at close
    (tmp_path / SNAPSHOT_FILE).unlink(missing_ok=True)
    again = _open(tmp_path)
    assert again.check_producer(5, 0, 2, 2).base_offset == 2
    assert again.check_producer(5, 0, 4, 2) is None
    again.close()


def test_corrupt_snapshot_falls_back_to_the_log_scan(tmp_path):
    plog = _open(tmp_path)
    plog.append(_batch(5, 0), NOW)
    plog.close()
    path = tmp_path / SNAPSHOT_FILE
    assert path.exists()
    path.write_bytes(b"FBPS" + b"\0" * 30)
    again = _open(tmp_path)
    assert again.check_producer(5, 0, 0, 2).base_offset == 0
    again.close()


def test_state_outlives_retention_through_the_snapshot(tmp_path):
    plog = _open(tmp_path)
    for i in range(60):  # several segments of 4 KB
        plog.append(bytearray(encode_batch([NOW], [None], [b"x" * 200])), NOW)
    plog.append(_batch(5, 0), NOW)
    first = plog.end_offset - 2
    for i in range(60):
        plog.append(bytearray(encode_batch([NOW], [None], [b"x" * 200])), NOW)
    plog.advance_start_offset(plog.end_offset - 1)
    plog.apply_retention(NOW)
    assert plog.start_offset > first + 1
    plog.close()
    again = _open(tmp_path)
    assert again.start_offset > first + 1
    assert again.check_producer(5, 0, 0, 2).base_offset == first  # the batch itself is gone
    again.close()


def test_truncation_forgets_the_batches_it_removed(tmp_path):
    plog = _open(tmp_path)
    plog.append(_batch(5, 0), NOW)
    plog.append(_batch(5, 2), NOW)
    plog.truncate_to(2)
    assert plog.check_producer(5, 0, 2, 2) is None  # not a duplicate any more: it is gone
    with pytest.raises(OutOfOrderSequenceError):
        plog.check_producer(5, 0, 4, 2)
    plog.close()
