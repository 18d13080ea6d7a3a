"""create_topics on a cluster forwards what SPEC.md 13.1 promises to the controller: the request's
``min_insync_replicas`` field reaches the controller's ``create_topic`` as a topic config (it was
silently dropped before, so every topic got the broker's default)."""

from types import SimpleNamespace

import pytest

from fabric.broker.cluster_handlers import Handlers
from fabric.clock import Now
from fabric.protocol.messages import parse_request

pytestmark = pytest.mark.unit


class _Node:
    def __init__(self) -> None:
        self.forwarded: list[dict] = []

    def forward(self, header, done=None, now_ms=0) -> None:
        self.forwarded.append(header)


def _forwarded(topic: dict) -> dict:
    node = _Node()
    core = SimpleNamespace(cluster=node, config=SimpleNamespace(default_partitions=1))
    env, req = parse_request({"op": "create_topics", "v": 1, "cid": 1, "topics": [topic]})
    assert Handlers(core).create_topics(b"peer", env, req, [], Now(0, 0)) == []  # (answered once committed)
    [header] = node.forwarded
    return header


def test_min_insync_replicas_field_reaches_the_controller():
    header = _forwarded({"name": "orders", "partitions": 3, "replication_factor": 3, "min_insync_replicas": 2})
    assert header == {"op": "create_topic", "name": "orders", "partitions": 3, "replication_factor": 3,
                      "configs": {"min_insync_replicas": 2}}


def test_without_the_field_configs_are_forwarded_unchanged():
    header = _forwarded({"name": "orders", "configs": {"min_insync_replicas": 1}})
    assert header == {"op": "create_topic", "name": "orders", "partitions": 1, "configs": {"min_insync_replicas": 1}}
