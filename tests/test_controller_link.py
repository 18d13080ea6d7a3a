"""ControllerLink rule 5 (fabric/broker/controller_link.py): a restarted broker reports no
metadata image before its applied metadata holds its own registration, so it never acts on the
leaderships of its previous incarnation while it catches up in several fetches."""

from __future__ import annotations

from fabric.broker.controller_link import ControllerLink
from fabric.controller.records import encode_record

ENDPOINT = {"host": "127.0.0.1", "port": 9001, "pub_port": 9101, "rack": None}


def register(incarnation: int) -> bytes:
    return encode_record({"type": "register_broker", "id": 1, "host": "127.0.0.1", "port": 9001, "pub_port": 9101,
                          "rack": None, "incarnation": incarnation, "controller_port": None})


def topic(leader: int, epoch: int) -> bytes:
    return encode_record({"type": "create_topic", "name": "t", "topic_id": "tid", "configs": {}, "internal": False,
                          "partitions": [{"replicas": [1, 2], "leader": leader, "leader_epoch": epoch,
                                          "partition_epoch": 0, "isr": [1, 2]}]})


def fetch_reply(link: ControllerLink, records: list[tuple[int, bytes]], now: int) -> None:
    link._committed = max(index for index, _ in records)
    _, header = link.poll(now)
    assert header["op"] == "metadata_fetch"
    link.on_reply({"cid": header["cid"], "records": [list(r) for r in records], "offset": records[-1][0],
                   "committed": records[-1][0]}, now)


def registered_link(incarnation: int) -> ControllerLink:
    link = ControllerLink(1, [1, 2, 3], ENDPOINT, incarnation)
    _, header = link.poll(0)
    assert header["op"] == "register"
    link.on_reply({"cid": header["cid"], "metadata_offset": 0}, 0)
    return link


def test_a_restarted_broker_reports_no_image_until_its_own_registration_is_applied():
    link = registered_link(incarnation=2)
    fetch_reply(link, [(1, register(1)), (2, topic(leader=1, epoch=0))], 10)  # the old incarnation's world
    assert link.state.topics["t"].partitions[0].leader == 1 and not link.caught_up
    assert not link.image_changed  # it must not lead t-0 at epoch 0 again
    fetch_reply(link, [(3, register(2))], 20)
    assert link.caught_up and link.image_changed  # everything applied so far, reported at once
    link.image_changed = False
    fetch_reply(link, [(4, encode_record({"type": "fence_broker", "id": 1, "incarnation": 2}))], 30)
    assert link.image_changed  # from then on, every applied batch


def test_a_first_start_reports_the_image_that_holds_its_registration():
    link = registered_link(incarnation=1)
    fetch_reply(link, [(1, register(1)), (2, topic(leader=1, epoch=0))], 10)
    assert link.caught_up and link.image_changed
