"""Consumer groups: the coordinator's state machine, the assignors and the committed-offset store.

Sans-I/O like the rest of the core: requests and ``now_ms`` in, ``Reply``/``AppendOffsets`` actions
out (see ``coordinator.py``).  Importing this package registers the group operations with
``fabric.protocol.messages``.
"""

from . import messages  # noqa: F401  (registers the operations)
from .assignors import ASSIGNORS, Subscription
from .coordinator import Coordinator
from .offsets import (OFFSETS_TOPIC, CommittedOffset, OffsetRecord, OffsetStore, decode_key, decode_value,
                      encode_key, encode_value, partition_for_group)
from .state import Action, AppendOffsets, GroupConfig, Reply, State

__all__ = ["ASSIGNORS", "Subscription", "Action", "AppendOffsets", "Coordinator", "GroupConfig", "Reply",
           "State", "OFFSETS_TOPIC", "CommittedOffset", "OffsetRecord", "OffsetStore", "decode_key",
           "decode_value", "encode_key", "encode_value", "partition_for_group"]
