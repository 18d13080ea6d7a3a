"""The operator's cluster operations on the broker port (SPEC.md section 13.7): partition
reassignment, decommission and preferred-leader election.

Why on the broker port: an operator (``fabric reassign``, ``fabric cluster ...``) knows brokers'
addresses, not the controller's; the broker forwards each to the controller leader and answers once
its own metadata has caught up with the change (as ``create_topics`` does), so the next
``metadata`` or ``list_partition_reassignments`` already shows it.  A broker that is not clustered
refuses them with UNKNOWN_OPERATION ("not clustered").

``fabric.protocol.cluster`` lists them with the broker-port operations (so a broker that is not
clustered refuses them as "not clustered") and with the controller-port operations (a broker
forwards each as it came, with a negative ``cid``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import FabricError
from .limits import DEFAULT_LIMITS
from .schema import wire

_L = DEFAULT_LIMITS
INT32_MAX = 2**31 - 1
REASSIGNMENTS_MAX = 10_000
RF_MAX = 16

__all__ = ["ADMIN_OPERATIONS", "AlterPartitionReassignmentsRequest", "DecommissionBrokerRequest",
           "ElectLeadersRequest", "ListPartitionReassignmentsRequest", "Reassignment"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Reassignment:
    topic: str = wire("text", max_len=256)
    partition: int = wire("int", min=0, max=_L.partitions_per_topic_max - 1)
    # the target replicas, preferred leader first; null: cancel the reassignment in progress
    replicas: tuple[int, ...] | None = wire("list", None, nullable=True, max_len=RF_MAX,
                                            items=wire("int", min=0, max=INT32_MAX))

    def validate(self) -> None:
        if self.replicas is not None and (not self.replicas or len(set(self.replicas)) != len(self.replicas)):
            raise FabricError("INVALID_REPLICA_ASSIGNMENT", f"{self.topic}-{self.partition}: replicas "
                                                            f"{list(self.replicas)} must be distinct and not empty")

    def to_wire(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition,
                "replicas": None if self.replicas is None else list(self.replicas)}


@dataclass(frozen=True, slots=True, kw_only=True)
class AlterPartitionReassignmentsRequest:
    reassignments: tuple[Reassignment, ...] = wire("list", max_len=REASSIGNMENTS_MAX,
                                                   items=Reassignment)


@dataclass(frozen=True, slots=True, kw_only=True)
class ListPartitionReassignmentsRequest:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class DecommissionBrokerRequest:
    broker_id: int = wire("int", min=0, max=INT32_MAX)
    cancel: bool = wire("bool", False)  # true: the broker is no longer decommissioned (new replicas may go there)


@dataclass(frozen=True, slots=True, kw_only=True)
class ElectLeadersRequest:
    topics: tuple[str, ...] | None = wire("list", None, nullable=True, max_len=_L.topics_max,
                                          items=wire("text", max_len=256))


ADMIN_OPERATIONS: dict[str, type] = {
    "alter_partition_reassignments": AlterPartitionReassignmentsRequest,
    "list_partition_reassignments": ListPartitionReassignmentsRequest,
    "decommission_broker": DecommissionBrokerRequest,
    "elect_leaders": ElectLeadersRequest,
}
