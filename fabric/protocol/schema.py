"""Declarative field checking for wire messages.

A request type is a frozen dataclass whose fields carry a ``Wire`` spec in their metadata; ``parse``
walks the dataclass, checks each field of a decoded CBOR map against its spec and builds the
instance, and ``unparse`` turns an instance back into a map.  Errors name the full path of the bad
field (``partitions[2].offset: expected integer >= 0, got text``) because the reader is someone
writing a client in another language from SPEC.md.

Integers: CBOR integers, or (for JavaScript clients, see limits.INT_FLOAT_EXACT_MAX) integral
floats of magnitude <= 2^53.  Booleans are never integers.

Every produce and fetch passes through ``parse`` on the broker and ``unparse`` on the client, so
each class's field list is read from ``dataclasses.fields`` once and kept as a plan (``_plan``):
walking the dataclass machinery per request cost more than appending the batch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from .codec import type_name
from .errors import FabricError
from .limits import INT64_MAX, INT64_MIN, INT_FLOAT_EXACT_MAX

T = TypeVar("T")
REQUIRED: Any = dataclasses.MISSING


@dataclass(frozen=True, slots=True)
class Wire:
    kind: str  # int | text | bytes | bool | list | map | record | any
    min: int | None = None
    max: int | None = None
    max_len: int | None = None  # text chars, bytes length, list/map entries
    nullable: bool = False
    items: "Wire | type | None" = None  # list items: a Wire or a record dataclass
    record: type | None = None  # for kind == "record"
    choices: tuple | None = None


def wire(kind: str, default: Any = REQUIRED, **spec: Any) -> Any:
    """A dataclass field with a wire spec (default ``REQUIRED`` means the key must be present)."""
    meta = {"wire": Wire(kind, **spec)}
    if default is REQUIRED:
        return dataclasses.field(metadata=meta)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def as_int(value: Any, path: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FabricError("INVALID_FIELD", f"{path}: expected integer, got {type_name(value)}")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value) or abs(value) > INT_FLOAT_EXACT_MAX:
            raise FabricError("INVALID_FIELD",
                              f"{path}: expected integer, got float {value!r} (integral floats up to 2^53 only)")
        value = int(value)
    lo = INT64_MIN if lo is None else lo
    hi = INT64_MAX if hi is None else hi
    if value < lo or value > hi:
        raise FabricError("INVALID_FIELD", f"{path}: {value} is out of range [{lo}, {hi}]")
    return value


def _check(value: Any, spec: Wire, path: str) -> Any:
    kind = spec.kind
    if kind == "int" and value.__class__ is int:  # the common case, without as_int's float handling
        if (spec.min is None or value >= spec.min) and (spec.max is None or value <= spec.max) \
                and INT64_MIN <= value <= INT64_MAX and (spec.choices is None or value in spec.choices):
            return value
    elif kind == "text" and value.__class__ is str and spec.choices is None:
        if spec.max_len is None or len(value) <= spec.max_len:
            return value
    if value is None:
        if spec.nullable:
            return None
        raise FabricError("INVALID_FIELD", f"{path}: must not be null")
    if kind == "int":
        out: Any = as_int(value, path, spec.min, spec.max)
    elif kind == "text":
        if not isinstance(value, str):
            raise FabricError("INVALID_FIELD", f"{path}: expected text, got {type_name(value)}")
        out = value
    elif kind == "bytes":
        if not isinstance(value, (bytes, bytearray)):
            raise FabricError("INVALID_FIELD", f"{path}: expected bytes, got {type_name(value)}")
        out = bytes(value)
    elif kind == "bool":
        if not isinstance(value, bool):
            raise FabricError("INVALID_FIELD", f"{path}: expected bool, got {type_name(value)}")
        out = value
    elif kind == "list":
        if not isinstance(value, list):
            raise FabricError("INVALID_FIELD", f"{path}: expected array, got {type_name(value)}")
        if spec.max_len is not None and len(value) > spec.max_len:
            raise FabricError("INVALID_FIELD", f"{path}: {len(value)} entries; at most {spec.max_len}")
        item = spec.items
        if isinstance(item, dataclasses.Field):  # items=wire(...) written for items=Wire(...)
            item = item.metadata["wire"]
        if item is None:
            out = tuple(value)
        elif isinstance(item, Wire):
            out = tuple(_check(v, item, f"{path}[{i}]") for i, v in enumerate(value))
        else:
            out = tuple(parse(item, v, f"{path}[{i}]") for i, v in enumerate(value))
        return out  # length already checked
    elif kind == "map":
        if not isinstance(value, dict):
            raise FabricError("INVALID_FIELD", f"{path}: expected map, got {type_name(value)}")
        for k in value:
            if not isinstance(k, str):
                raise FabricError("INVALID_FIELD", f"{path}: map keys must be text, got {type_name(k)}")
        out = dict(value)
    elif kind == "record":
        assert spec.record is not None
        return parse(spec.record, value, path)
    elif kind == "any":
        out = value
    else:  # pragma: no cover - programming error
        raise AssertionError(kind)
    if spec.max_len is not None and kind in ("text", "bytes", "map") and len(out) > spec.max_len:
        raise FabricError("INVALID_FIELD", f"{path}: length {len(out)} exceeds {spec.max_len}")
    if spec.choices is not None and out not in spec.choices:
        raise FabricError("INVALID_FIELD", f"{path}: {out!r} is not one of {list(spec.choices)}")
    return out


class _Plan:
    """What ``parse`` and ``unparse`` need of one message class, read from the dataclass once."""

    __slots__ = ("fields", "names", "has_validate")

    def __init__(self, cls: type) -> None:
        # (name, spec, required) for every field that travels on the wire
        self.fields: tuple[tuple[str, Wire, bool], ...] = tuple(
            (f.name, f.metadata["wire"],
             f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
            for f in dataclasses.fields(cls) if "wire" in f.metadata)  # type: ignore[arg-type]
        self.names = tuple(name for name, _, _ in self.fields)
        self.has_validate = callable(getattr(cls, "validate", None))


_PLANS: dict[type, _Plan] = {}


def _plan(cls: type) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = _Plan(cls)
    return plan


def parse(cls: type[T], mapping: Any, path: str = "") -> T:
    """Build ``cls`` from a decoded map, checking every field.  Unknown keys are ignored so that
    newer clients can add optional fields without breaking older brokers."""
    if not isinstance(mapping, dict):
        raise FabricError("INVALID_FIELD", f"{path or 'header'}: expected map, got {type_name(mapping)}")
    plan = _PLANS.get(cls) or _plan(cls)
    values: dict[str, Any] = {}
    for name, spec, required in plan.fields:
        if name in mapping:
            values[name] = _check(mapping[name], spec, f"{path}.{name}" if path else name)
        elif required:
            raise FabricError("INVALID_FIELD", f"{f'{path}.{name}' if path else name}: required field is missing")
    obj = cls(**values)
    if plan.has_validate:
        post: Callable[[], None] = obj.validate  # type: ignore[attr-defined]
        try:
            post()
        except FabricError as err:
            if path and err.name == "INVALID_FIELD":
                raise FabricError(err.name, f"{path}.{err.message}") from None
            raise
    return obj


_SCALARS = frozenset((int, str, bytes, bool, float, type(None)))


def unparse(obj: Any) -> Any:
    """A dataclass message back to plain CBOR-ready values (maps, arrays, ints, text, bytes)."""
    cls = obj.__class__
    if cls in _SCALARS:
        return obj
    if cls in _PLANS or (dataclasses.is_dataclass(obj) and not isinstance(obj, type)):
        return {name: unparse(getattr(obj, name)) for name in _plan(cls).names}
    if isinstance(obj, (list, tuple)):
        return [unparse(v) for v in obj]
    if isinstance(obj, dict):
        return {k: unparse(v) for k, v in obj.items()}
    return obj
