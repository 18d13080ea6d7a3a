"""``fabric.client.shutdown``: signals become a flag and a wake-up; the close happens on the
polling thread.  The second-signal exit and the CLI's behaviour are process tests in
``test_cli_group.py`` (a second signal kills the process, which pytest cannot host)."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from fabric.client import Consumer, ShutdownSignals, closing_on_signals


class FakeConsumer:
    def __init__(self) -> None:
        self.woken = 0
        self.closed_on: list[str] = []

    def wakeup(self) -> None:
        self.woken += 1

    def close(self) -> None:
        self.closed_on.append(threading.current_thread().name)


@pytest.fixture
def saved_handlers():
    """Whatever a test does to SIGTERM/SIGINT, the runner gets its handlers back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield saved
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_sets_the_flag_and_wakes_the_consumer(saved_handlers, sig):
    fake = FakeConsumer()
    with ShutdownSignals(fake) as stop:
        assert not stop.requested and stop.received is None
        signal.raise_signal(sig)  # the handler runs before the next bytecode
        assert stop.requested and stop.received == sig and fake.woken == 1
        assert stop.wait(0)
    assert signal.getsignal(sig) is saved_handlers[sig]  # restored on exit


def test_sigint_inherited_as_ignored_is_handled_all_the_same(saved_handlers):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job of a non-interactive shell
    fake = FakeConsumer()
    with ShutdownSignals(fake) as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.requested and fake.woken == 1
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_closing_on_signals_closes_on_the_polling_thread_whatever_ends_the_block(saved_handlers):
    fake = FakeConsumer()
    with closing_on_signals(fake) as stop:
        signal.raise_signal(signal.SIGTERM)
        assert fake.closed_on == []  # the handler only asked; the loop decides when to stop
        assert stop.requested
    assert fake.closed_on == [threading.current_thread().name]

    other = FakeConsumer()
    with pytest.raises(RuntimeError):
        with closing_on_signals(other):
            raise RuntimeError("the application failed")
    assert other.closed_on == [threading.current_thread().name]
    assert signal.getsignal(signal.SIGTERM) is saved_handlers[signal.SIGTERM]


def test_handlers_are_installed_from_the_main_thread_only(saved_handlers):
    errors: list[BaseException] = []

    def install() -> None:
        try:
            ShutdownSignals(FakeConsumer()).install()
        except ValueError as exc:
            errors.append(exc)

    t = threading.Thread(target=install)
    t.start()
    t.join()
    assert len(errors) == 1
    assert signal.getsignal(signal.SIGTERM) is saved_handlers[signal.SIGTERM]


def test_wakeup_ends_a_long_poll_early(broker):
    """A poll waiting for records returns (empty) soon after ``wakeup`` from another thread."""
    from fabric.client import Admin
    with Admin(broker.bootstrap) as admin:
        admin.create_topic("quiet", partitions=1)
    consumer = Consumer(broker.bootstrap, auto_offset_reset="latest")
    try:
        consumer.assign([("quiet", 0)])
        consumer.poll(100)  # positions resolved, a fetch waits at the broker
        timer = threading.Timer(0.3, consumer.wakeup)
        started = time.monotonic()
        timer.start()
        assert consumer.poll(10_000) == []
        took = time.monotonic() - started
        timer.join()
        assert took < 2, f"poll returned {took:.1f} s after it started"
        started = time.monotonic()
        assert consumer.poll(500) == []  # the wake-up is spent: the next poll waits as usual
        assert time.monotonic() - started >= 0.45
    finally:
        consumer.close()
