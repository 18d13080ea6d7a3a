"""Loading and validating a worker's YAML file, all of it, before anything starts.

Every problem is reported with its YAML path and the reason, all at once (a user fixes the file
in one go, not one error per run)::

    connectors[1].config.table: required
    connectors[0].transforms[2].type: unknown transform 'maskk' (did you mean 'mask'?)

The file::

    worker:                      # all optional
      bootstrap: 127.0.0.1:7171
      group: null                # a name: distributed mode (workers with the same group share tasks)
      rest_port: 8083            # the control API on 127.0.0.1 (fabric connect status|pause|...)
      offsets_topic: connect-offsets
      status_topic: connect-status
      offset_flush_interval_ms: 1000
      session_timeout_ms: 10000  # distributed: a worker silent this long loses its tasks
    connectors:
      - name: orders-in          # unique, [A-Za-z0-9._-]
        class: file-source       # built-in, entry-point name, or module:Class
        tasks_max: 1
        key_converter: string    # json | string | bytes | cbor
        value_converter: json
        topics: [a, b]           # sinks only (or topics_regex)
        transforms: [...]        # see transforms.py
        errors: {tolerance: none, retry_timeout_ms: 30000, retry_backoff_max_ms: 5000,
                 dead_letter_topic: null}
        restart: {max_tries: 10, backoff_initial_ms: 500, backoff_max_ms: 60000}
        config: {...}            # the connector's own keys (its CONFIG)

Before parsing, ``${NAME}`` and ``${NAME:-default}`` are replaced from the environment (upper-case
names only), so one shipped file serves a laptop and a test run.  Validation is pure (dict in,
dataclasses or a list of errors out); only ``load_file`` reads.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .api import Field, SinkConnector
from .converters import CONVERTERS
from .plugins import PluginError, known_names, load_connector_class
from .transforms import PREDICATES, TRANSFORMS

NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


class ConfigError(ValueError):
    """The file is invalid; ``errors`` lists every (path, reason)."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("\n".join(f"{p}: {r}" for p, r in errors))


def did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass
class ErrorPolicy:
    tolerance: str = "none"
    retry_timeout_ms: int = 30_000
    retry_backoff_max_ms: int = 5_000
    dead_letter_topic: str | None = None
    log: bool = True


@dataclass
class RestartPolicy:
    max_tries: int = 10
    backoff_initial_ms: int = 500
    backoff_max_ms: int = 60_000


@dataclass
class ConnectorConfig:
    name: str
    class_name: str
    connector_class: type
    tasks_max: int = 1
    key_converter: str = "string"
    value_converter: str = "json"
    topics: list[str] = field(default_factory=list)
    topics_regex: str | None = None
    transforms: list[dict[str, Any]] = field(default_factory=list)
    errors: ErrorPolicy = field(default_factory=ErrorPolicy)
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def is_sink(self) -> bool:
        return issubclass(self.connector_class, SinkConnector)


@dataclass
class WorkerConfig:
    bootstrap: str = "127.0.0.1:7171"
    group: str | None = None
    rest_port: int = 8083
    offsets_topic: str = "connect-offsets"
    status_topic: str = "connect-status"
    offset_flush_interval_ms: int = 1000
    session_timeout_ms: int = 10_000
    connectors: list[ConnectorConfig] = field(default_factory=list)


WORKER_SPEC: dict[str, Field] = {
    "bootstrap": Field("str", default="127.0.0.1:7171"),
    "group": Field("str"),
    "rest_port": Field("int", default=8083, min=0),
    "offsets_topic": Field("str", default="connect-offsets"),
    "status_topic": Field("str", default="connect-status"),
    "offset_flush_interval_ms": Field("int", default=1000, min=1),
    "session_timeout_ms": Field("int", default=10_000, min=300, doc="distributed: a silent worker's tasks move after this"),
}
ERRORS_SPEC: dict[str, Field] = {
    "tolerance": Field("str", default="none", choices=("none", "all")),
    "retry_timeout_ms": Field("int", default=30_000, min=0),
    "retry_backoff_max_ms": Field("int", default=5_000, min=1),
    "dead_letter_topic": Field("str"),
    "log": Field("bool", default=True),
}
RESTART_SPEC: dict[str, Field] = {
    "max_tries": Field("int", default=10, min=0),
    "backoff_initial_ms": Field("int", default=500, min=1),
    "backoff_max_ms": Field("int", default=60_000, min=1),
}
CONNECTOR_KEYS = ("name", "class", "tasks_max", "key_converter", "value_converter", "topics", "topics_regex",
                  "transforms", "errors", "restart", "config")

_KINDS: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "list": (list,), "dict": (dict,)}
_KIND_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
               "list": "a list", "dict": "a mapping"}


def check_section(data: Any, spec: Mapping[str, Field], path: str, errors: list[tuple[str, str]],
                  *, extra_ok: tuple[str, ...] = ()) -> dict[str, Any]:
    """``data`` checked against ``spec``: returns it with defaults filled in; problems go to
    ``errors`` as (path, reason).  Unknown keys are errors (typos must not be silently ignored)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors.append((path, f"must be a mapping, not {_yaml_type(data)}"))
        return {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in extra_ok:
            continue
        if key not in spec:
            errors.append((_join(path, key), f"unknown key{did_you_mean(key, spec)}"))
            continue
        f = spec[key]
        if value is None and not f.required:
            out[key] = f.default
            continue
        reason = check_value(value, f)
        if reason:
            errors.append((_join(path, key), reason))
        else:
            out[key] = value
    for key, f in spec.items():
        if key not in data:
            if f.required:
                errors.append((_join(path, key), "required"))
            else:
                out[key] = f.default
    return out


def check_value(value: Any, f: Field) -> str | None:
    if f.kind != "any":
        ok = isinstance(value, _KINDS[f.kind]) and not (f.kind in ("int", "float") and isinstance(value, bool))
        if not ok:
            return f"must be {_KIND_NAMES[f.kind]}, not {_yaml_type(value)}"
    if f.choices is not None and value not in f.choices:
        return f"must be one of {', '.join(f.choices)}, not {value!r}{did_you_mean(value, f.choices)}"
    if f.min is not None and isinstance(value, (int, float)) and value < f.min:
        return f"must be at least {f.min:g}, not {value}"
    return None


def _yaml_type(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping", type(None): "null"}.get(type(v), type(v).__name__)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def parse(doc: Any) -> WorkerConfig:
    """The whole document validated; raises ``ConfigError`` listing every problem."""
    errors: list[tuple[str, str]] = []
    if not isinstance(doc, dict):
        raise ConfigError([("(file)", f"must be a mapping with 'worker' and 'connectors', not {_yaml_type(doc)}")])
    for key in doc:
        if key not in ("worker", "connectors"):
            errors.append((str(key), f"unknown key{did_you_mean(key, ('worker', 'connectors'))}"))
    w = check_section(doc.get("worker"), WORKER_SPEC, "worker", errors)
    conns = doc.get("connectors")
    out: list[ConnectorConfig] = []
    if not isinstance(conns, list) or not conns:
        errors.append(("connectors", "required: a non-empty list of connectors"))
    else:
        seen: dict[str, int] = {}
        for i, c in enumerate(conns):
            cc = _connector(c, f"connectors[{i}]", errors)
            if cc is not None:
                if cc.name in seen:
                    errors.append((f"connectors[{i}].name", f"duplicate name {cc.name!r} (also connectors[{seen[cc.name]}])"))
                seen.setdefault(cc.name, i)
                out.append(cc)
    if w.get("group") is not None and w.get("rest_port") is None:
        errors.append(("worker.rest_port", "required with group (workers forward control requests to each other)"))
    if errors:
        raise ConfigError(errors)
    return WorkerConfig(connectors=out, **{k: v for k, v in w.items()})


def _connector(c: Any, path: str, errors: list[tuple[str, str]]) -> ConnectorConfig | None:
    if not isinstance(c, dict):
        errors.append((path, f"must be a mapping, not {_yaml_type(c)}"))
        return None
    n0 = len(errors)
    for key in c:
        if key not in CONNECTOR_KEYS:
            errors.append((_join(path, key), f"unknown key{did_you_mean(key, CONNECTOR_KEYS)}"))
    name = c.get("name")
    if name is None:
        errors.append((f"{path}.name", "required"))
    elif not isinstance(name, str) or not NAME_RE.match(name):
        errors.append((f"{path}.name", "must be 1-100 characters of A-Z a-z 0-9 . _ -"))
    cls_name = c.get("class")
    cls = None
    if cls_name is None:
        errors.append((f"{path}.class", "required"))
    elif not isinstance(cls_name, str):
        errors.append((f"{path}.class", f"must be a string, not {_yaml_type(cls_name)}"))
    else:
        try:
            cls = load_connector_class(cls_name)
        except PluginError as exc:
            msg = str(exc)
            if msg.startswith("unknown connector class"):
                msg += did_you_mean(cls_name, known_names())
            errors.append((f"{path}.class", msg))
    tasks_max = c.get("tasks_max", 1)
    if not isinstance(tasks_max, int) or isinstance(tasks_max, bool) or tasks_max < 1:
        errors.append((f"{path}.tasks_max", f"must be an integer >= 1, not {tasks_max!r}"))
    convs = {}
    for key in ("key_converter", "value_converter"):
        v = c.get(key, "string" if key == "key_converter" else "json")
        if v not in CONVERTERS:
            errors.append((f"{path}.{key}", f"unknown converter {v!r}{did_you_mean(v, CONVERTERS)}; "
                                            f"one of {', '.join(CONVERTERS)}"))
        convs[key] = v
    transforms = _transforms(c.get("transforms"), f"{path}.transforms", errors)
    ep = check_section(c.get("errors"), ERRORS_SPEC, f"{path}.errors", errors)
    rp = check_section(c.get("restart"), RESTART_SPEC, f"{path}.restart", errors)
    topics, regex = c.get("topics"), c.get("topics_regex")
    conf: dict[str, Any] = {}
    if cls is not None:
        is_sink = issubclass(cls, SinkConnector)
        if is_sink:
            if topics is None and regex is None:
                errors.append((f"{path}.topics", "required for a sink (or topics_regex)"))
            elif topics is not None and (not isinstance(topics, list) or not topics
                                         or not all(isinstance(t, str) for t in topics)):
                errors.append((f"{path}.topics", "must be a non-empty list of topic names"))
            elif regex is not None:
                try:
                    re.compile(str(regex))
                except re.error as exc:
                    errors.append((f"{path}.topics_regex", f"invalid regular expression: {exc}"))
        elif topics is not None or regex is not None:
            errors.append((f"{path}.topics" if topics is not None else f"{path}.topics_regex",
                           "only sinks read topics (a source names its topic in config)"))
        need = getattr(cls, "CONVERTERS", None)
        for key in ("key_converter", "value_converter") if need else ():
            if convs[key] != need:
                errors.append((f"{path}.{key}", f"must be {need} for {cls_name} (it copies payloads as they are)"))
        conf = check_section(c.get("config"), cls.CONFIG, f"{path}.config", errors)
        if len(errors) == n0:
            for key, reason in cls().validate(conf):
                errors.append((f"{path}.config.{key}", reason))
    if ep.get("dead_letter_topic") is not None and ep.get("tolerance") != "all":
        errors.append((f"{path}.errors.dead_letter_topic", "needs tolerance: all (with none the task stops "
                                                           "at the first bad record)"))
    if len(errors) != n0:
        return None
    return ConnectorConfig(name=name, class_name=cls_name, connector_class=cls, tasks_max=tasks_max,
                           key_converter=convs["key_converter"], value_converter=convs["value_converter"],
                           topics=list(topics or []), topics_regex=regex, transforms=transforms,
                           errors=ErrorPolicy(**ep), restart=RestartPolicy(**rp), config=conf)


def _transforms(specs: Any, path: str, errors: list[tuple[str, str]]) -> list[dict[str, Any]]:
    if specs is None:
        return []
    if not isinstance(specs, list):
        errors.append((path, f"must be a list, not {_yaml_type(specs)}"))
        return []
    out = []
    for i, t in enumerate(specs):
        p = f"{path}[{i}]"
        if not isinstance(t, dict):
            errors.append((p, f"must be a mapping, not {_yaml_type(t)}"))
            continue
        kind = t.get("type")
        if kind is None:
            errors.append((f"{p}.type", f"required: one of {', '.join(TRANSFORMS)}"))
            continue
        if kind not in TRANSFORMS:
            errors.append((f"{p}.type", f"unknown transform {kind!r}{did_you_mean(kind, TRANSFORMS)}"))
            continue
        cls = TRANSFORMS[kind]
        entry = check_section(t, cls.CONFIG, p, errors, extra_ok=("type", "predicate", "negate"))
        entry["type"] = kind
        if "negate" in t:
            if not isinstance(t["negate"], bool):
                errors.append((f"{p}.negate", f"must be true or false, not {_yaml_type(t['negate'])}"))
            entry["negate"] = t["negate"]
        pred = t.get("predicate")
        if pred is not None:
            entry["predicate"] = _predicate(pred, f"{p}.predicate", errors)
        elif cls.NEEDS_PREDICATE:
            errors.append((f"{p}.predicate", f"required: {kind} drops the records its predicate selects"))
        if kind == "insert_field" and ("value" in t) == ("from" in t):
            errors.append((p, "insert_field needs exactly one of value or from"))
        for key, f in (("pattern", "pattern"), ("regex", "regex")):
            if isinstance(t.get(key), str):
                try:
                    re.compile(t[key])
                except re.error as exc:
                    errors.append((f"{p}.{f}", f"invalid regular expression: {exc}"))
        out.append(entry)
    return out


def _predicate(pred: Any, path: str, errors: list[tuple[str, str]]) -> dict[str, Any]:
    if not isinstance(pred, dict):
        errors.append((path, f"must be a mapping, not {_yaml_type(pred)}"))
        return {}
    kind = pred.get("type")
    if kind not in PREDICATES:
        reason = "required" if kind is None else f"unknown predicate {kind!r}{did_you_mean(kind, PREDICATES)}"
        errors.append((f"{path}.type", f"{reason}; one of {', '.join(PREDICATES)}"))
        return {}
    entry = check_section(pred, PREDICATES[kind].CONFIG, path, errors, extra_ok=("type",))
    entry["type"] = kind
    if isinstance(pred.get("pattern"), str):
        try:
            re.compile(pred["pattern"])
        except re.error as exc:
            errors.append((f"{path}.pattern", f"invalid regular expression: {exc}"))
    return entry


ENV_RE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """``${NAME}`` / ``${NAME:-default}`` (upper-case names only, so a sink's ``${topic}`` stays)."""
    def sub(m: re.Match[str]) -> str:
        value = env.get(m.group(1))
        return value if value is not None else (m.group(2) or "")
    return ENV_RE.sub(sub, text)


def load_text(text: str, env: Mapping[str, str] | None = None) -> WorkerConfig:
    """Parse and validate; ``${NAME:-default}`` is taken from ``env`` (default: ``os.environ``)."""
    text = interpolate(text, os.environ if env is None else env)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError([(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from exc
    return parse(doc)


def load_file(path: str | Path) -> WorkerConfig:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError([(str(path), f"cannot read: {exc.strerror}")]) from exc
    return load_text(text)
