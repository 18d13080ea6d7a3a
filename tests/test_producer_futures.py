"""Record futures: waiting, timeouts and callbacks, with the batch's event made only on demand."""

from __future__ import annotations

import threading

import pytest

from fabric.client import Producer
from fabric.client.connection import RequestTimeoutError
from fabric.client.futures import RecordFuture
from fabric.client.accumulator import ProducerBatch as _Batch


def _future(batch: _Batch, index: int = 0) -> RecordFuture:
    batch.timestamps.append(1000 + index)
    return tuple.__new__(RecordFuture, (batch, index))


def test_a_waiter_before_completion_is_woken_and_late_waiters_do_not_block():
    batch = _Batch("t", 0, 0)
    first, second = _future(batch, 0), _future(batch, 1)
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(second.result(10)))
    waiter.start()
    while batch.result._event is None:  # the waiter asked before completion: now there is one
        threading.Event().wait(0.001)
    assert not first.done()
    batch.result.complete(40, None)
    waiter.join(10)
    assert got and got[0].offset == 41 and first.result(0).offset == 40
    assert first.done() and first.exception(0) is None


def test_nobody_waiting_makes_no_event_and_timeouts_raise():
    batch = _Batch("t", 0, 0)
    future = _future(batch)
    batch.result.complete(7, None)
    assert batch.result._event is None and future.result(0).offset == 7
    pending = _future(_Batch("t", 0, 0))
    with pytest.raises(RequestTimeoutError):
        pending.result(0.01)


def test_callbacks_run_once_whether_added_before_or_after_completion():
    batch = _Batch("t", 0, 0)
    future = _future(batch)
    calls: list[str] = []
    future.add_done_callback(lambda f: calls.append("before"))
    assert calls == []
    batch.result.complete(-1, RuntimeError("broker said no"))
    future.add_done_callback(lambda f: calls.append("after"))
    assert calls == ["before", "after"]
    assert isinstance(future.exception(0), RuntimeError)
    with pytest.raises(RuntimeError):
        future.result(0)


def test_callbacks_and_flush_against_a_broker(brokers):
    broker = brokers()
    with Producer(broker.bootstrap, linger_ms=0) as producer:
        done = threading.Event()
        offsets: list[int] = []

        def on_done(future: RecordFuture) -> None:
            offsets.append(future.result(0).offset)
            if len(offsets) == 50:
                done.set()

        for i in range(50):
            producer.send("futures", b"%d" % i, partition=0).add_done_callback(on_done)
        producer.flush(30)
        assert done.wait(10)
        assert sorted(offsets) == list(range(50))
