"""Error names the controller answers with that ``fabric/protocol/errors.py`` does not define yet.

Plain strings on purpose: the wire numbers are assigned where the protocol table lives (the codes
reserved for the cluster), and until then ``ControllerLogic`` returns these names and the service
turns them into wire errors.  Existing names (TOPIC_ALREADY_EXISTS, INVALID_REPLICATION_FACTOR,
UNKNOWN_TOPIC_OR_PARTITION, POLICY_VIOLATION, ...) are used as they are.
"""

from __future__ import annotations

__all__ = ["BROKER_FENCED", "FENCED_LEADER_EPOCH", "INVALID_UPDATE_VERSION", "NEW_ERROR_NAMES", "NOT_CONTROLLER",
           "STALE_BROKER_EPOCH", "UNKNOWN_BROKER"]

FENCED_LEADER_EPOCH = "FENCED_LEADER_EPOCH"  # the request's leader epoch is not the partition's current one
STALE_BROKER_EPOCH = "STALE_BROKER_EPOCH"  # an older incarnation of a broker that has registered again
UNKNOWN_BROKER = "UNKNOWN_BROKER"  # no such broker (or incarnation) registered: register first
BROKER_FENCED = "BROKER_FENCED"  # the broker is fenced and may not act as a leader
INVALID_UPDATE_VERSION = "INVALID_UPDATE_VERSION"  # the partition epoch moved on since the leader read it
NOT_CONTROLLER = "NOT_CONTROLLER"  # this voter does not lead the metadata quorum

NEW_ERROR_NAMES = (FENCED_LEADER_EPOCH, STALE_BROKER_EPOCH, UNKNOWN_BROKER, BROKER_FENCED, INVALID_UPDATE_VERSION,
                   NOT_CONTROLLER)
