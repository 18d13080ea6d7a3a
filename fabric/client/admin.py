"""``Admin``: topics, offsets, consumer groups and broker information, one blocking call each
(always with a timeout).

Per-topic failures inside a multi-topic reply are raised as the typed error of the first failing
topic, unless the method returns per-topic results (``create_topics``/``delete_topics``).  Group
operations go to the group's coordinator (``find_coordinator``, retried when it moves); the
lag and offset-reset arithmetic lives here so the CLI and dashboard stay thin.

Routing (``pool.Cluster``): a request about one topic goes to a broker that knows it (the
leader of its partition 0, from metadata merged over every bootstrap broker); offsets and fetches
go to each partition's leader; cluster-wide listings (``list_topics``, ``list_groups``) ask every
broker and merge.  With one bootstrap broker every request goes to it, as always.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import zmq

from ..groups.messages import (CommitOffset, DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest,
                               ListGroupsRequest, OffsetCommitRequest)
from ..protocol.errors import FabricError, error_map, exception_for
from .. import __version__
from ..protocol.messages import (AlterTopicConfigsRequest, ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest,
                                 DeleteTopicsRequest, DescribeTopicsRequest, ListOffsetsRequest,
                                 ListTopicsRequest, NewTopic, OffsetQuery)
from ..protocol.messages import FetchPartition, FetchRequest, InitProducerIdRequest
from ..records.batch import records_in
from .connection import ClientError, Connection, RequestTimeoutError, parse_bootstrap
from .coordinator_link import CoordinatorLink
from .pool import Cluster

EACH_SETTLE_MS = 1000  # after the first answer to a listing, how long the other bootstrap brokers may take
RESET_STRATEGIES = ("earliest", "latest", "offset", "datetime", "shift-by")
LAG_FETCH_BYTES = 64 << 10  # per partition, to read the timestamp of the first unconsumed record


@dataclass(frozen=True)
class TopicResult:
    name: str
    error: FabricError | None


@dataclass(frozen=True)
class GroupResult:
    group_id: str
    error: FabricError | None


class Admin:
    def __init__(self, bootstrap: str | Sequence[str] = "127.0.0.1:7171", *, timeout_ms: int = 30_000,
                 ctx: zmq.Context | None = None, client_id: str = "fabric-admin") -> None:
        self.endpoints = parse_bootstrap(bootstrap)
        self.timeout_ms = timeout_ms
        self.client_id = client_id
        self.cluster = Cluster(self.endpoints, ctx=ctx, client_id=client_id, timeout_ms=timeout_ms)
        self._live: int | None = 0 if len(self.endpoints) == 1 else None  # bootstrap index that answers

    @property
    def conn(self) -> Connection:
        """The connection for cluster-level requests: the first bootstrap broker, or with several
        the one that answered first (a cluster's first broker may be the one that is down)."""
        if self._live is None:
            self._live = self.cluster.answering_bootstrap()
            if self._live is None:
                return self.cluster.bootstrap()  # (nobody answers: the request times out as it did)
        return self.cluster.bootstrap(self._live)

    def __enter__(self) -> "Admin":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.cluster.close()

    def _call(self, op: str, body: Any = None, timeout_ms: int | None = None,
              topic: str | None = None) -> dict[str, Any]:
        """``op`` to the first bootstrap broker, or with ``topic`` to a broker that knows it."""
        conn = self.conn if topic is None else self.cluster.for_topic(topic)
        try:
            header, _ = conn.request(op, body, timeout_ms=timeout_ms or self.timeout_ms)
        except ClientError:
            if topic is not None or len(self.endpoints) == 1:
                raise
            self._live = None  # that broker went silent: the next request asks who answers
            raise
        return header

    def _each_broker(self, op: str, body: Any) -> list[dict[str, Any]]:
        """``op`` to every bootstrap broker at once (cluster-wide listings of independent
        brokers); the answers that came, in bootstrap order.  A silent broker (down, cut off) is
        left out once another has answered and ``EACH_SETTLE_MS`` have passed: one dead broker of a
        cluster's bootstrap list used to fail every listing after its whole timeout."""
        if len(self.endpoints) == 1:
            return [self._call(op, body)]
        conns = [self.cluster.bootstrap(i) for i in range(len(self.endpoints))]
        cids = {id(c): c.send(op, body) for c in conns}
        answers: dict[int, dict[str, Any]] = {}
        poller = zmq.Poller()
        for c in conns:
            poller.register(c.socket, zmq.POLLIN)
        deadline = time.monotonic() + self.timeout_ms / 1000
        while len(answers) < len(conns) and (left := deadline - time.monotonic()) > 0:
            ready = dict(poller.poll(max(1, int(left * 1000))))
            for i, c in enumerate(conns):
                if c.socket in ready and i not in answers and (got := c.recv(0)) is not None:
                    if got[0].get("cid") == cids[id(c)]:
                        answers[i] = got[0]
                        deadline = min(deadline, time.monotonic() + EACH_SETTLE_MS / 1000)
        if not answers:
            raise RequestTimeoutError(f"no reply to {op} from {', '.join(self.endpoints)} within {self.timeout_ms} ms")
        for header in answers.values():
            if "error" in header:
                raise exception_for(header["error"])
        return [answers[i] for i in sorted(answers)]

    def init_producer_id(self, producer_id: int = -1, producer_epoch: int = -1,
                         timeout_ms: int | None = None) -> tuple[int, int]:
        """SPEC 14.2: a new (producer id, epoch), or ``producer_id``'s next epoch.  Each
        bootstrap broker is asked in turn until one answers."""
        body = InitProducerIdRequest(producer_id=producer_id, producer_epoch=producer_epoch)
        last: Exception | None = None
        for i in range(len(self.endpoints)):
            try:
                header, _ = self.cluster.bootstrap(i).request("init_producer_id", body,
                                                               timeout_ms=timeout_ms or self.timeout_ms)
                return header["producer_id"], header["producer_epoch"]
            except (ClientError, FabricError) as exc:
                last = exc
        assert last is not None
        raise last

    # ------------------------------------------------------------------ info
    def api_versions(self) -> dict[str, Any]:
        return self._call("api_versions", ApiVersionsRequest(client=f"{self.client_id} fabric-python/{__version__}"))

    def metadata(self, topics: Iterable[str] | None = None, allow_auto_create: bool = False) -> dict[str, Any]:
        """Merged over every bootstrap broker (``pool.Cluster.refresh``): with several
        independent brokers, each topic as its leader describes it."""
        return self.cluster.refresh(topics, allow_auto_create)

    def cluster_status(self) -> dict[str, Any]:
        """A cluster's health (SPEC "Cluster"): the controller's Raft view, brokers, partitions
        under-replicated, under min ISR, offline.  A single node answers POLICY_VIOLATION."""
        return self._call("cluster_status", {})

    def broker_stats(self) -> dict[str, Any]:
        return self._call("broker_stats")

    def stats(self, topics: Iterable[str] | None = None, *, partitions: bool = True, groups: bool = True,
              histograms: bool = False) -> dict[str, Any]:
        """Everything an operator watches (SPEC 5.14): operations with latency, topics and
        partitions with traffic and offsets, groups with lag in records and ms, fsyncs."""
        return self._call("stats", {"topics": None if topics is None else list(topics), "partitions": partitions,
                                    "groups": groups, "histograms": histograms})

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
        if len(self.endpoints) == 1 or not names:
            rep = self._call("delete_topics", DeleteTopicsRequest(topics=tuple(names)))
            return [TopicResult(t["name"], exception_for(t["error"]) if "error" in t else None) for t in rep["topics"]]
        out = []
        for name in names:  # each to a broker that knows it
            t = self._call("delete_topics", DeleteTopicsRequest(topics=(name,)), topic=name)["topics"][0]
            self.cluster.cache.invalidate(name)
            out.append(TopicResult(t["name"], exception_for(t["error"]) if "error" in t else None))
        return out

    def delete_topic(self, name: str) -> None:
        res = self.delete_topics([name])[0]
        if res.error is not None:
            raise res.error

    def list_topics(self, internal: bool = False) -> list[dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        for rep in self._each_broker("list_topics", ListTopicsRequest(internal=internal)):
            for t in rep["topics"]:
                rows.setdefault(t["name"], t)
        return list(rows.values()) if len(rows) <= 1 or len(self.endpoints) == 1 else [rows[n] for n in sorted(rows)]

    def describe_topics(self, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        if names is None or len(self.endpoints) == 1:
            reps = self._each_broker("describe_topics", DescribeTopicsRequest(topics=None if names is None
                                                                             else tuple(names)))
            topics = [t for rep in reps for t in rep["topics"]]
        else:
            topics = [self._call("describe_topics", DescribeTopicsRequest(topics=(n,)), topic=n)["topics"][0]
                      for n in names]
        for t in topics:
            if "error" in t:
                raise exception_for(t["error"])
        return topics

    def describe_topic(self, name: str) -> dict[str, Any]:
        return self.describe_topics([name])[0]

    def alter_topic_configs(self, name: str, set: dict[str, Any] | None = None,
                            delete: Sequence[str] = ()) -> dict[str, Any]:
        return self._call("alter_topic_configs",
                          AlterTopicConfigsRequest(topic=name, set=dict(set or {}), delete=tuple(delete)), topic=name)

    def create_partitions(self, name: str, count: int) -> int:
        n = self._call("create_partitions", CreatePartitionsRequest(topic=name, count=count), topic=name)["partitions"]
        self.cluster.cache.invalidate(name)
        return n

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
        if len(self.endpoints) == 1 or not queries:
            req = ListOffsetsRequest(partitions=tuple(OffsetQuery(topic=t, partition=p, at=a) for t, p, a in queries))
            results = self._call("list_offsets", req)["partitions"]
        else:  # each topic's queries to a broker that knows it, answers back in the order asked
            by_topic: dict[str, list[int]] = {}
            for i, q in enumerate(queries):
                by_topic.setdefault(q[0], []).append(i)
            results = [None] * len(queries)
            for topic, idx in by_topic.items():
                req = ListOffsetsRequest(partitions=tuple(OffsetQuery(topic=topic, partition=queries[i][1],
                                                                      at=queries[i][2]) for i in idx))
                for i, r in zip(idx, self._call("list_offsets", req, topic=topic)["partitions"]):
                    results[i] = r
        for r in results:
            if "error" in r:
                raise exception_for(r["error"])
        return results

    def topic_offsets(self, topic: str) -> list[dict[str, Any]]:
        """Per partition: earliest and latest offsets (and the record count between them)."""
        n = self.partitions_for(topic)
        early = self.list_offsets([(topic, p, "earliest") for p in range(n)])
        late = self.list_offsets([(topic, p, "latest") for p in range(n)])
        return [{"partition": p, "earliest": e["offset"], "latest": l["offset"], "records": l["offset"] - e["offset"]}
                for p, (e, l) in enumerate(zip(early, late))]

    # ------------------------------------------------------------------ consumer groups
    def _group_call(self, group_id: str, op: str, body: Any) -> dict[str, Any]:
        link = CoordinatorLink(self.endpoints, group_id, client_id=self.client_id,
                               request_timeout_ms=self.timeout_ms, pool=self.cluster.pool)
        try:
            return link.request(op, body)
        finally:
            link.close()

    def find_coordinator(self, group_id: str) -> dict[str, Any]:
        """``{node_id, host, port}`` of the broker coordinating ``group_id``."""
        rep = self._call("find_coordinator", FindCoordinatorRequest(group_id=group_id))
        return {k: rep[k] for k in ("node_id", "host", "port")}

    def list_groups(self, states: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """``{group_id, state, protocol, members}`` of every group, asking every broker (each lists
        the groups it coordinates)."""
        req = ListGroupsRequest(states=None if states is None else tuple(s.upper() for s in states))
        self.metadata([])
        brokers = sorted(self.cluster.cache.brokers)
        replies = []
        if len(brokers) <= 1:  # this one (also when its advertised address is not ours to use)
            replies.append(self._call("list_groups", req))
        else:
            for node in brokers:
                replies.append(self.cluster.broker(node).request("list_groups", req, timeout_ms=self.timeout_ms)[0])
        rows = {g["group_id"]: g for rep in replies for g in rep["groups"]}
        return [rows[g] for g in sorted(rows)]

    def describe_group(self, group_id: str) -> dict[str, Any]:
        """State, protocol, generation, members (with assignments) and committed offsets; raises
        ``GroupIdNotFoundError`` for a group without members or offsets."""
        rep = self._group_call(group_id, "describe_groups", DescribeGroupsRequest(group_ids=(group_id,)))
        group = rep["groups"][0]
        if "error" in group:
            raise exception_for(group["error"])
        return group

    def group_lag(self, group_id: str, now_ms: int | None = None) -> dict[str, Any]:
        """``describe_group`` plus one row per partition of every topic the group subscribes to or
        has committed offsets for: ``committed`` (None: nothing committed), ``log_end``, ``lag``
        (log end - committed), ``lag_seconds`` (now - timestamp of the record at the committed
        offset; 0 when caught up) and its ``owner`` member.  Totals: ``total_lag`` and
        ``max_lag_seconds``."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        group = self.describe_group(group_id)
        committed = {(o["topic"], o["partition"]): o["offset"] for o in group.get("offsets", [])}
        owners: dict[tuple[str, int], dict[str, Any]] = {}
        topics = {t for t, _ in committed}
        for m in group.get("members", []):
            topics.update(m.get("topics", []))
            for entry in m.get("assignment", []):
                owners.update(((entry["topic"], p), m) for p in entry["partitions"])
        tps: list[tuple[str, int]] = []
        known: list[tuple[str, int]] = []  # partitions that exist
        for topic in sorted(topics):
            try:
                n = self.partitions_for(topic)
            except FabricError:  # a deleted topic: keep what the group committed
                tps += sorted(tp for tp in committed if tp[0] == topic)
                continue
            tps += [(topic, p) for p in range(n)]
            known += [(topic, p) for p in range(n)]
        ends = dict(zip(known, (r["offset"] for r in self.list_offsets([(t, p, "latest") for t, p in known]))))
        starts = dict(zip(known, (r["offset"] for r in self.list_offsets([(t, p, "earliest") for t, p in known]))))
        rows = []
        for tp in tps:
            c, end = committed.get(tp), ends.get(tp)
            lag = None if c is None or end is None else max(0, end - c)
            owner = owners.get(tp)
            rows.append({"topic": tp[0], "partition": tp[1], "committed": c, "log_end": end, "lag": lag,
                         "lag_seconds": 0.0 if lag == 0 else None,
                         "owner": owner["member_id"] if owner else None,
                         "client_id": owner.get("client_id") if owner else None,
                         "host": owner.get("host") if owner else None})
        lagging = {(r["topic"], r["partition"]): max(r["committed"], starts[(r["topic"], r["partition"])])
                   for r in rows if r["lag"]}
        stamps = self._first_timestamps(lagging)
        for r in rows:
            ts = stamps.get((r["topic"], r["partition"]))
            if ts is not None:
                r["lag_seconds"] = max(0.0, (now_ms - ts) / 1000)
        group["partitions"] = rows
        group["total_lag"] = sum(r["lag"] or 0 for r in rows)
        group["max_lag_seconds"] = max((r["lag_seconds"] or 0.0 for r in rows), default=0.0)
        return group

    def _first_timestamps(self, at: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """Timestamp of the record at each offset, by one small fetch (the data path)."""
        if not at:
            return {}
        parts = tuple(FetchPartition(topic=t, partition=p, offset=o, max_bytes=LAG_FETCH_BYTES)
                      for (t, p), o in sorted(at.items()))
        out: dict[tuple[str, int], int] = {}
        by_topic: dict[str, list[FetchPartition]] = {}
        for part in parts:
            by_topic.setdefault(part.topic, []).append(part)
        answers = []
        for topic, tparts in by_topic.items() if len(self.endpoints) > 1 else [(None, list(parts))]:
            conn = self.conn if topic is None else self.cluster.for_topic(topic)
            header, frames = conn.request("fetch", FetchRequest(max_wait_ms=0, min_bytes=0, partitions=tuple(tparts)),
                                          timeout_ms=self.timeout_ms)
            answers += zip(header["partitions"], frames)
        for meta, data in answers:
            tp = (meta["topic"], meta["partition"])
            if "error" not in meta and tp in at:
                recs = records_in(tp[0], tp[1], data, at[tp])
                if recs:
                    out[tp] = recs[0].timestamp
        return out

    def reset_group_offsets(self, group_id: str, targets: Sequence[str | tuple[str, int]], strategy: str,
                            value: int | None = None, execute: bool = False) -> list[dict[str, Any]]:
        """New committed offsets for ``targets`` (topic names: every partition; or ``(topic,
        partition)``): ``strategy`` "earliest", "latest", "offset" (``value``), "datetime" (``value``
        = ms since the epoch: the first record at or after it) or "shift-by" (committed + ``value``),
        clamped to [earliest, latest].  Returns rows ``{topic, partition, current, new}``; commits
        them only with ``execute``, and only while the group has no members (GROUP_NOT_EMPTY)."""
        if strategy not in RESET_STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(RESET_STRATEGIES)}")
        if strategy in ("offset", "datetime", "shift-by") and value is None:
            raise ValueError(f"strategy {strategy!r} needs a value")
        try:
            group = self.describe_group(group_id)
        except FabricError as err:
            if err.name != "GROUP_ID_NOT_FOUND":
                raise
            group = {"state": "DEAD", "members": [], "offsets": []}
        if execute and group["state"] not in ("EMPTY", "DEAD"):
            raise exception_for(error_map("GROUP_NOT_EMPTY", (
                f"group {group_id!r} is {group['state']} with {len(group['members'])} members; offsets can "
                "only be reset while no consumer is in the group (stop them first)")))
        tps: list[tuple[str, int]] = []
        for t in targets:
            tps += [(t, p) for p in range(self.partitions_for(t))] if isinstance(t, str) else [(t[0], int(t[1]))]
        tps = sorted(set(tps))
        committed = {(o["topic"], o["partition"]): o["offset"] for o in group.get("offsets", [])}
        early = [r["offset"] for r in self.list_offsets([(t, p, "earliest") for t, p in tps])]
        late = [r["offset"] for r in self.list_offsets([(t, p, "latest") for t, p in tps])]
        if strategy == "datetime":
            found = [r["offset"] for r in self.list_offsets([(t, p, int(value or 0)) for t, p in tps])]
        rows = []
        for i, tp in enumerate(tps):
            current = committed.get(tp)
            if strategy == "earliest":
                new = early[i]
            elif strategy == "latest":
                new = late[i]
            elif strategy == "offset":
                new = int(value or 0)
            elif strategy == "datetime":
                new = found[i] if found[i] >= 0 else late[i]
            else:
                if current is None:
                    raise ValueError(f"cannot shift {tp[0]}[{tp[1]}]: group {group_id!r} has no committed "
                                     "offset for it (use another strategy)")
                new = current + int(value or 0)
            rows.append({"topic": tp[0], "partition": tp[1], "current": current,
                         "new": min(max(new, early[i]), late[i]), "earliest": early[i], "latest": late[i]})
        if execute and rows:
            req = OffsetCommitRequest(group_id=group_id, generation=-1, member_id="", offsets=tuple(
                CommitOffset(topic=r["topic"], partition=r["partition"], offset=r["new"]) for r in rows))
            self._group_call(group_id, "offset_commit", req)
        return rows

    def delete_groups(self, group_ids: Sequence[str]) -> list[GroupResult]:
        """Delete groups without members, with their committed offsets; one result per group."""
        out = []
        for gid in group_ids:
            rep = self._group_call(gid, "delete_groups", DeleteGroupsRequest(group_ids=(gid,)))
            err = rep["results"][0].get("error")
            out.append(GroupResult(gid, exception_for(err) if err else None))
        return out
