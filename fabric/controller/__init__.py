"""The controller quorum: Raft over the metadata log, and (in sibling modules) the metadata state
machine and the controller's decisions.

Sans-I/O like the rest of the core (STYLE rule 1): ``raft.RaftNode`` takes messages, proposals and
``now_ms`` and returns messages to send and entries to apply; ``raft_storage`` keeps its term,
vote, log and snapshot (a file backend for brokers, a memory one with ``crash()`` for the
simulation in ``fabric.testing.raft_sim``); ``raft_messages`` are its wire messages.  The shell
that carries them over ZeroMQ lives elsewhere and only pumps.

Only the Raft modules are exported here: the metadata modules are imported by their own paths
(``fabric.controller.metadata``), so this package's import stays light and cycle-free.
"""

from .raft import Progress, RaftConfig, RaftNode, RaftOutput, Role
from .raft_messages import (AppendRequest, AppendResponse, Entry, RaftMessage, Snapshot, SnapshotRequest,
                            SnapshotResponse, VoteRequest, VoteResponse, message_from_wire)
from .raft_storage import FileRaftStorage, MemoryRaftStorage, RaftStorage

__all__ = ["AppendRequest", "AppendResponse", "Entry", "FileRaftStorage", "MemoryRaftStorage",
           "Progress", "RaftConfig", "RaftMessage", "RaftNode", "RaftOutput", "RaftStorage", "Role", "Snapshot",
           "SnapshotRequest", "SnapshotResponse", "VoteRequest", "VoteResponse", "message_from_wire"]
