"""Replication: who leads each partition, who is in sync, and what is committed.

Pure state, no I/O (STYLE rule 1): ``state.py`` is one partition's replica/ISR/high-watermark
state machine under its rules; ``image.py`` is the immutable metadata image the broker reads for
every "who leads what" question.  The shells that fetch from leaders and talk to the controller
come later and drive these objects with messages and ``now_ms``.
"""

from .image import NO_LEADER, BrokerInfo, MetadataImage, PartitionAssignment, TopicImage
from .state import UNKNOWN_LOG_END, FollowerProgress, PartitionState, Role, StaleEpoch

__all__ = ["BrokerInfo", "FollowerProgress", "MetadataImage", "NO_LEADER", "PartitionAssignment", "PartitionState",
           "Role", "StaleEpoch", "TopicImage", "UNKNOWN_LOG_END"]
