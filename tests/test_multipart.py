"""fabric/multipart.py: the same behaviour through libzmq called directly (GIL kept) and through
pyzmq (the fallback), on real sockets over loopback TCP and inproc."""

from __future__ import annotations

import os
import sys
import time

import pytest
import zmq

from fabric import multipart


@pytest.fixture(params=["native", "pyzmq"])
def path(request, monkeypatch):
    if request.param == "native":
        lib, why = multipart._load({})  # even when FABRIC_NATIVE_ZMQ=0 turned it off for the run
        if lib is None:
            pytest.fail(f"libzmq is not callable directly here: {why}")
        monkeypatch.setattr(multipart, "_lib", lib)
    else:
        monkeypatch.setattr(multipart, "_lib", None)
    return request.param


@pytest.fixture
def pair():
    """A connected ROUTER (bound on a free loopback port) and DEALER."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    yield router, dealer
    router.close(linger=0)
    dealer.close(linger=0)
    ctx.term()


def wait_for(fn, timeout=5.0):
    deadline = time.monotonic() + timeout
    while (got := fn()) is None:
        assert time.monotonic() < deadline, "nothing arrived"
        time.sleep(0.001)
    return got


def test_the_direct_path_is_in_use_on_linux_unless_turned_off():
    if sys.platform.startswith("linux"):
        on = os.environ.get("FABRIC_NATIVE_ZMQ", "1") != "0"  # .ci/run also runs with it off
        assert multipart.native is on and (multipart._lib is not None) is on


def test_nothing_waiting_is_none_not_an_exception(path, pair):
    router, dealer = pair
    assert multipart.recv_frames(dealer) is None
    assert multipart.recv_routed(router, {}) is None


def test_request_and_reply_keep_every_frame_in_order(path, pair):
    router, dealer = pair
    payload = bytes(range(256)) * 40
    multipart.send_frames(dealer, [b"header", b"", payload, bytearray(b"ba"), memoryview(b"mv")])
    frames, origin = wait_for(lambda: multipart.recv_routed(router, {}))
    peer = frames[0]
    assert [bytes(f) for f in frames[1:]] == [b"header", b"", payload, b"ba", b"mv"]
    assert isinstance(frames[0], bytes)
    # first message of an unknown peer: ZeroMQ's Peer-Address and the connection's descriptor
    assert origin.address == "127.0.0.1" and origin.fd > 2

    multipart.send_frames(dealer, [b"again"])
    frames, origin = wait_for(lambda: multipart.recv_routed(router, {peer: "127.0.0.1"}))
    assert origin is None and bytes(frames[1]) == b"again"

    multipart.send_frames(router, [peer, b"reply", payload], copy=False)
    got = wait_for(lambda: multipart.recv_frames(dealer))
    assert [bytes(f) for f in got] == [b"reply", payload]


def test_large_zero_copy_frames_arrive_intact(path, pair):
    router, dealer = pair
    multipart.send_frames(dealer, [b"hello"])
    peer = wait_for(lambda: multipart.recv_routed(router, {}))[0][0]
    big = bytes(range(251)) * (multipart.ZERO_COPY_MIN // 251 + 7)  # over the zero-copy threshold
    multipart.send_frames(router, [peer, b"h", big, b"small"], copy=False)
    got = wait_for(lambda: multipart.recv_frames(dealer))
    assert [bytes(f) for f in got] == [b"h", big, b"small"]


def test_many_messages_stay_whole_and_ordered(path, pair):
    router, dealer = pair
    for i in range(500):
        multipart.send_frames(dealer, [b"%d" % i, b"x" * (i % 7)])
    seen = []
    while len(seen) < 500:
        got = wait_for(lambda: multipart.recv_routed(router, {}))
        seen.append([bytes(f) for f in got[0][1:]])
    assert seen == [[b"%d" % i, b"x" * (i % 7)] for i in range(500)]


def test_try_send_says_false_at_the_high_water_mark_and_never_blocks(path):
    ctx = zmq.Context()
    rx, tx = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    for s in (rx, tx):
        s.setsockopt(zmq.SNDHWM, 1)
        s.setsockopt(zmq.RCVHWM, 1)
    rx.bind("inproc://hwm")
    tx.connect("inproc://hwm")
    try:
        results = [multipart.try_send(tx, b"w") for _ in range(10)]
        assert results[0] is True and results[-1] is False  # full pipe: refused at once
        received = 0
        while multipart.recv_frames(rx) is not None:
            received += 1
        assert received == results.count(True)
    finally:
        rx.close(linger=0)
        tx.close(linger=0)
        ctx.term()


def test_send_waits_at_the_high_water_mark_instead_of_failing(path):
    """A DEALER whose peer is not there yet: the direct path hits EAGAIN and hands the message to
    pyzmq's blocking send, which completes once a peer connects."""
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.SNDTIMEO, 200)
    port = dealer.bind_to_random_port("tcp://127.0.0.1")
    try:
        with pytest.raises(zmq.Again):  # no peer at all: the blocking send times out (SNDTIMEO)
            multipart.send_frames(dealer, [b"a", b"b"])
        router = ctx.socket(zmq.ROUTER)
        router.connect(f"tcp://127.0.0.1:{port}")
        multipart.send_frames(dealer, [b"a", b"b"])
        frames, _ = wait_for(lambda: multipart.recv_routed(router, {}))
        assert [bytes(f) for f in frames[1:]] == [b"a", b"b"]
        router.close(linger=0)
    finally:
        dealer.close(linger=0)
        ctx.term()


def test_a_large_frame_received_without_a_copy_lives_as_long_as_its_views(path, pair):
    """Frames from ZERO_COPY_MIN up are views of ZeroMQ's own message (native path): the message
    is closed when the last view goes, not before (slices and the consumer's decoding keep it)."""
    import gc
    router, dealer = pair
    types_before = set(multipart._ARRAY_TYPES)  # (other tests of this process made some already)
    multipart.send_frames(dealer, [b"hello"])
    peer = wait_for(lambda: multipart.recv_routed(router, {}))[0][0]
    sizes = [multipart.ZERO_COPY_MIN, multipart.ZERO_COPY_MIN + 1, 3 * multipart.ZERO_COPY_MIN + 5]
    payloads = [bytes([i + 1]) * n for i, n in enumerate(sizes)]
    multipart.send_frames(router, [peer, *payloads, b"tail"], copy=False)
    got = wait_for(lambda: multipart.recv_frames(dealer))
    tails = [memoryview(f)[-100:] for f in got[:3]]
    del got
    gc.collect()
    assert [bytes(t) for t in tails] == [p[-100:] for p in payloads]
    for _ in range(50):  # many messages come and go: nothing leaks or breaks
        multipart.send_frames(router, [peer, payloads[2]], copy=False)
        assert bytes(wait_for(lambda: multipart.recv_frames(dealer))[0]) == payloads[2]
    assert set(multipart._ARRAY_TYPES) - types_before <= {1 << 16, 1 << 17, 1 << 18}  # sizes rounded up


def test_a_closed_socket_is_an_error_not_a_crash(path):
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.close()
    for call in (lambda: multipart.send_frames(s, [b"a", b"b"]), lambda: multipart.recv_frames(s),
                 lambda: multipart.try_send(s, b"x")):
        with pytest.raises(zmq.ZMQError):
            call()
    ctx.term()


def test_the_zmq_msg_t_stand_in_has_libzmqs_size_and_alignment():
    """zmq.h: ``unsigned char _[64] __attribute__((aligned(sizeof(void *))))``.  (It was declared
    as a byte array with ``_pack_ = 8``, which gives alignment 1.)"""
    import ctypes
    assert ctypes.sizeof(multipart._Msg) == 64
    assert ctypes.alignment(multipart._Msg) == ctypes.sizeof(ctypes.c_void_p)
    assert multipart._SRCFD == int(zmq.SRCFD)


def test_why_the_native_path_is_off_is_known_and_logged_once(monkeypatch, caplog, pair):
    lib, why = multipart._load({"FABRIC_NATIVE_ZMQ": "0"})
    assert lib is None and why == "FABRIC_NATIVE_ZMQ=0"
    if sys.platform.startswith("linux"):
        lib, why = multipart._load({})
        assert lib is not None and why == ""
    router, dealer = pair
    monkeypatch.setattr(multipart, "_lib", None)
    monkeypatch.setattr(multipart, "_why_not_native", "FABRIC_NATIVE_ZMQ=0")
    monkeypatch.setattr(multipart, "_fallback_noted", False)
    with caplog.at_level("INFO", logger="fabric.multipart"):
        for _ in range(3):
            multipart.send_frames(dealer, [b"a"])
            assert wait_for(lambda: multipart.recv_routed(router, {})) is not None
    notes = [r for r in caplog.records if "through pyzmq" in r.getMessage()]
    assert len(notes) == 1 and "FABRIC_NATIVE_ZMQ=0" in notes[0].getMessage()


@pytest.mark.parametrize("big", [False, True], ids=["small", "zero-copy"])
def test_no_send_blocks_without_a_deadline(path, monkeypatch, big):
    """A DEALER with no peer and no SNDTIMEO: the send used to block forever in pyzmq.  Now it
    waits SEND_WAIT_MS_DEFAULT (here 300 ms), or ``timeout_ms``, then raises zmq.Again."""
    import threading
    monkeypatch.setattr(multipart, "SEND_WAIT_MS_DEFAULT", 300)
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    assert dealer.getsockopt(zmq.SNDTIMEO) == -1
    dealer.bind_to_random_port("tcp://127.0.0.1")
    payload = b"x" * (multipart.ZERO_COPY_MIN + 1 if big else 10)
    outcome: list = []

    def attempt(**kwargs):
        started = time.monotonic()
        try:
            multipart.send_frames(dealer, [b"h", payload], copy=not big, **kwargs)
            outcome.append(("sent", 0.0))
        except zmq.Again:
            outcome.append(("again", time.monotonic() - started))

    try:
        for kwargs, wait_s in (({}, 0.3), ({"timeout_ms": 100}, 0.1)):
            worker = threading.Thread(target=attempt, kwargs=kwargs, daemon=True)
            worker.start()
            worker.join(10)
            assert not worker.is_alive(), "send_frames blocked with no deadline"
            what, took = outcome.pop()
            assert what == "again" and wait_s * 0.9 <= took < wait_s + 5, (what, took)
    finally:
        dealer.close(linger=0)
        ctx.term()
