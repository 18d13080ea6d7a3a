"""A partition answered with a retriable error is fetched again only after a back-off.

Without it a consumer whose metadata still named the wrong leader asked that broker again the
moment each NOT_LEADER came back: thousands of requests a second, for nothing."""

from collections import deque

import pytest

from fabric.client import fetch_pipeline as fp
from fabric.client.fetch_pipeline import FETCH_RETRY_BACKOFF_MS, FetchConfig, FetchPipeline, PartitionState
from fabric.client.group import TopicPartition

pytestmark = pytest.mark.unit

TP = TopicPartition("t", 0)
OTHER = TopicPartition("t", 1)


class FakeConn:
    endpoint = "tcp://fake:1"

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send(self, op, fields=None):
        self.sent.append(fields)
        return len(self.sent)


class NoPositions:
    def _init_positions(self, tps):
        raise AssertionError("positions are set")

    def _reset_positions(self, tps):
        raise AssertionError("no reset")


def _pipeline(clock: list[int], parts: dict) -> tuple[FetchPipeline, FakeConn]:
    conn = FakeConn()
    config = FetchConfig(auto_offset_reset="latest", fetch_pipeline_depth=1, standing_fetch_answers=1,
                         fetch_max_wait_ms=100, fetch_min_bytes=1, fetch_max_bytes=1 << 20,
                         max_partition_fetch_bytes=1 << 20)
    f = FetchPipeline(conn, config, NoPositions(), deque(), {})
    f.set_partitions(parts)
    return f, conn


def _reply(cid: int, partitions: list[dict]) -> tuple[dict, list]:
    return {"cid": cid, "partitions": partitions}, [b""] * len(partitions)


def test_not_leader_waits_out_the_back_off_and_other_partitions_keep_going(monkeypatch):
    clock = [1_000]
    monkeypatch.setattr(fp, "monotonic_ms", lambda: clock[0])
    parts = {TP: PartitionState(position=5, fetch_offset=5, high_watermark=10),
             OTHER: PartitionState(position=0, fetch_offset=0, high_watermark=10)}
    f, conn = _pipeline(clock, parts)
    f.fill()
    assert [p["partition"] for p in conn.sent[-1]["partitions"]] == [0, 1]
    f.on_reply(*_reply(1, [{"topic": "t", "partition": 0, "error": {"code": 18, "name": "NOT_LEADER",
                                                                       "message": "led by 2"}},
                           {"topic": "t", "partition": 1, "high_watermark": 10}]))
    assert f.refresh_wanted
    f.fill()  # at once: only the partition that was answered normally
    assert [p["partition"] for p in conn.sent[-1]["partitions"]] == [1]
    f.on_reply(*_reply(2, [{"topic": "t", "partition": 1, "high_watermark": 10}]))
    clock[0] += FETCH_RETRY_BACKOFF_MS - 1
    f.fill()
    assert [p["partition"] for p in conn.sent[-1]["partitions"]] == [1]
    f.on_reply(*_reply(3, [{"topic": "t", "partition": 1, "high_watermark": 10}]))
    clock[0] += 1
    f.fill()  # the back-off is over
    assert [p["partition"] for p in conn.sent[-1]["partitions"]] == [0, 1]


def test_a_partition_answered_only_with_errors_is_not_asked_again_at_once(monkeypatch):
    clock = [0]
    monkeypatch.setattr(fp, "monotonic_ms", lambda: clock[0])
    f, conn = _pipeline(clock, {TP: PartitionState(position=5, fetch_offset=5, high_watermark=10)})
    f.fill()
    f.on_reply(*_reply(1, [{"topic": "t", "partition": 0, "error": {"code": 18, "name": "NOT_LEADER",
                                                                       "message": "led by 2"}}]))
    for _ in range(100):  # the consumer's poll loop turning
        f.fill()
    assert len(conn.sent) == 1
    clock[0] += FETCH_RETRY_BACKOFF_MS
    f.fill()
    assert len(conn.sent) == 2
