"""CBOR header codec and the multipart frame layout.

Request, client DEALER -> broker ROUTER (the ROUTER adds the identity frame in front)::

    frame 0      CBOR map: the header {"op": text, "v": uint, "cid": uint, ...operation fields}
    frame 1..n   raw payload frames (record batches for ``produce``), referenced by index
                 from the header; never CBOR-wrapped, so they go to disk without a copy

Reply, broker ROUTER -> client DEALER::

    frame 0      CBOR map: {"op": text, "cid": uint|null, ...result}  or  {..., "error": {code, name, message}}
    frame 1..n   raw payload frames (record batch bytes for ``fetch``)

Why decode strictly but tolerantly: other languages' CBOR libraries write the same map in many
valid ways (long length forms, indefinite lengths, sorted keys, float64 for big integers).  We
never compare bytes; we decode any valid CBOR and then check types field by field.  Trailing bytes
after the header item are an error (a truncated or concatenated frame is not a request).
"""

from __future__ import annotations

import io
from typing import Any, Mapping

import cbor2

from .errors import FabricError
from .limits import Limits


def encode(value: Any) -> bytes:
    """Encode a header map.  Minimal-length CBOR, keys in insertion order."""
    return cbor2.dumps(value)


class HeaderTemplate:
    """A request header whose fields are fixed but for the cid, encoded once: ``with_cid(cid)``
    equals ``encode({"op": op, "v": v, "cid": cid, **fields})`` byte for byte.  Why: a producer
    sends the same produce header (acks, timeout, targets) thousands of times a second, and
    encoding the map, with its nested array of maps, was a fifth of the sender's work per
    request."""

    __slots__ = ("head", "tail")

    def __init__(self, op: str, v: int, fields: dict[str, Any]) -> None:
        if "cid" in fields or len(fields) > 20:  # (a map of up to 23 entries has a one-byte head)
            raise ValueError("a template holds at most 20 fields besides op, v and cid")
        start = cbor2.dumps({"op": op, "v": v})
        rest = cbor2.dumps(fields)
        self.head = bytes([0xA0 | (3 + len(fields))]) + start[1:] + cbor2.dumps("cid")
        self.tail = rest[1:]

    def with_cid(self, cid: int) -> bytes:
        return self.head + cbor2.dumps(cid) + self.tail


def decode_map(frame: bytes | memoryview, limit_bytes: int, what: str = "header") -> dict[str, Any]:
    """Decode one CBOR map from ``frame``; every failure is a ``MALFORMED_REQUEST``/``FRAME_TOO_LARGE``
    ``FabricError`` (cbor2's exceptions never leak out)."""
    if len(frame) > limit_bytes:
        raise FabricError("FRAME_TOO_LARGE", f"{what} frame is {len(frame)} bytes; the limit is {limit_bytes}")
    if len(frame) == 0:
        raise FabricError("MALFORMED_REQUEST", f"{what} frame is empty")
    buf = io.BytesIO(frame)
    try:
        value = cbor2.CBORDecoder(buf).decode()
    except RecursionError:
        raise FabricError("MALFORMED_REQUEST", f"{what} is nested too deeply") from None
    except Exception as exc:  # cbor2 raises several types, plus ValueError/TypeError on odd input
        raise FabricError("MALFORMED_REQUEST", f"{what} is not valid CBOR: {exc}") from None
    if buf.tell() != len(frame):
        raise FabricError("MALFORMED_REQUEST",
                          f"{what} has {len(frame) - buf.tell()} bytes after the CBOR item")
    if type(value) is not dict:  # the common case skips these checks (typing.Mapping's is slow)
        if isinstance(value, cbor2.CBORTag) and value.tag == 55799:  # "self-described CBOR" marker
            value = value.value
        if isinstance(value, Mapping) and not isinstance(value, dict):  # cbor2 frozendict (inside tags)
            value = dict(value)
    if not isinstance(value, dict):
        raise FabricError("MALFORMED_REQUEST", f"{what} must be a CBOR map, got {type_name(value)}")
    for key in value:
        if not isinstance(key, str):
            raise FabricError("MALFORMED_REQUEST", f"{what} keys must be text strings, got {type_name(key)}")
    return value


def check_frames(frames: list, limits: Limits) -> None:
    """Check a request's frame count and sizes before anything is decoded."""
    if not frames:
        raise FabricError("MALFORMED_REQUEST", "request has no frames")
    if len(frames) > limits.request_frames_max:
        raise FabricError("TOO_MANY_FRAMES",
                          f"request has {len(frames)} frames; the limit is {limits.request_frames_max}")
    total = 0
    for i, f in enumerate(frames):
        n = len(f)
        total += n
        if i > 0 and n > limits.batch_bytes_max:
            raise FabricError("FRAME_TOO_LARGE",
                              f"frame {i} is {n} bytes; the limit is {limits.batch_bytes_max}")
    if total > limits.request_bytes_max:
        raise FabricError("FRAME_TOO_LARGE",
                          f"request is {total} bytes in all; the limit is {limits.request_bytes_max}")


def type_name(value: Any) -> str:
    """CBOR-flavoured type names for error messages (a client author reads them, not a Pythonist)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "map"
    if isinstance(value, cbor2.CBORTag):
        return f"tag {value.tag}"
    return f"tagged value ({type(value).__name__})"
