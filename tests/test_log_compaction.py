"""Log compaction against a dict oracle; offsets, concurrency, crash images of the swap."""

from __future__ import annotations

import os
import random
import shutil
import threading

import pytest

from fabric.log import LogConfig, PartitionLog, compact
from fabric.testing.logs import crash
from fabric.records.batch import (ATTR_LOG_APPEND_TIME, COMPRESSION_ZLIB, encode_batch, iter_headers, parse_header,
                                  records_in)

CFG = LogConfig(segment_bytes=600, index_interval_bytes=150, cleanup_policy="compact",
                delete_retention_ms=1000, min_compaction_lag_ms=0)


class Oracle:
    """Every record ever appended, by offset."""

    def __init__(self) -> None:
        self.records: dict[int, tuple[int, bytes | None, bytes | None]] = {}  # offset -> (ts, key, value)

    def add(self, base: int, recs: list[tuple[int, bytes | None, bytes | None]]) -> None:
        for i, r in enumerate(recs):
            self.records[base + i] = r

    def table(self, upto: int | None = None) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        for o in sorted(self.records):
            if upto is not None and o >= upto:
                break
            _, k, v = self.records[o]
            if k is not None:
                if v is None:
                    out.pop(k, None)
                else:
                    out[k] = v
        return out


def stored(log: PartitionLog) -> list[tuple[int, int, bytes | None, bytes | None]]:
    return [(r.offset, r.timestamp, r.key, r.value) for r in records_in("t", 0, log.read(log.start_offset, 1 << 30))]


def check(log: PartitionLog, oracle: Oracle, ctx: str = "") -> list[tuple[int, int, bytes | None, bytes | None]]:
    recs = stored(log)
    offsets = [r[0] for r in recs]
    assert offsets == sorted(set(offsets)), ctx  # strictly increasing: no duplicates
    for o, ts, k, v in recs:
        assert oracle.records[o] == (ts, k, v), (ctx, o)  # survivors are unchanged originals
    table: dict[bytes, bytes] = {}
    for _, _, k, v in recs:
        if k is not None:
            if v is None:
                table.pop(k, None)
            else:
                table[k] = v
    assert table == oracle.table(), ctx  # replaying the log gives the same table
    keyless = [o for o, (_, k, _) in oracle.records.items() if k is None and o >= log.start_offset]
    assert set(keyless) <= set(offsets), ctx  # null-key records are never removed
    return recs


def append_random(log: PartitionLog, oracle: Oracle, rng: random.Random, now: int, keys: int = 12) -> None:
    n = rng.randint(1, 5)
    recs = []
    for _ in range(n):
        k = None if rng.random() < 0.08 else b"k%d" % rng.randrange(keys)
        v = None if rng.random() < 0.15 else b"v%d-" % rng.randrange(10**6) + b"x" * rng.randint(0, 40)
        recs.append((now, k, v))
    res = log.append(bytearray(encode_batch([r[0] for r in recs], [r[1] for r in recs], [r[2] for r in recs])), now)
    oracle.add(res.base_offset, recs)


@pytest.mark.parametrize("seed", range(8))
def test_compaction_model(tmp_path, seed):
    rng = random.Random(seed)
    log = PartitionLog.open(tmp_path, CFG, 0)
    oracle = Oracle()
    now = 10_000
    for step in range(300):
        ctx = f"seed={seed} step={step}"
        now += rng.randint(0, 50)
        op = rng.random()
        if op < 0.7:
            append_random(log, oracle, rng, now)
        elif op < 0.8:
            before = {o for o, *_ in stored(log)}
            active_base = log.segments()[-1]["base_offset"]
            res = compact(log, now)
            recs = check(log, oracle, ctx)
            after = {r[0] for r in recs}
            assert after <= before and {o for o in before if o >= active_base} <= after, ctx  # active untouched
            assert res.records_before - res.records_after == len(before - after), ctx
            # tombstones younger than delete_retention_ms survive if they are their key's latest record
            latest: dict[bytes, int] = {}
            for o in sorted(oracle.records):
                if oracle.records[o][1] is not None:
                    latest[oracle.records[o][1]] = o
            for k, o in latest.items():
                ts, _, v = oracle.records[o]
                if v is None and ts > now - CFG.delete_retention_ms:
                    assert o in after, (ctx, k, o)
        elif op < 0.87:
            offset = rng.randint(log.start_offset, log.end_offset)
            got = records_in("t", 0, log.read(offset, rng.choice([1, 100, 10_000])), offset)
            survivors = [o for o, *_ in stored(log) if o >= offset]
            if survivors:
                assert got and got[0].offset == survivors[0], ctx
            else:
                assert not got, ctx
        elif op < 0.92:
            log.close()
            log = PartitionLog.open(tmp_path, CFG, now)
            assert log.recovery.clean and log.recovery.rebuilt_indexes == 0, ctx
            check(log, oracle, ctx)
        elif op < 0.95:
            crash(log)
            log = PartitionLog.open(tmp_path, CFG, now)
            assert log.recovery.truncated_bytes == 0, ctx
            check(log, oracle, ctx)
        else:
            log.flush()
    compact(log, now + 10**6)
    check(log, oracle, f"seed={seed} final")
    log.close()


def test_latest_value_per_key_and_tombstone_expiry(tmp_path):
    log = PartitionLog.open(tmp_path, CFG, 0)
    oracle = Oracle()

    def put(k, v, ts):
        res = log.append(bytearray(encode_batch([ts], [k], [v])), ts)
        oracle.add(res.base_offset, [(ts, k, v)])

    for i in range(30):
        put(b"a", b"a%d" % i, 100 + i)
        put(b"b", b"b%d" % i, 100 + i)
    put(b"a", None, 200)  # tombstone
    put(None, b"keyless", 201)
    for i in range(20):
        put(b"c", b"c" * 100, 300 + i)  # roll a few segments so the above is all cleanable
    res = compact(log, 1000)  # tombstone is 800 ms old: < delete_retention_ms, it stays
    recs = check(log, oracle)
    keys = [(k, v) for _, _, k, v in recs]
    assert (b"a", None) in keys and (None, b"keyless") in keys
    assert [v for k, v in keys if k == b"b"] == [b"b29"]
    assert res.tombstones_removed == 0 and res.segments_cleaned > 0
    res = compact(log, 5000)  # now the tombstone has expired
    recs = check(log, oracle)
    assert not [r for r in recs if r[2] == b"a"] and res.tombstones_removed == 1
    log.close()


def test_min_compaction_lag_protects_recent_records(tmp_path):
    cfg = LogConfig(segment_bytes=300, cleanup_policy="compact", min_compaction_lag_ms=1000)
    log = PartitionLog.open(tmp_path, cfg, 0)
    for i in range(40):  # one key, timestamps 0, 100, ..., 3900; about three batches per segment
        log.append(bytearray(encode_batch([i * 100], [b"k"], [b"v%d" % i + b"." * 60])), i * 100)
    before = stored(log)
    assert compact(log, 1000).segments_examined == 0  # no segment is entirely older than the lag
    assert stored(log) == before
    res = compact(log, 4000)
    after = stored(log)
    assert res.segments_examined > 0 and len(after) < len(before)
    assert [r for r in before if r[1] > 4000 - 1000] == [r for r in after if r[1] > 4000 - 1000]
    log.close()


def test_reads_across_compacted_segments(tmp_path):
    log = PartitionLog.open(tmp_path, CFG, 0)
    for i in range(200):
        log.append(bytearray(encode_batch([i, i], [b"k%d" % (i % 7), b"u%d" % i], [b"v", b"w" * 30])), i)
    compact(log, 10**6)
    survivors = [o for o, *_ in stored(log)]
    assert len(survivors) < 400
    for offset in range(log.start_offset, log.end_offset + 1):
        got = records_in("t", 0, log.read(offset, 1), offset)
        expected = next((o for o in survivors if o >= offset), None)
        assert (got[0].offset if got else None) == expected, offset
    # batches in the log are whole and their offsets increase
    data = log.read(0, 1 << 30)
    bases = [h.base_offset for _, h in iter_headers(data)]
    assert bases == sorted(set(bases))
    log.close()


def test_rebuilt_batches_keep_their_properties(tmp_path):
    log = PartitionLog.open(tmp_path, LogConfig(segment_bytes=200, cleanup_policy="compact",
                                                timestamp_type="log_append_time"), 0)
    data = bytearray(encode_batch([1, 2, 3, 4], [b"a", b"b", b"a", b"c"], [b"1", b"2", b"3", b"4"],
                                  [[("h", b"x")], None, None, [("z", b"y")]],
                                  compression=COMPRESSION_ZLIB, producer_id=77, producer_epoch=3, base_sequence=10))
    log.append(data, 5000, leader_epoch=9)
    log.append(bytearray(encode_batch([5], [b"z"], [b"roll"] * 1)), 5001)
    log.append(bytearray(encode_batch([6], [b"z"], [b"w" * 300])), 5002)
    compact(log, 10**6)
    out = log.read(0, 1 << 20)
    batches = [(pos, h) for pos, h in iter_headers(out)]
    first_two = [h for _, h in batches if h.base_offset < 4]
    assert [(h.base_offset, h.record_count) for h in first_two] == [(1, 3)]  # offset 0 (a=1) went
    h = first_two[0]
    assert (h.producer_id, h.producer_epoch, h.base_sequence, h.leader_epoch) == (77, 3, 11, 9)
    assert h.attributes & ATTR_LOG_APPEND_TIME and h.attributes & 0x07 == COMPRESSION_ZLIB
    recs = records_in("t", 0, out)
    assert [(r.offset, r.key, r.value, r.timestamp, list(r.headers)) for r in recs[:3]] == [
        (1, b"b", b"2", 5000, []), (2, b"a", b"3", 5000, []), (3, b"c", b"4", 5000, [("z", b"y")])]
    log.close()


def test_concurrent_appends_during_compaction_are_not_lost(tmp_path):
    cfg = LogConfig(segment_bytes=2000, index_interval_bytes=200, cleanup_policy="compact", delete_retention_ms=0)
    log = PartitionLog.open(tmp_path, cfg, 0)
    oracle = Oracle()
    rng = random.Random(11)
    stop = threading.Event()
    errors: list[BaseException] = []
    passes = 0

    def compactor():
        nonlocal passes
        while not stop.is_set():
            try:
                compact(log, 10**9)
                passes += 1
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return

    t = threading.Thread(target=compactor)
    t.start()
    try:
        for i in range(3000):
            append_random(log, oracle, rng, 1000 + i, keys=30)
            if i % 300 == 0:
                log.flush()
            if i % 97 == 0:
                offset = rng.randint(log.start_offset, log.end_offset)
                log.read(offset, 5000)
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    assert passes > 1
    assert log.end_offset == len(oracle.records)
    check(log, oracle)
    compact(log, 10**9)
    check(log, oracle)
    log.close()
    log = PartitionLog.open(tmp_path, cfg, 0)
    check(log, oracle)
    log.close()


def test_truncation_during_compaction_discards_the_pass(tmp_path):
    log = PartitionLog.open(tmp_path, CFG, 0)
    oracle = Oracle()
    rng = random.Random(3)
    for i in range(100):
        append_random(log, oracle, rng, 1000 + i)
    before = stored(log)
    cut = log.segments()[-2]["base_offset"] + 1

    def truncate():
        log.truncate_to(cut)

    res = compact(log, 10**9, before_swap=truncate)
    assert res.segments_cleaned == 0 and res.segments_aborted > 0
    assert stored(log) == [r for r in before if r[0] < log.end_offset]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".cleaned", ".swap"))]
    log.close()


def test_retention_during_compaction_skips_deleted_segments(tmp_path):
    cfg = LogConfig(segment_bytes=600, cleanup_policy="delete,compact", retention_ms=10**6)
    log = PartitionLog.open(tmp_path, cfg, 0)
    oracle = Oracle()
    rng = random.Random(4)
    for i in range(100):
        append_random(log, oracle, rng, 1000 + i)
    log.advance_start_offset(log.segments()[3]["base_offset"])

    def delete_more():
        log.advance_start_offset(log.segments()[6]["base_offset"])

    compact(log, 10**6, before_swap=delete_more)
    recs = stored(log)
    assert recs[0][0] >= log.start_offset
    offsets = [r[0] for r in recs]
    assert offsets == sorted(set(offsets)) and all(oracle.records[o] == (t, k, v) for o, t, k, v in recs)
    log.close()


def test_crash_at_every_step_of_the_swap(tmp_path, monkeypatch):
    """Crash images taken before every rename/unlink of a compaction pass all open to a valid log
    holding either the old or the new segments, never both, never neither."""
    live = tmp_path / "live"
    log = PartitionLog.open(live, CFG, 0)
    oracle = Oracle()
    rng = random.Random(5)
    for i in range(25):
        append_random(log, oracle, rng, 1000 + i, keys=5)
    log.flush()
    images: list[str] = []
    real_replace, real_unlink = os.replace, os.unlink

    def snapshot():
        image = tmp_path / f"image{len(images)}"
        shutil.copytree(live, image)
        images.append(str(image))

    def replace(src, dst, *args, **kwargs):
        if str(src).startswith(str(live)):
            snapshot()
        return real_replace(src, dst, *args, **kwargs)

    def unlink(path, *args, **kwargs):
        if str(path).startswith(str(live)):
            snapshot()
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "unlink", unlink)
    res = compact(log, 10**9)
    monkeypatch.undo()
    assert res.segments_cleaned > 2 and len(images) > 6
    images.append(str(live))
    crash(log)
    for image in images:
        plog = PartitionLog.open(image, CFG, 0)
        check(plog, oracle, image)
        assert plog.end_offset == len(oracle.records)
        assert not [p for p in os.listdir(image) if p.endswith((".cleaned", ".swap", ".tmp"))], image
        plog.append(bytearray(encode_batch([1], [b"new"], [b"after"])), 0)
        plog.close()


def test_compacting_twice_changes_nothing(tmp_path):
    log = PartitionLog.open(tmp_path, CFG, 0)
    oracle = Oracle()
    rng = random.Random(6)
    for i in range(150):
        append_random(log, oracle, rng, 1000 + i)
    compact(log, 10**9)
    first = stored(log)
    res = compact(log, 10**9)
    assert res.segments_cleaned == 0 and stored(log) == first
    assert parse_header(log.read(log.start_offset, 1)).magic == 1
    log.close()


def test_retry_hint_for_lag_and_tombstones(tmp_path):
    cfg = LogConfig(segment_bytes=300, cleanup_policy="compact", min_compaction_lag_ms=1000,
                    delete_retention_ms=500)
    log = PartitionLog.open(tmp_path, cfg, 0)
    for i in range(30):  # timestamps 0..2900, about three batches per segment
        log.append(bytearray(encode_batch([i * 100], [b"k%d" % (i % 3)], [b"v" * 60])), i * 100)
    def cleanable(now: int) -> int:  # the prefix of closed segments older than the lag
        n = 0
        for seg in log.segments()[:-1]:
            if seg["max_timestamp"] > now - 1000:
                break
            n += 1
        return n

    res = compact(log, 2000)
    first_young = next(s for s in log.segments()[:-1] if s["max_timestamp"] > 1000)
    assert res.retry_at_ms == first_young["max_timestamp"] + 1000
    retry = res.retry_at_ms
    assert cleanable(retry - 1) < cleanable(retry)
    expected = cleanable(retry - 1)
    assert compact(log, retry - 1).segments_examined == expected
    expected = cleanable(retry)
    assert compact(log, retry).segments_examined == expected

    log2 = PartitionLog.open(tmp_path / "t", LogConfig(segment_bytes=300, cleanup_policy="compact",
                                                       delete_retention_ms=500), 0)
    log2.append(bytearray(encode_batch([0], [b"gone"], [b"value"])), 0)
    log2.append(bytearray(encode_batch([100], [b"gone"], [None])), 100)
    for i in range(6):
        log2.append(bytearray(encode_batch([200 + i], [b"other"], [b"w" * 100])), 200 + i)
    res = compact(log2, 300)
    assert res.retry_at_ms == 600 and res.tombstones_removed == 0
    assert (1, 100, b"gone", None) in stored(log2)
    assert compact(log2, 599).tombstones_removed == 0
    res = compact(log2, 600)
    assert res.tombstones_removed == 1 and res.retry_at_ms is None
    assert not [r for r in stored(log2) if r[2] == b"gone"]
    log.close()
    log2.close()


def test_bounded_key_map_is_conservative_and_makes_progress(tmp_path):
    log = PartitionLog.open(tmp_path, CFG, 0)
    oracle = Oracle()
    rng = random.Random(12)
    for i in range(200):
        append_random(log, oracle, rng, 1000 + i, keys=40)
    before = len(stored(log))
    compact(log, 10**9, max_map_keys=5)  # the map covers only the newest segment(s)
    check(log, oracle)
    limited = len(stored(log))
    assert limited < before
    compact(log, 10**9)
    check(log, oracle)
    assert len(stored(log)) <= limited
    log.close()
