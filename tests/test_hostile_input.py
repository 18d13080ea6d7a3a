"""Regression tests for the fault-injection report: a bignum cid stopped the broker (item 1), a
batch with a correct CRC lied about its record count (item 6), storage errors were not logged
(item 7), and a broker listening beyond loopback said nothing about it (item 8)."""

from __future__ import annotations

import logging
import struct
import threading
import zlib

import cbor2
import pytest
import zmq

from fabric.broker.config import BrokerConfig, exposure_warning, is_loopback_host
from fabric.broker.core import BrokerCore, _echoed
from fabric.broker.server import BrokerServer
from fabric.broker.storage_faults import StorageFaults
from fabric.log.config import LogConfig
from fabric.protocol import codec
from fabric.protocol.errors import FabricError
from fabric.protocol.schema import as_int
from fabric.records.batch import encode_batch

PEER = b"peer"
# The frame of the report: {"op": "metadata", "v": 1, "cid": <tag 2 over 2,000 bytes of ff>}
BIGNUM_CID = bytes.fromhex("a3626f70686d6574616461746161760163636964") + b"\xc2\x59\x07\xd0" + b"\xff" * 2000


@pytest.fixture
def core(tmp_path):
    c = BrokerCore(BrokerConfig(data_dir=str(tmp_path / "d"), topic_defaults=LogConfig(flush_interval_ms=0)), 1000)
    yield c
    c.close()


def _error(core, frames):
    out = core.handle(PEER, frames, 1000)
    assert len(out) == 1, out
    return out[0][1].header


# ------------------------------------------------------------------ item 1
def test_the_reported_bignum_cid_gets_an_error_reply(core):
    assert codec.decode_map(BIGNUM_CID[:-2004] + b"\x01", 1 << 20) == {"op": "metadata", "v": 1, "cid": 1}
    reply = _error(core, [BIGNUM_CID])
    assert reply["error"]["name"] == "MALFORMED_REQUEST" and "tag 2" in reply["error"]["message"]
    assert reply["cid"] is None
    assert _error(core, [cbor2.dumps({"op": "api_versions", "v": 1, "cid": 5})])["cid"] == 5  # still serving


@pytest.mark.parametrize("field", ["v", "cid", "partitions"])
def test_a_bignum_anywhere_is_malformed_not_unknown(core, field):
    header = {"op": "list_offsets", "v": 1, "cid": 9, "partitions": [{"topic": "t", "partition": 0, "at": 0}]}
    raw = codec.encode(dict(header, **{field: cbor2.CBORTag(3, b"\xff" * 3000)}))
    reply = _error(core, [raw])
    assert reply["error"]["name"] == "MALFORMED_REQUEST", reply


def test_integers_beyond_int64_are_invalid_fields_with_their_path(core):
    raw = codec.encode({"op": "fetch", "v": 1, "cid": 2**64 - 1, "partitions": []})
    reply = _error(core, [raw])
    assert reply["error"]["name"] == "INVALID_FIELD" and reply["error"]["message"].startswith("cid:")
    assert reply["cid"] is None and reply["op"] == "fetch"
    raw = codec.encode({"op": "create_topics", "v": 1, "cid": 3,
                        "topics": [{"name": "x", "configs": {"retention_ms": -(2**64)}}]})
    reply = _error(core, [raw])
    assert reply["error"]["message"].startswith("topics[0].configs.retention_ms:") and reply["cid"] == 3


def test_every_tag_number_is_refused():
    """cbor2 decodes some tags itself (``_SEMANTIC_TAGS`` overrides them): a new cbor2 that adds
    one must not slip through.  Only the self-describe prefix ``d9 d9 f7`` is accepted."""
    body = cbor2.dumps({"op": "x"})
    assert codec.decode_map(b"\xd9\xd9\xf7" + body, 100) == {"op": "x"}
    numbers = list(range(0, 70_000)) + [2**32 - 1, 2**32, 2**63, 2**64 - 1]
    for tag in numbers:
        wrapped = cbor2.dumps(cbor2.CBORTag(tag, {"op": "x"}))
        nested = b"\xa1\x61a" + cbor2.dumps(cbor2.CBORTag(tag, 0))
        for raw in (nested,) if wrapped.startswith(b"\xd9\xd9\xf7") else (wrapped, nested):
            with pytest.raises(FabricError) as exc:
                codec.decode_map(raw, 100)
            assert exc.value.name == "MALFORMED_REQUEST" and f"tag {tag}" in exc.value.message, (tag, exc.value)


def test_error_path_cannot_fail_on_huge_integers():
    """The chain of the report: ``_echoed`` -> ``_readable_cid`` -> ``as_int`` formatted a
    2,000-byte integer and raised again.  Now as_int says how big it was instead."""
    huge = int.from_bytes(b"\xff" * 2000, "big")
    assert _echoed({"op": "metadata", "cid": huge}) == ("metadata", None)
    with pytest.raises(FabricError, match="an integer of 16000 bits"):
        as_int(huge, "v", 0, 10)


def test_nesting_and_hash_flooding_keys_are_refused_while_decoding():
    assert codec.decode_map(b"\xa1\x61k" + b"\x81" * 399 + b"\x01", 1 << 20)  # 400 levels: allowed
    with pytest.raises(FabricError, match="nested too deeply"):
        codec.decode_map(b"\xa1\x61k" + b"\x81" * 400 + b"\x01", 1 << 20)
    colliding = b"\xa1\x61k\xb9\x03\xe8" + b"".join(cbor2.dumps(i * (2**61 - 1)) + b"\x00" for i in range(1000))
    with pytest.raises(FabricError, match="map keys must be text"):
        codec.decode_map(colliding, 1 << 20)


def test_serve_loop_survives_a_handler_that_raises(tmp_path):
    """The last-resort guard of ``server.py``: whatever escapes ``handle`` is logged and the loop
    goes on to the next request.  (``handle`` answers every failure itself; this stands in for a
    bug in it.)"""
    server = BrokerServer(BrokerConfig(data_dir=str(tmp_path / "d"), port=0), zmq.Context())
    real = server.core.handle

    def broken_for_boom(peer, frames, now_ms):
        if frames[0] == b"boom":
            raise RuntimeError("a bug in the handler")
        return real(peer, frames, now_ms)

    server.core.handle = broken_for_boom  # type: ignore[method-assign]
    loop = threading.Thread(target=server.serve_forever, daemon=True)
    loop.start()
    sock = server.ctx.socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://127.0.0.1:{server.port}")
        sock.send_multipart([b"boom"])
        sock.send_multipart([cbor2.dumps({"op": "api_versions", "v": 1, "cid": 7})])
        assert sock.poll(10_000), "the loop stopped after a handler failure"
        assert cbor2.loads(sock.recv_multipart()[0])["cid"] == 7
        assert loop.is_alive()
    finally:
        sock.close(linger=0)
        server.stopping.set()
        loop.join(10)
        server.ctx.term()
    assert not loop.is_alive()


# ------------------------------------------------------------------ item 6
def _lying(batch: bytes, count: int) -> bytes:
    raw = bytearray(batch)
    struct.pack_into(">i", raw, 23, count - 1)
    struct.pack_into(">i", raw, 57, count)
    struct.pack_into(">I", raw, 17, zlib.crc32(raw[21:]))
    return bytes(raw)


def test_a_batch_lying_about_its_record_count_is_refused_and_the_log_end_stays(core):
    good = encode_batch([1], [None], [b"ok"])
    liar = _lying(encode_batch([2], [None], [b"v"]), 1_000_000)
    assert len(liar) == 71  # the batch of the report
    reply = _error(core, [cbor2.dumps({"op": "produce", "v": 1, "cid": 1, "acks": 1,
                                       "batches": [{"topic": "t", "partition": 0}] * 3}), good, liar, good])
    first, lie, last = reply["results"]
    assert lie["error"]["name"] == "INVALID_BATCH" and "cannot fit" in lie["error"]["message"]
    assert (first["base_offset"], last["base_offset"]) == (0, 1)
    assert core.topics.partition("t", 0).end_offset == 2


# ------------------------------------------------------------------ item 7
def test_storage_failures_are_logged_once_per_interval_with_their_path(caplog):
    now = [0]
    faults = StorageFaults(interval_ms=60_000, clock_ms=lambda: now[0])
    caplog.set_level(logging.ERROR, logger="fabric.broker.storage")
    for offset in range(1000):  # a consumer retrying a broken read, offset after offset
        faults.note(FabricError("STORAGE_ERROR", f"/data/t-0: read at offset {offset} failed: [Errno 5] EIO"))
    faults.note(FabricError("STORAGE_ERROR", "/data/t-1: append failed: No space left on device"))
    faults.note(FabricError("UNKNOWN_TOPIC_OR_PARTITION", "not storage"))
    assert [r.getMessage() for r in caplog.records] == [
        "storage error: /data/t-0: read at offset 0 failed: [Errno 5] EIO",
        "storage error: /data/t-1: append failed: No space left on device"]
    now[0] = 61_000
    faults.note(FabricError("STORAGE_ERROR", "/data/t-0: read at offset 5 failed: [Errno 5] EIO"))
    assert "again, 1000 times in the 61 s" in caplog.records[-1].getMessage()
    assert faults.total == 1002


def test_a_produce_that_fails_on_disk_is_logged_with_the_partition_path(core, caplog):
    _error(core, [cbor2.dumps({"op": "create_topics", "v": 1, "cid": 1, "topics": [{"name": "t"}]})])
    plog = core.topics.partition("t", 0)
    plog.close()  # a log the broker can no longer write: every append is a STORAGE_ERROR
    caplog.set_level(logging.ERROR, logger="fabric.broker.storage")
    for cid in range(3):
        reply = _error(core, [cbor2.dumps({"op": "produce", "v": 1, "cid": cid, "acks": 1,
                                           "batches": [{"topic": "t", "partition": 0}]}),
                              encode_batch([1], [None], [b"x"])])
        assert reply["results"][0]["error"]["name"] == "STORAGE_ERROR"
    logged = [r.getMessage() for r in caplog.records if r.name == "fabric.broker.storage"]
    assert len(logged) == 1 and str(plog.directory) in logged[0], logged


# ------------------------------------------------------------------ item 8
@pytest.mark.parametrize("host,warns", [("127.0.0.1", False), ("127.9.9.9", False), ("localhost", False),
                                        ("::1", False), ("[::1]", False), ("0.0.0.0", True), ("*", True),
                                        ("::", True), ("10.1.2.3", True), ("broker.example", True)])
def test_exposure_warning_names_non_loopback_binds(host, warns):
    assert is_loopback_host(host) is not warns
    text = exposure_warning(BrokerConfig(host=host))
    assert (text is not None) is warns
    if warns:
        assert "WITHOUT AUTHENTICATION" in text


def test_a_broker_configured_for_every_interface_warns_at_start(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="fabric.broker")
    BrokerCore(BrokerConfig(data_dir=str(tmp_path / "a"), host="0.0.0.0"), 1000).close()
    assert any("every interface" in r.getMessage() and "WITHOUT AUTHENTICATION" in r.getMessage()
               for r in caplog.records)
    caplog.clear()
    BrokerCore(BrokerConfig(data_dir=str(tmp_path / "b")), 1000).close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
