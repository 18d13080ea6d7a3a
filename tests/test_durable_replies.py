"""Replies that wait for an fsync, through a real broker process (``--flush-every-batch``): the
flusher thread syncs, the loop sends, and one connection's replies keep their order.

A raw DEALER sends pipelined requests without waiting: a produce (held until its batch is
fsynced) followed by requests the broker answers at once.  Their replies must still come back in
the order sent, while another connection's request is answered without waiting behind them.
"""

from __future__ import annotations

import cbor2
import zmq

from fabric.records.batch import encode_batch


def _dealer(ctx: zmq.Context, bootstrap: str) -> zmq.Socket:
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 10_000)
    s.connect(f"tcp://{bootstrap}")
    return s


def _send(s: zmq.Socket, header: dict, *frames: bytes) -> None:
    s.send_multipart([cbor2.dumps(header), *frames])


def _cid(s: zmq.Socket) -> int:
    return cbor2.loads(s.recv_multipart()[0])["cid"]


def test_replies_leave_in_order_behind_one_that_waits_for_an_fsync(brokers):
    b = brokers(["--flush-every-batch"])
    ctx = zmq.Context()
    a, other = _dealer(ctx, b.bootstrap), _dealer(ctx, b.bootstrap)
    try:
        _send(a, {"op": "create_topics", "v": 1, "cid": 1, "topics": [{"name": "d"}]})
        assert _cid(a) == 1
        batch = encode_batch([1], [None], [b"v" * 100])
        for round_ in range(20):
            base = 100 * (round_ + 1)
            _send(a, {"op": "produce", "v": 1, "cid": base, "acks": 1, "batches": [{"topic": "d", "partition": 0}]},
                  batch)
            _send(a, {"op": "api_versions", "v": 1, "cid": base + 1})
            _send(a, {"op": "produce", "v": 1, "cid": base + 2, "acks": 1,
                      "batches": [{"topic": "d", "partition": 0}]}, batch)
            _send(a, {"op": "list_topics", "v": 1, "cid": base + 3})
            assert [_cid(a) for _ in range(4)] == [base, base + 1, base + 2, base + 3]
        _send(other, {"op": "api_versions", "v": 1, "cid": 7})
        assert _cid(other) == 7
        _send(a, {"op": "fetch", "v": 1, "cid": 9, "max_wait_ms": 0,
                  "partitions": [{"topic": "d", "partition": 0, "offset": 0}]})
        reply = cbor2.loads(a.recv_multipart()[0])
        assert reply["partitions"][0]["high_watermark"] == 40  # every acknowledged batch is readable
    finally:
        a.close()
        other.close()
        ctx.term()
