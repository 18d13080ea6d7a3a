"""``Admin``: topics, offsets and broker information, one blocking call each (always with a timeout).

Per-topic failures inside a multi-topic reply are raised as the typed error of the first failing
topic, unless the method returns per-topic results (``create_topics``/``delete_topics``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import zmq

from ..protocol.errors import FabricError, exception_for
from .. import __version__
from ..protocol.messages import (AlterTopicConfigsRequest, ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest,
                                 DeleteTopicsRequest, DescribeTopicsRequest, ListOffsetsRequest,
                                 ListTopicsRequest, MetadataRequest, NewTopic, OffsetQuery)
from .connection import Connection, parse_bootstrap


@dataclass(frozen=True)
class TopicResult:
    name: str
    error: FabricError | None


class Admin:
    def __init__(self, bootstrap: str | Sequence[str] = "127.0.0.1:7171", *, timeout_ms: int = 30_000,
                 ctx: zmq.Context | None = None, client_id: str = "fabric-admin") -> None:
        self.endpoints = parse_bootstrap(bootstrap)
        self.timeout_ms = timeout_ms
        self.client_id = client_id
        self.conn = Connection(self.endpoints[0], ctx, client_id)

    def __enter__(self) -> "Admin":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def _call(self, op: str, body: Any = None, timeout_ms: int | None = None) -> dict[str, Any]:
        header, _ = self.conn.request(op, body, timeout_ms=timeout_ms or self.timeout_ms)
        return header

    # ------------------------------------------------------------------ info
    def api_versions(self) -> dict[str, Any]:
        return self._call("api_versions", ApiVersionsRequest(client=f"{self.client_id} fabric-python/{__version__}"))

    def metadata(self, topics: Iterable[str] | None = None, allow_auto_create: bool = False) -> dict[str, Any]:
        req = MetadataRequest(topics=None if topics is None else tuple(topics), allow_auto_create=allow_auto_create)
        return self._call("metadata", req)

    def broker_stats(self) -> dict[str, Any]:
        return self._call("broker_stats")

    # ------------------------------------------------------------------ topics
    def create_topics(self, topics: Sequence[NewTopic], validate_only: bool = False) -> list[TopicResult]:
        rep = self._call("create_topics", CreateTopicsRequest(topics=tuple(topics), validate_only=validate_only))
        return [TopicResult(t["name"], exception_for(t["error"]) if "error" in t else None) for t in rep["topics"]]

    def create_topic(self, name: str, partitions: int | None = None, configs: dict[str, Any] | None = None,
                     replication_factor: int | None = None, validate_only: bool = False) -> None:
        res = self.create_topics([NewTopic(name=name, partitions=partitions, replication_factor=replication_factor,
                                           configs=dict(configs or {}))], validate_only)[0]
        if res.error is not None:
            raise res.error

    def delete_topics(self, names: Sequence[str]) -> list[TopicResult]:
        rep = self._call("delete_topics", DeleteTopicsRequest(topics=tuple(names)))
        return [TopicResult(t["name"], exception_for(t["error"]) if "error" in t else None) for t in rep["topics"]]

    def delete_topic(self, name: str) -> None:
        res = self.delete_topics([name])[0]
        if res.error is not None:
            raise res.error

    def list_topics(self, internal: bool = False) -> list[dict[str, Any]]:
        return self._call("list_topics", ListTopicsRequest(internal=internal))["topics"]

    def describe_topics(self, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        rep = self._call("describe_topics", DescribeTopicsRequest(topics=None if names is None else tuple(names)))
        for t in rep["topics"]:
            if "error" in t:
                raise exception_for(t["error"])
        return rep["topics"]

    def describe_topic(self, name: str) -> dict[str, Any]:
        return self.describe_topics([name])[0]

    def alter_topic_configs(self, name: str, set: dict[str, Any] | None = None,
                            delete: Sequence[str] = ()) -> dict[str, Any]:
        return self._call("alter_topic_configs",
                          AlterTopicConfigsRequest(topic=name, set=dict(set or {}), delete=tuple(delete)))

    def create_partitions(self, name: str, count: int) -> int:
        return self._call("create_partitions", CreatePartitionsRequest(topic=name, count=count))["partitions"]

    def partitions_for(self, topic: str) -> int:
        meta = self.metadata([topic])
        t = meta["topics"][0]
        if "error" in t:
            raise exception_for(t["error"])
        return len(t["partitions"])

    # ------------------------------------------------------------------ offsets
    def list_offsets(self, queries: Sequence[tuple[str, int, Any]]) -> list[dict[str, Any]]:
        """``queries``: (topic, partition, "earliest" | "latest" | timestamp_ms).  Each result has
        ``offset`` (-1 when no record has a timestamp >= the one asked) and ``timestamp``."""
        req = ListOffsetsRequest(partitions=tuple(OffsetQuery(topic=t, partition=p, at=a) for t, p, a in queries))
        rep = self._call("list_offsets", req)
        for r in rep["partitions"]:
            if "error" in r:
                raise exception_for(r["error"])
        return rep["partitions"]

    def topic_offsets(self, topic: str) -> list[dict[str, Any]]:
        """Per partition: earliest and latest offsets (and the record count between them)."""
        n = self.partitions_for(topic)
        early = self.list_offsets([(topic, p, "earliest") for p in range(n)])
        late = self.list_offsets([(topic, p, "latest") for p in range(n)])
        return [{"partition": p, "earliest": e["offset"], "latest": l["offset"], "records": l["offset"] - e["offset"]}
                for p, (e, l) in enumerate(zip(early, late))]
