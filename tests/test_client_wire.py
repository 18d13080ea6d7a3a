"""What the clients put on the wire, read by the broker's own parser.

The producer and consumer build their produce and fetch headers as plain maps (the dataclass
round trip was measurable on the hot path), so nothing but this test ties those maps to the
schema in ``fabric.protocol.messages``.  A bare ROUTER socket stands in for the broker: it
captures the request, and ``parse_request`` must accept it with the values the client meant.
"""

from __future__ import annotations

import threading

import zmq
import pytest

from fabric.client import Consumer, CorruptRecordError, Producer
from fabric.client.connection import Connection
from fabric.protocol import codec
from fabric.protocol.errors import FabricError
from fabric.protocol.messages import FetchRequest, ProduceRequest, ok_reply, parse_request
from fabric.records.batch import encode_batch, records_in
from fabric.testing.cluster import wait_until


@pytest.fixture
def router():
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    try:
        yield sock, f"127.0.0.1:{port}"
    finally:
        sock.close(linger=0)


def _request(sock: zmq.Socket, op: str) -> tuple[bytes, dict, list[bytes]]:
    """The next request of ``op`` (others, e.g. api_versions, are answered empty and skipped)."""
    while True:
        assert sock.poll(10_000), f"no {op} request arrived"
        peer, head, *frames = sock.recv_multipart()
        header = codec.decode_map(head, 1 << 20)
        if header.get("op") == op:
            return peer, header, frames
        extra = {"producer_id": 0, "producer_epoch": 0} if header.get("op") == "init_producer_id" else {}
        sock.send_multipart([peer, codec.encode(ok_reply(header.get("op"), header.get("cid"), **extra))])


def _answer_others(sock: zmq.Socket) -> bool:
    """Answer (empty) whatever non-produce requests wait, e.g. the sender's metadata refreshes,
    which would block it for seconds unanswered; a produce request here is a test failure."""
    while sock.poll(0):
        peer, head, *frames = sock.recv_multipart()
        header = codec.decode_map(head, 1 << 20)
        assert header.get("op") != "produce", "a produce request went out while the window was full"
        sock.send_multipart([peer, codec.encode(ok_reply(header.get("op"), header.get("cid")))])
    return False


def _consumer_at(sock: zmq.Socket, bootstrap: str, offset: int, **options) -> tuple[Consumer, bytes, int, FetchRequest]:
    """A consumer of orders/0 positioned at ``offset``, and its first fetch: (consumer, peer, cid, request)."""
    consumer = Consumer(bootstrap, **options)
    consumer.assign([("orders", 0)])
    consumer.seek(("orders", 0), offset)
    consumer.poll(0)  # sends the first fetch
    peer, header, frames = _request(sock, "fetch")
    assert frames == []
    env, req = parse_request(header)
    return consumer, peer, env.cid, req


def test_producer_request_parses_as_the_broker_reads_it(router):
    sock, bootstrap = router
    producer = Producer(bootstrap, acks=-1, linger_ms=0, request_timeout_ms=4321)
    try:
        fut = producer.send("orders", b"v1", key=b"k", partition=2)
        peer, header, frames = _request(sock, "produce")
        env, req = parse_request(header)
        assert env.op == "produce"
        assert isinstance(req, ProduceRequest)
        assert (req.acks, req.timeout_ms) == (-1, 4321)
        assert [(t.topic, t.partition) for t in req.batches] == [("orders", 2)]
        assert len(frames) == 1
        assert [(r.key, r.value) for r in records_in("orders", 2, frames[0])] == [(b"k", b"v1")]
        results = [{"topic": "orders", "partition": 2, "base_offset": 7, "log_append_time": -1}]
        sock.send_multipart([peer, codec.encode(ok_reply("produce", env.cid, results=results))])
        assert fut.result(timeout=10).offset == 7
    finally:
        producer.close(timeout=1)


def test_records_sent_while_the_window_is_full_leave_as_one_batch(router):
    """linger_ms 0 and the in-flight window full (one request unanswered, max_in_flight 1): the
    records sent meanwhile join one open batch, which leaves whole when the reply opens the
    window, rather than one batch per record (the broker appends, replicates and acknowledges
    per batch: with acks=all, one-record batches made it fall seconds behind at 10,000/s)."""
    sock, bootstrap = router
    producer = Producer(bootstrap, acks=-1, linger_ms=0, max_in_flight=1)
    try:
        first = producer.send("orders", b"r0", partition=0)
        peer, header, frames = _request(sock, "produce")
        assert len(frames) == 1
        seen: set[bytes] = set()  # values the sender's collect found in the open batch (under the lock)
        ready = producer._acc.ready

        def spy(now, held=()):
            b = producer._acc.open.get(("orders", 0))
            if b is not None:
                seen.update(b.values)
            return ready(now, held)
        producer._acc.ready = spy
        later = []
        for i in range(1, 10):  # each one collected by the sender before the next is sent
            later.append(producer.send("orders", b"r%d" % i, partition=0))
            wait_until(lambda: _answer_others(sock) or b"r%d" % i in seen, 10, f"the sender to collect r{i}",
                       every=0.001)
        results = [{"topic": "orders", "partition": 0, "base_offset": 0, "log_append_time": -1}]
        sock.send_multipart([peer, codec.encode(ok_reply("produce", header["cid"], results=results))])
        peer, header, frames = _request(sock, "produce")
        assert len(frames) == 1, "the records sent during the round trip were split into batches"
        assert [r.value for r in records_in("orders", 0, frames[0])] == [b"r%d" % i for i in range(1, 10)]
        results = [{"topic": "orders", "partition": 0, "base_offset": 1, "log_append_time": -1}]
        sock.send_multipart([peer, codec.encode(ok_reply("produce", header["cid"], results=results))])
        assert first.result(timeout=10).offset == 0
        assert [f.result(timeout=10).offset for f in later] == list(range(1, 10))
    finally:
        producer.close(timeout=1)


def test_consumer_fetch_parses_as_the_broker_reads_it_and_the_next_fetch_leaves_before_decoding(router):
    sock, bootstrap = router
    consumer, peer, cid, req = _consumer_at(sock, bootstrap, 40, fetch_max_wait_ms=250, fetch_min_bytes=3,
                                            fetch_max_bytes=1 << 16, max_partition_fetch_bytes=1 << 12)
    try:
        assert (req.max_wait_ms, req.min_bytes, req.max_bytes) == (250, 3, 1 << 16)
        assert [(p.topic, p.partition, p.offset, p.max_bytes) for p in req.partitions] == [("orders", 0, 40, 1 << 12)]

        batch = bytearray(encode_batch([1, 2], [None, None], [b"a", b"b"]))
        batch[0:8] = (40).to_bytes(8, "big")  # the broker stamps base_offset
        meta = [{"topic": "orders", "partition": 0, "high_watermark": 42, "log_start_offset": 0}]
        sock.send_multipart([peer, codec.encode(ok_reply("fetch", cid, partitions=meta)), bytes(batch)])
        got = consumer.poll(5000)
        assert [(r.offset, r.value) for r in got] == [(40, b"a"), (41, b"b")]
        # The follow-up fetch (sent on arrival, from the batch headers) asks for offset 42.
        _, header, _ = _request(sock, "fetch")
        _, req = parse_request(header)
        assert [(p.partition, p.offset) for p in req.partitions] == [(0, 42)]
    finally:
        consumer.close()


def test_consumer_stays_in_front_of_a_corrupt_batch(router):
    """The early fetch moves past a batch before it is decoded; a batch that then fails its CRC
    must not be skipped silently: poll raises CorruptRecordError once, the partition stays at the
    batch (no further fetches for it) until the user seeks past it, as the error says."""
    sock, bootstrap = router
    consumer, peer, cid, _ = _consumer_at(sock, bootstrap, 40, fetch_max_wait_ms=100, standing_fetch_answers=1)
    try:
        batch = bytearray(encode_batch([1], [None], [b"payload"]))
        batch[0:8] = (40).to_bytes(8, "big")
        batch[-1] ^= 0xFF  # the records section no longer matches the CRC
        meta = [{"topic": "orders", "partition": 0, "high_watermark": 41, "log_start_offset": 0}]
        sock.send_multipart([peer, codec.encode(ok_reply("fetch", cid, partitions=meta)), bytes(batch)])
        with pytest.raises(CorruptRecordError) as info:
            consumer.poll(5000)
        exc = info.value
        assert (exc.name, exc.topic, exc.partition, exc.offset, exc.skip_offset) == ("CORRUPT_BATCH", "orders", 0, 40, 41)
        assert "CRC mismatch" in exc.message and consumer.position(("orders", 0)) == 40
        # Raised once: later polls return nothing and ask for nothing at or beyond the damage (the
        # fetches sent on arrival, before decoding, are answered and ignored).
        for _ in range(5):
            assert consumer.poll(50) == []
            while sock.poll(0):
                peer, header, _ = _request(sock, "fetch")
                env, req = parse_request(header)
                assert [p.offset for p in req.partitions] == [41]  # only those sent before the decode
                reply = ok_reply("fetch", env.cid, partitions=[dict(meta[0], offset=41)])
                sock.send_multipart([peer, codec.encode(reply), b""])
        assert consumer.position(("orders", 0)) == 40
        consumer.seek(("orders", 0), exc.skip_offset)
        consumer.poll(0)
        _, header, _ = _request(sock, "fetch")
        assert [p.offset for p in parse_request(header)[1].partitions] == [41]
    finally:
        consumer.close()


def _reply(sock, peer, cid, hw, offset=None, data=b"", answers_left=None):
    meta = {"topic": "orders", "partition": 0, "high_watermark": hw, "log_start_offset": 0}
    if offset is not None:
        meta["offset"] = offset
    header = ok_reply("fetch", cid, partitions=[meta])
    if answers_left is not None:
        header["answers_left"] = answers_left
    sock.send_multipart([peer, codec.encode(header), data])


def _batch(base: int, *values: bytes) -> bytes:
    b = bytearray(encode_batch([1] * len(values), [None] * len(values), list(values)))
    b[0:8] = base.to_bytes(8, "big")
    return bytes(b)


def test_consumer_pipelines_at_the_tail_and_checks_where_a_follow_on_continues(router):
    sock, bootstrap = router
    consumer, peer, cid, req = _consumer_at(sock, bootstrap, 5, fetch_max_wait_ms=100, fetch_pipeline_depth=2,
                                            standing_fetch_answers=1)
    try:
        assert req.follows == -1                      # the high watermark is unknown: no pipelining yet
        assert not sock.poll(200)
        _reply(sock, peer, cid, hw=7, data=_batch(5, b"a", b"b"))
        assert [r.offset for r in consumer.poll(5000)] == [5, 6]
        # At the tail now (7 = high watermark): a plain fetch, and one following it.
        _, h1, _ = _request(sock, "fetch")
        _, h2, _ = _request(sock, "fetch")
        (e1, r1), (e2, r2) = parse_request(h1), parse_request(h2)
        assert (r1.follows, r2.follows) == (-1, e1.cid)
        assert [p.offset for p in r1.partitions] == [p.offset for p in r2.partitions] == [7]
        _reply(sock, peer, e1.cid, hw=8, data=_batch(7, b"c"))
        assert [r.value for r in consumer.poll(5000)] == [b"c"]
        assert not sock.poll(100)   # fetch 2 waits at the broker: records first, the refill comes ...
        assert consumer.poll(0) == []
        _, h3, _ = _request(sock, "fetch")            # ... on the next poll, behind the newest in flight
        e3, r3 = parse_request(h3)
        assert r3.follows == e2.cid
        # The broker says fetch 2 was read from 7, not from 8 where this consumer stands (as if it
        # had forgotten fetch 1): that data is not used, and no follow-on is sent on that chain.
        _reply(sock, peer, e2.cid, hw=8, offset=7, data=_batch(7, b"c"))
        assert consumer.poll(300) == []
        _reply(sock, peer, e3.cid, hw=8, offset=8)   # empty, and it continued right
        assert consumer.poll(300) == []
        _, h4, _ = _request(sock, "fetch")            # a plain fetch from 8 restarts the pipeline
        e4, r4 = parse_request(h4)
        assert (r4.follows, r4.partitions[0].offset) == (-1, 8)
        assert not sock.poll(200)
        _reply(sock, peer, e4.cid, hw=9, data=_batch(8, b"d"))
        assert [r.value for r in consumer.poll(5000)] == [b"d"]
        _, h5, _ = _request(sock, "fetch")
        _, h6, _ = _request(sock, "fetch")
        assert (parse_request(h5)[1].follows, parse_request(h6)[1].follows) == (-1, parse_request(h5)[0].cid)
    finally:
        consumer.close()


def test_consumer_sends_no_follow_on_across_a_seek(router):
    sock, bootstrap = router
    consumer, peer, cid, _ = _consumer_at(sock, bootstrap, 3, fetch_max_wait_ms=100, fetch_pipeline_depth=2,
                                          standing_fetch_answers=1)
    try:
        _reply(sock, peer, cid, hw=3)                 # at the tail
        consumer.poll(200)
        _, h1, _ = _request(sock, "fetch")
        _, h2, _ = _request(sock, "fetch")
        (e1, _), (e2, r2) = parse_request(h1), parse_request(h2)
        assert r2.follows == e1.cid
        consumer.seek(("orders", 0), 0)
        _reply(sock, peer, e1.cid, hw=4, data=_batch(3, b"late"))    # void: sought since it was sent
        assert consumer.poll(300) == []
        _reply(sock, peer, e2.cid, hw=4, offset=4)
        assert consumer.poll(300) == []
        _, h3, _ = _request(sock, "fetch")
        e3, r3 = parse_request(h3)
        assert (r3.follows, r3.partitions[0].offset) == (-1, 0)      # plain, from the new position
        assert not sock.poll(200)                                    # behind the tail: no follow-on
        _reply(sock, peer, e3.cid, hw=4, data=_batch(0, b"w", b"x", b"y", b"z"))
        assert [r.value for r in consumer.poll(5000)] == [b"w", b"x", b"y", b"z"]
    finally:
        consumer.close()


def _fetches(sock, n):
    """The next ``n`` fetch requests as (cid, FetchRequest)."""
    out = []
    for _ in range(n):
        _, header, _ = _request(sock, "fetch")
        env, req = parse_request(header)
        out.append((env.cid, req))
    return out


def test_consumer_keeps_standing_fetches_at_the_tail_and_checks_each_reply(router):
    sock, bootstrap = router
    consumer, peer, cid, req = _consumer_at(sock, bootstrap, 5, fetch_max_wait_ms=100, fetch_pipeline_depth=2,
                                            standing_fetch_answers=4)
    try:
        assert req.answers == 1                       # the high watermark is unknown: not at the tail yet
        _reply(sock, peer, cid, hw=7, data=_batch(5, b"a", b"b"))
        assert [r.offset for r in consumer.poll(5000)] == [5, 6]
        (c1, r1), (c2, r2) = _fetches(sock, 2)        # at the tail: a standing fetch, one following it
        assert (r1.answers, r1.follows, r2.answers, r2.follows) == (4, -1, 4, c1)
        _reply(sock, peer, c1, hw=8, offset=7, data=_batch(7, b"c"), answers_left=3)
        assert [r.value for r in consumer.poll(5000)] == [b"c"]
        _reply(sock, peer, c1, hw=9, offset=8, data=_batch(8, b"d"), answers_left=2)
        assert [r.value for r in consumer.poll(5000)] == [b"d"]
        assert consumer.poll(0) == [] and not sock.poll(200)   # no request per reply
        # A reply that does not continue where the consumer stands: the data is dropped, and the
        # standing chain is forgotten (it would go on from there); a plain fetch starts afresh.
        _reply(sock, peer, c1, hw=10, offset=7, data=_batch(7, b"c"), answers_left=1)
        assert consumer.poll(300) == []
        (c3, r3), = _fetches(sock, 1)
        assert (r3.follows, r3.partitions[0].offset, r3.answers) == (-1, 9, 4)
        _reply(sock, peer, c2, hw=10, offset=9, data=_batch(9, b"late"), answers_left=3)  # forgotten
        _reply(sock, peer, c3, hw=10, offset=9, data=_batch(9, b"e"), answers_left=0)     # its last
        assert [r.value for r in consumer.poll(5000)] == [b"e"]
        assert consumer.poll(0) == []
        (c4, r4), (c5, r5) = _fetches(sock, 2)        # spent: the pipeline is refilled
        assert (r4.follows, r4.partitions[0].offset, r5.follows) == (-1, 10, c4)
    finally:
        consumer.close()


def test_a_seek_replaces_a_standing_fetch_at_once(router):
    sock, bootstrap = router
    consumer, peer, cid, _ = _consumer_at(sock, bootstrap, 3, fetch_max_wait_ms=100, fetch_pipeline_depth=1,
                                          standing_fetch_answers=8)
    try:
        _reply(sock, peer, cid, hw=3)
        consumer.poll(200)
        (c1, r1), = _fetches(sock, 1)
        assert r1.answers == 8
        consumer.seek(("orders", 0), 0)
        assert consumer.poll(100) == []
        (c2, r2), = _fetches(sock, 1)                 # not after 8 answers: now
        assert (r2.follows, r2.partitions[0].offset, r2.answers) == (-1, 0, 1)   # behind the tail
        _reply(sock, peer, c1, hw=4, offset=3, data=_batch(3, b"old"), answers_left=7)  # void
        _reply(sock, peer, c2, hw=4, data=_batch(0, b"w", b"x", b"y", b"z"))
        assert [r.value for r in consumer.poll(5000)] == [b"w", b"x", b"y", b"z"]
    finally:
        consumer.close()


def test_a_client_skips_unreadable_replies(router):
    """Garbage or a non-map where a reply header should be is logged and skipped; the real reply
    that follows is used."""
    sock, bootstrap = router
    conn = Connection("tcp://" + bootstrap)
    try:
        result: list = []
        t = threading.Thread(target=lambda: result.append(conn.request("list_topics", timeout_ms=5000)))
        t.start()
        peer, header, _ = _request(sock, "list_topics")
        sock.send_multipart([peer, b"\xff\x00 not cbor"])
        sock.send_multipart([peer, codec.encode([1, 2, 3])])
        sock.send_multipart([peer, codec.encode(ok_reply("list_topics", header["cid"], topics=[]))])
        t.join(10)
        assert result and result[0][0]["topics"] == []
    finally:
        conn.close()
