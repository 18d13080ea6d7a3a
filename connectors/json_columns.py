"""JSON encoding and decoding of whole columns: the converters' fast path for bulk records.

Why: a query's rows arrive as tuples, and the straightforward way to encode them (a dict per
row, then ``json.dumps`` with a ``default`` hook for Decimals and datetimes) spends most of its
time calling back into Python for every non-native value.  Here each column is encoded on its
own, once its values' types are known, with ``map`` over C-level callables (``int.__repr__``,
``datetime.isoformat``, the json module's C string encoder), and each row is then one
``template % fields`` format.  No Python bytecode runs per value for the common column types.

Contract: the output is *byte-identical* to ``JsonConverter.to_bytes`` of the same value (the
dict ``dict(zip(columns, row))`` for a row).  Every column type without a proven fast encoder
uses the converter's own per-value encoder, and anything unexpected (a NaN, a huge Decimal, a
type the encoder refuses) raises, so that callers fall back to the value-by-value path, which
also does the error reporting.  ``tests/test_connect_units.py`` checks the identity on mixed
columns against the plain encoder.

Decoding: ``decode_many`` decodes a whole column in one call of the C scanner (see there why and
how it stays exact); ``decode_one`` calls the scanner directly, skipping the two Python frames
``json.loads`` adds per call; a value the scanner does not consume whole (surrounding whitespace,
trailing garbage) goes through the full decoder, which accepts or rejects it exactly as
``json.loads`` would.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import json.decoder
import math
import os
from itertools import compress, repeat
from operator import itemgetter
from typing import Any, Callable, Sequence

try:  # the C string encoder that json.dumps(ensure_ascii=False) uses
    from _json import encode_basestring as _encode_str  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - CPython always has _json
    from json.encoder import py_encode_basestring as _encode_str

NULL = "null"
_TRUE_FALSE = {True: "true", False: "false"}.__getitem__


def _float_column(values: Sequence[float]) -> list[str]:
    out = list(map(float.__repr__, values))
    if not all(map(math.isfinite, values)):
        raise ValueError("NaN or infinity")  # the plain encoder writes NaN/Infinity: let it
    return out


def _decimal_column(values: Sequence[decimal.Decimal]) -> list[str]:
    """As the converter's rule: an integral Decimal is a JSON integer, any other one a float."""
    out = _float_column(list(map(float, values)))
    # An integral Decimal has an integral float, whose repr ends in ".0" or has an exponent: only
    # those candidates need the exact (slower) test; all others are certainly not integral.
    for i in [i for i, s in enumerate(out) if s.endswith(".0") or "e" in s]:
        d = values[i]
        if d == d.to_integral_value():
            out[i] = int.__repr__(int(d))
    return out


def _isoformat_column(method: Callable[[Any], str]) -> Callable[[Sequence[Any]], list[str]]:
    return lambda values: list(map(_encode_str, map(method, values)))


_COLUMN_ENCODERS: dict[type, Callable[[Sequence[Any]], list[str]]] = {
    int: lambda values: list(map(int.__repr__, values)),
    str: lambda values: list(map(_encode_str, values)),
    bool: lambda values: list(map(_TRUE_FALSE, values)),
    float: _float_column,
    decimal.Decimal: _decimal_column,
    dt.datetime: _isoformat_column(dt.datetime.isoformat),
    dt.date: _isoformat_column(dt.date.isoformat),
    dt.time: _isoformat_column(dt.time.isoformat),
}


def encode_column(values: Sequence[Any], encode_one: Callable[[Any], str]) -> list[str]:
    """Each value as JSON text (``None`` as ``null``).  ``encode_one`` is the converter's own
    encoder, used for the types without a column encoder here."""
    types = set(map(type, values))
    has_null = type(None) in types
    types.discard(type(None))
    if len(types) != 1:
        return [NULL if v is None else encode_one(v) for v in values]
    enc = _COLUMN_ENCODERS.get(types.pop())
    if enc is None:
        return [NULL if v is None else encode_one(v) for v in values]
    if not has_null:
        return enc(values)
    present = [v is not None for v in values]
    out = [NULL] * len(values)
    for i, s in zip(compress(range(len(values)), present), enc(list(compress(values, present)))):
        out[i] = s
    return out


def row_template(columns: Sequence[str]) -> str:
    """``{"a":%s,"b":%s}`` for columns a, b (names JSON-escaped, ``%`` doubled)."""
    return "{" + ",".join(_encode_str(c).replace("%", "%%") + ":%s" for c in columns) + "}"


def encode_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], encode_one: Callable[[Any], str]) -> list[bytes]:
    """Each row as the UTF-8 JSON object ``dict(zip(columns, row))``, byte-identical to the
    converter's output.  Raises ``ValueError`` where that identity is not guaranteed (repeated
    column names, rows of another width), and whatever ``encode_one`` raises."""
    if len(set(columns)) != len(columns):
        raise ValueError("repeated column names")  # dict(zip(...)) would keep the last value
    if not rows:
        return []
    width = len(columns)
    if any(len(r) != width for r in rows):
        raise ValueError("a row's width differs from the columns'")
    if width == 0:
        return [b"{}"] * len(rows)
    # One column at a time (itemgetter: no tuple per row, unlike zip(*rows)); then one C-level
    # format per row, the zip's tuple reused as each format call lets go of it.
    fields = [encode_column(list(map(itemgetter(i), rows)), encode_one) for i in range(width)]
    return list(map(str.encode, map(row_template(columns).__mod__, zip(*fields))))


def encode_many(values: Sequence[Any], encode_one: Callable[[Any], str]) -> list[bytes | None]:
    """Each value as UTF-8 JSON; ``None`` stays ``None`` (an absent key, a tombstone)."""
    if None not in values:  # identity and == checks; the common case, e.g. a column of ids
        return list(map(str.encode, encode_column(values, encode_one)))
    return [None if v is None else s.encode() for v, s in zip(values, encode_column(values, encode_one))]


_decoder = json.JSONDecoder()
_scan = _decoder.scan_once
_decode = _decoder.decode


# The separator element of ``decode_many``'s joined array: a string no record holds (random per
# process), starting with ``#`` so that it cannot continue a value left open before it.
_MARK = "#" + os.urandom(16).hex()
_SEP = ',"' + _MARK + '",'


def decode_many(data: Sequence[bytes]) -> list[Any]:
    """``[json.loads(d) for d in data]`` for UTF-8 values (no None), in one scanner call.

    Why one call: the scanner interns object keys only within a call, so decoding values one by
    one allocates and hashes every key of every record again; one array of all the values shares
    them, which halves the cost for rows of a few fields.  The values are joined as the array
    ``[v1,"#MARK",v2,"#MARK",...]`` with a random ``_MARK``: the result must have the marker at
    every odd index, which holds only if each value is exactly one JSON value (a value that
    opened a string or a bracket would swallow a separator, and no record holds the marker), so
    the even elements are each value's ``json.loads``.  Anything else raises ``ValueError`` and
    the caller decodes one by one for the exact result or error."""
    n = len(data)
    if n == 0:
        return []
    text = "[" + _SEP.join(map(bytes.decode, data)) + "]"
    try:
        found, end = _scan(text, 0)
    except StopIteration:
        raise ValueError("not one JSON value per text") from None
    if end != len(text) or type(found) is not list or len(found) != 2 * n - 1 or \
            found[1::2].count(_MARK) != n - 1:
        raise ValueError("not one JSON value per text")
    return found[0::2]


def decode_one(text: str) -> Any:
    """``json.loads(text)`` with less overhead per call (same result, same errors)."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return _decode(text)  # raises the proper JSONDecodeError (or handles leading spaces)
    if end != len(text):
        return _decode(text)  # trailing whitespace is fine, anything else is an error: as loads
    return value
