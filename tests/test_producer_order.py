"""Per-partition order of the default producer through failures.

Unit tests drive ``RequestBook`` (the sender's bookkeeping, no I/O) through lost connections
and error replies; the process test SIGKILLs and restarts a real broker under a default
``Producer`` and reads everything back (``fabric.testing.order_check``; the long version is
``tools/producer_crash_order.py``)."""

from __future__ import annotations

from fabric.client.connection import RequestTimeoutError
from fabric.client.ordering import RequestBook, RetryWouldReorderError
from fabric.client.accumulator import ProducerBatch as _Batch
from fabric.protocol.errors import error_map
from fabric.testing.order_check import check_order, run_crash_test

BACKOFF = 100


class Harness:
    """A book whose ``finish`` calls are recorded, and helpers to play the broker."""

    def __init__(self, delivery_timeout_ms: int = 120_000) -> None:
        self.done: dict[int, tuple[int, BaseException | None]] = {}
        self.book = RequestBook(self.finish, BACKOFF, delivery_timeout_ms)
        self.cid = 0
        self.now = 1_000

    def finish(self, b: _Batch, base_offset: int, err: BaseException | None) -> None:
        assert b.seq not in self.done, "a batch completed twice"
        self.done[b.seq] = (base_offset, err)
        b.result.complete(base_offset, err)

    def batch(self, partition: int = 0) -> _Batch:
        b = _Batch("t", partition, self.now)
        b.values.append(b"x")
        return b

    def send(self, *batches: _Batch) -> int:
        self.cid += 1
        for b in batches:
            b.attempts += 1
        self.book.sent(self.cid, list(batches), self.now)
        return self.cid

    def ok(self, cid: int, n: int = 1, offset: int = 0) -> None:
        self.book.on_reply({"cid": cid, "results": [{"base_offset": offset + i} for i in range(n)]},
                           self.now, lambda e: None)

    def fail(self, cid: int, name: str = "STORAGE_ERROR", n: int = 1) -> None:
        self.book.on_reply({"cid": cid, "results": [{"base_offset": -1, "error": error_map(name)}] * n},
                           self.now, lambda e: None)


def test_lost_connection_resends_everything_in_flight_first_and_in_order():
    h = Harness()
    a1, b1, a2 = h.batch(0), h.batch(1), h.batch(0)
    h.send(a1, b1)
    h.send(a2)
    a3 = h.batch(0)  # newer, never sent
    h.book.on_lost(h.now, RequestTimeoutError("lost"))
    assert not h.done and not h.book.inflight
    go = h.book.select([a3], h.now)  # at once: a new connection needs no back-off
    assert go == [a1, b1, a2, a3]


def test_retriable_error_waits_for_the_later_batches_then_retries_one_at_a_time():
    h = Harness()
    a1, a2, b1 = h.batch(0), h.batch(0), h.batch(1)
    c1, c2 = h.send(a1), h.send(a2)
    h.fail(c1)  # a2 is in flight behind a1: a retry now could land after it
    a3, b2 = h.batch(0), h.batch(1)
    assert h.book.select([a3, b2], h.now) == [b2]  # partition 0 waits, partition 1 goes on
    h.fail(c2)  # a2 was not written either: both retry, in order
    assert h.book.select([], h.now) == []  # back-off
    h.now += BACKOFF
    go = h.book.select([], h.now)
    assert go == [a1]  # one batch of the partition at a time until one succeeds
    c3 = h.send(a1)
    assert h.book.select([], h.now) == []
    h.ok(c3)
    assert h.book.select([], h.now) == [a2, a3]
    assert h.done == {a1.seq: (0, None)}
    assert b1.seq not in h.done


def test_retriable_error_behind_a_written_batch_fails_instead_of_reordering():
    h = Harness()
    a1, a2 = h.batch(0), h.batch(0)
    c1, c2 = h.send(a1), h.send(a2)
    h.fail(c1)
    h.ok(c2, offset=7)  # a2 is written: a1's retry would land after it
    assert h.done[a2.seq] == (7, None)
    offset, err = h.done[a1.seq]
    assert offset == -1 and isinstance(err, RetryWouldReorderError)
    assert "STORAGE_ERROR" in str(err) and err.__cause__ is not None
    assert h.book.idle


def test_retriable_error_then_lost_connection_fails_the_failed_batch_and_resends_the_rest():
    h = Harness()
    a1, a2 = h.batch(0), h.batch(0)
    c1 = h.send(a1)
    h.send(a2)
    h.fail(c1)
    h.book.on_lost(h.now, RequestTimeoutError("lost"))  # a2 may be written: a1 cannot follow it
    assert isinstance(h.done[a1.seq][1], RetryWouldReorderError)
    assert h.book.select([], h.now) == [a2]


def test_errors_in_one_request_are_judged_in_order():
    h = Harness()
    a1, a2, a3 = h.batch(0), h.batch(0), h.batch(0)
    c1 = h.send(a1, a2, a3)
    h.book.on_reply({"cid": c1, "results": [{"base_offset": -1, "error": error_map("STORAGE_ERROR")},
                                            {"base_offset": -1, "error": error_map("STORAGE_ERROR")},
                                            {"base_offset": 3}]}, h.now, lambda e: None)
    assert isinstance(h.done[a1.seq][1], RetryWouldReorderError)
    assert isinstance(h.done[a2.seq][1], RetryWouldReorderError)
    assert h.done[a3.seq] == (3, None)


def test_non_retriable_error_releases_older_deferred_batches():
    h = Harness()
    a1, a2 = h.batch(0), h.batch(0)
    c1, c2 = h.send(a1), h.send(a2)
    h.fail(c1)
    h.fail(c2, "CORRUPT_BATCH")  # a2 fails for good and is not in the log: a1 may be retried
    assert h.done[a2.seq][1].name == "CORRUPT_BATCH"
    h.now += BACKOFF
    assert h.book.select([], h.now) == [a1]


def test_giving_up_says_how_long_and_how_often_it_tried():
    h = Harness(delivery_timeout_ms=5_000)
    a1 = h.batch(0)
    h.send(a1)
    h.now += 3_000
    h.book.on_lost(h.now, RequestTimeoutError("no produce reply within 3000 ms"))
    h.now += 2_500
    assert h.book.select([], h.now) == []
    err = h.done[a1.seq][1]
    assert isinstance(err, RequestTimeoutError)
    assert "sent 1 time over 5.5 s" in str(err) and "no produce reply within 3000 ms" in str(err)


def test_check_order_counts_inversions_duplicates_and_missing():
    rows = [(b"k0", 0, 0, 0), (b"k0", 2, 0, 1), (b"k0", 0, 0, 2), (b"k0", 2, 0, 3),  # re-sent run
            (b"k1", 3, 1, 0), (b"k1", 1, 1, 1)]  # a true inversion
    rep = check_order(rows, range(5))
    assert (rep.records, rep.distinct, rep.duplicates) == (6, 4, 2)
    assert rep.inversions == 1 and rep.raw_inversions == 2
    assert rep.missing == [4]
    assert "g=1" in rep.examples[0]


def test_default_producer_keeps_per_key_order_through_broker_sigkills(tmp_path):
    """The issue's experiment, shortened: 150,000 keyed records, the broker SIGKILLed and
    restarted 6 times mid-stream.  Before the fix a batch lost at a kill was retried only after
    the 30 s request timeout, behind tens of thousands of later records."""
    res = run_crash_test(tmp_path, records=150_000, kills=6)
    rep = res.report
    print(f"{res.kills} kills in {res.seconds:.1f} s, {res.resent_requests} requests re-sent: {rep.summary()}")
    assert res.resent_requests > 0  # the faults hit requests in flight (else this tested nothing)
    assert res.failed == 0
    assert rep.missing == []
    assert rep.inversions == 0, rep.examples
    assert res.seconds < 60


def test_producer_keeps_order_with_its_whole_in_flight_window_lost_at_each_kill(tmp_path):
    """Small batches, no linger and a broker that fsyncs each batch before its reply: about five
    requests are in flight at each kill (the default ``max_in_flight``), all re-sent in order."""
    res = run_crash_test(tmp_path, records=60_000, kills=5, producer_config={"linger_ms": 0, "batch_bytes": 4096},
                         broker_args=["--flush-every-batch"])
    rep = res.report
    print(f"{res.kills} kills in {res.seconds:.1f} s, {res.resent_requests} requests re-sent: {rep.summary()}")
    assert res.resent_requests > 0  # the faults hit requests in flight (else this tested nothing)
    assert res.failed == 0
    assert rep.missing == []
    assert rep.inversions == 0, rep.examples
    assert res.seconds < 60


def test_producer_keeps_order_through_graceful_stops_and_stalls(tmp_path):
    """SIGTERM: the stopping broker answers BROKER_SHUTTING_DOWN (retriable error replies, rule 2)
    before the connection ends.  SIGSTOP for longer than the request timeout: the producer re-sends
    on a new connection, and the resumed broker then also executes the old connection's requests."""
    res = run_crash_test(tmp_path, records=80_000, kills=4, faults=("term", "stop"), stall_s=3.0,
                         producer_config={"request_timeout_ms": 2000})
    rep = res.report
    print(f"{res.kills} faults in {res.seconds:.1f} s, {res.resent_requests} requests re-sent: {rep.summary()}")
    assert res.resent_requests > 0  # the faults hit requests in flight (else this tested nothing)
    assert res.failed == 0
    assert rep.missing == []
    assert rep.inversions == 0, rep.examples
    assert res.seconds < 60
