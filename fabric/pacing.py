"""How ``fabric perf e2e`` paces records and stamps them with their send time.

One module because the benchmark harness (``tools/bench``) times Redis and NATS with exactly
the same arrival pattern and value format, so the three systems' end-to-end figures compare.
No imports beyond the standard library: the peers' client processes use it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

STAMP_BYTES = 20  # a value starts with its send time: perf_counter_ns as 20 ASCII digits


def stamp(value_bytes: int) -> tuple[Callable[[], bytes], Callable[[bytes], float]]:
    """(make a value stamped now, padded to ``value_bytes``; milliseconds since a value was made).
    ``perf_counter_ns`` is the machine's monotonic clock, so producer and consumer may be
    different threads or processes of one machine."""
    pad = b"x" * max(0, value_bytes - STAMP_BYTES)
    clock = time.perf_counter_ns

    def make() -> bytes:
        return b"%020d" % clock() + pad

    def age_ms(value: bytes) -> float:
        return (clock() - int(value[:STAMP_BYTES])) / 1e6

    return make, age_ms


def pace(rate: float, total: int, burst_s: float = 0.0) -> Iterator[int]:
    """Yield 0 … total-1, record i at start + i / rate.  ``burst_s`` 0: each at its own time (a
    wake-up per record, the hardest case); > 0: sleep off a deficit at least ``burst_s`` at a
    time, so records come in small bursts, as Kafka's ThroughputThrottler does."""
    start = time.perf_counter()
    for i in range(total):
        target = start + i / rate
        if burst_s > 0:
            if (delay := target - time.perf_counter()) > 0:
                time.sleep(max(delay, burst_s))
        else:
            while (delay := target - time.perf_counter()) > 0:
                time.sleep(min(delay, 0.001))
        yield i
