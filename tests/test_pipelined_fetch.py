"""Pipelined fetches against real broker processes: nothing skipped, nothing twice, in order.

The consumer keeps a chain of fetches in flight at the tail, each following the one before it,
and each a standing fetch answered several times (SPEC 5.10).  Three partitions take bursts of
batches (so replies are cut, partitions continue independently, and chains break and restart);
midway the broker is SIGKILLed and started again, so the restarted broker knows nothing of the
chains that were in flight.
"""

from __future__ import annotations

import threading
import time

from fabric.client import Admin, Consumer, Producer


def test_chained_consumer_at_the_tail_gets_every_record_once_in_order_across_a_broker_kill(brokers):
    broker = brokers()
    with Admin(broker.bootstrap) as admin:
        admin.create_topic("live", partitions=3)
    acked: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
    got: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
    errors: list[BaseException] = []

    def produce(first: int, count: int) -> None:
        """Blocks of 25: a burst (sent back to back, then acknowledged), then 25 paced ones."""
        with Producer(broker.bootstrap, linger_ms=0, request_timeout_ms=3000) as p:
            for block in range(first, first + count, 25):
                burst = (block // 25) % 2 == 0
                sent = []
                for i in range(block, min(block + 25, first + count)):
                    sent.append((i % 3, b"%06d" % i, p.send("live", b"%06d" % i, partition=i % 3)))
                    if not burst:
                        sent[-1][2].result(10)
                        time.sleep(0.001)
                for partition, value, future in sent:
                    future.result(10)
                    acked[partition].append(value)

    consumer = Consumer(broker.bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=200,
                        fetch_pipeline_depth=3, max_partition_fetch_bytes=2048, request_timeout_ms=1500)
    stop = threading.Event()

    def consume() -> None:
        try:
            consumer.assign_topic("live")
            while not stop.is_set():
                for r in consumer.poll(100):
                    got[r.partition].append(r.value)
        except BaseException as exc:  # surfaced by the assertions below
            errors.append(exc)

    def chained() -> tuple[int, int]:
        with Admin(broker.bootstrap) as admin:
            stats = admin.broker_stats()
        standing.append(stats["standing_fetch_answers"])
        return stats["follow_on_fetches"], stats["follow_on_fetches_chained"]

    standing: list[int] = []  # replies after which a standing fetch waited again, per broker life

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    try:
        produce(0, 1500)
        follow_ons, chained_ = chained()
        assert chained_ > 10 and follow_ons >= chained_, (follow_ons, chained_)  # it did pipeline
        broker.restart(kill=True)  # SIGKILL: the chains in flight are forgotten with the process
        produce(1500, 1500)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(len(got[p]) < len(acked[p]) for p in acked):
            time.sleep(0.05)
        # Pipelined and standing again after the restart.  Read while the consumer still runs: a
        # closed consumer's parked fetches go with its connection, and at the tail the first
        # standing answer may be the expiry of the fetch parked there (fetch_max_wait_ms).
        deadline = time.monotonic() + 10
        while True:
            chained_after, standing_after = chained()[1], standing[-1]
            if (chained_after > 0 and standing_after > 0) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        reader.join(timeout=10)
        consumer.close()
    assert not errors, errors
    assert chained_after > 0  # pipelined again after the restart (how often depends on timing)
    assert standing[0] > 0 and standing_after > 0  # standing fetches, before the kill and after
    for p in acked:
        assert got[p] == acked[p], f"partition {p}: {len(got[p])} delivered, {len(acked[p])} acknowledged"
