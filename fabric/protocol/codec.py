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

Why hostile input stops here (SPEC §3): a header is attacker-controlled, and cbor2 by itself turns
tags into Python objects that cost more than their bytes (a 2,000-byte bignum is an integer Python
refuses to format; a rational makes two huge ints meet in a gcd; value sharing makes cycles), and
maps with integer keys into dicts whose hashes an attacker chooses.  So the decoder accepts plain
data only: no tag (bar the self-describe prefix ``d9 d9 f7``), text or byte-string map keys, at most
``HEADER_NESTING_MAX`` levels, and every integer inside the signed 64-bit range.  Everything after
``decode_map`` sees only dicts, lists, text, bytes, int64s, floats, bools, null and simple values.
"""

from __future__ import annotations

import io
import re
from typing import Any, Mapping

import cbor2

from .errors import FabricError
from .limits import HEADER_NESTING_MAX, INT64_MAX, INT64_MIN, Limits

# The self-describe tag 55799 as its 3-byte magic prefix (RFC 8949 §3.4.6): the only tag accepted.
SELF_DESCRIBE = b"\xd9\xd9\xf7"


class _TagRejected(ValueError):
    def __init__(self, tag: int) -> None:
        super().__init__(f"CBOR tag {tag} is not accepted")
        self.tag = tag


def _rejecting(tag: int) -> Any:
    def reject(value: Any, immutable: bool) -> Any:
        raise _TagRejected(tag)
    return reject


def _reject_unknown_tag(tag: cbor2.CBORTag, immutable: bool) -> Any:
    raise _TagRejected(tag.tag)


# Every tag cbor2 (6.x) decodes by itself, overridden so that none is turned into an object; the
# others reach ``tag_hook``.  (tests/test_codec.py scans the tag numbers to keep this list whole.)
_SEMANTIC_TAGS = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004, 43000, 55799)
_NO_SEMANTICS = {tag: _rejecting(tag) for tag in _SEMANTIC_TAGS}
# Only an integer head with an 8-byte argument (0x1b / 0x3b) whose top byte is >= 0x80 can hold a
# value outside int64: a header without that byte pair skips the walk of ``_check_int64``.
_WIDE_INT = re.compile(rb"[\x1b\x3b][\x80-\xff]")


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
    """Decode one CBOR map from ``frame`` under the rules of SPEC §3; every failure is a
    ``MALFORMED_REQUEST``/``FRAME_TOO_LARGE``/``INVALID_FIELD`` ``FabricError`` (cbor2's exceptions
    never leak out), and the messages never echo an unbounded value.  An ``INVALID_FIELD`` (an
    integer beyond int64) carries the decoded map as ``details["header"]``."""
    if len(frame) > limit_bytes:
        raise FabricError("FRAME_TOO_LARGE", f"{what} frame is {len(frame)} bytes; the limit is {limit_bytes}")
    if len(frame) == 0:
        raise FabricError("MALFORMED_REQUEST", f"{what} frame is empty")
    buf = io.BytesIO(frame)
    if frame[0] == 0xD9 and frame[:3] == SELF_DESCRIBE:
        buf.seek(3)
    try:
        value = cbor2.CBORDecoder(buf, tag_hook=_reject_unknown_tag, semantic_decoders=_NO_SEMANTICS,
                                  max_depth=HEADER_NESTING_MAX, strict_hashable_types=True).decode()
    except Exception as exc:  # cbor2 wraps what our hooks raise, and its own ValueError/TypeError
        raise FabricError("MALFORMED_REQUEST", f"{what} {_decode_failure(exc)}") from None
    if buf.tell() != len(frame):
        raise FabricError("MALFORMED_REQUEST",
                          f"{what} has {len(frame) - buf.tell()} bytes after the CBOR item")
    if type(value) is not dict:  # the common case skips these checks (typing.Mapping's is slow)
        if isinstance(value, Mapping):  # cbor2 frozendict (after the self-describe prefix)
            value = dict(value)
        else:
            raise FabricError("MALFORMED_REQUEST", f"{what} must be a CBOR map, got {type_name(value)}")
    for key in value:
        if not isinstance(key, str):
            raise FabricError("MALFORMED_REQUEST", f"{what} keys must be text strings, got {type_name(key)}")
    if (type(frame) is not bytes or b"\x1b" in frame or b"\x3b" in frame) and _WIDE_INT.search(frame):
        try:
            _check_int64(value, "")
        except FabricError as err:  # the header is readable: the error reply may echo its op
            err.details["header"] = value
            raise
    return value


def _decode_failure(exc: BaseException) -> str:
    """Why cbor2 refused a frame, in SPEC §3's words.  (Only cbor2's own message is quoted, never
    the input: it may be a megabyte.)"""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, _TagRejected) or isinstance(exc, _TagRejected):
        tag = cause.tag if isinstance(cause, _TagRejected) else exc.tag  # type: ignore[union-attr]
        return f"holds CBOR tag {tag}: tags are not accepted (SPEC section 3)"
    text = _bounded(str(exc))
    if "map key" in text:  # strict_hashable_types: an integer, array or map as a key
        return f"map keys must be text strings ({text})"
    if "nesting depth" in text:
        return f"is nested too deeply ({text})"
    return f"is not valid CBOR: {text}"


def _check_int64(value: Any, path: str) -> None:
    """Every integer of a decoded header must fit int64 (SPEC §3 rule 6); the field's own range is
    the schema's business.  Iterative, so the walk needs no recursion however deep the header."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        cls = item.__class__
        if cls is int:
            if not INT64_MIN <= item <= INT64_MAX:
                raise FabricError("INVALID_FIELD", f"{_bounded(where or 'header')}: integer outside the signed "
                                                   f"64-bit range")
        elif cls is dict or isinstance(item, Mapping):
            stack.extend((v, f"{where}.{k}" if where else str(k)) for k, v in item.items())
        elif cls is list or cls is tuple:
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))


def _bounded(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


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
