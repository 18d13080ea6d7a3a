"""Replication: who leads each partition, who is in sync, and what is committed.

Pure state, no I/O (STYLE rule 1): ``state.py`` is one partition's replica/ISR/high-watermark
state machine under its rules; ``image.py`` is the immutable metadata image the broker reads for
every "who leads what" question; ``leader.py`` and ``follower.py`` are the two sides of data
replication over a partition's log (``LeaderReplica``, ``FollowerReplica``), exchanging the
messages of ``messages.py``, timed by ``config.py``.  The broker shell (PUB/SUB, DEALER/ROUTER,
the controller link) drives them with messages and ``now_ms``.
"""

from .config import ReplicationConfig
from .follower import FollowerReplica
from .image import NO_LEADER, BrokerInfo, MetadataImage, PartitionAssignment, TopicImage
from .leader import IsrChange, LeaderReplica
from .messages import Push, ReplicaAck, ReplicaFetch, ReplicaFetchReply
from .state import UNKNOWN_LOG_END, FollowerProgress, PartitionState, Role, StaleEpoch

__all__ = ["BrokerInfo", "FollowerProgress", "FollowerReplica", "IsrChange", "LeaderReplica", "MetadataImage",
           "NO_LEADER", "PartitionAssignment", "PartitionState", "Push", "ReplicaAck", "ReplicaFetch",
           "ReplicaFetchReply", "ReplicationConfig", "Role", "StaleEpoch", "TopicImage", "UNKNOWN_LOG_END"]
