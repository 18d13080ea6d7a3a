"""Helpers for tests (ours and users'), in one package as trio keeps ``trio.testing``.

- ``processes``: real broker processes on free loopback ports (``BrokerProcess``, ``free_port``);
- ``logs``: random batches, a crash of a ``PartitionLog`` through its public API, file listings;
- ``log_conformance``: the suite every ``LogStore`` backend passes (``LOG_CHECKS``, ``check_model``);
- ``ManualClock`` (``fabric.clock``) and ``MemoryLog`` (``fabric.log.memory``), re-exported here
  for simulations: time that moves only when told, a log that can crash on demand.
"""

from ..clock import ManualClock
from ..log.memory import MemoryLog
from .processes import BrokerProcess, free_port

__all__ = ["BrokerProcess", "ManualClock", "MemoryLog", "free_port"]
