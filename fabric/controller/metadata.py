"""The metadata state machine: what the committed metadata log says about the cluster.

Every controller voter and every broker holds one ``MetadataState`` and applies the same committed
records (``fabric.controller.records``) in log order, so they all reach the same state; a broker's
``MetadataImage`` (who leads what) is built from it with ``image()``.

Rules:
1. ``apply(record, index)`` changes the state only if the whole record applies; otherwise it raises
   ``RecordError`` and changes nothing but ``offset`` (the record is consumed either way, so every
   holder skips the same records and stays identical).  An index at or below ``offset`` (applied
   already) is refused and changes nothing.
2. Changes are conditional on epochs, so a decision made on stale information cannot overwrite a
   newer one: a ``partition_change`` must carry a partition epoch above the current one, a leader
   epoch not below it, and a higher leader epoch whenever the leader changes; a registration with an
   older incarnation, or a fence/unfence naming another incarnation, is refused.
3. Every stored partition keeps: replicas distinct and not empty, ISR a subset of the replicas,
   leader in the ISR or -1 (offline); only an offline partition's ISR may be empty.
4. ``to_snapshot()`` is deterministic (canonical CBOR, brokers by id, topics by name): two holders
   that applied the same records produce the same bytes; ``from_snapshot`` checks what it reads with
   the same schema as the records.
5. A broker's ``epoch`` is the log index of its registration: a broker has caught up with its own
   registration once its applied offset reaches it (the controller unfences it only then).
6. ``next_producer_id_block_start`` is the first producer id no ``producer_ids`` record has given
   out; it only grows (a block starting below it is refused), so every block committed is
   disjoint from every other, on every holder and across controller failovers and snapshots.
7. A broker's ``decommissioned`` flag (``decommission_broker``) outlives its re-registrations: a
   decommissioned broker that restarts stays out of new placements until the flag is cleared.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import cbor2

from ..replication.image import BrokerInfo, MetadataImage, PartitionAssignment, TopicImage
from .records import (LIST_MAX, PRODUCER_ID_MAX, RecordError, check_moving, check_partition, check_record,
                      decode_record, encode_record)
from .topic_configs import REPLICATION_CONFIG_KEYS, split_configs

log = logging.getLogger("fabric.controller.metadata")

__all__ = ["BrokerRecord", "MetadataState", "PartitionRecord", "RecordError", "TopicRecord", "decode_record",
           "encode_record", "REPLICATION_CONFIG_KEYS", "split_configs"]

SNAPSHOT_VERSION = 1


@dataclass
class BrokerRecord:
    id: int
    host: str
    port: int
    pub_port: int
    rack: str | None
    incarnation: int
    epoch: int = 0  # log index of the registration (rule 5)
    fenced: bool = False
    controller_port: int | None = None
    decommissioned: bool = False  # rule 7: left out of new placements


@dataclass
class PartitionRecord:
    replicas: list[int]
    leader: int
    leader_epoch: int
    partition_epoch: int
    isr: list[int]
    adding: list[int] = field(default_factory=list)  # a reassignment in progress (records.py)
    removing: list[int] = field(default_factory=list)

    @property
    def target(self) -> list[int]:
        """The replicas once the reassignment in progress (if any) completes, in preferred order."""
        return [r for r in self.replicas if r not in self.removing]

    def to_dict(self) -> dict[str, Any]:
        out = {"replicas": list(self.replicas), "leader": self.leader, "leader_epoch": self.leader_epoch,
               "partition_epoch": self.partition_epoch, "isr": list(self.isr)}
        if self.adding or self.removing:  # (absent otherwise: snapshots of clusters that never moved stay as they were)
            out.update(adding=list(self.adding), removing=list(self.removing))
        return out


def _partition(p: dict[str, Any]) -> PartitionRecord:
    return PartitionRecord(list(p["replicas"]), p["leader"], p["leader_epoch"], p["partition_epoch"], list(p["isr"]),
                           list(p.get("adding") or []), list(p.get("removing") or []))


@dataclass
class TopicRecord:
    name: str
    topic_id: str
    configs: dict[str, Any]
    internal: bool
    partitions: list[PartitionRecord] = field(default_factory=list)


class MetadataState:
    def __init__(self) -> None:
        self.brokers: dict[int, BrokerRecord] = {}
        self.topics: dict[str, TopicRecord] = {}
        self.by_id: dict[str, str] = {}  # topic_id -> name
        self.offset = 0  # index of the last record applied (0: none)
        self.next_producer_id_block_start = 0  # rule 6

    # ================================================================== applying
    def apply(self, record: dict[str, Any], index: int | None = None) -> None:
        """Apply one committed record (rule 1); ``index`` is its log index (None: offset + 1)."""
        index = self.offset + 1 if index is None else index
        if index <= self.offset:
            raise RecordError(f"record {index} is at or below the applied offset {self.offset}: applied already")
        try:
            check_record(record)
            getattr(self, "_" + record["type"])(record, index)
        finally:
            self.offset = index

    def _register_broker(self, r: dict[str, Any], index: int) -> None:
        old = self.brokers.get(r["id"])
        if old is not None and r["incarnation"] < old.incarnation:
            raise RecordError(f"register_broker: broker {r['id']} incarnation {r['incarnation']} is older than "
                              f"the registered {old.incarnation}")
        self.brokers[r["id"]] = BrokerRecord(r["id"], r["host"], r["port"], r["pub_port"], r["rack"],
                                             r["incarnation"], index, False, r.get("controller_port"),
                                             old.decommissioned if old is not None else False)

    def _broker(self, r: dict[str, Any]) -> BrokerRecord:
        b = self.brokers.get(r["id"])
        if b is None:
            raise RecordError(f"{r['type']}: unknown broker {r['id']}")
        if r.get("incarnation") is not None and r["incarnation"] != b.incarnation:
            raise RecordError(f"{r['type']}: broker {r['id']} is at incarnation {b.incarnation}, "
                              f"not {r['incarnation']}")
        return b

    def _fence_broker(self, r: dict[str, Any], index: int) -> None:
        self._broker(r).fenced = True

    def _unfence_broker(self, r: dict[str, Any], index: int) -> None:
        self._broker(r).fenced = False

    def _decommission_broker(self, r: dict[str, Any], index: int) -> None:
        self._broker(r).decommissioned = r["decommissioned"]

    def _producer_ids(self, r: dict[str, Any], index: int) -> None:
        """Rule 6: the block must start at or above every block given before."""
        if r["start"] < self.next_producer_id_block_start:
            raise RecordError(f"producer_ids: block {r['start']}+{r['size']} starts below the next free producer "
                              f"id {self.next_producer_id_block_start}: given out already")
        if r["start"] + r["size"] - 1 > PRODUCER_ID_MAX:
            raise RecordError(f"producer_ids: block {r['start']}+{r['size']} ends past {PRODUCER_ID_MAX}")
        self.next_producer_id_block_start = r["start"] + r["size"]

    def _create_topic(self, r: dict[str, Any], index: int) -> None:
        if r["name"] in self.topics:
            raise RecordError(f"create_topic: topic {r['name']!r} exists")
        if r["topic_id"] in self.by_id:
            raise RecordError(f"create_topic: topic id {r['topic_id']!r} is taken by {self.by_id[r['topic_id']]!r}")
        parts = [_partition(p) for p in r["partitions"]]
        self.topics[r["name"]] = TopicRecord(r["name"], r["topic_id"], copy.deepcopy(r["configs"]), r["internal"],
                                             parts)
        self.by_id[r["topic_id"]] = r["name"]

    def _delete_topic(self, r: dict[str, Any], index: int) -> None:
        topic = self.topics.pop(r["name"], None)
        if topic is None:
            raise RecordError(f"delete_topic: unknown topic {r['name']!r}")
        del self.by_id[topic.topic_id]

    def _topic_config(self, r: dict[str, Any], index: int) -> None:
        topic = self.topics.get(r["name"])
        if topic is None:
            raise RecordError(f"topic_config: unknown topic {r['name']!r}")
        topic.configs = copy.deepcopy(r["configs"])

    def _create_partitions(self, r: dict[str, Any], index: int) -> None:
        topic = self.topics.get(r["name"])
        if topic is None or topic.topic_id != r["topic_id"]:
            raise RecordError(f"create_partitions: unknown topic {r['name']!r} with id {r['topic_id']!r}")
        if len(topic.partitions) + len(r["partitions"]) > LIST_MAX:
            raise RecordError(f"create_partitions: {r['name']!r} would exceed {LIST_MAX} partitions")
        topic.partitions.extend(_partition(p) for p in r["partitions"])

    def _partition_change(self, r: dict[str, Any], index: int) -> None:
        where = f"partition_change {r['topic_id']}-{r['partition']}"
        cur = self.partition_by_id(r["topic_id"], r["partition"])
        if cur is None:
            raise RecordError(f"{where}: unknown topic id or partition")
        leader = cur.leader if r.get("leader") is None else r["leader"]
        isr = list(cur.isr if r.get("isr") is None else r["isr"])
        replicas = list(cur.replicas if r.get("replicas") is None else r["replicas"])
        if r["partition_epoch"] <= cur.partition_epoch:
            raise RecordError(f"{where}: partition epoch {r['partition_epoch']} is not above {cur.partition_epoch}")
        if r["leader_epoch"] < cur.leader_epoch or (leader != cur.leader and r["leader_epoch"] == cur.leader_epoch):
            raise RecordError(f"{where}: leader epoch {r['leader_epoch']} is stale (current {cur.leader_epoch}, "
                              f"leader {cur.leader} -> {leader})")
        adding = list(cur.adding if r.get("adding") is None else r["adding"])
        removing = list(cur.removing if r.get("removing") is None else r["removing"])
        check_partition(where, leader, isr, replicas)
        check_moving(where, replicas, adding, removing)
        cur.leader, cur.isr, cur.replicas = leader, isr, replicas
        cur.adding, cur.removing = adding, removing
        cur.leader_epoch, cur.partition_epoch = r["leader_epoch"], r["partition_epoch"]

    # ================================================================== reading
    def partition_by_id(self, topic_id: str, partition: int) -> PartitionRecord | None:
        name = self.by_id.get(topic_id)
        if name is None:
            return None
        parts = self.topics[name].partitions
        return parts[partition] if 0 <= partition < len(parts) else None

    def live_brokers(self) -> list[int]:
        """Registered and not fenced, by id."""
        return sorted(b.id for b in self.brokers.values() if not b.fenced)

    def image(self, self_id: int | None = None) -> MetadataImage:
        """The immutable ``MetadataImage`` of this state (``version`` = ``offset``).  ``self_id`` is
        accepted for the brokers' convenience; the image is the same for every holder."""
        brokers = {b.id: BrokerInfo(b.id, b.host, b.port, b.rack, b.pub_port, b.fenced, b.incarnation,
                              b.decommissioned)
                   for b in self.brokers.values()}
        topics = {}
        for t in self.topics.values():
            parts = tuple(PartitionAssignment(p.leader, p.leader_epoch, tuple(p.replicas), tuple(p.isr),
                                              p.partition_epoch, tuple(p.adding), tuple(p.removing))
                          for p in t.partitions)
            topics[t.name] = TopicImage(t.name, t.topic_id, MappingProxyType(copy.deepcopy(t.configs)), t.internal,
                                        parts)
        return MetadataImage(brokers, topics, self.offset)

    # ================================================================== snapshots
    def to_snapshot(self) -> bytes:
        """Rule 4: the whole state as canonical CBOR.  ``decommissioned`` (per broker) and
        ``next_producer_id_block_start`` are written only when set, so the snapshot of a cluster
        that never used them is the bytes an older release wrote and reads."""
        brokers = []
        for b in sorted(self.brokers.values(), key=lambda b: b.id):
            row: dict[str, Any] = {"id": b.id, "host": b.host, "port": b.port, "pub_port": b.pub_port, "rack": b.rack,
                                   "incarnation": b.incarnation, "epoch": b.epoch, "fenced": b.fenced,
                                   "controller_port": b.controller_port}
            if b.decommissioned:
                row["decommissioned"] = True
            brokers.append(row)
        topics = [{"name": t.name, "topic_id": t.topic_id, "configs": t.configs, "internal": t.internal,
                   "partitions": [p.to_dict() for p in t.partitions]}
                  for t in sorted(self.topics.values(), key=lambda t: t.name)]
        body: dict[str, Any] = {"version": SNAPSHOT_VERSION, "offset": self.offset, "brokers": brokers,
                                "topics": topics}
        if self.next_producer_id_block_start:
            body["next_producer_id_block_start"] = self.next_producer_id_block_start
        return cbor2.dumps(body, canonical=True)

    @classmethod
    def from_snapshot(cls, data: bytes) -> "MetadataState":
        """A state from ``to_snapshot`` bytes; RecordError if they are not a valid snapshot."""
        try:
            body = cbor2.loads(data)
        except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError) as exc:
            raise RecordError(f"a metadata snapshot is not valid CBOR: {exc}") from None
        if not isinstance(body, dict) or body.get("version") != SNAPSHOT_VERSION:
            raise RecordError(f"not a version {SNAPSHOT_VERSION} metadata snapshot")
        offset = body.get("offset")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise RecordError(f"snapshot field 'offset' must be an integer >= 0, not {offset!r}")
        if not isinstance(body.get("brokers"), list) or not isinstance(body.get("topics"), list):
            raise RecordError("snapshot fields 'brokers' and 'topics' must be lists")
        state = cls()
        next_pid = body.get("next_producer_id_block_start", 0)
        if isinstance(next_pid, bool) or not isinstance(next_pid, int) or not 0 <= next_pid <= PRODUCER_ID_MAX + 1:
            raise RecordError(f"snapshot field 'next_producer_id_block_start' must be an integer in "
                              f"[0, 2^63], not {next_pid!r:.40}")
        state.next_producer_id_block_start = next_pid
        for b in body["brokers"]:
            if not isinstance(b, dict):
                raise RecordError("snapshot: a broker must be a map")
            rest = {k: v for k, v in b.items() if k not in ("epoch", "fenced", "decommissioned")}
            check_record({"type": "register_broker", **rest})
            for key in ("epoch", "fenced"):
                if key not in b:
                    raise RecordError(f"snapshot: broker {b['id']} has no field {key!r}")
            if isinstance(b["epoch"], bool) or not isinstance(b["epoch"], int) or b["epoch"] < 0:
                raise RecordError(f"snapshot: broker {b['id']} field 'epoch' must be an integer >= 0")
            if not isinstance(b["fenced"], bool) or not isinstance(b.get("decommissioned", False), bool):
                raise RecordError(f"snapshot: broker {b['id']} fields 'fenced' and 'decommissioned' must be true "
                                  f"or false")
            state.brokers[b["id"]] = BrokerRecord(b["id"], b["host"], b["port"], b["pub_port"], b["rack"],
                                                  b["incarnation"], b["epoch"], b["fenced"], b.get("controller_port"),
                                                  b.get("decommissioned", False))
        for t in body["topics"]:
            if not isinstance(t, dict):
                raise RecordError("snapshot: a topic must be a map")
            state._create_topic(check_record({"type": "create_topic", **t}), offset)
        state.offset = offset
        return state

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MetadataState) and self.to_snapshot() == other.to_snapshot()

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> "MetadataState":
        return MetadataState.from_snapshot(self.to_snapshot())
