"""The client's metadata cache: answers of several brokers merged, routes and staleness."""

from __future__ import annotations

from fabric.client.metadata import MetadataCache
from fabric.client.pool import _merged


def reply(node: int, host: str, port: int, topics: dict[str, int] | None = None, *, errors=(), epoch=0,
          brokers=None):
    ts = [{"name": n, "partitions": [{"partition": p, "leader": node, "leader_epoch": epoch} for p in range(k)]}
          for n, k in (topics or {}).items()]
    ts += [{"name": n, "partitions": [], "error": {"code": 11, "name": "UNKNOWN_TOPIC_OR_PARTITION"}} for n in errors]
    return {"brokers": brokers or [{"node_id": node, "host": host, "port": port}], "topics": ts}


def test_independent_brokers_are_merged_each_topic_routed_to_the_broker_that_knows_it():
    cache = MetadataCache()
    cache.update(reply(1, "127.0.0.1", 7001, {"x": 2}, errors=["y"]), "tcp://127.0.0.1:7001", 0)
    cache.update(reply(2, "127.0.0.1", 7002, {"y": 3}, errors=["x"]), "tcp://127.0.0.1:7002", 0)
    assert cache.leader("x", 1) == 1 and cache.leader("y", 2) == 2 and cache.leader("x", 2) is None
    assert cache.endpoint(1) == "tcp://127.0.0.1:7001" and cache.endpoint(2) == "tcp://127.0.0.1:7002"
    assert cache.partitions("y") == 3 and cache.partitions("z") is None


def test_a_single_broker_is_reached_the_way_it_was_reached_and_wildcards_use_that_host():
    cache = MetadataCache()
    cache.update(reply(0, "broker.internal", 7171, {"t": 1}), "tcp://10.0.0.5:7171", 0)
    assert cache.endpoint(0) == "tcp://10.0.0.5:7171"  # its advertised name may not resolve here
    two = [{"node_id": 1, "host": "0.0.0.0", "port": 7001}, {"node_id": 2, "host": "h2", "port": 7002}]
    cache.update(reply(1, "", 0, {"t": 1}, brokers=two), "tcp://10.0.0.9:7001", 0)
    assert cache.endpoint(1) == "tcp://10.0.0.9:7001" and cache.endpoint(2) == "tcp://h2:7002"


def test_version_grows_with_changes_only_and_an_older_epoch_does_not_win():
    cache = MetadataCache()
    cache.update(reply(1, "a", 1, {"t": 1}, epoch=5), "tcp://a:1", 0)
    v = cache.version
    cache.update(reply(1, "a", 1, {"t": 1}, epoch=5), "tcp://a:1", 0)
    assert cache.version == v
    cache.update(reply(2, "b", 2, {"t": 1}, epoch=4), "tcp://b:2", 0)  # a lagging broker's view
    assert cache.leader("t", 0) == 1
    cache.update(reply(2, "b", 2, {"t": 1}, epoch=6), "tcp://b:2", 0)
    assert cache.leader("t", 0) == 2 and cache.version > v


def test_staleness_by_age_and_by_invalidation():
    cache = MetadataCache(max_age_ms=1000)
    assert cache.stale(0)  # never refreshed
    cache.update(reply(1, "a", 1, {"t": 1}), "tcp://a:1", 0)
    cache.refreshed(100)
    assert not cache.stale(1099) and cache.stale(1100)
    cache.refreshed(2000)
    v = cache.version
    cache.invalidate("t")
    assert cache.stale(2001) and cache.partitions("t") is None and cache.version == v + 1


def test_merged_reply_keeps_the_order_asked_and_a_known_topic_over_an_error():
    a = reply(1, "a", 1, {"x": 1}, errors=["y"])
    b = reply(2, "b", 2, {"y": 1}, errors=["x"])
    m = _merged([a, b], ["y", "x"])
    assert [t["name"] for t in m["topics"]] == ["y", "x"] and not any("error" in t for t in m["topics"])
    assert [x["node_id"] for x in m["brokers"]] == [1, 2]
