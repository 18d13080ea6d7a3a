"""All exceptions a Fabric user may catch, in one import: ``from fabric.errors import ...``."""

from .client.connection import ClientError, ClosedError, RequestTimeoutError
from .client.damage import CorruptRecordError
from .client.group import CommitFailedError
from .client.producer import BufferFullError
from .protocol.errors import *  # noqa: F401,F403  (one class per wire error code)
from .protocol.errors import EXCEPTIONS, FabricError

__all__ = ["ClientError", "ClosedError", "RequestTimeoutError", "BufferFullError", "CommitFailedError", "CorruptRecordError", "FabricError", "EXCEPTIONS",
           *(cls.__name__ for cls in EXCEPTIONS.values())]
