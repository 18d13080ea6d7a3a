"""A partition's log on disk: segments of record batches with sparse offset and time indexes.

Sans-I/O-ish: files yes, sockets and clocks no (every time-dependent method takes ``now_ms``).
The batch is the unit: the log parses 61-byte headers and never decodes records on the append or
read path.  Start with ``partition_log.py``; file formats are in ``files.py``, ``index.py`` and
``segment.py``; log compaction is ``compaction.py``; the bounded pool of segment descriptors that
all logs of a process share is ``handles.py``.
"""

from .compaction import CompactionResult, compact
from .config import LogConfig
from .handles import FilePool
from .partition_log import AppendResult, PartitionLog, RecoveryReport

__all__ = ["AppendResult", "CompactionResult", "FilePool", "LogConfig", "PartitionLog", "RecoveryReport", "compact"]
