"""fabric.clock: the real clocks behave as clocks; the manual clock moves only when told to."""

from __future__ import annotations

import threading
import time

import pytest

from fabric.clock import Clock, ManualClock, SystemClock


def test_system_clock_readings():
    clock = SystemClock()
    assert isinstance(clock, Clock)
    readings = [clock.monotonic_ms() for _ in range(1000)]
    assert readings == sorted(readings)  # never goes back
    wall = clock.wall_ms()
    assert abs(wall - time.time() * 1000) < 5_000  # milliseconds since the epoch, not seconds or ns
    assert isinstance(wall, int) and isinstance(readings[0], int)


def test_manual_clock_advance_moves_both():
    clock = ManualClock(monotonic_ms=100, wall_ms=5_000)
    assert isinstance(clock, Clock)
    assert (clock.monotonic_ms(), clock.wall_ms()) == (100, 5_000)
    clock.advance(250)
    assert (clock.monotonic_ms(), clock.wall_ms()) == (350, 5_250)
    clock.advance(0)
    assert (clock.monotonic_ms(), clock.wall_ms()) == (350, 5_250)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    assert clock.monotonic_ms() == 350


def test_manual_clock_monotonic_never_goes_back():
    clock = ManualClock(monotonic_ms=1_000, wall_ms=0)
    clock.set_monotonic(1_500)
    assert (clock.monotonic_ms(), clock.wall_ms()) == (1_500, 500)
    clock.set_monotonic(1_500)  # standing still is allowed
    with pytest.raises(ValueError, match="never goes back"):
        clock.set_monotonic(1_499)
    assert clock.monotonic_ms() == 1_500
    with pytest.raises(ValueError):
        ManualClock(monotonic_ms=-1)


def test_wall_steps_do_not_move_deadlines():
    clock = ManualClock(monotonic_ms=0, wall_ms=10_000)
    deadline = clock.monotonic_ms() + 1_000
    clock.step_wall(-3_600_000)  # an operator sets the clock back an hour
    assert clock.wall_ms() == 10_000 - 3_600_000
    assert clock.monotonic_ms() < deadline
    clock.set_wall(99)
    assert (clock.monotonic_ms(), clock.wall_ms()) == (0, 99)
    clock.advance(1_000)
    assert clock.monotonic_ms() >= deadline and clock.wall_ms() == 1_099


def test_manual_clock_is_thread_safe():
    clock = ManualClock()
    start = clock.monotonic_ms()

    def tick():
        for _ in range(5_000):
            clock.advance(1)

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clock.monotonic_ms() - start == 20_000
