"""The Python client: ``Producer``, ``Consumer``, ``Admin``.

Every blocking call takes or has a timeout; broker errors are raised as typed subclasses of
``FabricError`` (``fabric.errors``), client-side failures as ``ClientError`` subclasses.
"""

from ..records.batch import Record
from .admin import Admin
from .connection import ClientError, ClosedError, RequestTimeoutError
from .consumer import Consumer, TopicPartition
from .damage import CorruptRecordError
from .group import CommitFailedError
from .futures import RecordFuture, RecordMetadata
from .producer import BufferFullError, Producer
from .shutdown import ShutdownSignals, closing_on_signals

__all__ = ["Admin", "Consumer", "Producer", "Record", "RecordFuture", "RecordMetadata", "TopicPartition",
           "ClientError", "ClosedError", "RequestTimeoutError", "BufferFullError", "CommitFailedError",
           "ShutdownSignals", "closing_on_signals", "CorruptRecordError"]
