"""Single-record transforms and their predicates, chained in YAML in the order written.

Each transform takes a record (a ``SourceRecord`` on the way in, a ``SinkRecord`` on the way out:
both have ``topic``, ``key``, ``value``, ``headers``, ``timestamp``) and returns it changed, or
``None`` to drop it.  A transform with a ``predicate`` applies only to records the predicate
matches (``negate: true``: only to those it does not); ``filter`` drops exactly the records its
predicate selects.  Transforms never touch shared state, so they need no locks: every task has
its own chain.

Field transforms work on dict values (rows, JSON objects); a record whose value is not a dict
fails the transform with a ``TransformError`` (the ``transform`` stage of the error policy), except
that tombstones (``value is None``) pass through untouched.

YAML example::

    transforms:
      - {type: insert_field, field: source, value: web}
      - {type: mask, fields: [card], predicate: {type: topic_matches, pattern: "pay.*"}}
      - {type: filter, predicate: {type: field_equals, field: status, value: test}}
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Callable, ClassVar

from .api import Field


class TransformError(ValueError):
    """The record does not fit the transform (the ``transform`` stage of the error policy)."""


# ---------------------------------------------------------------------------------- predicates

class Predicate:
    CONFIG: ClassVar[dict[str, Field]] = {}

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def test(self, r: Any) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


class TopicMatches(Predicate):
    CONFIG = {"pattern": Field("str", required=True, doc="regular expression matched in full against the topic")}

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.pattern = re.compile(config["pattern"])

    def test(self, r: Any) -> bool:
        return self.pattern.fullmatch(r.topic) is not None


class HasHeader(Predicate):
    CONFIG = {"name": Field("str", required=True)}

    def test(self, r: Any) -> bool:
        return any(n == self.config["name"] for n, _ in r.headers)


class IsTombstone(Predicate):
    def test(self, r: Any) -> bool:
        return r.value is None


class FieldEquals(Predicate):
    CONFIG = {"field": Field("str", required=True), "value": Field("any", required=True)}

    def test(self, r: Any) -> bool:
        return isinstance(r.value, dict) and r.value.get(self.config["field"]) == self.config["value"]


class FieldMatches(Predicate):
    CONFIG = {"field": Field("str", required=True), "pattern": Field("str", required=True)}

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.pattern = re.compile(config["pattern"])

    def test(self, r: Any) -> bool:
        v = r.value.get(self.config["field"]) if isinstance(r.value, dict) else None
        return v is not None and self.pattern.fullmatch(str(v)) is not None


PREDICATES: dict[str, type[Predicate]] = {
    "topic_matches": TopicMatches, "has_header": HasHeader, "is_tombstone": IsTombstone,
    "field_equals": FieldEquals, "field_matches": FieldMatches}


# ---------------------------------------------------------------------------------- transforms

class Transform:
    CONFIG: ClassVar[dict[str, Field]] = {}
    NEEDS_PREDICATE: ClassVar[bool] = False

    def __init__(self, config: dict[str, Any], predicate: Predicate | None = None, negate: bool = False) -> None:
        self.config = config
        self.predicate = predicate
        self.negate = negate

    def __call__(self, r: Any) -> Any:
        if self.predicate is not None and self.predicate.test(r) == self.negate:
            return r
        return self.apply(r)

    def apply(self, r: Any) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def _row(self, r: Any) -> dict | None:
        """A copy of the dict value to change, or None for a tombstone."""
        if r.value is None:
            return None
        if not isinstance(r.value, dict):
            raise TransformError(f"{self.name}: value is {type(r.value).__name__}, not an object")
        return dict(r.value)

    @property
    def name(self) -> str:
        return next(k for k, v in TRANSFORMS.items() if v is type(self))


_FROM: dict[str, Callable[[Any], Any]] = {
    "topic": lambda r: r.topic, "timestamp": lambda r: r.timestamp,
    "partition": lambda r: getattr(r, "partition", None), "offset": lambda r: getattr(r, "offset", None)}


class InsertField(Transform):
    CONFIG = {"field": Field("str", required=True), "value": Field("any", doc="a constant"),
              "from": Field("str", choices=tuple(_FROM), doc="or a property of the record")}

    def apply(self, r: Any) -> Any:
        row = self._row(r)
        if row is None:
            return r
        src = self.config.get("from")
        row[self.config["field"]] = _FROM[src](r) if src else self.config.get("value")
        r.value = row
        return r


class Rename(Transform):
    CONFIG = {"renames": Field("dict", required=True, doc="old name: new name")}

    def apply(self, r: Any) -> Any:
        row = self._row(r)
        if row is None:
            return r
        renames = self.config["renames"]
        r.value = {renames.get(k, k): v for k, v in row.items()}
        return r


class Include(Transform):
    CONFIG = {"fields": Field("list", required=True)}

    def apply(self, r: Any) -> Any:
        row = self._row(r)
        if row is not None:
            r.value = {k: row[k] for k in self.config["fields"] if k in row}
        return r


class Exclude(Transform):
    CONFIG = {"fields": Field("list", required=True)}

    def apply(self, r: Any) -> Any:
        row = self._row(r)
        if row is not None:
            for k in self.config["fields"]:
                row.pop(k, None)
            r.value = row
        return r


def _blank(v: Any) -> Any:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return type(v)(0)
    if isinstance(v, (list, dict)):
        return type(v)()
    return None if v is None else ""


class Mask(Transform):
    CONFIG = {"fields": Field("list", required=True),
              "replacement": Field("any", doc="default: the type's empty value (0, '', false)")}

    def apply(self, r: Any) -> Any:
        row = self._row(r)
        if row is None:
            return r
        rep = self.config.get("replacement")
        for k in self.config["fields"]:
            if k in row:
                row[k] = _blank(row[k]) if rep is None else rep
        r.value = row
        return r


class Filter(Transform):
    """Drops the records its predicate selects (required: a filter without one would drop all)."""

    NEEDS_PREDICATE = True

    def apply(self, r: Any) -> Any:
        return None


class ValueToKey(Transform):
    CONFIG = {"fields": Field("list", required=True),
              "single": Field("bool", default=False, doc="one field: the key is its bare value, not an object")}

    def apply(self, r: Any) -> Any:
        if r.value is None:
            return r
        if not isinstance(r.value, dict):
            raise TransformError(f"value_to_key: value is {type(r.value).__name__}, not an object")
        fields = self.config["fields"]
        missing = [f for f in fields if f not in r.value]
        if missing:
            raise TransformError(f"value_to_key: value has no field {missing[0]!r}")
        if self.config["single"] and len(fields) == 1:
            r.key = r.value[fields[0]]
        else:
            r.key = {f: r.value[f] for f in fields}
        return r


class ExtractField(Transform):
    CONFIG = {"field": Field("str", required=True), "on": Field("str", default="value", choices=("value", "key"))}

    def apply(self, r: Any) -> Any:
        on, name = self.config["on"], self.config["field"]
        obj = getattr(r, on)
        if obj is None:
            return r
        if not isinstance(obj, dict):
            raise TransformError(f"extract_field: {on} is {type(obj).__name__}, not an object")
        setattr(r, on, obj.get(name))
        return r


class AddHeader(Transform):
    CONFIG = {"name": Field("str", required=True), "value": Field("str", required=True)}

    def apply(self, r: Any) -> Any:
        r.headers = [*r.headers, (self.config["name"], self.config["value"].encode())]
        return r


class RouteRegex(Transform):
    """Renames the topic: ``regex`` matched in full, ``replacement`` may use ``$1`` or ``\\1``."""

    CONFIG = {"regex": Field("str", required=True), "replacement": Field("str", required=True)}

    def __init__(self, config: dict[str, Any], predicate: Predicate | None = None, negate: bool = False) -> None:
        super().__init__(config, predicate, negate)
        self.regex = re.compile(config["regex"])
        self.replacement = re.sub(r"\$(\d+)", r"\\\1", config["replacement"])

    def apply(self, r: Any) -> Any:
        m = self.regex.fullmatch(r.topic)
        if m is not None:
            r.topic = m.expand(self.replacement)
        return r


class RouteTimestamp(Transform):
    """Routes to ``topic_format`` with ``${topic}`` and ``${timestamp}`` (the record's time, UTC,
    formatted with ``timestamp_format``, strftime syntax): ``orders`` -> ``orders-20261205``."""

    CONFIG = {"topic_format": Field("str", default="${topic}-${timestamp}"),
              "timestamp_format": Field("str", default="%Y%m%d")}

    def apply(self, r: Any) -> Any:
        ts = r.timestamp if r.timestamp is not None else int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
        stamp = dt.datetime.fromtimestamp(ts / 1000, dt.timezone.utc).strftime(self.config["timestamp_format"])
        r.topic = self.config["topic_format"].replace("${topic}", r.topic).replace("${timestamp}", stamp)
        return r


TRANSFORMS: dict[str, type[Transform]] = {
    "insert_field": InsertField, "rename": Rename, "include": Include, "exclude": Exclude, "mask": Mask,
    "filter": Filter, "value_to_key": ValueToKey, "extract_field": ExtractField, "add_header": AddHeader,
    "route_regex": RouteRegex, "route_timestamp": RouteTimestamp}


def _defaults(spec: dict[str, Field]) -> dict[str, Any]:
    return {k: f.default for k, f in spec.items() if not f.required}


def build_chain(specs: list[dict[str, Any]]) -> list[Transform]:
    """Transforms from validated YAML entries (``type``, its keys, ``predicate``, ``negate``)."""
    chain = []
    for spec in specs:
        pred = None
        if spec.get("predicate"):
            p = spec["predicate"]
            pcls = PREDICATES[p["type"]]
            pred = pcls({**_defaults(pcls.CONFIG), **{k: v for k, v in p.items() if k != "type"}})
        cls = TRANSFORMS[spec["type"]]
        cfg = {**_defaults(cls.CONFIG), **{k: v for k, v in spec.items() if k not in ("type", "predicate", "negate")}}
        chain.append(cls(cfg, pred, bool(spec.get("negate"))))
    return chain


def apply_chain(chain: list[Transform], r: Any) -> Any:
    for t in chain:
        r = t(r)
        if r is None:
            return None
    return r
