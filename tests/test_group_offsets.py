"""The committed-offset store and its ``__consumer_offsets`` record format, checked against a dict oracle."""

from __future__ import annotations

import pathlib

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.groups.offsets import (CommittedOffset, OffsetStore, commit_record, decode_key, decode_value,
                                   encode_key, encode_value, partition_for_group, tombstone_record)

DATA = pathlib.Path(__file__).parent / "data"


def test_record_format_vectors():
    # key = CBOR [1, group, topic, partition]: 84 (array of 4) 01 61 'g' 61 't' 03
    assert encode_key("g", "t", 3).hex() == "840161676174" + "03"
    assert decode_key(bytes.fromhex("84016167617403")) == ("g", "t", 3)
    value = encode_value(CommittedOffset(42, "m", 1700000000000, 7))
    assert cbor2.loads(value) == {"offset": 42, "metadata": "m", "commit_timestamp": 1700000000000,
                                  "leader_epoch": 7}
    assert list(cbor2.loads(value)) == ["offset", "metadata", "commit_timestamp", "leader_epoch"]
    assert decode_value(value) == CommittedOffset(42, "m", 1700000000000, 7)


def test_partition_for_group_is_positive_murmur2_mod_n():
    rows = [line.split("\t") for line in (DATA / "murmur2-kafka.tsv").read_text().splitlines()
            if line and not line.startswith(("#", "key_hex"))]
    checked = 0
    for row in rows:
        key = bytes.fromhex(row[0])
        try:
            group = key.decode("utf-8")
        except UnicodeDecodeError:
            continue
        assert partition_for_group(group, 12) == int(row[7])
        assert partition_for_group(group, 100) == int(row[8])
        checked += 1
    assert checked > 10


def test_records_name_their_offsets_partition():
    rec = commit_record("orders-app", "t", 0, CommittedOffset(1), 50)
    assert rec.partition == partition_for_group("orders-app", 50)
    tomb = tombstone_record("orders-app", "t", 0, 50)
    assert (tomb.partition, tomb.key, tomb.value) == (rec.partition, rec.key, None)


def test_load_latest_wins_and_tombstones_delete():
    records = [
        (encode_key("g", "t", 0), encode_value(CommittedOffset(5))),
        (encode_key("g", "t", 1), encode_value(CommittedOffset(9))),
        (encode_key("g", "t", 0), encode_value(CommittedOffset(7, "x"))),
        (encode_key("g", "t", 1), None),
        (encode_key("h", "u", 2), encode_value(CommittedOffset(3))),
        (encode_key("h", "u", 2), None),
    ]
    store = OffsetStore.load(records)
    assert store.get("g", "t", 0) == CommittedOffset(7, "x")
    assert store.get("g", "t", 1) is None
    assert store.groups() == ["g"]  # a group whose last offset was deleted is gone
    assert not store.has_group("h")


def test_unknown_versions_and_malformed_records_are_skipped_and_counted():
    store = OffsetStore()
    skipped = store.apply([
        (cbor2.dumps([2, "g"]), b"\xa0"),  # group metadata (reserved) from a newer broker
        (b"\xff\xff", b""),  # not CBOR
        (cbor2.dumps([1, "g", "t"]), encode_value(CommittedOffset(1))),  # short key
        (encode_key("g", "t", 0), cbor2.dumps({"offset": "x"})),  # bad value
        (encode_key("g", "t", 1), encode_value(CommittedOffset(4))),
    ])
    assert skipped == 4
    assert list(store.fetch("g")) == [("t", 1, CommittedOffset(4))]


def test_fetch_all_by_topic_and_missing():
    store = OffsetStore.load([(encode_key("g", t, p), encode_value(CommittedOffset(p * 10)))
                              for t in ("a", "b") for p in (1, 0)])
    assert [(t, p) for t, p, _ in store.fetch("g")] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert [(t, p) for t, p, _ in store.fetch("g", [("b", None)])] == [("b", 0), ("b", 1)]
    assert list(store.fetch("g", [("a", [1, 5])])) == [("a", 1, CommittedOffset(10)), ("a", 5, None)]
    assert list(store.fetch("nobody")) == []


def test_tombstones_delete_every_offset_of_a_group():
    store = OffsetStore.load([(encode_key("g", "t", p), encode_value(CommittedOffset(p))) for p in range(3)]
                             + [(encode_key("other", "t", 0), encode_value(CommittedOffset(1)))])
    tombs = store.tombstones("g", 50)
    assert len(tombs) == 3 and all(r.value is None for r in tombs)
    store.apply((r.key, r.value) for r in tombs)
    assert store.groups() == ["other"]


ops = st.lists(st.tuples(st.sampled_from(["g", "h", "é"]), st.sampled_from(["t", "u"]),
                         st.integers(0, 3), st.none() | st.integers(0, 2**40)), max_size=60)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_replay_matches_a_dict_oracle(history):
    oracle: dict[tuple[str, str, int], int] = {}
    records = []
    for group, topic, partition, offset in history:
        key = encode_key(group, topic, partition)
        if offset is None:
            oracle.pop((group, topic, partition), None)
            records.append((key, None))
        else:
            oracle[(group, topic, partition)] = offset
            records.append((key, encode_value(CommittedOffset(offset, f"m{offset}", 1, -1))))
    store = OffsetStore.load(records)
    got = {(g, t, p): c.offset for g in store.groups() for t, p, c in store.fetch(g) if c is not None}
    assert got == oracle
    # Compaction keeps the last record per key; replaying only those gives the same store.
    last = {k: v for k, v in records}
    compacted = OffsetStore.load(last.items())
    assert {g: list(compacted.fetch(g)) for g in compacted.groups()} == {g: list(store.fetch(g)) for g in store.groups()}
