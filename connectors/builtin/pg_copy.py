"""PostgreSQL ``COPY ... FROM STDIN`` text data built a column at a time.

Why: psycopg's ``Copy.write_row`` formats well but costs a few microseconds of Python per row;
a sink writing 100,000 rows a second cannot afford that.  The values a JSON-fed sink holds are
few types (int, float, str, bool, None), and each has one text form that psycopg itself would
send: ``str()`` of a number (``repr``: the shortest round-trip form), ``t``/``f``, ``\\N`` for
NULL, and text with the COPY escapes (backslash, tab, newline, ...).  So each column is
formatted with ``map`` over C-level callables, then each row is one ``"\\t".join``.

Anything else (a Decimal or datetime put there by a transform, NaN, an int too big for a float
check, a column mixing text and numbers) makes ``encode_copy_text`` return ``None``, and the
caller uses psycopg's ``write_row``: the fast path never guesses.
"""

from __future__ import annotations

import math
import re
from itertools import compress
from typing import Any, Iterator, Sequence

NULL = "\\N"
CHUNK_ROWS = 5000  # rows per piece handed to the server: about 1 MB of a typical table
# The escapes psycopg applies in COPY text format (psycopg/_copy_base.py), the same set.
_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\v": "\\v", "\f": "\\f", "\r": "\\r", "\\": "\\\\"}
_SPECIAL = re.compile("[\b\t\n\v\f\r\\\\]")
_TRANSLATE = str.maketrans(_ESCAPES)
_BOOL = {True: "t", False: "f"}.__getitem__
_NUMBERS = ({int}, {float}, {int, float})


def _text_column(values: list[str]) -> list[str]:
    if _SPECIAL.search("".join(values)) is None:  # one C scan for the common case: nothing to escape
        return values
    return [s.translate(_TRANSLATE) for s in values]


def _encode_present(values: list[Any], types: set[type]) -> list[str] | None:
    if types == {str}:
        return _text_column(values)
    if types in _NUMBERS:
        try:
            if not all(map(math.isfinite, values)):
                return None  # NaN and infinities: psycopg's own spelling
        except OverflowError:
            return None
        return list(map(str, values))
    if types == {bool}:
        return list(map(_BOOL, values))
    return None


def encode_column(values: Sequence[Any]) -> list[str] | None:
    """Each value's COPY text form, or None when this column needs psycopg's formatting."""
    types = set(map(type, values))
    if type(None) not in types:
        return _encode_present(list(values), types)
    types.discard(type(None))
    present = [v is not None for v in values]
    out = [NULL] * len(values)
    if types:
        enc = _encode_present(list(compress(values, present)), types)
        if enc is None:
            return None
        for i, s in zip(compress(range(len(values)), present), enc):
            out[i] = s
    return out


def encode_copy_text(columns: Sequence[Sequence[Any]], encoding: str,
                     chunk_rows: int = CHUNK_ROWS) -> Iterator[bytes] | None:
    """The rows (given as columns of equal length) as COPY text data, in pieces of
    ``chunk_rows`` rows, or None (see the module).  Pieces, because the server parses one piece
    while the next is formatted: the two overlap on two cores."""
    encoded = []
    for col in columns:
        enc = encode_column(col)
        if enc is None:
            return None
        encoded.append(enc)
    if not encoded or not encoded[0]:
        return None
    n = len(encoded[0])
    return (("\n".join(map("\t".join, zip(*(col[i:i + chunk_rows] for col in encoded)))) + "\n").encode(encoding)
            for i in range(0, n, chunk_rows))
