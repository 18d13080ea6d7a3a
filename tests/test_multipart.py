"""fabric/multipart.py: the same behaviour through libzmq called directly (GIL kept) and through
pyzmq (the fallback), on real sockets over loopback TCP and inproc."""

from __future__ import annotations

import sys
import time

import pytest
import zmq

from fabric import multipart


@pytest.fixture(params=["native", "pyzmq"])
def path(request, monkeypatch):
    if request.param == "native":
        if multipart._lib is None:
            pytest.fail("libzmq is not callable directly here (see multipart._load)")
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


def test_the_direct_path_is_in_use_on_linux():
    if sys.platform.startswith("linux"):
        assert multipart.native and multipart._lib is not None


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
    sizes_before = set(multipart._ARRAY_TYPES)  # a process-wide cache: other in-process tests add sizes too
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
    assert len(set(multipart._ARRAY_TYPES) - sizes_before) <= 3


def test_a_closed_socket_is_an_error_not_a_crash(path):
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.close()
    for call in (lambda: multipart.send_frames(s, [b"a", b"b"]), lambda: multipart.recv_frames(s),
                 lambda: multipart.try_send(s, b"x")):
        with pytest.raises(zmq.ZMQError):
            call()
    ctx.term()
