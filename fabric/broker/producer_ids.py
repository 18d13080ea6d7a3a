"""A single node's producer ids for ``init_producer_id`` (SPEC 14.2): never reused, across restarts.

Why this scheme: a producer id must never be handed out twice, or the leader of a partition could
mistake a new producer's batches for an old one's duplicates.  A single node has no controller, so
it composes the id from its node id (0 unless configured) in the high 32 bits and a counter of its
own in the low 32; the counter is reserved in blocks of ``BLOCK`` in ``meta/producer-ids`` (written
durably before any id of a new block is handed out), so a restart, even after SIGKILL, starts past
every id given before.  (Wiping the data directory wipes the partitions' producer state with it,
so a reused id meets no stale state there.)  A cluster broker does not use this: its ids come in
blocks from the controller, committed through Raft (``producer_id_blocks.py``), because a cluster
broker wiped and rejoining under the same node id would start this counter again while the other
replicas still hold the old producers' state.  (Earlier releases used this scheme on clusters
too; the controller's first block starts above every id it could have composed.)

File ``meta/producer-ids``: magic ``FBPI``, version u16 = 1, reserved u16 = 0, the first counter
value not yet reserved u64, CRC-32 of the 16 bytes before it, u32.  An unreadable file refuses to
start the allocator (handing out ids again from 0 could reuse them).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from ..log.files import write_durably
from ..protocol.errors import FabricError

BLOCK = 1000
COUNTER_MAX = (1 << 32) - 1
EPOCH_MAX = (1 << 15) - 1
FILE_NAME = "producer-ids"
_FORMAT = struct.Struct(">4sHHQ")
_CRC = struct.Struct(">I")
_MAGIC = b"FBPI"

__all__ = ["ProducerIdAllocator", "ProducerIds", "bump"]


class ProducerIdAllocator:
    """Pure: the next id, and when a new block must be reserved (persisted) first."""

    def __init__(self, node_id: int, reserved_upto: int) -> None:
        self.node_id = node_id
        self.next_counter = reserved_upto  # ids below the reservation may have been handed out
        self.reserved_upto = reserved_upto

    def needs_reservation(self) -> int | None:
        """The new ``reserved_upto`` to persist before ``take`` may run, or None."""
        if self.next_counter < self.reserved_upto:
            return None
        if self.next_counter > COUNTER_MAX:
            raise FabricError("LIMIT_EXCEEDED", f"broker {self.node_id} has handed out all {COUNTER_MAX + 1} "
                                                "of its producer ids; give it a new node id")
        return min(self.next_counter + BLOCK, COUNTER_MAX + 1)

    def reserved(self, upto: int) -> None:
        self.reserved_upto = upto

    def take(self) -> int:
        if self.next_counter >= self.reserved_upto:
            raise RuntimeError("take() before the block was reserved")
        pid = (self.node_id << 32) | self.next_counter
        self.next_counter += 1
        return pid


def bump(producer_id: int, epoch: int) -> tuple[int, int] | None:
    """The next epoch of an existing producer id, or None when its epochs are used up."""
    return None if epoch >= EPOCH_MAX else (producer_id, epoch + 1)


class ProducerIds:
    """The allocator with its reservation file in ``meta_dir`` (the broker's I/O)."""

    def __init__(self, meta_dir: Path, node_id: int) -> None:
        self.path = Path(meta_dir) / FILE_NAME
        reserved = 0
        if self.path.exists():
            data = self.path.read_bytes()
            if len(data) != _FORMAT.size + _CRC.size or zlib.crc32(data[:_FORMAT.size]) != _CRC.unpack_from(
                    data, _FORMAT.size)[0]:
                raise RuntimeError(f"{self.path}: corrupt producer-id reservation; refusing to reuse ids")
            magic, version, _, reserved = _FORMAT.unpack_from(data)
            if magic != _MAGIC or version != 1:
                raise RuntimeError(f"{self.path}: unknown format {magic!r} v{version}")
        self.allocator = ProducerIdAllocator(node_id, reserved)

    def next_id(self) -> int:
        upto = self.allocator.needs_reservation()
        if upto is not None:
            body = _FORMAT.pack(_MAGIC, 1, 0, upto)
            write_durably(self.path, body + _CRC.pack(zlib.crc32(body)))
            self.allocator.reserved(upto)
        return self.allocator.take()
