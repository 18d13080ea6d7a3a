"""Converters: Python values <-> record bytes, one per key and one per value of each connector.

Why a separate layer: connectors speak Python values (dicts for rows, str for lines) and the log
stores bytes; the same file-source can write JSON or plain text depending on YAML only.
``None`` is always ``None`` on both sides (a tombstone or an absent key stays one).

* ``json``   — UTF-8 JSON, compact; datetimes, dates and times as ISO 8601 text, Decimals as
  numbers, bytes as base64 text (the sink sees text back).
* ``string`` — ``str`` as UTF-8; other values via ``str()`` (dicts as JSON).
* ``bytes``  — passes ``bytes`` through (``str`` encoded as UTF-8); anything else is an error.
* ``cbor``   — CBOR (RFC 8949) via cbor2: keeps bytes, datetimes and Decimals typed.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
from typing import Any, Callable

import cbor2

from .json_columns import decode_many, decode_one, encode_many, encode_rows


class ConversionError(ValueError):
    """A value cannot be converted (the ``convert`` stage of the error policy)."""


def _json_default(o: Any) -> Any:
    if isinstance(o, (dt.datetime, dt.date, dt.time)):
        return o.isoformat()
    if isinstance(o, decimal.Decimal):
        return int(o) if o == o.to_integral_value() else float(o)  # JSON numbers: 12.50 -> 12.5
    if isinstance(o, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(o)).decode()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json_default).encode


class Converter:
    name = ""

    def to_bytes(self, value: Any) -> bytes | None:  # pragma: no cover - interface
        raise NotImplementedError

    def from_bytes(self, data: bytes | None) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def to_bytes_many(self, values: list[Any]) -> list[bytes | None]:
        f = self.to_bytes
        return [f(v) for v in values]

    def to_bytes_rows(self, columns: list[str], rows: list[tuple]) -> list[bytes | None]:
        """Each row as the object ``dict(zip(columns, row))`` (a ``SourceBatch`` with columns)."""
        return self.to_bytes_many([dict(zip(columns, row)) for row in rows])

    def from_bytes_many(self, data: list[bytes | None]) -> list[Any]:
        """Every value, or the first ``ConversionError`` (callers then go one by one)."""
        f = self.from_bytes
        return [f(d) for d in data]


class JsonConverter(Converter):
    name = "json"

    def to_bytes_many(self, values: list[Any]) -> list[bytes | None]:
        try:
            return encode_many(values, _dumps)  # column at a time, byte-identical (json_columns.py)
        except Exception:  # noqa: BLE001 - value by value, for the proper ConversionError
            return super().to_bytes_many(values)

    def to_bytes_rows(self, columns: list[str], rows: list[tuple]) -> list[bytes | None]:
        try:
            return encode_rows(columns, rows, _dumps)  # no dict per row (json_columns.py)
        except Exception:  # noqa: BLE001 - row by row, for the proper ConversionError
            return super().to_bytes_rows(columns, rows)

    def from_bytes_many(self, data: list[bytes | None]) -> list[Any]:
        try:
            if None not in data:
                return decode_many(data)  # json_columns.py
            return [None if d is None else decode_one(d.decode()) for d in data]
        except (ValueError, UnicodeDecodeError, TypeError):
            return super().from_bytes_many(data)  # raises the first ConversionError

    def to_bytes(self, value: Any) -> bytes | None:
        if value is None:
            return None
        try:
            return _dumps(value).encode()
        except (TypeError, ValueError) as exc:
            raise ConversionError(f"json: {exc}") from exc

    def from_bytes(self, data: bytes | None) -> Any:
        if data is None:
            return None
        try:
            return decode_one(data.decode())  # str, not bytes: json.loads would sniff the encoding each time
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConversionError(f"json: not valid JSON: {exc}") from exc


class StringConverter(Converter):
    name = "string"

    def to_bytes_many(self, values: list[Any]) -> list[bytes | None]:
        try:
            return [v.encode() for v in values]  # the common case: all str, at C speed
        except AttributeError:
            return super().to_bytes_many(values)

    def to_bytes(self, value: Any) -> bytes | None:
        if value is None:
            return None
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, bytes):
            return value
        if isinstance(value, (dict, list)):
            return _dumps(value).encode()
        return str(value).encode()

    def from_bytes(self, data: bytes | None) -> Any:
        if data is None:
            return None
        try:
            return data.decode()
        except UnicodeDecodeError as exc:
            raise ConversionError(f"string: not UTF-8: {exc}") from exc


class BytesConverter(Converter):
    name = "bytes"

    def to_bytes(self, value: Any) -> bytes | None:
        if value is None or isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        raise ConversionError(f"bytes: cannot convert {type(value).__name__} (use the json or string converter)")

    def from_bytes(self, data: bytes | None) -> Any:
        return data


class CborConverter(Converter):
    name = "cbor"

    def to_bytes(self, value: Any) -> bytes | None:
        if value is None:
            return None
        try:
            return cbor2.dumps(value, datetime_as_timestamp=False, timezone=dt.timezone.utc)
        except (TypeError, ValueError, cbor2.CBOREncodeError) as exc:
            raise ConversionError(f"cbor: {exc}") from exc

    def from_bytes(self, data: bytes | None) -> Any:
        if data is None:
            return None
        try:
            return cbor2.loads(data)
        except (ValueError, cbor2.CBORDecodeError) as exc:
            raise ConversionError(f"cbor: not valid CBOR: {exc}") from exc


CONVERTERS: dict[str, Callable[[], Converter]] = {
    "json": JsonConverter, "string": StringConverter, "bytes": BytesConverter, "cbor": CborConverter}


def make_converter(name: str) -> Converter:
    return CONVERTERS[name]()
