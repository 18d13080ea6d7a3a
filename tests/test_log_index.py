"""Offset and time indexes against plain-list oracles (Kafka's OffsetIndexTest.randomLookupTest)."""

from __future__ import annotations

import os
import random
import struct

import pytest

from fabric.log.index import HEADER_BYTES, InvalidIndex, OffsetIndex, TimeIndex


def _random_offset_entries(rng: random.Random, n: int) -> list[tuple[int, int]]:
    rels = sorted(rng.sample(range(1, 10 * n + 10), n))
    positions = sorted(rng.sample(range(1, 100 * n + 100), n))
    return list(zip(rels, positions))


def _oracle_lookup(entries: list[tuple[int, int]], rel: int) -> int:
    """Position of the last entry with key <= rel, else 0."""
    best = 0
    for k, v in entries:
        if k <= rel:
            best = v
    return best


@pytest.mark.parametrize("seed", range(5))
def test_offset_index_random_lookup(tmp_path, seed):
    rng = random.Random(seed)
    entries = _random_offset_entries(rng, rng.randint(0, 300))
    idx = OffsetIndex.create(tmp_path / "0.index", 1000)
    for k, v in entries:
        idx.append(k, v)
    top = entries[-1][0] + 5 if entries else 10
    probes = [rng.randint(0, top) for _ in range(500)] + [k for k, _ in entries] + [0]
    for rel in probes:
        assert idx.lookup(rel) == _oracle_lookup(entries, rel), (seed, rel)
    idx.write_pending()  # (entries stay in memory until then)
    # The same answers after reopening the file (lazy load of the body).
    again = OffsetIndex.open(tmp_path / "0.index", 1000)
    assert len(again) == len(entries)
    assert again.last == (entries[-1] if entries else None)
    for rel in probes:
        assert again.lookup(rel) == _oracle_lookup(entries, rel), (seed, rel)
    again.close()


@pytest.mark.parametrize("seed", range(5))
def test_time_index_random_lookup(tmp_path, seed):
    rng = random.Random(seed)
    n = rng.randint(0, 300)
    stamps = sorted(rng.sample(range(0, 10**6), n))
    rels = sorted(rng.sample(range(0, 10 * n + 10), n))
    entries = list(zip(stamps, rels))
    idx = TimeIndex.create(tmp_path / "0.timeindex", 7)
    for t, r in entries:
        idx.append(t, r)

    def oracle(ts: int) -> int | None:
        found = None
        for t, r in entries:
            if t < ts:
                found = r
        return found

    probes = [rng.randint(-5, 10**6 + 5) for _ in range(500)] + [t for t, _ in entries] + [t + 1 for t, _ in entries]
    for ts in probes:
        assert idx.lookup_before(ts) == oracle(ts), (seed, ts)
    idx.write_pending()  # (entries stay in memory until then)
    again = TimeIndex.open(tmp_path / "0.timeindex", 7)
    assert again.last_timestamp == (entries[-1][0] if entries else -1)
    for ts in probes:
        assert again.lookup_before(ts) == oracle(ts), (seed, ts)
    again.close()


def test_truncation_matches_oracle(tmp_path):
    rng = random.Random(42)
    entries = _random_offset_entries(rng, 100)
    idx = OffsetIndex.create(tmp_path / "0.index", 0)
    for k, v in entries:
        idx.append(k, v)
    cut = entries[60][1]
    idx.truncate_to_position(cut)
    kept = [e for e in entries if e[1] < cut]
    assert len(idx) == len(kept) and idx.last == kept[-1]
    assert idx.write_pending()  # the truncated entries, written over the file
    assert os.path.getsize(tmp_path / "0.index") == HEADER_BYTES + 8 * len(kept)
    again = OffsetIndex.open(tmp_path / "0.index", 0)
    for rel in range(0, entries[-1][0] + 3):
        assert again.lookup(rel) == _oracle_lookup(kept, rel)
    again.close()

    t = TimeIndex.create(tmp_path / "0.timeindex", 0)
    for i in range(10):
        t.append(100 + i, 10 * i)
    t.truncate_to_offset(45)
    assert t.last == (104, 40)
    t.close()


def test_entries_must_increase(tmp_path):
    idx = OffsetIndex.create(tmp_path / "0.index", 0)
    idx.append(5, 100)
    with pytest.raises(ValueError):
        idx.append(5, 200)
    with pytest.raises(ValueError):
        idx.append(6, 100)
    with pytest.raises(ValueError):
        idx.append(2**32, 300)
    idx.close()


def test_invalid_files_are_detected(tmp_path):
    path = tmp_path / "0.index"
    with pytest.raises(InvalidIndex, match="missing"):
        OffsetIndex.open(path, 0)
    idx = OffsetIndex.create(path, 0)
    for i in range(1, 20):
        idx.append(i, i * 10)
    idx.write_pending()  # (entries stay in memory until then)
    with pytest.raises(InvalidIndex, match="base offset"):
        OffsetIndex.open(path, 1)
    with pytest.raises(InvalidIndex, match="magic"):
        TimeIndex.open(path, 0)  # an offset index is not a time index
    data = path.read_bytes()
    path.write_bytes(data[:-3])  # torn last entry
    with pytest.raises(InvalidIndex, match="multiple"):
        OffsetIndex.open(path, 0)
    path.write_bytes(data[:5])
    with pytest.raises(InvalidIndex, match="header"):
        OffsetIndex.open(path, 0)
    # Entries out of order are found when the body is loaded.
    body = bytearray(data)
    struct.pack_into(">II", body, HEADER_BYTES + 8 * 5, 100, 5)
    path.write_bytes(bytes(body))
    idx = OffsetIndex.open(path, 0)
    with pytest.raises(InvalidIndex, match="increasing"):
        idx.lookup(3)
    idx.close()


def test_write_all_is_atomic_and_reopens(tmp_path):
    path = tmp_path / "0.index"
    idx = OffsetIndex.in_memory(path, 0)
    for i in range(1, 50):
        idx.append(i, i * 3)
    assert not path.exists()
    idx.write_all()
    assert not (tmp_path / "0.index.tmp").exists()
    idx.append(50, 1000)  # later entries stay in memory until write_pending
    assert OffsetIndex.open(path, 0).last == (49, 147)
    assert idx.write_pending() and not idx.write_pending()
    again = OffsetIndex.open(path, 0)
    assert len(again) == 50 and again.last == (50, 1000)
    again.close()
