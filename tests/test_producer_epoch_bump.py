"""The idempotent producer's epoch bump after a partition lost its state (Kafka's KIP-360;
``fabric/client/epoch_bump.py``), sans-I/O: ``RequestBook`` and ``Idempotence`` driven with replies,
batches checked byte for byte (re-stamped numbering, CRC still valid)."""

from __future__ import annotations

from fabric.client.accumulator import ProducerBatch as _Batch
from fabric.client.connection import RequestTimeoutError
from fabric.client.idempotence import Idempotence
from fabric.client.ordering import RequestBook, RetryWouldReorderError
from fabric.protocol.errors import FabricError, error_map
from fabric.records.batch import decode_records, producer_fields, restamp_producer

KEY = ("t", 0)


class Harness:
    """An idempotent book and its producer numbering; helpers play the broker."""

    def __init__(self) -> None:
        self.done: dict[int, tuple[int, BaseException | None]] = {}
        self.book = RequestBook(self.finish, 100, 120_000, idempotent=True)
        self.idem = Idempotence()
        self.idem.granted(7, 0)
        self.cid = 0
        self.now = 1_000

    def finish(self, b: _Batch, base_offset: int, err: BaseException | None) -> None:
        assert b.seq not in self.done, "a batch completed twice"
        self.done[b.seq] = (base_offset, err)
        b.result.complete(base_offset, err)

    def batch(self, n: int = 1) -> _Batch:
        """A batch encoded as the sender does at its first send (idempotence rule 1)."""
        b = _Batch(*KEY, self.now)
        for i in range(n):
            b.timestamps.append(self.now)
            b.keys.append(None)
            b.values.append(b"v%d" % i)
        b.data = b.encode(0, *self.idem.next(KEY))
        self.idem.advance(KEY, n)
        return b

    def send(self, *batches: _Batch) -> int:
        self.cid += 1
        for b in batches:
            b.attempts += 1
        self.book.sent(self.cid, list(batches), self.now)
        return self.cid

    def reply(self, cid: int, *rows: str | int) -> None:
        results = [{"base_offset": r} if isinstance(r, int) else {"base_offset": -1, "error": error_map(r)}
                   for r in rows]
        self.book.on_reply({"cid": cid, "results": results}, self.now, lambda e: None)

    def bump(self) -> list[tuple[str, int]]:
        """``Sender._rebase`` with a broker that grants the next epoch."""
        ready = self.book.rebase_ready()
        if ready:
            pid, epoch = self.idem.bump_request()
            self.idem.granted(pid, epoch + 1)
            for key in ready:
                self.book.rebased(key, self.idem, self.now)
        return ready


def test_unknown_producer_id_with_nothing_older_outstanding_bumps_the_epoch_and_retries_in_order():
    h = Harness()
    first = h.batch(2)
    h.reply(h.send(first), 0)  # acknowledged: never re-sent
    b1, b2, b3 = h.batch(1), h.batch(3), h.batch(1)
    c1, c2 = h.send(b1), h.send(b2)
    h.book.keep([b3])  # encoded, not yet sent (the window took no more)
    b4 = _Batch(*KEY, h.now)  # not encoded yet
    b4.timestamps.append(h.now)
    b4.keys.append(None)
    b4.values.append(b"later")
    h.reply(c1, "UNKNOWN_PRODUCER_ID")  # the partition forgot producer 7
    assert h.book.rebasing and h.book.rebase_ready() == []  # b2 is still in flight
    h.reply(c2, "OUT_OF_ORDER_SEQUENCE")
    assert set(h.done) == {first.seq} and h.book.select([b4], h.now) == []  # nothing of it goes meanwhile
    assert h.bump() == [KEY]
    assert h.book.select([], h.now) == [b1]  # cautious: one at a time until one succeeds, oldest first
    assert [producer_fields(b.data) for b in (b1, b2, b3)] == [(7, 1, 0), (7, 1, 1), (7, 1, 4)]
    assert b4.data is None  # (it takes the next sequence at its first encoding)
    assert [r.value for r in decode_records("t", 0, b2.data)] == [b"v0", b"v1", b"v2"]  # (CRC checked)
    h.reply(h.send(b1), 10)
    assert h.book.select([], h.now) == [b2, b3, b4]
    assert h.idem.next(KEY) == (7, 1, 5)
    assert set(h.done) == {first.seq, b1.seq} and not any(err for _, err in h.done.values())


def test_a_batch_whose_attempt_may_have_been_written_fails_instead_of_being_retried():
    """An attempt lost with its connection (or answered NOT_LEADER: an acks=all batch appended and
    then abandoned) may be in the log; after the state loss it is failed, not re-sent, and the
    later batches, refused by the sequence checks, are retried."""
    h = Harness()
    b1, b2 = h.batch(), h.batch()
    h.send(b1)
    h.book.on_lost(h.now, RequestTimeoutError("lost"))  # b1's attempt: unknown
    h.book.select([], h.now)
    c1, c2 = h.send(b1), h.send(b2)
    h.reply(c1, "UNKNOWN_PRODUCER_ID")
    h.reply(c2, "OUT_OF_ORDER_SEQUENCE")
    h.bump()
    assert isinstance(h.done[b1.seq][1], FabricError) and h.done[b1.seq][1].name == "UNKNOWN_PRODUCER_ID"
    assert h.book.select([], h.now) == [b2] and producer_fields(b2.data) == (7, 1, 0)

    h = Harness()
    b1 = h.batch()
    h.reply(h.send(b1), "NOT_LEADER")
    h.book.select([], h.now + 1000)
    h.reply(h.send(b1), "UNKNOWN_PRODUCER_ID")
    h.bump()
    assert h.done[b1.seq][1].name == "UNKNOWN_PRODUCER_ID"


def test_refusals_before_any_append_keep_the_batch_retriable():
    h = Harness()
    b1 = h.batch()
    h.reply(h.send(b1), "UNKNOWN_TOPIC_OR_PARTITION")  # (a recreated topic, looked up again)
    h.book.select([], h.now + 1000)
    h.reply(h.send(b1), "UNKNOWN_PRODUCER_ID")
    h.bump()
    assert b1.seq not in h.done and h.book.select([], h.now) == [b1] and producer_fields(b1.data) == (7, 1, 0)


def test_a_gap_behind_an_older_unacknowledged_batch_is_a_consequence_not_a_bump():
    h = Harness()
    b1, b2 = h.batch(), h.batch()
    c1, c2 = h.send(b1), h.send(b2)
    h.reply(c1, "NOT_ENOUGH_REPLICAS")
    h.reply(c2, "OUT_OF_ORDER_SEQUENCE")  # b1 is older and unacknowledged: rule 3, retried as it is
    assert not h.book.rebasing and h.book.rebase_ready() == []
    assert h.book.select([], h.now + 1000) == [b1]
    assert producer_fields(b1.data) == (7, 0, 0)


def test_a_later_batch_written_while_older_ones_wait_for_the_bump_fails_them_rather_than_reorder():
    h = Harness()
    b1, b2 = h.batch(), h.batch()
    c1, c2 = h.send(b1), h.send(b2)
    h.reply(c1, "UNKNOWN_PRODUCER_ID")
    h.reply(c2, 5)  # (impossible by the leader's rules; order wins if it ever happens)
    assert isinstance(h.done[b1.seq][1], RetryWouldReorderError) and h.done[b2.seq] == (5, None)
    assert not h.book.rebasing and h.book.rebase_ready() == []


def test_restamping_changes_only_the_producer_fields_and_keeps_the_crc_valid():
    h = Harness()
    b = h.batch(3)
    again = restamp_producer(b.data, 9, 4, 17)
    assert producer_fields(again) == (9, 4, 17) and len(again) == len(b.data)
    assert [r.value for r in decode_records("t", 0, again)] == [b"v0", b"v1", b"v2"]
