"""Multipart send and receive on pyzmq sockets, for the request paths that run per message.

Frame layout (SPEC.md sections 1-2 are normative; this is what goes through these functions)::

    client DEALER -> broker ROUTER, as received by ``recv_routed``:
        frame 0      routing id      added by the ROUTER (the client sends no delimiter frame)
        frame 1      header          one CBOR map {"op", "v", "cid", ...fields}
        frame 2..    payload         raw record batches of a produce, one per ``batches`` entry
    broker ROUTER -> client DEALER, as passed to ``send_frames`` (the ROUTER strips frame 0):
        frame 0      routing id      the connection the request came in on
        frame 1      header          one CBOR map {"op", "cid", ...result} or {"op", "cid", "error"}
        frame 2..    payload         fetch data, one frame per reply ``partitions`` entry
    a client receives the reply without the routing id (``recv_frames``): header, then payload.

These functions never look inside a frame: they move lists of byte strings, whole.

Why not ``Socket.send_multipart``/``recv_multipart``.  Two costs, both per frame:

- pyzmq releases the GIL around every ``zmq_msg_send``/``zmq_msg_recv``.  Those calls never
  block here (they only queue a message for ZeroMQ's I/O thread, or take one from it), but
  handing the GIL over is a yield point: with a producer's caller, its sender thread and a
  consumer in one process, each release let another thread run first, and the sender then
  waited for the GIL ~100 us per frame (measured: 129 us of wall time per ``send`` of 21 us of
  CPU at 10,000 events/s).  A request is two frames, a reply two or three: this was the largest
  part of an event's end-to-end latency.
- since pyzmq 23 the flags are ``enum`` members and ``SNDMORE | flags`` and the ``RCVMORE``
  look-ups go through ``enum.Flag`` arithmetic: more than ZeroMQ's own work for small frames.

So, where it can, this module calls libzmq itself through ``ctypes.PyDLL`` (which keeps the
GIL), always with ``ZMQ_DONTWAIT``: the call cannot block, so holding the GIL through it is
what we want.  It uses the very libzmq that pyzmq loaded (found in ``/proc/self/maps`` and
opened with ``RTLD_NOLOAD``): a socket is that library's object.  Where that is not possible
(another OS, a libzmq older than 4.1, ``FABRIC_NATIVE_ZMQ=0``), or when a send would have to wait
(high-water mark), pyzmq does the work: same behaviour, slower.  Large frames sent with
``copy=False`` go through pyzmq too, for its zero-copy path.

Behaviour either way: all frames of a message, in order, atomically (ZeroMQ delivers a multipart
message whole or not at all, and accepts the rest of one once it accepted its first frame).

No send blocks without a deadline.  Every frame is sent with ``ZMQ_DONTWAIT``; when the first one
meets the high-water mark (or a DEALER with no peer yet), ``send_frames`` polls for room until a
deadline (``timeout_ms``, else the socket's ``SNDTIMEO`` if set, else ``SEND_WAIT_MS_DEFAULT``) and
raises ``zmq.Again`` when it passes: a peer that stopped reading costs the caller a bounded wait,
never a hung thread.  The rest of a message never waits (see above).

Why the native path is off, when it is, is logged once (INFO) at the first send or receive that
takes the fallback: a slower broker should say why.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import time
import weakref
from typing import Container, Mapping, NamedTuple, Sequence

import zmq

log = logging.getLogger("fabric.multipart")

_MORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)
_SRCFD = int(zmq.SRCFD)  # zmq_msg_get: the descriptor the message was read from (deprecated in 4.3, still served)
ZERO_COPY_MIN = 64 << 10  # copy=False frames from this size go through pyzmq without a copy
SEND_WAIT_MS_DEFAULT = 30_000  # longest wait for room to send, for a socket without SNDTIMEO


class _Msg(ctypes.Structure):
    """libzmq's ``zmq_msg_t``: 64 opaque bytes aligned like a pointer (zmq.h declares
    ``unsigned char _[64] __attribute__((aligned(sizeof(void *))))``).  Declared as pointer-sized
    fields, because a ``ctypes`` structure takes the alignment of its fields (``_pack_`` can only
    lower it): a ``c_ubyte`` array would be aligned to 1 byte."""

    _fields_ = [("_", ctypes.c_void_p * (64 // ctypes.sizeof(ctypes.c_void_p)))]


assert ctypes.sizeof(_Msg) == 64 and ctypes.alignment(_Msg) == ctypes.sizeof(ctypes.c_void_p)


class _LibZmq:
    """The libzmq functions we call, bound through ``ctypes.PyDLL`` (GIL held)."""

    def __init__(self, path: str) -> None:
        lib = ctypes.PyDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | os.RTLD_LAZY)
        vp, i, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
        self.send = _fn(lib.zmq_send, i, vp, ctypes.c_char_p, sz, i)
        self.msg_init = _fn(lib.zmq_msg_init, i, ctypes.POINTER(_Msg))
        self.msg_recv = _fn(lib.zmq_msg_recv, i, ctypes.POINTER(_Msg), vp, i)
        self.msg_data = _fn(lib.zmq_msg_data, vp, ctypes.POINTER(_Msg))
        self.msg_more = _fn(lib.zmq_msg_more, i, ctypes.POINTER(_Msg))
        self.msg_close = _fn(lib.zmq_msg_close, i, ctypes.POINTER(_Msg))
        self.msg_gets = _fn(lib.zmq_msg_gets, ctypes.c_char_p, ctypes.POINTER(_Msg), ctypes.c_char_p)
        self.msg_get = _fn(lib.zmq_msg_get, i, ctypes.POINTER(_Msg), i)
        self.errno = _fn(lib.zmq_errno, i)


def _fn(f, restype, *argtypes):  # type: ignore[no-untyped-def]
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


def _load(environ: Mapping[str, str] = os.environ) -> tuple[_LibZmq | None, str]:
    """The directly callable libzmq, or None and the reason it is not used."""
    if environ.get("FABRIC_NATIVE_ZMQ", "1") == "0":
        return None, "FABRIC_NATIVE_ZMQ=0"
    if zmq.zmq_version_info() < (4, 1):
        return None, f"libzmq {zmq.zmq_version()} is older than 4.1"
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split(None, 5)[5].strip() for line in maps
                     if line.count(" ") >= 5 and "libzmq" in line.rsplit("/", 1)[-1]}
        if len(paths) != 1:
            return None, f"{len(paths)} libzmq libraries are mapped in this process, not exactly one"
        return _LibZmq(paths.pop()), ""
    except (OSError, IndexError, AttributeError) as exc:
        return None, f"libzmq is not callable directly ({exc})"


_lib, _why_not_native = _load()
native = _lib is not None  # whether the GIL-keeping path is in use (tests check both)
_fallback_noted = False


def _note_fallback() -> None:
    """Say once why every frame goes through pyzmq (at first use: logging is set up by then)."""
    global _fallback_noted
    _fallback_noted = True
    log.info("sending and receiving through pyzmq, not libzmq directly: %s", _why_not_native or "disabled")


def send_frames(socket: zmq.Socket, frames: Sequence, copy: bool = True, timeout_ms: int | None = None) -> None:
    """Send ``frames`` as one multipart message.  ``copy=False`` hands frames of
    ``ZERO_COPY_MIN`` bytes and more to ZeroMQ without a copy.  If there is no room, wait at most
    ``timeout_ms`` (default: the socket's ``SNDTIMEO``, else ``SEND_WAIT_MS_DEFAULT``), then raise
    ``zmq.Again``."""
    lib = _lib
    if lib is not None and (copy or max(map(len, frames), default=0) < ZERO_COPY_MIN):
        handle = socket.underlying
        last = len(frames) - 1
        send = lib.send
        for i, frame in enumerate(frames):
            if frame.__class__ is not bytes:
                frame = bytes(frame)
            while send(handle, frame, len(frame), (_NOBLOCK | _MORE) if i < last else _NOBLOCK) < 0:
                err = lib.errno()
                if err == errno.EINTR:
                    continue
                if err == errno.EAGAIN and i == 0:
                    return _send_pyzmq(socket, frames, copy, timeout_ms)  # at the high-water mark: wait there
                raise zmq.ZMQError(err)
        return
    if lib is None and not _fallback_noted:
        _note_fallback()
    _send_pyzmq(socket, frames, copy, timeout_ms)


def try_send_frames(socket: zmq.Socket, frames: Sequence) -> bool:
    """``send_frames`` (copying) if that needs no wait; False if the socket would block.

    For a socket that must never wait: a ``DEALER`` whose connection ended and that does not
    reconnect has no peer left, and a waiting send would then wait for ever."""
    lib = _lib
    last = len(frames) - 1
    if lib is not None:
        handle = socket.underlying
        for i, frame in enumerate(frames):
            if frame.__class__ is not bytes:
                frame = bytes(frame)
            while lib.send(handle, frame, len(frame), (_NOBLOCK | _MORE) if i < last else _NOBLOCK) < 0:
                err = lib.errno()
                if err == errno.EINTR:
                    continue
                if err == errno.EAGAIN and i == 0:
                    return False
                raise zmq.ZMQError(err)
        return True
    try:
        socket.send(frames[0], (_NOBLOCK | _MORE) if last > 0 else _NOBLOCK)
    except zmq.Again:
        return False
    for i in range(1, last + 1):  # the rest of a message whose first frame was taken never waits
        socket.send(frames[i], _MORE if i < last else 0)
    return True


def try_send(socket: zmq.Socket, frame: bytes) -> bool:
    """Send a one-frame message if that needs no wait; False if the socket would block."""
    lib = _lib
    if lib is not None:
        handle = socket.underlying
        while lib.send(handle, frame, len(frame), _NOBLOCK) < 0:
            err = lib.errno()
            if err == errno.EAGAIN:
                return False
            if err != errno.EINTR:
                raise zmq.ZMQError(err)
        return True
    try:
        socket.send(frame, _NOBLOCK)
    except zmq.Again:
        return False
    return True


def _send_pyzmq(socket: zmq.Socket, frames: Sequence, copy: bool, timeout_ms: int | None) -> None:
    """Every frame with NOBLOCK; room for the first one is waited for until the deadline (the rest
    of a message is accepted once its first frame was)."""
    last = len(frames) - 1
    if last < 0:
        return
    send = socket.send
    try:
        send(frames[0], (_MORE | _NOBLOCK) if last > 0 else _NOBLOCK, copy=copy)
    except zmq.Again:
        _wait_for_room(socket, frames[0], last, copy, timeout_ms)
    for i in range(1, last + 1):
        send(frames[i], (_MORE | _NOBLOCK) if i < last else _NOBLOCK, copy=copy)


def _wait_for_room(socket: zmq.Socket, first: object, last: int, copy: bool, timeout_ms: int | None) -> None:
    """Send ``first`` once the socket has room, polling until the deadline; ``zmq.Again`` after it."""
    if timeout_ms is None:
        sndtimeo = socket.getsockopt(zmq.SNDTIMEO)
        timeout_ms = sndtimeo if isinstance(sndtimeo, int) and sndtimeo >= 0 else SEND_WAIT_MS_DEFAULT
    deadline = time.monotonic() + timeout_ms / 1000
    flags = (_MORE | _NOBLOCK) if last > 0 else _NOBLOCK
    while True:
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms > 0:
            socket.poll(left_ms, zmq.POLLOUT)
        try:
            socket.send(first, flags, copy=copy)
            return
        except zmq.Again:
            if time.monotonic() >= deadline:
                raise zmq.Again(errno.EAGAIN, f"no room to send within {timeout_ms} ms "
                                              f"(a peer not reading, or none)") from None


def recv_frames(socket: zmq.Socket) -> list | None:
    """One whole multipart message without waiting, or None if none is waiting.  Frames are
    ``bytes`` (or, through pyzmq, buffers: the first is always ``bytes``)."""
    got = _recv(socket, None)
    return None if got is None else got[0]


class Origin(NamedTuple):
    """Where a ROUTER's message came from: the peer's IP address (ZeroMQ's ``Peer-Address``,
    "" if unknown) and the descriptor of its TCP connection (``ZMQ_SRCFD``, -1 if unknown), the
    number the socket monitor's events name."""

    address: str
    fd: int


def recv_routed(socket: zmq.Socket, known_peers: Container[bytes]) -> tuple[list, Origin | None] | None:
    """``recv_frames`` for a ROUTER: also the sender's ``Origin`` when its identity frame is not
    in ``known_peers`` and the message has a frame after it, else None."""
    return _recv(socket, known_peers)


def _recv(socket: zmq.Socket, known_peers: Container[bytes] | None) -> tuple[list, Origin | None] | None:
    lib = _lib
    if lib is None:
        if not _fallback_noted:
            _note_fallback()
        return _recv_pyzmq(socket, known_peers)
    handle = socket.underlying
    msg: _Msg | None = _Msg()
    lib.msg_init(msg)
    frames: list = []
    origin: Origin | None = None
    try:
        while True:
            if msg is None:  # the last one went to a view
                msg = _Msg()
                lib.msg_init(msg)
            n = lib.msg_recv(msg, handle, _NOBLOCK)
            if n < 0:
                err = lib.errno()
                if err == errno.EINTR:
                    continue
                if err == errno.EAGAIN and not frames:
                    return None
                raise zmq.ZMQError(err)
            if known_peers is not None and len(frames) == 1 and frames[0] not in known_peers:
                raw = lib.msg_gets(msg, b"Peer-Address")  # (the identity frame carries no metadata)
                origin = Origin(raw.decode(errors="replace") if raw else "", lib.msg_get(msg, _SRCFD))
            more = lib.msg_more(msg)
            if n < ZERO_COPY_MIN:
                frames.append(ctypes.string_at(lib.msg_data(msg), n))
            else:
                frames.append(_view_of(msg, n))  # the message now belongs to the view
                msg = None
            if not more:
                return frames, origin
    finally:
        if msg is not None:
            lib.msg_close(msg)


_ARRAY_TYPES: dict[int, type] = {}


def _view_of(msg: _Msg, n: int) -> memoryview:
    """A large frame without a copy: a memoryview of the message's own bytes, the message closed
    when the last view of it is gone.  (ctypes keeps every array type it makes: sizes are
    rounded up to a power of two so there are a few dozen of them, and the view is cut to ``n``.)"""
    lib = _lib
    assert lib is not None
    size = 1 << (n - 1).bit_length()
    cls = _ARRAY_TYPES.get(size)
    if cls is None:
        cls = _ARRAY_TYPES[size] = ctypes.c_char * size
    arr = cls.from_address(lib.msg_data(msg))
    weakref.finalize(arr, lib.msg_close, msg)
    return memoryview(arr).cast("B")[:n]


def _recv_pyzmq(socket: zmq.Socket, known_peers: Container[bytes] | None) -> tuple[list, Origin | None] | None:
    recv = socket.recv
    try:
        frame = recv(_NOBLOCK, copy=False)
    except zmq.Again:
        return None
    msg = [frame]
    while frame.more:
        frame = recv(0, copy=False)
        msg.append(frame)
    first = msg[0].bytes
    origin = None
    if known_peers is not None and len(msg) > 1 and first not in known_peers:
        try:
            address = msg[1].get("Peer-Address") or ""
        except zmq.ZMQError:
            address = ""
        try:
            fd = int(msg[1].get(zmq.SRCFD))
        except (zmq.ZMQError, AttributeError):
            fd = -1
        origin = Origin(address, fd)
    return [first] + [f.buffer for f in msg[1:]], origin
