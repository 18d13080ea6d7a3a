"""The producer's record accumulator, pure: a number for the clock, no broker, no thread."""

from __future__ import annotations

import random

import pytest

from fabric.client.accumulator import Accumulator, drain
from fabric.client.ordering import RequestBook


def test_a_batch_closes_at_batch_bytes_and_leaves_in_closing_order():
    acc = Accumulator(batch_bytes=100, linger_ms=50)
    b0 = acc.new_batch("t", 0, now_ms=0)
    assert acc.append(b0, 1, None, b"a" * 40, None, 50) == 0 and ("t", 0) in acc.open
    assert acc.append(b0, 2, b"k", b"b" * 40, None, 50) == 1  # reached 100 bytes: closed
    assert ("t", 0) not in acc.open
    b1 = acc.new_batch("t", 1, now_ms=5)
    acc.append(b1, 3, None, b"c", None, 13)
    ready, next_due = acc.ready(now_ms=10)
    assert ready == [b0] and next_due == 55  # b1 lingers until 5 + 50
    assert b0.values == [b"a" * 40, b"b" * 40] and b0.keys == [None, b"k"] and b0.timestamps == [1, 2]
    assert acc.buffered == 113


def test_linger_closes_a_batch_exactly_when_due_and_release_frees_its_bytes():
    acc = Accumulator(batch_bytes=1 << 20, linger_ms=5)
    b = acc.new_batch("t", 0, now_ms=100)
    acc.append(b, 1, None, b"v", None, 13)
    assert acc.ready(104) == ([], 105)
    assert acc.ready(105) == ([b], None)
    acc.release(b)
    assert acc.buffered == 0 and b.result not in acc.incomplete


def test_a_held_partition_keeps_its_batch_open_past_linger_until_released():
    """The sender holds a partition whose leader's in-flight window is full: its records keep
    joining one open batch (not one closed batch each, linger 0) and it is not due, so the
    sender does not spin on it; it still closes at batch_bytes and on flush."""
    acc = Accumulator(batch_bytes=100, linger_ms=0)
    b = acc.new_batch("t", 0, now_ms=0)
    other = acc.new_batch("t", 1, now_ms=0)
    acc.append(b, 1, None, b"a", None, 13)
    acc.append(other, 1, None, b"o", None, 13)
    assert acc.ready(5, held={("t", 0)}) == ([other], None)  # only the held batch is left, and not due
    acc.append(b, 2, None, b"b", None, 13)
    assert acc.open[("t", 0)] is b and b.values == [b"a", b"b"]
    assert acc.ready(6) == ([b], None)  # released: linger 0 is long over
    b2 = acc.new_batch("t", 0, now_ms=7)
    acc.append(b2, 3, None, b"c" * 90, None, 100)  # full: closes even while held
    assert acc.ready(8, held={("t", 0)}) == ([b2], None)
    b3 = acc.new_batch("t", 0, now_ms=9)
    acc.append(b3, 4, None, b"d", None, 13)
    acc.close_all()  # flush: held or not
    assert acc.ready(9, held={("t", 0)}) == ([b3], None)


def test_an_empty_batch_is_completed_and_dropped_and_headers_fill_in_for_earlier_records():
    acc = Accumulator(batch_bytes=1 << 20, linger_ms=0)
    empty = acc.new_batch("t", 0, 0)
    acc.close_all()
    assert empty.result.done and acc.ready(0) == ([], None) and not acc.incomplete
    b = acc.new_batch("t", 0, 0)
    acc.append(b, 1, None, b"x", None, 13)
    acc.append(b, 2, None, b"y", [("h", b"1")], 20)
    assert b.headers == [None, [("h", b"1")]]


def test_columns_fit_by_the_estimated_record_size():
    acc = Accumulator(batch_bytes=100, linger_ms=0)
    assert acc.fit("t", 0, per_record=30) == 3
    b = acc.new_batch("t", 0, 0)
    assert acc.append_columns(b, [None] * 2, [b"a", b"b"], ts=7, size=60) == 0
    assert acc.fit("t", 0, per_record=30) == 1  # at least one, even past the limit
    assert acc.append_columns(b, [None], [b"c"], ts=7, size=30) == 2 and ("t", 0) in acc.open
    assert acc.append_columns(b, [None], [b"d"], ts=7, size=30) == 3 and ("t", 0) not in acc.open
    assert b.timestamps == [7, 7, 7, 7]


def test_on_close_hears_each_batch_with_records():
    acc = Accumulator(batch_bytes=1 << 20, linger_ms=0)
    closed = []
    acc.on_close = closed.append
    acc.new_batch("t", 0, 0)  # empty: not reported
    b = acc.new_batch("t", 1, 0)
    acc.append(b, 1, None, b"v", None, 13)
    acc.close_all()
    assert closed == [b]


def test_drain_splits_by_leader_and_keeps_each_partitions_order():
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    acc = Accumulator(batch_bytes=1 << 20, linger_ms=0)
    made = []
    for _ in range(200):
        p = rng.randrange(6)
        b = acc.open.get(("t", p)) or acc.new_batch("t", p, 0)
        acc.append(b, 0, None, b"v", None, 13)
        if rng.random() < 0.3:
            acc.close(b)
        made.append(b)
    ready, _ = acc.ready(0)
    by_leader = drain(ready, lambda topic, partition: partition % 2)
    assert sorted(by_leader) == [0, 1], seed
    for leader, batches in by_leader.items():
        assert all(b.partition % 2 == leader for b in batches), seed
        for p in range(6):
            seqs = [b.seq for b in batches if b.partition == p]
            assert seqs == sorted(seqs), seed


def test_a_partition_moves_between_books_only_when_nothing_of_it_is_in_flight():
    done = []
    old = RequestBook(lambda b, off, err: done.append(b), retry_backoff_ms=10, delivery_timeout_ms=10_000)
    new = RequestBook(lambda b, off, err: done.append(b), retry_backoff_ms=10, delivery_timeout_ms=10_000)
    acc = Accumulator(batch_bytes=1 << 20, linger_ms=0)
    batches = []
    for i in range(3):
        b = acc.new_batch("t", 0, 0)
        acc.append(b, i, None, b"v", None, 13)
        acc.close(b)
        batches.append(b)
    other = acc.new_batch("t", 1, 0)
    acc.append(other, 0, None, b"v", None, 13)
    acc.close(other)
    first, second, third = batches
    first.attempts = 1
    old.sent(1, [first], now=0)
    old.keep([second, third, other])
    assert old.release(("t", 0)) is None  # the first is in flight: its reply decides
    old.on_lost(now=1, err=ConnectionError("gone"))  # it will not come: the first is queued again
    moved, cautious = old.release(("t", 0))
    assert moved == [first, second, third] and not cautious
    assert old.waiting == [other] and not old.retry
    new.adopt(moved, cautious)
    assert new.select([], now=1) == [first, second, third]


@pytest.mark.parametrize("bad", [dict(batch_bytes=0, linger_ms=0), dict(batch_bytes=1, linger_ms=-1)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        Accumulator(**bad)
