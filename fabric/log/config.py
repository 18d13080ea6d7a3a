"""Per-topic log settings: one frozen dataclass, validated in one place.

Why frozen: a ``PartitionLog`` reads ``config`` on every append; the broker changes settings by
building a new ``LogConfig`` (``from_mapping(overrides, base=current)``) and handing it over with
``PartitionLog.reconfigure``, so a half-applied change is never visible.

Why strict parsing: topic configs arrive from the wire (any client language) and from YAML files.
A typo in a retention setting silently keeping data forever is worse than an error, so unknown
keys, wrong types and out-of-range values all raise ``FabricError("INVALID_CONFIG")`` naming the
key.  Integers may arrive as integral floats (JavaScript clients send every number as a float64),
as the protocol's integer rule allows; booleans are only accepted for boolean fields (``True`` is
not the integer 1 here).

Bounds (``_INT_RANGES``) follow from the storage format: positions and relative offsets in the
index files are u32, so a segment stays below 2 GiB (plus one batch).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from ..protocol.errors import FabricError
from ..protocol.limits import INT_FLOAT_EXACT_MAX, INT64_MAX
from ..records.batch import HEADER_SIZE

CLEANUP_POLICIES = ("delete", "compact", "delete,compact")
TIMESTAMP_TYPES = ("create_time", "log_append_time")
INT32_MAX = 2**31 - 1

# field -> (minimum, maximum); -1 is additionally allowed where ``_MINUS_ONE_OK`` says so.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "segment_bytes": (1, INT32_MAX),
    "segment_ms": (1, INT64_MAX),
    "retention_ms": (0, INT64_MAX),
    "retention_bytes": (0, INT64_MAX),
    "index_interval_bytes": (0, INT32_MAX),
    "flush_interval_ms": (0, INT64_MAX),
    "min_compaction_lag_ms": (0, INT64_MAX),
    "delete_retention_ms": (0, INT64_MAX),
    "max_batch_bytes": (HEADER_SIZE + 1, INT32_MAX),
}
_MINUS_ONE_OK = frozenset({"retention_ms", "retention_bytes"})


@dataclass(frozen=True)
class LogConfig:
    segment_bytes: int = 256 << 20
    segment_ms: int = 7 * 24 * 3600 * 1000
    retention_ms: int = 7 * 24 * 3600 * 1000  # -1 = keep forever
    retention_bytes: int = -1  # -1 = unlimited (per partition)
    index_interval_bytes: int = 4096
    flush_interval_ms: int = 1000  # fsync at most this long after a write (0 = every batch)
    flush_every_batch: bool = False  # fsync before an append is acknowledged
    cleanup_policy: str = "delete"  # "delete" | "compact" | "delete,compact"
    min_compaction_lag_ms: int = 0
    delete_retention_ms: int = 24 * 3600 * 1000  # how long tombstones survive compaction
    max_batch_bytes: int = 16 << 20
    timestamp_type: str = "create_time"  # or "log_append_time"

    def __post_init__(self) -> None:
        # Direct construction is validated too (tests, broker defaults in code).
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _check(f.name, getattr(self, f.name)))

    @property
    def compact(self) -> bool:
        return "compact" in self.cleanup_policy

    @property
    def delete(self) -> bool:
        return "delete" in self.cleanup_policy

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: "LogConfig | None" = None) -> "LogConfig":
        """``base`` (or the defaults) with the keys of ``values`` overridden, all validated."""
        if not isinstance(values, Mapping):
            raise FabricError("INVALID_CONFIG", f"topic configs must be a map, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if not isinstance(key, str) or key not in known:
                raise FabricError("INVALID_CONFIG",
                                  f"unknown topic config {key!r} (known: {', '.join(sorted(known))})")
            changes[key] = _check(key, value)
        return dataclasses.replace(base or cls(), **changes)

    def to_mapping(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(key: str, value: Any) -> Any:
    """Validate one value and return it in canonical form (ints as int, policy spelled canonically)."""
    if key == "flush_every_batch":
        if not isinstance(value, bool):
            raise FabricError("INVALID_CONFIG", f"topic config {key} must be true or false, got {value!r}")
        return value
    if key == "cleanup_policy":
        return _cleanup_policy(value)
    if key == "timestamp_type":
        if value not in TIMESTAMP_TYPES:
            raise FabricError("INVALID_CONFIG",
                              f"topic config {key} must be one of {', '.join(TIMESTAMP_TYPES)}, got {value!r}")
        return value
    lo, hi = _INT_RANGES[key]
    if isinstance(value, float) and not isinstance(value, bool) and value.is_integer() \
            and abs(value) <= INT_FLOAT_EXACT_MAX:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise FabricError("INVALID_CONFIG", f"topic config {key} must be an integer, got {value!r}")
    if value == -1 and key in _MINUS_ONE_OK:
        return value
    if not lo <= value <= hi:
        extra = " (or -1 for no limit)" if key in _MINUS_ONE_OK else ""
        raise FabricError("INVALID_CONFIG", f"topic config {key} = {value} outside [{lo}, {hi}]{extra}")
    return value


def _cleanup_policy(value: Any) -> str:
    if not isinstance(value, str):
        raise FabricError("INVALID_CONFIG", f"topic config cleanup_policy must be a string, got {value!r}")
    parts = [p.strip() for p in value.split(",")]
    if not parts or any(p not in ("delete", "compact") for p in parts) or len(set(parts)) != len(parts):
        raise FabricError("INVALID_CONFIG",
                          f"topic config cleanup_policy must be delete, compact or delete,compact; got {value!r}")
    return "delete,compact" if len(parts) == 2 else parts[0]
