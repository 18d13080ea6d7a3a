"""The broker's two clocks: deadlines on the monotonic clock, dates on the wall clock.

A ``ManualClock`` drives the core (the shell reads it the same way: ``clock.read`` once per request
and loop turn).  Stepping the wall clock by an hour, either way, as NTP or an operator may, must
neither fire nor stall a long poll or a group session; the dates the broker writes follow the wall
clock.
"""

from __future__ import annotations

import cbor2

from fabric.broker.config import BrokerConfig
from fabric.broker.core import BrokerCore
from fabric.clock import ManualClock, read
from fabric.log.config import LogConfig
from fabric.records.batch import encode_batch, parse_header

HOUR_MS = 3_600_000


def call(core, clock, header, frames=(), peer=b"p"):
    return core.handle(peer, [cbor2.dumps(header), *frames], read(clock))


def make(tmp_path, clock):
    return BrokerCore(BrokerConfig(data_dir=str(tmp_path / "d"), topic_defaults=LogConfig(flush_interval_ms=0),
                                   group_initial_rebalance_delay_ms=100), read(clock))


def test_wall_clock_steps_neither_fire_nor_stall_a_long_poll(tmp_path):
    clock = ManualClock(monotonic_ms=1000)
    core = make(tmp_path, clock)
    try:
        call(core, clock, {"op": "create_topics", "v": 1, "cid": 1, "topics": [{"name": "t"}]})
        assert call(core, clock, {"op": "fetch", "v": 1, "cid": 2, "max_wait_ms": 500, "min_bytes": 1,
                                  "partitions": [{"topic": "t", "partition": 0, "offset": 0}]}) == []
        assert core.next_deadline_ms() == 1500  # on the monotonic clock
        clock.step_wall(+HOUR_MS)  # a step forward does not fire it
        assert core.tick(read(clock)) == []
        clock.step_wall(-2 * HOUR_MS)  # nor does a step back stall it
        clock.advance(499)
        assert core.tick(read(clock)) == []
        clock.advance(1)
        out = core.tick(read(clock))
        assert [(p, r.header["cid"]) for p, r in out] == [(b"p", 2)]
    finally:
        core.close()


def test_wall_clock_steps_neither_fire_nor_stall_a_group_session(tmp_path):
    clock = ManualClock(monotonic_ms=1000)
    core = make(tmp_path, clock)
    join = {"op": "join_group", "v": 1, "group_id": "g", "session_timeout_ms": 10_000,
            "rebalance_timeout_ms": 5_000, "topics": ["t"], "assignors": ["range"]}
    try:
        call(core, clock, {"op": "create_topics", "v": 1, "cid": 1, "topics": [{"name": "t"}]})
        mid = call(core, clock, {**join, "cid": 2, "member_id": ""})[0][1].header["member_id"]
        assert call(core, clock, {**join, "cid": 3, "member_id": mid}) == []  # the initial rebalance delay
        clock.step_wall(-HOUR_MS)  # a step back does not stall the rebalance timer
        clock.advance(100)
        gen = core.tick(read(clock))[0][1].header["generation"]
        sync = call(core, clock, {"op": "sync_group", "v": 1, "cid": 4, "group_id": "g", "member_id": mid,
                                  "generation": gen})[0][1].header
        assert "error" not in sync
        clock.step_wall(+2 * HOUR_MS)  # a step forward does not end the session
        core.tick(read(clock))
        hb = {"op": "heartbeat", "v": 1, "group_id": "g", "member_id": mid, "generation": gen}
        assert "error" not in call(core, clock, {**hb, "cid": 5})[0][1].header
        clock.step_wall(-2 * HOUR_MS)  # and a step back does not keep it alive past its timeout
        clock.advance(10_001)
        core.tick(read(clock))
        assert call(core, clock, {**hb, "cid": 6})[0][1].header["error"]["name"] == "UNKNOWN_MEMBER_ID"
    finally:
        core.close()


def test_dates_come_from_the_wall_clock(tmp_path):
    clock = ManualClock(monotonic_ms=1000, wall_ms=1_700_000_000_000)
    core = make(tmp_path, clock)
    try:
        call(core, clock, {"op": "create_topics", "v": 1, "cid": 1,
                           "topics": [{"name": "t", "configs": {"timestamp_type": "log_append_time"}}]})
        clock.step_wall(-HOUR_MS)
        res = call(core, clock, {"op": "produce", "v": 1, "cid": 2, "batches": [{"topic": "t", "partition": 0}]},
                   [encode_batch([1], [None], [b"v"])])[0][1].header["results"][0]
        assert res["log_append_time"] == 1_700_000_000_000 - HOUR_MS
        out = call(core, clock, {"op": "fetch", "v": 1, "cid": 3, "max_wait_ms": 0,
                                 "partitions": [{"topic": "t", "partition": 0, "offset": 0}]})
        assert parse_header(out[0][1].frames[0]).max_timestamp == 1_700_000_000_000 - HOUR_MS
        stats = call(core, clock, {"op": "stats", "v": 1, "cid": 4})[0][1].header
        assert stats["broker"]["now_ms"] == 1_700_000_000_000 - HOUR_MS
    finally:
        core.close()
