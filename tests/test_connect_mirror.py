"""Mirror fail-over of consumer groups: offset syncs, translation, checkpoints, group commits in
the target cluster (MirrorMaker 2's idea), unit-tested and end to end with two real brokers."""

from __future__ import annotations

import json

import pytest

from connectors.builtin.mirror_offsets import OffsetSyncs
from connectors.testing import read_topic, running_worker, wait_until
from fabric.client import Admin, Consumer, Producer

TP = ("orders", 0)


@pytest.mark.unit
def test_translation_takes_the_greatest_sync_at_or_below_the_committed_offset():
    s = OffsetSyncs()
    assert s.translate(TP, 5) is None  # no sync: no safe answer
    s.record(TP, 10, 110)
    s.record(TP, 50, 160)
    s.record(TP, 90, 230)
    assert s.translate(TP, 9) is None  # below every sync
    assert s.translate(TP, 10) == 110
    assert s.translate(TP, 49) == 110  # resumes at the copy of 10: 39 duplicates, no gap
    assert s.translate(TP, 50) == 160
    assert s.translate(TP, 1000) == 230
    assert s.translate(("orders", 1), 50) is None  # per partition


@pytest.mark.unit
def test_syncs_at_one_offset_keep_the_greater_target_and_going_back_drops_later_ones():
    s = OffsetSyncs()
    s.record(TP, 10, 110)
    s.record(TP, 10, 115)
    s.record(TP, 10, 112)
    assert s.syncs(TP) == [(10, 115)]
    s.record(TP, 20, 125)
    s.record(TP, 30, 135)
    s.record(TP, 20, 140)  # back to 20 (a replay): the sync at 30 may no longer hold; 20 keeps the max
    assert s.syncs(TP) == [(10, 115), (20, 140)]
    s.record(TP, 5, 150)
    assert s.syncs(TP) == [(5, 150)]


@pytest.mark.unit
def test_the_store_is_bounded_and_drops_the_oldest_syncs():
    s = OffsetSyncs(per_partition=3)
    for u in range(0, 50, 10):
        s.record(TP, u, u + 100)
    assert s.syncs(TP) == [(20, 120), (30, 130), (40, 140)]
    assert s.translate(TP, 15) is None and s.translate(TP, 35) == 130


@pytest.fixture
def broker_pair(brokers, tmp_path):
    cfg = tmp_path / "broker.yaml"
    cfg.write_text("group_initial_rebalance_delay_ms: 100\n")
    return brokers(extra_args=["--config", str(cfg)]), brokers(extra_args=["--config", str(cfg)])


def _upstream_offset(record) -> tuple[int, int]:
    topic_part, off = dict(record.headers)["mirror.offset"].decode().split("@")
    return int(topic_part.split("/")[1]), int(off)


@pytest.mark.process
def test_a_group_fails_over_to_the_target_at_a_translated_offset_without_skipping(broker_pair):
    """The group consumes part of "orders" on the source cluster; the mirror copies it into a
    target topic that already held 37 other records per partition (so the offsets differ) and
    commits the group's translated offsets there.  The group then consumes on the target: with what
    it consumed on the source it has every record (duplicates allowed, counted), and it never reads
    the target's older records."""
    up, down = broker_pair
    with Admin(up.bootstrap) as a:
        a.create_topic("orders", partitions=2)
    with Admin(down.bootstrap) as a:
        a.create_topic("a.orders", partitions=2)
    with Producer(down.bootstrap) as p:
        for i in range(74):
            p.send("a.orders", b"older", partition=i % 2)
        p.flush()

    def produce(first: int, n: int) -> None:
        with Producer(up.bootstrap) as p:
            for i in range(first, first + n):
                p.send("orders", f"v{i}".encode(), key=f"k{i}".encode(), partition=i % 2)
            p.flush()

    def copied() -> int:
        with Admin(down.bootstrap) as a:
            return sum(o["latest"] for o in a.topic_offsets("a.orders")) - 74

    yaml_text = f"""
worker: {{bootstrap: "{down.bootstrap}", rest_port: 0, offset_flush_interval_ms: 100}}
connectors:
  - {{name: m, class: mirror-source, key_converter: bytes, value_converter: bytes,
      config: {{source_bootstrap: "{up.bootstrap}", topics: [orders], topic_prefix: "a.", offset_header: true,
                groups: [billing], sync_group_offsets: true, checkpoint_interval_ms: 100}}}}
"""
    total = 800
    produce(0, 400)
    with running_worker(yaml_text):
        wait_until(lambda: copied() == 400, 30, "the first 400 copies")
        produce(400, 400)  # a second wave: the mirror syncs offsets after each of its commits
        wait_until(lambda: copied() == total, 30, "all 800 copies")
        seen_up: set[tuple[int, int]] = set()
        with Consumer(up.bootstrap, group_id="billing", auto_offset_reset="earliest", enable_auto_commit=False,
                      max_poll_records=50) as c:
            c.subscribe(["orders"])
            while len(seen_up) < 500:
                for r in c.poll(200):
                    seen_up.add((r.partition, r.offset))
            committed = {p: max(o for q, o in seen_up if q == p) + 1 for p in (0, 1)}
            c.commit({("orders", p): o for p, o in committed.items()})
        consumed_up = {(p, o) for p, o in seen_up if o < committed[p]}

        def target_offsets() -> dict | None:
            with Admin(down.bootstrap) as a:
                try:
                    offs = {o["partition"]: o["offset"] for o in a.describe_group("billing").get("offsets", [])
                            if o["topic"] == "a.orders"}
                except Exception:  # noqa: BLE001 - not committed yet
                    return None
            return offs if len(offs) == 2 else None
        wait_until(target_offsets, 30, "the group's translated offsets in the target")
        checkpoints = [json.loads(r.value) for r in read_topic(down.bootstrap, "mirror-checkpoints")]
    translated = target_offsets()  # final (a later checkpoint may have moved them forward)
    assert {(c["partition"], c["upstream_offset"]) for c in checkpoints} >= {(p, committed[p]) for p in (0, 1)}
    for p in (0, 1):
        # beyond the target's 37 older records, and not past the copy of the group's next record
        assert 37 <= translated[p] <= committed[p] + 37, (p, translated, committed)
    got: list = []
    with Consumer(down.bootstrap, group_id="billing", auto_offset_reset="earliest", enable_auto_commit=False) as c:
        c.subscribe(["a.orders"])
        want_new = total - len(consumed_up)
        deadline_reads = 0
        while len({_upstream_offset(r) for r in got} - consumed_up) < want_new:
            got.extend(c.poll(200))
            deadline_reads += 1
            assert deadline_reads < 300, "the group did not get the rest on the target"
    assert all(r.value != b"older" for r in got)  # it resumed past the target's own records
    on_target = [_upstream_offset(r) for r in got]
    assert consumed_up | set(on_target) == {(i % 2, i // 2) for i in range(total)}  # nothing skipped
    duplicates = sum(1 for x in on_target if x in consumed_up)
    assert duplicates == sum(committed[p] - (translated[p] - 37) for p in (0, 1))  # exactly the translation's slack
    print(f"group fail-over: {len(consumed_up)} consumed on the source, {len(on_target)} on the target, "
          f"{duplicates} duplicates")
