"""The metadata log's records: their types, fields and bytes.

Why a schema in one table: every record is written once by the controller and read by every voter
and every broker, possibly by a newer or older release, long after it was written.  A record that
does not match its type's fields is refused whole (``RecordError`` naming the record type and the
bad field), both before it is encoded and after it is decoded (pair assertion), so a bug shows up
where it was made and never as a half-applied change.

Encoding: one CBOR map per record, ``{"type": <name>, <fields>...}``, canonical (sorted keys), so the
same record is always the same bytes.  Optional fields may be absent or null.

| type | fields (``?``: optional) |
|---|---|
| ``register_broker`` | id, host, port, pub_port, rack (str or null), incarnation, controller_port? |
| ``fence_broker`` / ``unfence_broker`` | id, incarnation? (applies only to that incarnation) |
| ``create_topic`` | name, topic_id, configs (map), internal, partitions (a list of *partition*) |
| ``delete_topic`` | name |
| ``partition_change`` | topic_id, partition, leader?, leader_epoch, partition_epoch, isr?, replicas?, adding?, removing? |
| ``topic_config`` | name, configs (the topic's whole override map) |
| ``create_partitions`` | name, topic_id, partitions (the *partition*s appended after the existing ones) |
| ``producer_ids`` | broker_id, incarnation, start, size: the block ``[start, start + size)`` of producer ids is the broker's |
| ``decommission_broker`` | id, decommissioned (true: left out of new placements; false: back in service) |

A *partition* is ``{replicas, leader, leader_epoch, partition_epoch, isr, adding?, removing?}`` (leader -1:
offline; only an offline partition may have an empty ISR).  ``adding``/``removing`` describe a reassignment in progress (KIP-455): ``replicas`` is then
the union of the old and the target set, ``adding`` the target replicas not yet in the old set,
``removing`` the old replicas not in the target; both empty (or absent) when none is in progress.
In a ``partition_change`` an absent or null ``adding``/``removing`` leaves it as it is, ``[]`` clears it.

A ``producer_ids`` block must start at or above the state's ``next_producer_id_block_start`` (so a
block decided on a stale state can never be handed out twice) and end at or below 2^63.
"""

from __future__ import annotations

from typing import Any, Callable

import cbor2

__all__ = ["RECORD_TYPES", "RecordError", "check_moving", "check_partition", "check_record", "decode_record", "encode_record"]

ID_MAX = 2**31 - 1
EPOCH_MAX = 2**63 - 1
PRODUCER_ID_MAX = 2**63 - 1  # producer ids are int64 >= 0 (SPEC 14.1)
PRODUCER_ID_BLOCK_MAX = 1_000_000
STRING_MAX = 1024
LIST_MAX = 10_000


class RecordError(ValueError):
    """A metadata record (or snapshot) that breaks the schema or cannot apply to the state."""


Check = Callable[[str, Any], Any]


def _int(lo: int, hi: int) -> Check:
    def check(name: str, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise RecordError(f"field {name!r} must be an integer in [{lo}, {hi}], not {value!r}")
        return value
    return check


def _str(name: str, value: Any) -> Any:
    if not isinstance(value, str) or not 0 < len(value) <= STRING_MAX:
        raise RecordError(f"field {name!r} must be a string of 1-{STRING_MAX} characters, not {value!r:.80}")
    return value


def _bool(name: str, value: Any) -> Any:
    if not isinstance(value, bool):
        raise RecordError(f"field {name!r} must be true or false, not {value!r}")
    return value


def _nullable(check: Check) -> Check:
    def nullable(name: str, value: Any) -> Any:
        return None if value is None else check(name, value)
    return nullable


def _ids(name: str, value: Any) -> Any:
    if not isinstance(value, list) or len(value) > LIST_MAX:
        raise RecordError(f"field {name!r} must be a list of broker ids, not {value!r:.80}")
    for i, v in enumerate(value):
        _int(0, ID_MAX)(f"{name}[{i}]", v)
    return value


def _map(name: str, value: Any) -> Any:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise RecordError(f"field {name!r} must be a map with string keys, not {value!r:.80}")
    return value


_ID = _int(0, ID_MAX)
_LEADER = _int(-1, ID_MAX)
_EPOCH = _int(0, EPOCH_MAX)
_PORT = _int(0, 65535)

# field name -> (check, required)
_PARTITION: dict[str, tuple[Check, bool]] = {
    "replicas": (_ids, True), "leader": (_LEADER, True), "leader_epoch": (_EPOCH, True),
    "partition_epoch": (_EPOCH, True), "isr": (_ids, True),
    "adding": (_nullable(_ids), False), "removing": (_nullable(_ids), False),
}


def _partitions(name: str, value: Any) -> Any:
    if not isinstance(value, list) or not 0 < len(value) <= LIST_MAX:
        raise RecordError(f"field {name!r} must be a list of 1-{LIST_MAX} partitions")
    for i, p in enumerate(value):
        _fields(f"{name}[{i}]", p, _PARTITION)
        check_partition(f"{name}[{i}]", p["leader"], p["isr"], p["replicas"])
        check_moving(f"{name}[{i}]", p["replicas"], p.get("adding") or [], p.get("removing") or [])
    return value


RECORD_TYPES: dict[str, dict[str, tuple[Check, bool]]] = {
    "register_broker": {"id": (_ID, True), "host": (_str, True), "port": (_PORT, True), "pub_port": (_PORT, True),
                        "rack": (_nullable(_str), True), "incarnation": (_EPOCH, True),
                        "controller_port": (_nullable(_PORT), False)},
    "fence_broker": {"id": (_ID, True), "incarnation": (_nullable(_EPOCH), False)},
    "unfence_broker": {"id": (_ID, True), "incarnation": (_nullable(_EPOCH), False)},
    "create_topic": {"name": (_str, True), "topic_id": (_str, True), "configs": (_map, True),
                     "internal": (_bool, True), "partitions": (_partitions, True)},
    "delete_topic": {"name": (_str, True)},
    "partition_change": {"topic_id": (_str, True), "partition": (_int(0, LIST_MAX), True),
                         "leader": (_nullable(_LEADER), False), "leader_epoch": (_EPOCH, True),
                         "partition_epoch": (_EPOCH, True), "isr": (_nullable(_ids), False),
                         "replicas": (_nullable(_ids), False), "adding": (_nullable(_ids), False),
                         "removing": (_nullable(_ids), False)},
    "topic_config": {"name": (_str, True), "configs": (_map, True)},
    "create_partitions": {"name": (_str, True), "topic_id": (_str, True), "partitions": (_partitions, True)},
    "producer_ids": {"broker_id": (_ID, True), "incarnation": (_EPOCH, True), "start": (_int(0, PRODUCER_ID_MAX), True),
                     "size": (_int(1, PRODUCER_ID_BLOCK_MAX), True)},
    "decommission_broker": {"id": (_ID, True), "decommissioned": (_bool, True)},
}


def _fields(where: str, value: Any, schema: dict[str, tuple[Check, bool]], extra: tuple[str, ...] = ()) -> None:
    if not isinstance(value, dict):
        raise RecordError(f"{where} must be a map, not {type(value).__name__}")
    for key in value:
        if key not in schema and key not in extra:
            raise RecordError(f"{where}: unknown field {key!r}")
    for key, (check, required) in schema.items():
        if key not in value:
            if required:
                raise RecordError(f"{where}: missing field {key!r}")
            continue
        try:
            check(key, value[key])
        except RecordError as exc:
            raise RecordError(f"{where}: {exc}") from None


def check_partition(where: str, leader: int, isr: list[int], replicas: list[int]) -> None:
    """The assignment invariants every stored partition keeps: replicas distinct and not empty,
    ISR a subset of them, the leader (unless offline, -1) in the ISR.  Only an offline partition
    may have an empty ISR: its last in-sync replica restarted uncleanly (``logic.py`` rule 7)."""
    if not replicas or len(set(replicas)) != len(replicas):
        raise RecordError(f"{where}: replicas {replicas} must be distinct and not empty")
    if (not isr and leader != -1) or len(set(isr)) != len(isr) or not set(isr) <= set(replicas):
        raise RecordError(f"{where}: ISR {isr} must be a subset of the replicas {replicas}, not empty unless "
                          f"the partition is offline")
    if leader != -1 and leader not in isr:
        raise RecordError(f"{where}: leader {leader} is not in the ISR {isr}")


def check_moving(where: str, replicas: list[int], adding: list[int], removing: list[int]) -> None:
    """A reassignment in progress: ``adding`` and ``removing`` distinct, disjoint replicas, and
    at least one replica staying (the target set, ``replicas`` minus ``removing``, is not empty)."""
    if len(set(adding)) != len(adding) or len(set(removing)) != len(removing):
        raise RecordError(f"{where}: adding {adding} / removing {removing} must be distinct")
    if not set(adding) <= set(replicas) or not set(removing) <= set(replicas) or set(adding) & set(removing):
        raise RecordError(f"{where}: adding {adding} and removing {removing} must be disjoint subsets of the "
                          f"replicas {replicas}")
    if not set(replicas) - set(removing):
        raise RecordError(f"{where}: removing {removing} would leave no replica of {replicas}")


def check_record(record: Any) -> dict[str, Any]:
    """``record`` if it is a well-formed record; RecordError naming the bad field otherwise."""
    if not isinstance(record, dict):
        raise RecordError(f"a metadata record must be a map, not {type(record).__name__}")
    kind = record.get("type")
    schema = RECORD_TYPES.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise RecordError(f"unknown metadata record type {kind!r:.60}")
    _fields(kind, record, schema, extra=("type",))
    return record


def encode_record(record: dict[str, Any]) -> bytes:
    """The record's bytes for a Raft entry (checked first: the writer's bug stops here)."""
    return cbor2.dumps(check_record(record), canonical=True)


def decode_record(data: bytes) -> dict[str, Any]:
    """A record from a Raft entry's bytes, checked (RecordError when it is not one)."""
    try:
        record = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError) as exc:
        raise RecordError(f"a metadata record is not valid CBOR: {exc}") from None
    return check_record(record)
