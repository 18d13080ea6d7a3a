"""Leader-epoch table (fabric/log/epochs.py): its rules in memory and on disk, and its file format."""

from __future__ import annotations

import logging
import random

import pytest

from fabric.log.epochs import (EPOCH_FILE, UNDEFINED_EPOCH, UNDEFINED_OFFSET, EpochEntry, LeaderEpochCache,
                               LeaderEpochFile, decode_epochs, encode_epochs)


@pytest.fixture(params=["memory", "file"])
def make_cache(request, tmp_path):
    if request.param == "memory":
        return lambda: LeaderEpochCache()
    return lambda: LeaderEpochFile(tmp_path)


def test_assign_and_end_offsets(make_cache):
    cache = make_cache()
    assert cache.entries() == [] and cache.latest_epoch == UNDEFINED_EPOCH
    assert cache.end_offset_for(0, 10) == (UNDEFINED_EPOCH, UNDEFINED_OFFSET)
    assert cache.assign(2, 0) and cache.assign(4, 10) and cache.assign(7, 25)
    assert not cache.assign(7, 30)  # the latest epoch again: its first offset stands
    assert cache.entries() == [EpochEntry(2, 0), EpochEntry(4, 10), EpochEntry(7, 25)]
    assert cache.end_offset_for(7, 40) == (7, 40)
    assert cache.end_offset_for(4, 40) == (4, 25)
    assert cache.end_offset_for(5, 40) == (4, 25)  # not in the table: the largest epoch below it
    assert cache.end_offset_for(1, 40) == (1, 0)  # older than every entry
    assert cache.end_offset_for(8, 40) == (UNDEFINED_EPOCH, UNDEFINED_OFFSET)
    assert cache.end_offset_for(UNDEFINED_EPOCH, 40) == (UNDEFINED_EPOCH, UNDEFINED_OFFSET)
    with pytest.raises(ValueError):
        cache.assign(-1, 0)


def test_contradicting_assignment_drops_entries(make_cache, caplog):
    cache = make_cache()
    for epoch, start in ((1, 0), (3, 10), (5, 20)):
        cache.assign(epoch, start)
    with caplog.at_level(logging.WARNING, "fabric.log.epochs"):
        assert cache.assign(4, 15)  # epoch 5 and its start 20 contradict it
    assert cache.entries() == [EpochEntry(1, 0), EpochEntry(3, 10), EpochEntry(4, 15)]
    assert "contradicts" in caplog.text
    cache.assign(6, 5)  # a smaller start: everything from offset 5 goes
    assert cache.entries() == [EpochEntry(1, 0), EpochEntry(6, 5)]


def test_truncation(make_cache):
    cache = make_cache()
    for epoch, start in ((1, 0), (3, 10), (5, 20)):
        cache.assign(epoch, start)
    cache.truncate_from_end(21)
    assert cache.latest_epoch == 5
    cache.truncate_from_end(20)
    assert cache.entries() == [EpochEntry(1, 0), EpochEntry(3, 10)]
    cache.truncate_from_start(12)  # epoch 3 now starts where the log starts
    assert cache.entries() == [EpochEntry(3, 12)]
    cache.truncate_from_start(5)  # behind the start already: nothing
    assert cache.entries() == [EpochEntry(3, 12)]
    cache.clear()
    assert cache.entries() == []


def test_the_file_survives_reopening(tmp_path):
    cache = LeaderEpochFile(tmp_path)
    cache.assign(1, 0)
    cache.assign(2, 100)
    assert LeaderEpochFile(tmp_path).entries() == [EpochEntry(1, 0), EpochEntry(2, 100)]
    cache.truncate_from_end(50)
    assert LeaderEpochFile(tmp_path).entries() == [EpochEntry(1, 0)]
    assert not (tmp_path / (EPOCH_FILE + ".tmp")).exists()  # written aside and renamed


def test_file_format_round_trip_and_header():
    entries = [EpochEntry(0, 0), EpochEntry(3, 7), EpochEntry(2**31 - 1, 2**63 - 1)]
    data = encode_epochs(entries)
    assert data[:4] == b"FBLE" and data[4:6] == b"\x00\x01" and len(data) == 12 + 3 * 12 + 4
    assert decode_epochs(data) == entries
    assert decode_epochs(encode_epochs([])) == []


@pytest.mark.parametrize("damage, word", [
    (lambda d: b"XXXX" + d[4:], "magic"),
    (lambda d: d[:4] + b"\x00\x09" + d[6:], "version"),
    (lambda d: d[:-1], "do not fit"),
    (lambda d: d[:-5] + bytes([d[-5] ^ 1]) + d[-4:], "CRC"),
    (lambda d: b"", "shorter"),
])
def test_a_damaged_file_is_reported_and_read_as_empty(tmp_path, caplog, damage, word):
    cache = LeaderEpochFile(tmp_path)
    cache.assign(1, 0)
    path = tmp_path / EPOCH_FILE
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=word):
        decode_epochs(path.read_bytes())
    with caplog.at_level(logging.WARNING, "fabric.log.epochs"):
        assert LeaderEpochFile(tmp_path).entries() == []
    assert "damaged" in caplog.text


def test_out_of_order_entries_are_refused():
    data = encode_epochs([EpochEntry(3, 10), EpochEntry(2, 20)])
    with pytest.raises(ValueError, match="out of order"):
        decode_epochs(data)


@pytest.mark.parametrize("seed", range(5))
def test_random_operations_keep_the_table_monotonic_and_durable(tmp_path, seed):
    """Both columns strictly increase after any sequence of operations, and the file always
    reads back as the memory copy (seed in every message)."""
    rng = random.Random(seed)
    memory, durable = LeaderEpochCache(), LeaderEpochFile(tmp_path)
    for step in range(200):
        op = rng.random()
        args = (rng.randint(0, 20), rng.randint(0, 200))
        for cache in (memory, durable):
            if op < 0.6:
                cache.assign(*args)
            elif op < 0.8:
                cache.truncate_from_end(args[1])
            else:
                cache.truncate_from_start(args[1])
        entries = memory.entries()
        ctx = f"seed={seed} step={step} entries={entries}"
        assert all(a.epoch < b.epoch and a.start_offset < b.start_offset for a, b in zip(entries, entries[1:])), ctx
        assert durable.entries() == entries and LeaderEpochFile(tmp_path).entries() == entries, ctx
