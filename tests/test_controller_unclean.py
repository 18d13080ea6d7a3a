"""Unclean restarts (KIP-966): ``ControllerLogic`` rule 7, ``fabric/broker/restart.py`` and the
``intact_since`` a broker registers with.

The regression: cluster simulation seed 5430.  Broker 2 lost power (its unflushed log tail with
it) while the controller still counted it in every ISR; brokers 1 and 3 were killed (their page
cache kept every write) and re-registered first, which took them out of the ISRs; broker 2, left
the last ISR member, re-registered and was elected leader with an empty log: the acknowledged
records were truncated everywhere."""

from __future__ import annotations

import pytest

from fabric.broker.controller_link import ControllerLink
from fabric.broker.restart import intact_since, mark_clean_shutdown, restart_intact_since
from fabric.controller.records import RecordError, check_record
from tests.test_controller_logic import Harness


@pytest.fixture
def h() -> Harness:
    h = Harness()
    _, error, _ = h.do(h.logic.create_topic(name="orders", partitions=2, replication_factor=3,
                                            configs={"min_insync_replicas": 2}, now_ms=0))
    assert error is None
    return h


def _leaders(h: Harness, broker: int) -> list[int]:
    return [p for p in range(2) if h.part(p=p).leader == broker]


def test_seed_5430_a_power_cut_last_isr_member_is_not_elected(h):
    """The seed's order of registrations after the controller came back: 3 and 1 (killed: their
    writes intact), then 2 (power loss).  2 must not lead; 1 and 3 stay in the ISRs and lead."""
    assert all(h.part(p=p).isr == h.part(p=p).replicas for p in range(2))
    h.register(3)  # killed: intact since its registered incarnation
    h.register(1)
    assert all(sorted(h.part(p=p).isr) == [1, 2, 3] for p in range(2))
    h.register(2, unclean=True)  # the machine rebooted: its unflushed tail may be gone
    for p in range(2):
        part = h.part(p=p)
        assert part.leader in (1, 3) and 2 not in part.isr and sorted(part.isr) == [1, 3]
    assert not _leaders(h, 2)


def test_an_unclean_last_isr_member_leaves_the_isr_and_the_partition_stays_offline(h):
    for alive in ((2, 3), (2,)):  # 1, then 3 miss their sessions: 2 is left the last ISR member
        h.beat(*alive)
        h.tick(1000)
        h.beat(*alive)
        h.tick(1000)
    assert all(h.part(p=p).isr == [2] and h.part(p=p).leader == 2 for p in range(2))
    h.tick(2000)  # 2 goes too: offline, ISR kept
    assert all(h.part(p=p).isr == [2] and h.part(p=p).leader == -1 for p in range(2))
    h.register(2, unclean=True)
    for p in range(2):
        assert h.part(p=p).isr == [] and h.part(p=p).leader == -1
    h.register(1)
    h.register(3)
    h.beat(1, 2, 3)
    h.tick(100)
    assert all(h.part(p=p).leader == -1 for p in range(2)), "no replica is known to hold the acknowledged records"


def test_an_empty_isr_is_led_again_only_by_an_unclean_election(h):
    test_an_unclean_last_isr_member_leaves_the_isr_and_the_partition_stays_offline(h)
    h.do(h.logic.alter_topic_configs(topic="orders", now_ms=h.now, set={"unclean_leader_election": True}))
    h.beat(1, 2, 3)
    h.tick(300)
    for p in range(2):
        part = h.part(p=p)
        assert part.leader != -1 and part.isr == [part.leader]


def test_a_clean_restart_of_the_last_isr_member_leads_again(h):
    h.beat(2)
    h.tick(1000)
    h.beat(2)
    h.tick(1000)
    h.tick(2000)
    assert all(h.part(p=p).isr == [2] and h.part(p=p).leader == -1 for p in range(2))
    h.register(2)  # killed, same boot: its logs hold everything
    h.beat(2)
    assert all(h.part(p=p).isr == [2] and h.part(p=p).leader == 2 for p in range(2))


def test_a_clean_quick_restart_moves_leaderships_but_keeps_the_isr(h):
    led = _leaders(h, 1)
    epochs = [h.part(p=p).leader_epoch for p in range(2)]
    h.register(1)  # a new incarnation before its session ended
    assert not _leaders(h, 1) or all(h.part(p=p).leader_epoch > epochs[p] for p in led)
    assert all(sorted(h.part(p=p).isr) == [1, 2, 3] for p in range(2))


def test_an_unclean_quick_restart_leaves_every_isr(h):
    h.register(1, unclean=True)
    assert all(1 not in h.part(p=p).isr and h.part(p=p).leader in (2, 3) for p in range(2))


def test_intact_since_must_cover_the_registered_incarnation(h):
    h.register(2, incarnation=5, intact_since=1)  # incarnations 2-4 never registered: still covered
    assert all(2 in h.part(p=p).isr for p in range(2))
    h.register(2, incarnation=6, intact_since=6)  # a reboot after 5: only its own writes vouched for
    assert all(2 not in h.part(p=p).isr for p in range(2))


def test_only_an_offline_partition_may_have_an_empty_isr():
    base = {"type": "partition_change", "topic_id": "t", "partition": 0, "leader_epoch": 1, "partition_epoch": 1}
    check_record({**base, "leader": -1, "isr": []})
    part = {"replicas": [1], "leader": -1, "leader_epoch": 0, "partition_epoch": 0, "isr": []}
    check_record({"type": "create_topic", "name": "x", "topic_id": "t", "configs": {}, "internal": False,
                  "partitions": [part]})
    with pytest.raises(RecordError, match="not empty unless"):
        check_record({"type": "create_topic", "name": "x", "topic_id": "t", "configs": {}, "internal": False,
                      "partitions": [{**part, "leader": 1}]})


# ---------------------------------------------------------------------- restart.py


def test_intact_since_rules():
    assert intact_since(None, None, "b1") is None  # nothing recorded: nothing vouched for
    assert intact_since(None, (4, "b1", 2), "b1") == 2  # a crash, no reboot: the chain goes on
    assert intact_since(None, (4, "b1", 2), "b2") is None  # a reboot after a crash
    assert intact_since(4, (4, "b1", 2), "b2") == 2  # a clean shutdown, then a reboot
    assert intact_since(3, (4, "b1", 2), "b2") is None  # a marker of another incarnation
    assert intact_since(None, (4, None, 4), None) is None  # no boot id: a crash is unclean


def test_restart_intact_since_on_disk(tmp_path):
    assert restart_intact_since(tmp_path, 1, "boot-a") is None  # first start
    assert restart_intact_since(tmp_path, 2, "boot-a") == 1  # killed, same boot
    assert restart_intact_since(tmp_path, 3, "boot-a") == 1  # killed again before registering
    assert restart_intact_since(tmp_path, 4, "boot-b") is None  # power loss
    mark_clean_shutdown(tmp_path, 4)
    assert restart_intact_since(tmp_path, 5, "boot-c") == 4  # clean shutdown survives a reboot
    assert not (tmp_path / "meta" / "clean-shutdown").exists()  # removed at start (rule 1)
    assert restart_intact_since(tmp_path, 6, "boot-d") is None  # crashed after that start


def test_the_link_registers_with_intact_since_and_keeps_it_when_registering_again():
    link = ControllerLink(2, [1, 2, 3], {"host": "h", "port": 1, "pub_port": 2, "rack": None}, incarnation=7,
                          intact_since=5)
    _, register = link.poll(0)
    assert register["op"] == "register" and register["intact_since"] == 5
    link.on_reply({"cid": register["cid"], "metadata_offset": 3}, 0)
    link.state.offset = 3
    _, beat = link.poll(1)
    link.on_reply({"cid": beat["cid"], "error": {"name": "UNKNOWN_BROKER"}}, 1)
    _, again = link.poll(2)
    assert again["op"] == "register" and again["incarnation"] == 8 and again["intact_since"] == 5
    fresh = ControllerLink(2, [1, 2, 3], {"host": "h", "port": 1, "pub_port": 2, "rack": None}, incarnation=9)
    _, register = fresh.poll(0)
    assert register["intact_since"] is None  # (a power loss, or a first start)
    fresh.on_reply({"cid": register["cid"], "metadata_offset": 3}, 0)
    fresh.state.offset = 3
    _, beat = fresh.poll(1)
    fresh.on_reply({"cid": beat["cid"], "error": {"name": "STALE_BROKER_EPOCH"}}, 1)
    _, again = fresh.poll(2)
    assert again["incarnation"] == 10 and again["intact_since"] == 9  # its own writes since it registered


def test_a_leader_cannot_add_a_replaced_incarnation_to_the_isr(h):
    """KIP-903 at the controller: leader 1 saw broker 3's incarnation 1 catch up, but 3 restarted
    uncleanly meanwhile (incarnation 2, out of the ISR): the proposal must not add it."""
    h.register(3, unclean=True)
    part = h.part(p=0)
    assert 3 not in part.isr and part.leader == 1
    fields = dict(broker_id=1, topic_id="id1", partition=0, leader_epoch=part.leader_epoch,
                  partition_epoch=part.partition_epoch, isr=[1, 2, 3], now_ms=h.now)
    _, error, reply = h.do(h.logic.alter_partition(**fields, isr_incarnations=[1, 1, 1]))
    assert error is None and reply["isr"] == [1, 2] and 3 not in h.part(p=0).isr
    _, error, reply = h.do(h.logic.alter_partition(**fields, isr_incarnations=[1, 1, 2]))
    assert error is None and reply["isr"] == [1, 2, 3] and 3 in h.part(p=0).isr
    with pytest.raises(Exception, match="isr_incarnations"):
        h.logic.alter_partition(**{**fields, "partition_epoch": h.part(p=0).partition_epoch}, isr_incarnations=[1])
