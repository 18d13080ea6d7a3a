"""Corruption is loud, never silent: damaged batches on disk or in a reply.

Three layers, as the damage travels: the log (a read never serves bytes that do not start at a
batch boundary; it answers CORRUPT_BATCH with where reading can resume and logs the file and
position), the consumer (every good record before the damage first, then one
``CorruptRecordError`` naming topic, partition and offset; ``seek`` past it), and ``fabric log
verify``.  The last test does it all to a real broker whose segment files were damaged from
outside, as the fault-injection report did.
"""

from __future__ import annotations

import json
import logging
import random
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from fabric.cli import main as cli_main
from fabric.client import Admin, Consumer, CorruptRecordError, Producer
from fabric.client.damage import decode, scan
from fabric.log import LogConfig, PartitionLog
from fabric.log.verify import verify_partition
from fabric.protocol import codec
from fabric.log.errors import CorruptSegmentError
from fabric.protocol.messages import ok_reply, parse_request
from fabric.records.batch import CRC_START, HEADER_SIZE, encode_batch, iter_headers, next_offset_in, parse_header
from tests.test_client_wire import _consumer_at, _request, router  # noqa: F401  (router: a fixture)

LENGTH_AT = 8  # batch_length: bytes 8-11 of a batch


def _batch(base: int, values: list[bytes], ts: int = 1000) -> bytearray:
    b = bytearray(encode_batch([ts] * len(values), [None] * len(values), values))
    b[0:8] = base.to_bytes(8, "big")
    return b


def lying_batch(base: int, claimed: int = 1_000_000) -> bytearray:
    """71 bytes with a correct CRC claiming ``claimed`` records (the records section holds one)."""
    b = _batch(base, [b"x"])
    struct.pack_into(">i", b, 23, claimed - 1)  # last_offset_delta
    struct.pack_into(">i", b, 57, claimed)  # record_count
    struct.pack_into(">I", b, 17, zlib.crc32(b[CRC_START:]))
    assert len(b) == 71 and parse_header(b).next_offset == base + claimed
    return b


def _positions(path: Path) -> list[tuple[int, int, int]]:
    """(position, base offset, next offset) of each batch of a healthy segment file."""
    return [(pos, h.base_offset, h.next_offset) for pos, h in iter_headers(path.read_bytes())]


def _flip(path: Path, at: int, mask: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= mask
    path.write_bytes(data)


# ---------------------------------------------------------------------------------------- the log
@pytest.mark.parametrize("at, mask", [(LENGTH_AT + 2, 0x01),  # +256: lands inside a later batch
                                      (LENGTH_AT, 0x80),  # negative
                                      (LENGTH_AT + 3, 0xFF)])  # small: lands inside the next batch
def test_read_never_serves_bytes_that_do_not_start_at_a_batch(tmp_path, caplog, at, mask):
    """Before: the broker followed the damaged length into the middle of later batches and served
    garbage (or, with a negative length, looped forever).  Now every read starts at a batch that
    holds the offset asked for, only the damaged batch's offsets are unreadable, and the damage is
    logged at ERROR with the file and position."""
    config = LogConfig(segment_bytes=4000, index_interval_bytes=300)
    log = PartitionLog.open(tmp_path, config, 0)
    for i in range(100):
        log.append(_batch(0, [b"v%03d" % i] * 3), 0)
    log.close()  # clean shutdown: closed segments are trusted on open
    first = tmp_path / f"{0:020d}.log"
    damaged_pos, damaged_base, damaged_next = _positions(first)[2]
    _flip(first, damaged_pos + at, mask)

    log = PartitionLog.open(tmp_path, config, 0)
    caplog.set_level(logging.ERROR, "fabric.log")
    served: set[int] = set()
    for offset in range(300):  # every offset, in order, one batch at a time
        try:
            data = log.read(offset, 1)
        except CorruptSegmentError as exc:
            assert exc.offset == offset and exc.skip_offset == damaged_next, exc
            assert damaged_base <= offset < damaged_next
            continue
        h = parse_header(data)
        assert h.magic == 1 and h.base_offset <= offset <= h.last_offset and len(data) == h.size, (offset, h)
        served.update(range(h.base_offset, h.next_offset))
    assert set(range(300)) - served <= set(range(damaged_base, damaged_next))
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert logged and str(first) in logged[0] and f"at byte {damaged_pos}" in logged[0]
    log.close()


def test_damage_in_the_same_place_is_logged_rarely(tmp_path, caplog):
    log = PartitionLog.open(tmp_path, LogConfig(segment_bytes=2000, index_interval_bytes=300), 0)
    for i in range(60):
        log.append(_batch(0, [b"w%03d" % i] * 2), 0)
    log.close()
    first = tmp_path / f"{0:020d}.log"
    _flip(first, _positions(first)[1][0] + LENGTH_AT, 0x80)  # batch 1 (offsets 2-3): a negative length
    log = PartitionLog.open(tmp_path, LogConfig(segment_bytes=2000, index_interval_bytes=300), 0)
    caplog.set_level(logging.ERROR, "fabric.log")
    for _ in range(100):
        with pytest.raises(CorruptSegmentError):
            log.read(2, 1000)
    assert parse_header(log.read(4, 1)).base_offset == 4
    assert 1 <= len([r for r in caplog.records if r.levelno == logging.ERROR]) <= 8  # 1st, 2nd, 4th ... 64th
    log.close()


def _flip_one_byte_and_read_everything(seed: int, tmp_path: Path) -> None:
    """One random bit flipped in a random batch of a closed segment (the batch_length, magic, CRC,
    the high bytes of the base offset, or the CRC-covered rest), then a model consumer (the
    consumer's own ``scan``/``decode``, skipping each damage as documented) reads the log."""
    rnd = random.Random(seed)
    config = LogConfig(segment_bytes=3000, index_interval_bytes=rnd.choice([200, 600, 4096]))
    log = PartitionLog.open(tmp_path, config, 0)
    values: dict[int, bytes] = {}
    for i in range(80):
        vals = [b"s%d-%d-%d" % (seed, i, j) for j in range(rnd.randint(1, 4))]
        base = log.append(_batch(0, vals, ts=1000 + i), 0).base_offset
        values.update((base + j, v) for j, v in enumerate(vals))
    end = log.end_offset
    log.close()
    seg = rnd.choice(sorted(tmp_path.glob("*.log"))[:-1])
    pos, base, next_ = rnd.choice(_positions(seg))
    size = next(h.size for p, h in iter_headers(seg.read_bytes()) if p == pos)
    at = rnd.choice([rnd.randint(0, 5), rnd.randint(8, 11), 16, rnd.randint(17, 20), rnd.randint(21, size - 1)])
    _flip(seg, pos + at, 1 << rnd.randint(0, 7))
    log = PartitionLog.open(tmp_path, config, 0)
    offset, got = 0, {}
    for _ in range(2000):
        if offset >= end:
            break
        try:
            data, _ = log.read_upto(offset, rnd.choice([1, 300, 5000]), end)
        except CorruptSegmentError as exc:
            assert exc.skip_offset > offset
            offset = exc.skip_offset
            continue
        spans, header_damage = scan(data, offset, end)
        columns, damage = decode("t", 0, data, offset, spans)
        got.update((r.offset, r.value) for c in columns for r in c)
        after = next_offset_in(data, offset, spans)
        damage = damage or (header_damage if after <= offset else None)  # (as FetchPipeline does)
        if damage is not None:
            offset = damage.skip_offset if damage.skip_offset is not None else damage.offset + 1
        else:
            assert after > offset, f"no progress at offset {offset}: a silent stall"
            offset = after
    else:
        raise AssertionError(f"still reading after 2000 steps, at offset {offset}")
    log.close()
    assert {o: v for o, v in got.items() if values.get(o) != v} == {}, "records delivered under wrong offsets"
    assert set(values) - set(got) <= set(range(base, next_)), "records lost beyond the damaged batch"


@pytest.mark.parametrize("seed", range(40))
def test_a_flipped_bit_anywhere_in_a_closed_segment_costs_only_its_batch(tmp_path, seed):
    try:
        _flip_one_byte_and_read_everything(seed, tmp_path)
    except AssertionError as exc:
        raise AssertionError(f"seed {seed}: {exc}") from None


# ----------------------------------------------------------------------------------- the consumer
def _send(sock, peer, cid, frames: list[bytes], hw: int, extra: dict | None = None) -> None:
    meta = [dict({"topic": "orders", "partition": 0, "high_watermark": hw, "log_start_offset": 0}, **(extra or {}))]
    sock.send_multipart([peer, codec.encode(ok_reply("fetch", cid, partitions=meta)), b"".join(frames)])


def _poll_until_error(consumer: Consumer, limit_s: float = 10.0) -> tuple[list, CorruptRecordError]:
    got: list = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            got.extend(consumer.poll(200))
        except CorruptRecordError as exc:
            return got, exc
    raise AssertionError(f"no CorruptRecordError within {limit_s} s (got {len(got)} records): a silent stall")


def test_records_before_a_bad_batch_in_the_same_reply_come_first_then_one_error(router):  # noqa: F811
    sock, bootstrap = router
    consumer, peer, cid, _ = _consumer_at(sock, bootstrap, 40, fetch_max_wait_ms=100, standing_fetch_answers=1)
    try:
        bad = _batch(42, [b"c"])
        bad[-1] ^= 0x01  # a flipped byte in the records: the CRC no longer matches
        _send(sock, peer, cid, [_batch(40, [b"a", b"b"]), bad, _batch(43, [b"d"])], hw=44)
        got, exc = _poll_until_error(consumer)
        assert [(r.offset, r.value) for r in got] == [(40, b"a"), (41, b"b")]
        assert (exc.topic, exc.partition, exc.offset, exc.skip_offset) == ("orders", 0, 42, 43)
        assert "orders/0" in str(exc) and "42" in str(exc) and consumer.position(("orders", 0)) == 42
        assert consumer.poll(100) == []  # once: the partition waits for a seek
        consumer.seek(("orders", 0), exc.skip_offset)
        consumer.poll(0)
        asked: list[int] = []
        while 43 not in asked:  # (the fetch sent on arrival, before decoding, asked for 44: answer it)
            peer, header, _ = _request(sock, "fetch")
            env, req = parse_request(header)
            asked += [p.offset for p in req.partitions]
            if asked[-1] != 43:
                _send(sock, peer, env.cid, [], hw=44, extra={"offset": asked[-1]})
                consumer.poll(50)
        assert set(asked) <= {43, 44}
    finally:
        consumer.close()


def test_bytes_that_start_inside_a_batch_raise_instead_of_stalling(router):  # noqa: F811
    """The fault-injection report: 32,576 bytes from file position 64, not a batch boundary; the
    consumer parsed no whole batch, kept its position and fetched the same forever."""
    sock, bootstrap = router
    consumer, peer, cid, _ = _consumer_at(sock, bootstrap, 40, fetch_max_wait_ms=100, standing_fetch_answers=1)
    try:
        stream = b"".join(_batch(40 + i, [b"v" * 50]) for i in range(20))
        _send(sock, peer, cid, [stream[64:]], hw=60)
        got, exc = _poll_until_error(consumer)
        assert got == [] and (exc.offset, exc.skip_offset) == (40, None)
        assert "batch header at byte 0" in exc.message
    finally:
        consumer.close()


def test_a_batch_lying_about_its_record_count_is_survived(router):  # noqa: F811
    sock, bootstrap = router
    consumer, peer, cid, _ = _consumer_at(sock, bootstrap, 40, fetch_max_wait_ms=100, standing_fetch_answers=1)
    try:
        _send(sock, peer, cid, [_batch(40, [b"good"]), lying_batch(41)], hw=1_000_041)
        got, exc = _poll_until_error(consumer)
        assert [(r.offset, r.value) for r in got] == [(40, b"good")]
        assert (exc.offset, exc.skip_offset) == (41, 1_000_041)
        assert "record_count" in exc.message
    finally:
        consumer.close()


def test_columnar_polls_get_the_good_batches_first_too(router):  # noqa: F811
    sock, bootstrap = router
    consumer, peer, cid, _ = _consumer_at(sock, bootstrap, 40, fetch_max_wait_ms=100, standing_fetch_answers=1)
    try:
        _send(sock, peer, cid, [_batch(40, [b"a", b"b"]), lying_batch(42)], hw=1_000_042)
        cols = consumer.poll_batches(5000)
        assert [list(c.offsets) for c in cols] == [[40, 41]]
        with pytest.raises(CorruptRecordError) as info:
            consumer.poll_batches(5000)
        assert info.value.offset == 42
    finally:
        consumer.close()


def test_damage_reported_by_the_broker_is_raised_after_the_records_before_it(router):  # noqa: F811
    sock, bootstrap = router
    consumer, peer, cid, _ = _consumer_at(sock, bootstrap, 40, fetch_max_wait_ms=100, standing_fetch_answers=1,
                                          fetch_pipeline_depth=1)
    try:
        _send(sock, peer, cid, [_batch(40, [b"a"])], hw=50)
        assert [r.offset for r in consumer.poll(5000)] == [40]
        peer, header, _ = _request(sock, "fetch")
        env, req = parse_request(header)
        assert req.partitions[0].offset == 41
        meta = {"topic": "orders", "partition": 0, "high_watermark": 50, "log_start_offset": 0, "skip_offset": 45,
                "error": {"code": 8, "name": "CORRUPT_BATCH", "message": "the stored batch at byte 64 is damaged"}}
        sock.send_multipart([peer, codec.encode(ok_reply("fetch", env.cid, partitions=[meta])), b""])
        got, exc = _poll_until_error(consumer)
        assert got == [] and (exc.offset, exc.skip_offset) == (41, 45) and "byte 64" in exc.message
        assert consumer.poll(100) == []
    finally:
        consumer.close()


# --------------------------------------------------------------------------------- a real broker
def _consume_all(bootstrap: str, topic: str, partition: int, end: int) -> tuple[list[int], list[CorruptRecordError]]:
    """Read ``topic``/``partition`` to ``end``, seeking past each damage as documented."""
    offsets: list[int] = []
    errors: list[CorruptRecordError] = []
    with Consumer(bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=100) as consumer:
        tp = (topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        deadline = time.monotonic() + 30
        while consumer.position(tp) < end:
            assert time.monotonic() < deadline, f"stalled at {consumer.position(tp)} (errors {errors})"
            try:
                offsets.extend(r.offset for r in consumer.poll(200))
            except CorruptRecordError as exc:
                assert not errors or exc.offset > errors[-1].offset, "the same damage raised twice"
                assert exc.skip_offset is not None and exc.skip_offset > exc.offset
                errors.append(exc)
                consumer.seek(tp, exc.skip_offset)
    return offsets, errors


def test_a_broker_with_damaged_segments(brokers, tmp_path, capsys):
    """Damage three partitions of a stopped broker from outside: a flipped byte in a closed
    segment's batch_length (p0), a flipped byte in a batch's records (p1), a 71-byte batch with a
    correct CRC claiming 1,000,000 records (p2).  Consumers get every good record they can reach
    and a clear error for each damage, never a stall; the broker logs where; verify finds all."""
    broker = brokers()
    with Admin(broker.bootstrap) as admin:
        admin.create_topic("t", partitions=3, configs={"segment_bytes": 3000, "index_interval_bytes": 600})
    with Producer(broker.bootstrap, acks=1, linger_ms=0) as producer:
        for i in range(300):
            for p in range(3):
                producer.send("t", b"value-%04d" % i, partition=p)
            if i % 3 == 2:
                producer.flush()
    broker.stop()
    data = broker.data_dir
    assert cli_main(["log", "verify", str(data / "t-0")]) == 0
    segs0 = sorted((data / "t-0").glob("*.log"))
    assert len(segs0) >= 3
    p0_victim_pos, p0_victim, p0_next = _positions(segs0[0])[3]
    _flip(segs0[0], p0_victim_pos + LENGTH_AT + 2, 0x01)
    seg1 = sorted((data / "t-1").glob("*.log"))[1]
    p1_pos, p1_victim, p1_next = _positions(seg1)[2]
    _flip(seg1, p1_pos + HEADER_SIZE + 3, 0x20)
    last2 = sorted((data / "t-2").glob("*.log"))[-1]
    with open(last2, "ab") as f:
        f.write(lying_batch(300))

    broker.start()
    with Producer(broker.bootstrap, acks=1) as producer:
        assert producer.send("t", b"after", partition=2).result(10).offset == 1_000_300

    offsets, errors = _consume_all(broker.bootstrap, "t", 0, 300)
    assert [(e.offset, e.skip_offset) for e in errors] == [(p0_victim, p0_next)]  # one error, one batch lost
    assert offsets == [o for o in range(300) if not p0_victim <= o < p0_next]
    log_text = broker.log_text()
    assert "ERROR" in log_text and segs0[0].name in log_text and "at byte" in log_text

    offsets, errors = _consume_all(broker.bootstrap, "t", 1, 300)
    assert [(e.offset, e.skip_offset) for e in errors] == [(p1_victim, p1_next)]
    assert offsets == [o for o in range(300) if not p1_victim <= o < p1_next]

    # The CLI: the records before the damage, then one error line and exit status 1 ...
    cmd = [sys.executable, "-m", "fabric", "consume", "t", "--partition", "1", "--from-beginning",
           "--idle-timeout-ms", "1500", "--bootstrap", broker.bootstrap]
    run = subprocess.run(cmd, capture_output=True, timeout=60)
    assert run.returncode == 1 and run.stdout.decode().split() == ["value-%04d" % i for i in range(p1_victim)]
    err = run.stderr.decode().strip().splitlines()
    assert len(err) == 1 and f"t/1: records from offset {p1_victim} are damaged" in err[0] and "--skip-corrupt" in err[0]
    # ... or with --skip-corrupt, a warning and every other record.
    run = subprocess.run(cmd + ["--skip-corrupt"], capture_output=True, timeout=60)
    assert run.returncode == 0 and len(run.stdout.decode().split()) == 300 - (p1_next - p1_victim)
    assert "warning: skipped damaged records" in run.stderr.decode()

    offsets, errors = _consume_all(broker.bootstrap, "t", 2, 1_000_301)
    assert [(e.offset, e.skip_offset) for e in errors] == [(300, 1_000_300)]
    assert offsets == list(range(300)) + [1_000_300]
    broker.stop()

    capsys.readouterr()
    assert cli_main(["log", "verify", str(data), "--output", "json"]) == 1
    report = {Path(p["directory"]).name: p for p in json.loads(capsys.readouterr().out)["partitions"]}
    assert all(report[f"t-{p}"]["damaged"] for p in range(3))
    (p0,) = [p for p in report["t-0"]["problems"] if p["file"].endswith(segs0[0].name)][:1]
    assert (p0["position"], p0["offset"], p0["resume_offset"]) == (p0_victim_pos, p0_victim, p0_next)
    assert [(p["position"], p["offset"]) for p in report["t-1"]["problems"]] == [(p1_pos, p1_victim)]
    assert "claims 1000000 records" in report["t-2"]["problems"][0]["message"]


def test_a_damaged_index_entry_is_repaired_from_the_log(tmp_path, caplog):
    """An offset-index entry pointing inside a batch (the log intact): the read finds no batch
    there, the broker rebuilds the indexes from the log and serves the right batch."""
    config = LogConfig(segment_bytes=4000, index_interval_bytes=300)
    log = PartitionLog.open(tmp_path, config, 0)
    for i in range(100):
        log.append(_batch(0, [b"v%03d" % i] * 3), 0)
    log.close()
    index = tmp_path / f"{0:020d}.index"
    data = bytearray(index.read_bytes())
    rel, pos = struct.unpack_from(">II", data, 16 + 8)  # the second entry (the last is checked on open)
    struct.pack_into(">II", data, 16 + 8, rel, pos + 7)
    index.write_bytes(data)
    assert verify_partition(tmp_path).problems[0].message.startswith("offset index entry")

    log = PartitionLog.open(tmp_path, config, 0)
    caplog.set_level(logging.WARNING, "fabric.log")
    h = parse_header(log.read(rel, 1))
    assert h.base_offset <= rel <= h.last_offset
    assert any("rebuilding the indexes" in r.getMessage() for r in caplog.records)
    assert not verify_partition(tmp_path).problems  # rebuilt on disk too
    log.close()


def test_a_damaged_first_batch_of_a_segment_ends_reads_from_the_previous_one(tmp_path):
    config = LogConfig(segment_bytes=2000, index_interval_bytes=300)
    log = PartitionLog.open(tmp_path, config, 0)
    for i in range(60):
        log.append(_batch(0, [b"w%03d" % i] * 2), 0)
    log.close()
    segs = sorted(tmp_path.glob("*.log"))
    second = _positions(segs[1])
    _flip(segs[1], LENGTH_AT, 0x80)  # the first batch of the second segment: a negative length
    log = PartitionLog.open(tmp_path, config, 0)
    for _ in range(2):  # before and after the broker mapped the damage
        data = log.read(second[0][1] - 4, 1 << 20)
        assert [h.base_offset for _, h in iter_headers(data)] == [second[0][1] - 4, second[0][1] - 2]
        with pytest.raises(CorruptSegmentError) as info:
            log.read(second[0][1], 1 << 20)
        assert info.value.skip_offset == second[1][1]
    assert parse_header(log.read(second[1][1], 1)).base_offset == second[1][1]
    log.close()


def test_log_verify_of_a_directory_without_logs_is_one_clear_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["log", "verify", str(tmp_path)])
    assert info.value.code == 1 and "holds no partition logs" in capsys.readouterr().err


@pytest.mark.parametrize("at, mask", [(16, 0x04),  # the magic of the last batch: the tail walk on open meets it
                                      (2, 0x10)])  # a high bit of its base offset: the segment seems to run on
def test_damage_in_a_closed_segment_never_drops_the_segments_after_it(tmp_path, caplog, at, mask):
    """Before: opening the log truncated the damaged closed segment and deleted every later one."""
    config = LogConfig(segment_bytes=2000, index_interval_bytes=300)
    log = PartitionLog.open(tmp_path, config, 0)
    for i in range(60):
        log.append(_batch(0, [b"w%03d" % i] * 2), 0)
    end, segments = log.end_offset, log.segment_count
    log.close()
    first = sorted(tmp_path.glob("*.log"))[0]
    pos, base, next_ = _positions(first)[-1]
    _flip(first, pos + at, mask)
    caplog.set_level(logging.ERROR, "fabric.log")
    log = PartitionLog.open(tmp_path, config, 0)
    assert (log.end_offset, log.segment_count) == (end, segments)
    assert any(r.levelno == logging.ERROR and first.name in r.getMessage() for r in caplog.records)
    with pytest.raises(CorruptSegmentError) as info:
        log.read(base, 1)
    assert info.value.skip_offset == next_
    assert parse_header(log.read(next_, 1)).base_offset == next_
    log.close()
