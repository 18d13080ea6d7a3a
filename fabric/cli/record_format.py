"""How ``fabric consume`` prints a record: the presets ``plain`` and ``json``, or a template
like kcat's ``-f``.  Pure functions over ``Record``: no I/O, tested without a broker.

Template fields (kcat's letters)::

    %t topic   %p partition   %o offset   %T timestamp (ms since the epoch)
    %k key     %s value       %K key length in bytes   %S value length in bytes
    %h headers as name=value,name=value   %% a percent sign
    escapes: \\n newline, \\t tab, \\r carriage return, \\0 NUL, \\\\ backslash

A template that does not end in a newline gets one: one record, one line (kcat leaves that to
you; every example here wants lines).  Keys and values that are not UTF-8 print with backslash
escapes; a missing key prints as nothing in templates, as ``null`` in JSON.
"""

from __future__ import annotations

import argparse
import base64
import json
from typing import Any, Callable

from ..records.batch import Record

PRESETS = ("plain", "json")
FORMAT_HELP = ("plain (the value; KEY<sep>VALUE with --print-key), json (one object per line), or a template "
               "of %t topic, %p partition, %o offset, %T timestamp, %k key, %s value, %K/%S their lengths, "
               "%h headers, escapes \\n \\t; e.g. '%p %o %k %s'")

Render = Callable[[Record], str]


def _text(b: bytes | None) -> str:
    return "" if b is None else b.decode("utf-8", "backslashreplace")


def _headers(r: Record) -> str:
    return ",".join(f"{n}={_text(v)}" for n, v in r.headers)


_FIELDS: dict[str, Render] = {
    "t": lambda r: r.topic,
    "p": lambda r: str(r.partition),
    "o": lambda r: str(r.offset),
    "T": lambda r: str(r.timestamp),
    "k": lambda r: _text(r.key),
    "s": lambda r: _text(r.value),
    "K": lambda r: str(-1 if r.key is None else len(r.key)),
    "S": lambda r: str(-1 if r.value is None else len(r.value)),
    "h": _headers,
}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\"}


def compile_template(template: str) -> list[str | Render]:
    """The template as literal strings and field functions; ValueError names a bad field."""
    parts: list[str | Render] = []
    literal: list[str] = []
    i = 0
    while i < len(template):
        c = template[i]
        nxt = template[i + 1] if i + 1 < len(template) else ""
        if c == "%":
            if nxt == "%":
                literal.append("%")
            elif nxt in _FIELDS:
                if literal:
                    parts.append("".join(literal))
                    literal = []
                parts.append(_FIELDS[nxt])
            else:
                raise ValueError(f"format {template!r}: unknown field %{nxt} (known: %t %p %o %T %k %s %K %S %h %%)")
            i += 2
        elif c == "\\" and nxt in _ESCAPES:
            literal.append(_ESCAPES[nxt])
            i += 2
        else:
            literal.append(c)
            i += 1
    if not "".join(literal).endswith("\n"):  # a pending literal always ends the template
        literal.append("\n")
    if literal:
        parts.append("".join(literal))
    if not any(callable(p) for p in parts):
        raise ValueError(f"format {template!r} has no %-field: use plain, json or a template like '%p %o %k %s'")
    return parts


def _json_field(obj: dict[str, Any], name: str, b: bytes | None) -> None:
    if b is None:
        obj[name] = None
        return
    try:
        obj[name] = b.decode("utf-8")
    except UnicodeDecodeError:
        obj[name] = None
        obj[name + "_base64"] = base64.b64encode(b).decode()


def render_json(r: Record) -> str:
    obj: dict[str, Any] = {"topic": r.topic, "partition": r.partition, "offset": r.offset, "timestamp": r.timestamp}
    _json_field(obj, "key", r.key)
    _json_field(obj, "value", r.value)
    obj["headers"] = {n: v.decode("utf-8", "backslashreplace") for n, v in r.headers}
    return json.dumps(obj, ensure_ascii=False) + "\n"


def renderer(fmt: str, print_key: bool = False, key_separator: str = "\t") -> Render:
    """A function Record -> text (ending in a newline) for ``--format`` (ValueError if invalid)."""
    if fmt == "json":
        return render_json
    if fmt == "plain":
        if print_key:
            return lambda r: _text(r.key) + key_separator + _text(r.value) + "\n"
        return lambda r: _text(r.value) + "\n"
    parts = compile_template(fmt)
    return lambda r: "".join(p if isinstance(p, str) else p(r) for p in parts)


def format_arg(text: str) -> str:
    """argparse ``type`` of --format: a preset or a template, checked at once."""
    if text not in PRESETS:
        try:
            compile_template(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return text
