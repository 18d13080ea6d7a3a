"""Recovery: torn and corrupt tails, garbage, lost or damaged indexes, the recovery point."""

from __future__ import annotations

import os
import random

import pytest

from fabric.log import LogConfig, PartitionLog
from fabric.log.files import CLEAN_SHUTDOWN, CHECKPOINT, read_checkpoint
from fabric.log.index import HEADER_BYTES
from fabric.testing.logs import crash, log_files, random_batch
from fabric.records.batch import encode_batch, iter_headers, records_in

CFG = LogConfig(segment_bytes=1200, index_interval_bytes=200)


def build(directory, rng: random.Random, batches: int, cfg: LogConfig = CFG):
    """A log of random batches; returns it and the records [(offset, ts, key, value)]."""
    log = PartitionLog.open(directory, cfg, 0)
    records = []
    for i in range(batches):
        data, recs = random_batch(rng, 1000 + i)
        res = log.append(bytearray(data), 1000 + i)
        records.extend((res.base_offset + j, t, k, v) for j, (t, k, v) in enumerate(recs))
    return log, records


def all_records(log: PartitionLog):
    return [(r.offset, r.timestamp, r.key, r.value) for r in records_in("t", 0, log.read(log.start_offset, 1 << 30))]


def last_batch_span(path) -> tuple[int, int, int]:
    """(position, size, base offset) of the last batch in a .log file."""
    data = path.read_bytes()
    pos, h = list(iter_headers(data))[-1]
    return pos, h.size, h.base_offset


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("clean_marker", [False, True])
def test_torn_tail_is_truncated(tmp_path, seed, clean_marker):
    rng = random.Random(seed)
    log, records = build(tmp_path, rng, 40)
    (crash if not clean_marker else PartitionLog.close)(log)
    last = log_files(tmp_path)[-1]
    pos, size, base = last_batch_span(last)
    cut = pos + rng.randint(1, size - 1)
    os.truncate(last, cut)
    log = PartitionLog.open(tmp_path, CFG, 5000)
    assert log.recovery.truncated_bytes == cut - pos
    assert log.end_offset == base
    assert all_records(log) == [r for r in records if r[0] < base]
    assert log.append(bytearray(encode_batch([1], [None], [b"after"])), 6000).base_offset == base
    log.close()
    log = PartitionLog.open(tmp_path, CFG, 7000)
    assert all_records(log)[-1] == (base, 1, None, b"after")
    log.close()


@pytest.mark.parametrize("seed", range(6))
def test_corrupt_last_batch_fails_crc_and_is_truncated(tmp_path, seed):
    rng = random.Random(seed)
    log, records = build(tmp_path, rng, 30)
    crash(log)
    last = log_files(tmp_path)[-1]
    pos, size, base = last_batch_span(last)
    data = bytearray(last.read_bytes())
    at = pos + rng.randint(21, size - 1)  # inside the CRC-covered part
    data[at] ^= 1 << rng.randrange(8)
    last.write_bytes(bytes(data))
    log = PartitionLog.open(tmp_path, CFG, 5000)
    assert not log.recovery.clean and log.recovery.truncated_bytes == size
    assert log.end_offset == base
    assert all_records(log) == [r for r in records if r[0] < base]
    log.close()


@pytest.mark.parametrize("seed", range(6))
def test_garbage_after_the_last_batch(tmp_path, seed):
    rng = random.Random(seed)
    log, records = build(tmp_path, rng, 30)
    end = log.end_offset
    crash(log)
    last = log_files(tmp_path)[-1]
    pos, size, _ = last_batch_span(last)
    if seed % 3 == 0:
        garbage = last.read_bytes()[pos:pos + size]  # a valid batch again: offsets go backwards
    elif seed % 3 == 1:
        garbage = bytes(rng.randint(1, 300))  # zeros, as after a power loss on some file systems
    else:
        garbage = rng.randbytes(rng.randint(1, 300))
    with open(last, "ab") as f:
        f.write(garbage)
    log = PartitionLog.open(tmp_path, CFG, 5000)
    assert log.recovery.truncated_bytes == len(garbage)
    assert log.end_offset == end
    assert all_records(log) == records
    assert log.append(bytearray(encode_batch([1], [None], [b"x"])), 6000).base_offset == end
    log.close()


@pytest.mark.parametrize("damage", ["delete", "truncate_header", "wrong_magic", "torn_entry", "random_body"])
@pytest.mark.parametrize("which", [".index", ".timeindex"])
def test_damaged_indexes_are_rebuilt(tmp_path, damage, which):
    rng = random.Random(1)
    log, records = build(tmp_path, rng, 60)
    log.close()
    segs = sorted(p for p in tmp_path.iterdir() if p.name.endswith(which))
    assert len(segs) >= 3
    originals = {p: p.read_bytes() for p in segs}
    for p in segs:
        data = p.read_bytes()
        if damage == "delete":
            p.unlink()
        elif damage == "truncate_header":
            p.write_bytes(data[:7])
        elif damage == "wrong_magic":
            p.write_bytes(b"XXXX" + data[4:])
        elif damage == "torn_entry":
            p.write_bytes(data + b"\x01\x02\x03")
        else:
            body = bytearray(data)
            for i in range(HEADER_BYTES, len(body)):
                body[i] = rng.randrange(256)
            p.write_bytes(bytes(body))
    log = PartitionLog.open(tmp_path, CFG, 5000)
    assert log.recovery.clean
    # reads everywhere, and timestamp lookups, use the indexes (rebuilding lazily loaded ones)
    for offset in range(0, log.end_offset, 3):
        got = records_in("t", 0, log.read(offset, 1), offset)
        assert got and got[0].offset == offset
    stamps = sorted({r[1] for r in records})
    for target in stamps[::7]:
        assert log.offset_for_timestamp(target) == next((o, t) for o, t, _, _ in records if t >= target)
    assert all_records(log) == records
    log.close()
    if damage in ("delete", "truncate_header", "wrong_magic", "torn_entry"):
        assert {p: p.read_bytes() for p in segs} == originals  # rebuilt byte for byte
    if damage != "random_body":
        assert log.recovery.rebuilt_indexes == len(segs)


def test_corrupted_non_tail_index_is_rebuilt(tmp_path):
    rng = random.Random(3)
    log, records = build(tmp_path, rng, 60)
    log.close()
    first = sorted(tmp_path.glob("*.index"))[0]
    original = first.read_bytes()
    assert len(original) > HEADER_BYTES + 8, "the first segment should have index entries"
    # Entries out of order in the middle: only found when the body is loaded (on the first lookup).
    bad = bytearray(original)
    bad[HEADER_BYTES:HEADER_BYTES + 8] = (2**32 - 1).to_bytes(4, "big") * 2
    first.write_bytes(bytes(bad))
    log = PartitionLog.open(tmp_path, CFG, 0)
    last_in_first = log.segments()[1]["base_offset"] - 1
    assert [r.offset for r in records_in("t", 0, log.read(last_in_first, 1), last_in_first)][:1] == [last_in_first]
    assert first.read_bytes() == original
    # A wrong base offset in the header is found at open.
    log.close()
    first.write_bytes(original[:8] + (12345).to_bytes(8, "big") + original[16:])
    log = PartitionLog.open(tmp_path, CFG, 0)
    assert log.recovery.rebuilt_indexes == 1 and first.read_bytes() == original
    assert all_records(log) == records
    log.close()


def test_index_pointing_beyond_the_log_is_rebuilt(tmp_path):
    rng = random.Random(4)
    log, records = build(tmp_path, rng, 60)
    log.close()
    first = sorted(tmp_path.glob("*.index"))[0]
    original = first.read_bytes()
    first.write_bytes(original + (10_000).to_bytes(4, "big") + (10**6).to_bytes(4, "big"))
    log = PartitionLog.open(tmp_path, CFG, 0)
    assert log.recovery.rebuilt_indexes == 1 and first.read_bytes() == original
    log.close()


def test_crash_rechecks_unflushed_rolled_segments(tmp_path):
    """Segments rolled after the recovery point are re-checked too, not only the active one."""
    rng = random.Random(5)
    log, records = build(tmp_path, rng, 40)
    log.flush()
    log.append(bytearray(encode_batch([5], [None], [b"y" * 2000])), 0)  # rolls: the previous segment is final
    log.flush()
    rp = read_checkpoint(tmp_path)[1]
    assert log.segments()[-1]["base_offset"] <= rp <= log.end_offset  # inside the active segment
    for i in range(40):  # several more segments, never flushed
        data, _ = random_batch(rng, 2000 + i)
        log.append(bytearray(data), 2000 + i)
    crash(log)
    files = log_files(tmp_path)
    later = [p for p in files if int(p.name[:20]) >= rp]
    assert len(later) >= 3
    victim = later[1]  # a rolled, unflushed, non-active segment: tear its last batch
    pos, size, base = last_batch_span(victim)
    os.truncate(victim, pos + size // 2)
    log = PartitionLog.open(tmp_path, CFG, 0)
    assert log.end_offset == base
    assert log.recovery.truncated_bytes == size - size // 2
    assert [p.name for p in log_files(tmp_path)] == [p.name for p in files if p <= victim]
    assert all_records(log)[:len(records)] == records
    log.close()


def test_no_checkpoint_means_full_recheck(tmp_path):
    rng = random.Random(6)
    log, records = build(tmp_path, rng, 50)
    crash(log)
    (tmp_path / CHECKPOINT).unlink(missing_ok=True)
    first = log_files(tmp_path)[0]
    data = bytearray(first.read_bytes())
    pos, h = list(iter_headers(bytes(data)))[1]
    data[pos + 40] ^= 0xFF  # corrupt the second batch of the FIRST segment
    first.write_bytes(bytes(data))
    log = PartitionLog.open(tmp_path, CFG, 0)
    assert log.end_offset == h.base_offset and log.segment_count == 1
    assert all_records(log) == [r for r in records if r[0] < h.base_offset]
    log.close()


def test_clean_shutdown_marker_lifecycle(tmp_path):
    log, _ = build(tmp_path, random.Random(7), 5)
    assert not (tmp_path / CLEAN_SHUTDOWN).exists()
    log.close()
    assert (tmp_path / CLEAN_SHUTDOWN).exists()
    log = PartitionLog.open(tmp_path, CFG, 0)
    assert log.recovery.clean and not (tmp_path / CLEAN_SHUTDOWN).exists()
    crash(log)
    log = PartitionLog.open(tmp_path, CFG, 0)
    assert not log.recovery.clean and log.recovery.truncated_bytes == 0
    log.close()


def test_leftover_temporary_files_are_removed(tmp_path):
    log, records = build(tmp_path, random.Random(8), 20)
    log.close()
    base = log_files(tmp_path)[0].name[:20]
    for name in (f"{base}.index.tmp", f"{base}.log.cleaned", f"{base}.index.cleaned", f"{base}.timeindex.swap"):
        (tmp_path / name).write_bytes(b"junk")
    log = PartitionLog.open(tmp_path, CFG, 0)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".tmp", ".cleaned", ".swap"))]
    assert all_records(log) == records
    log.close()


def test_log_append_time_after_recovery(tmp_path):
    cfg = LogConfig(timestamp_type="log_append_time", segment_bytes=300)
    log = PartitionLog.open(tmp_path, cfg, 0)
    for i in range(10):
        log.append(bytearray(encode_batch([1, 2], [None, None], [b"a" * 50, b"b"])), 100 + i)
    crash(log)
    log = PartitionLog.open(tmp_path, cfg, 0)
    stamps = [r.timestamp for r in records_in("t", 0, log.read(0, 1 << 20))]
    assert stamps == [100 + i for i in range(10) for _ in (0, 1)]
    assert log.offset_for_timestamp(105) == (10, 105)
    log.close()
