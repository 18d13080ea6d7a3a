"""``EpochLog``: any ``LogStore`` plus a leader-epoch table kept in step with it (a ``ReplicaLogStore``).

Why a wrapper: ``PartitionLog`` has no epoch table yet, and replication needs one.  This class
holds the hooks in one place, in the order Kafka's ``UnifiedLog`` calls them, so that the file
backend gets the table with a ``LeaderEpochFile`` in its directory and passes the same epoch
checks as ``MemoryLog`` (``fabric.testing.log_conformance.EPOCH_CHECKS``).  When ``PartitionLog``
grows the hooks itself (a few lines at each of the methods below), this wrapper can go.

The hooks (rules in ``epochs.py``):

- ``append``/``append_replicated``: a batch whose epoch is newer than the table's latest starts
  that epoch at its base offset;
- ``truncate_to``: entries from the new log end go, *even when no record went* (an epoch assigned
  at the log end by a leader deposed before it wrote is stale: Kafka's ``truncateTo`` does this);
- ``truncate_fully_and_start_at``: the table empties;
- ``advance_start_offset``/``apply_retention``: entries below the new log start go;
- on open: the table is cut to the log as recovered (a crash may have lost records, not the file).

Everything else is delegated unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import LogConfig
from .epochs import EpochEntry, LeaderEpochCache, LeaderEpochFile
from .partition_log import AppendResult
from .producer_log import ProducerLog
from .store import LogStore

__all__ = ["EpochLog"]


class EpochLog:
    def __init__(self, log: LogStore, epochs: LeaderEpochCache) -> None:
        self.log = log
        self.epochs = epochs
        epochs.truncate_from_end(log.end_offset)
        epochs.truncate_from_start(log.start_offset)

    @classmethod
    def open(cls, directory: Path, config: LogConfig, now_ms: int, files: Any = None) -> "EpochLog":
        """A ``ProducerLog`` over a ``PartitionLog`` with its table in ``<directory>/leader-epoch-checkpoint``
        (``files``: the ``FilePool`` lending it descriptors, as ``PartitionLog.open`` takes)."""
        log = ProducerLog.open(directory, config, now_ms, files)  # (idempotent producers' state)
        return cls(log, LeaderEpochFile(directory))

    def __getattr__(self, name: str) -> Any:  # everything not intercepted below
        return getattr(self.log, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("log", "epochs"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.log, name, value)

    # ------------------------------------------------------------------ the hooks
    def append(self, batch: bytearray, now_ms: int, leader_epoch: int = 0, *, defer_flush: bool = False
               ) -> AppendResult:
        res = self.log.append(batch, now_ms, leader_epoch, defer_flush=defer_flush)
        self._maybe_assign(leader_epoch or 0, res.base_offset)
        return res

    def append_replicated(self, batch: bytearray, now_ms: int) -> AppendResult:
        epoch = int.from_bytes(bytes(batch[12:16]), "big", signed=True)  # (batch.py: leader_epoch at 12)
        res = self.log.append_replicated(batch, now_ms)
        self._maybe_assign(epoch, res.base_offset)
        return res

    def _maybe_assign(self, epoch: int, base: int) -> None:
        if epoch >= 0 and epoch > self.epochs.latest_epoch:
            self.epochs.assign(epoch, base)

    def truncate_to(self, offset: int) -> None:
        self.log.truncate_to(offset)
        self.epochs.truncate_from_end(self.log.end_offset)

    def truncate_fully_and_start_at(self, offset: int) -> None:
        self.log.truncate_fully_and_start_at(offset)
        self.epochs.clear()

    def advance_start_offset(self, offset: int) -> None:
        self.log.advance_start_offset(offset)
        self.epochs.truncate_from_start(self.log.start_offset)

    def apply_retention(self, now_ms: int) -> int:
        count = self.log.apply_retention(now_ms)
        if count:
            self.epochs.truncate_from_start(self.log.start_offset)
        return count

    # ------------------------------------------------------------------ LeaderEpochs
    def leader_epochs(self) -> list[EpochEntry]:
        return self.epochs.entries()

    def assign_epoch(self, epoch: int, start_offset: int) -> None:
        self.epochs.assign(epoch, start_offset)

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        return self.epochs.end_offset_for(epoch, self.log.end_offset)

    def __repr__(self) -> str:
        return f"EpochLog({self.log!r}, {self.epochs!r})"
