"""The sink runner: a standalone worker's sink tasks read their partitions directly (no
consumer-group join) and still resume from, and commit to, the connector's group offsets; the
tail of a burst is committed (so written, by a task that buffers) once the topic goes quiet."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import connectors.sink_runner as sink_runner
from connectors.api import SinkConnector, SinkTask
from connectors.testing import running_worker, wait_until
from fabric.client import Admin, Producer

SEEN: list[tuple[int, str, int, int]] = []  # (task id, topic, partition, offset) of every record put
FLUSHED: list[float] = []  # when a RecordingSinkTask's flush ran (its pre_commit is the default: flush)
LOCK = threading.Lock()


class RecordingSinkTask(SinkTask):
    def start(self, config: dict[str, Any]) -> None:
        pass

    def put(self, records: list) -> None:
        with LOCK:
            SEEN.extend((self.context.task_id, r.topic, r.partition, r.offset) for r in records)

    def flush(self, offsets: Any) -> None:
        if offsets:
            FLUSHED.append(time.monotonic())


class RecordingSink(SinkConnector):
    task_class = RecordingSinkTask

    def task_configs(self, config: dict[str, Any], tasks_max: int) -> list[dict[str, Any]]:
        return [dict(config) for _ in range(tasks_max)]


@pytest.fixture
def slow_group_broker(brokers, tmp_path):
    """A broker whose empty groups wait 60 s before their first rebalance: a sink task that
    joined a group would see nothing within these tests' deadlines."""
    cfg = tmp_path / "broker.yaml"
    cfg.write_text("group_initial_rebalance_delay_ms: 60000\n")
    return brokers(extra_args=["--config", str(cfg)])


def _produce(bootstrap: str, topic: str, partitions: range, per_partition: int) -> None:
    with Producer(bootstrap) as p:
        for part in partitions:
            for i in range(per_partition):
                p.send(topic, f"{part}-{i}".encode(), partition=part)
        p.flush()


def test_standalone_sink_tasks_share_partitions_without_a_group_and_resume_from_commits(
        slow_group_broker, monkeypatch):
    bootstrap = slow_group_broker.bootstrap
    monkeypatch.setattr(sink_runner, "ASSIGN_REFRESH_S", 0.2)
    SEEN.clear()
    with Admin(bootstrap) as admin:
        admin.create_topic("events", partitions=4)
    _produce(bootstrap, "events", range(4), 50)
    yaml_text = f"""
worker: {{bootstrap: "{bootstrap}", rest_port: 0, offset_flush_interval_ms: 100}}
connectors:
  - {{name: rec, class: "{__name__}:RecordingSink", tasks_max: 3, value_converter: bytes, key_converter: bytes,
      topics_regex: "ev.*"}}
"""
    t0 = time.monotonic()
    with running_worker(yaml_text):
        wait_until(lambda: len(SEEN) >= 200, 20, "the 200 records")
        assert time.monotonic() - t0 < 20
        # Each partition is read by exactly one task, and every record once.
        owners: dict[tuple[str, int], set[int]] = {}
        for task, topic, part, _ in SEEN:
            owners.setdefault((topic, part), set()).add(task)
        assert sorted(owners) == [("events", p) for p in range(4)]
        assert all(len(t) == 1 for t in owners.values())
        assert len(SEEN) == len(set(SEEN)) == 200
        # A partition added later, and a new topic matching the pattern, are picked up.
        with Admin(bootstrap) as admin:
            admin.create_partitions("events", 5)
            admin.create_topic("everything", partitions=1)
        _produce(bootstrap, "events", range(4, 5), 10)
        _produce(bootstrap, "everything", range(1), 10)
        wait_until(lambda: len(SEEN) >= 220, 20, "the records of the new partition and topic")
        with Admin(bootstrap) as admin:
            group = admin.describe_group("connect-rec")
        assert not group.get("members"), "a standalone sink task joined the group"
    with Admin(bootstrap) as admin:
        committed = {(o["topic"], o["partition"]): o["offset"]
                     for o in admin.describe_group("connect-rec")["offsets"]}
    assert committed == {**{("events", p): 50 for p in range(4)}, ("events", 4): 10, ("everything", 0): 10}
    # A restarted worker resumes at exactly the committed offsets: only the new records arrive.
    before = len(SEEN)
    _produce(bootstrap, "events", range(5), 3)
    with running_worker(yaml_text):
        wait_until(lambda: len(SEEN) >= before + 15, 20, "the records produced while stopped")
        time.sleep(0.5)
    new = SEEN[before:]
    assert sorted((t, p, o) for _, t, p, o in new) == sorted(
        [("events", p, o) for p in range(4) for o in range(50, 53)] + [("events", 4, o) for o in range(10, 13)])


def test_a_sink_in_distributed_mode_still_joins_the_group(brokers, tmp_path):
    """With ``worker.group`` set the sink's tasks share partitions through the group protocol."""
    cfg = tmp_path / "broker.yaml"
    cfg.write_text("group_initial_rebalance_delay_ms: 100\n")
    bootstrap = brokers(extra_args=["--config", str(cfg)]).bootstrap
    SEEN.clear()
    with Admin(bootstrap) as admin:
        admin.create_topic("events", partitions=2)
    _produce(bootstrap, "events", range(2), 20)
    yaml_text = f"""
worker: {{bootstrap: "{bootstrap}", rest_port: 0, group: g1, offset_flush_interval_ms: 100}}
connectors:
  - {{name: rec2, class: "{__name__}:RecordingSink", tasks_max: 1, value_converter: bytes, topics: [events]}}
"""
    with running_worker(yaml_text):
        wait_until(lambda: len(SEEN) >= 40, 30, "the 40 records")
        with Admin(bootstrap) as admin:
            members = admin.describe_group("connect-rec2").get("members")
        assert members and len(members) == 1


def test_the_tail_of_a_burst_is_committed_when_the_topic_goes_quiet_not_at_the_interval(slow_group_broker):
    bootstrap = slow_group_broker.bootstrap
    SEEN.clear()
    FLUSHED.clear()
    with Admin(bootstrap) as admin:
        admin.create_topic("burst", partitions=1)
    yaml_text = f"""
worker: {{bootstrap: "{bootstrap}", rest_port: 0, offset_flush_interval_ms: 600000}}
connectors:
  - {{name: tail, class: "{__name__}:RecordingSink", value_converter: bytes, topics: [burst]}}
"""
    with running_worker(yaml_text):
        _produce(bootstrap, "burst", range(1), 25)
        t0 = time.monotonic()
        wait_until(lambda: len(SEEN) >= 25, 20, "the burst")

        def committed() -> int | None:
            with Admin(bootstrap) as admin:
                try:
                    offs = admin.describe_group("connect-tail").get("offsets", [])
                except Exception:  # noqa: BLE001 - nothing committed yet
                    return None
            return next((o["offset"] for o in offs if o["partition"] == 0), None)
        wait_until(lambda: committed() == 25, 20, "the burst's commit, long before the 10-minute interval")
        assert FLUSHED and FLUSHED[0] - t0 < 20
