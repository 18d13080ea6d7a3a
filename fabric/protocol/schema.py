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
        raise FabricError("INVALID_FIELD", f"{path}: {_shown(value)} is out of range [{lo}, {hi}]")
    return value


def _shown(value: int) -> str:
    """An integer for an error message.  ``decode_map`` lets no integer beyond int64 through, but
    an error path must not be able to fail: Python refuses to format integers of more than 4,300
    digits (the ValueError that once escaped the broker's request handler)."""
    if -(2**64) <= value <= 2**64:
        return str(value)
    return f"an integer of {value.bit_length()} bits"


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

    __slots__ = ("fields", "names", "has_validate", "slot_setters", "build")

    def __init__(self, cls: type) -> None:
        # (name, spec, required) for every field that travels on the wire
        self.fields: tuple[tuple[str, Wire, bool], ...] = tuple(
            (f.name, f.metadata["wire"],
             f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
            for f in dataclasses.fields(cls) if "wire" in f.metadata)  # type: ignore[arg-type]
        self.names = tuple(name for name, _, _ in self.fields)
        self.has_validate = callable(getattr(cls, "validate", None))
        # A frozen dataclass's __init__ goes through object.__setattr__ per field; when every
        # field is a wire field in a slot, the slot descriptors set the same attributes directly
        # (for parsing, that was half the cost of the whole parse).
        slots = getattr(cls, "__slots__", ())
        every = dataclasses.fields(cls)  # type: ignore[arg-type]
        bypass = (len(every) == len(self.fields) and all(name in slots for name in self.names)
                  and not hasattr(cls, "__post_init__"))
        self.slot_setters: tuple[tuple[str, Callable[[Any, Any], None]], ...] | None = tuple(
            (name, cls.__dict__[name].__set__) for name in self.names) if bypass else None
        self.build: Callable[[dict, str], Any] = _compile(cls, self.fields, self.slot_setters)


def _field_path(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _fast_test(spec: Wire, var: str) -> str | None:
    """A Python expression that is true when ``var`` needs no more checking than ``_check``'s
    (the value as decoded is the value to keep), or None when every value goes to ``_check``."""
    if spec.kind == "int":
        lo = INT64_MIN if spec.min is None else max(spec.min, INT64_MIN)
        hi = INT64_MAX if spec.max is None else min(spec.max, INT64_MAX)
        test = f"{var}.__class__ is int and {lo} <= {var} <= {hi}"
        if spec.choices is not None:
            if not all(type(c) is int for c in spec.choices):
                return None
            test += f" and {var} in {tuple(spec.choices)!r}"
        return test
    if spec.kind == "text" and spec.choices is None:
        test = f"{var}.__class__ is str"
        if spec.max_len is not None:
            test += f" and len({var}) <= {spec.max_len}"
        return test
    return None


def _compile(cls: type, fields: tuple[tuple[str, Wire, bool], ...],
             slot_setters: tuple[tuple[str, Callable[[Any, Any], None]], ...] | None) -> Callable[[dict, str], Any]:
    """Write ``cls``'s parser as straight-line Python (as ``dataclasses`` writes ``__init__``):
    per field one dict lookup and, for the common int and text cases, one inline test; anything
    else, and every failure, goes through ``_check`` so that errors read the same.  A generic
    loop over the fields cost 2-3 times as much, and a broker parses every produce and fetch."""
    defaults = {f.name: f for f in dataclasses.fields(cls)}
    env: dict[str, Any] = {"_check": _check, "_field_path": _field_path, "FabricError": FabricError, "cls": cls,
                           "parse": parse}
    lines = ["def build(mapping, path):"]
    args = []
    for i, (name, spec, required) in enumerate(fields):
        var, key = f"v{i}", repr(name)
        env[f"s{i}"] = spec
        lines.append(f"    if {key} in mapping:")
        lines.append(f"        {var} = mapping[{key}]")
        fast = _fast_test(spec, var)
        if spec.kind == "list" and isinstance(spec.items, type) and dataclasses.is_dataclass(spec.items):
            # records: parse them without building each one's error path; on any error parse
            # again the slow way, which raises the same error with the full path (no side effects)
            env[f"item{i}"] = spec.items
            size = "" if spec.max_len is None else f" and len({var}) <= {spec.max_len}"
            lines.append(f"        if {var}.__class__ is list{size}:")
            lines.append("            try:")
            lines.append(f"                {var} = tuple([parse(item{i}, x) for x in {var}])")
            lines.append("            except FabricError:")
            lines.append(f"                {var} = _check({var}, s{i}, _field_path(path, {key}))")
            lines.append("        else:")
            lines.append(f"            {var} = _check({var}, s{i}, _field_path(path, {key}))")
        elif fast is not None:
            lines.append(f"        if not ({fast}):")
            lines.append(f"            {var} = _check({var}, s{i}, _field_path(path, {key}))")
        else:
            lines.append(f"        {var} = _check({var}, s{i}, _field_path(path, {key}))")
        lines.append("    else:")
        if required:
            lines.append(f"        raise FabricError('INVALID_FIELD', _field_path(path, {key}) + "
                         "': required field is missing')")
        elif defaults[name].default_factory is not dataclasses.MISSING:
            env[f"d{i}"] = defaults[name].default_factory
            lines.append(f"        {var} = d{i}()")
        else:
            env[f"d{i}"] = defaults[name].default
            lines.append(f"        {var} = d{i}")
        args.append(f"{name}={var}")
    if slot_setters is not None:
        env["_new"] = _new_object
        lines.append("    obj = _new(cls)")
        for i, (_, setter) in enumerate(slot_setters):
            env[f"set{i}"] = setter
            lines.append(f"    set{i}(obj, v{i})")
        lines.append("    return obj")
    else:
        lines.append(f"    return cls({', '.join(args)})")
    exec("\n".join(lines), env)  # noqa: S102 - our own dataclass field names, checked identifiers
    return env["build"]


_PLANS: dict[type, _Plan] = {}
_new_object = object.__new__


def _plan(cls: type) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = _Plan(cls)
    return plan


def evolve(obj: T, **changes: Any) -> T:
    """``dataclasses.replace`` for a message (already checked, so no ``validate``): a copy with
    ``changes``, without running a frozen dataclass's ``__init__`` (a pipelined fetch makes one
    per follow-on, a standing fetch one per answer).  One change goes through ``with_field``."""
    if len(changes) == 1:
        ((name, value),) = changes.items()
        return with_field(obj, name, value)
    plan = _PLANS.get(obj.__class__) or _plan(obj.__class__)
    if plan.slot_setters is None:
        return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
    new = _new_object(obj.__class__)
    for name, setter in plan.slot_setters:
        setter(new, changes[name] if name in changes else getattr(obj, name))
    return new


_REPLACERS: dict[tuple[type, str], Callable[[Any, Any], Any]] = {}


def with_field(obj: T, name: str, value: Any) -> T:
    """``evolve(obj, name=value)``, by a function compiled once per class and field: straight-line
    slot copies instead of a loop with a look-up per field (~1 us less per copy)."""
    fn = _REPLACERS.get((obj.__class__, name))
    if fn is None:
        fn = _REPLACERS[(obj.__class__, name)] = _compile_replacer(obj.__class__, name)
    return fn(obj, value)


def _compile_replacer(cls: type, changed: str) -> Callable[[Any, Any], Any]:
    plan = _plan(cls)
    if plan.slot_setters is None or changed not in plan.names:
        return lambda obj, value: dataclasses.replace(obj, **{changed: value})
    env: dict[str, Any] = {"_new": _new_object, "cls": cls}
    lines = ["def replace(obj, value):", "    new = _new(cls)"]
    for i, (name, setter) in enumerate(plan.slot_setters):
        env[f"set{i}"] = setter
        lines.append(f"    set{i}(new, value)" if name == changed else f"    set{i}(new, obj.{name})")
    lines.append("    return new")
    exec("\n".join(lines), env)  # noqa: S102 - our own dataclass field names, checked identifiers
    return env["replace"]


def parse(cls: type[T], mapping: Any, path: str = "") -> T:
    """Build ``cls`` from a decoded map, checking every field.  Unknown keys are ignored so that
    newer clients can add optional fields without breaking older brokers."""
    if not isinstance(mapping, dict):
        raise FabricError("INVALID_FIELD", f"{path or 'header'}: expected map, got {type_name(mapping)}")
    plan = _PLANS.get(cls) or _plan(cls)
    obj = plan.build(mapping, path)
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
