"""The Fabric wire protocol: frames, CBOR headers, operations, error codes and limits.

No sockets and no disk here: everything is bytes in, values out.  SPEC.md in this directory is
the language-neutral specification.
"""

from .errors import ALL_ERRORS, BY_CODE, BY_NAME, FabricError, error_map
from .limits import DEFAULT_LIMITS, Limits

__all__ = ["ALL_ERRORS", "BY_CODE", "BY_NAME", "FabricError", "error_map", "DEFAULT_LIMITS", "Limits"]
