"""The log's errors become wire errors in one place (fabric/broker/log_errors.py)."""

from __future__ import annotations

import cbor2

from fabric.broker.config import BrokerConfig
from fabric.broker.core import BrokerCore
from fabric.broker.log_errors import WIRE_CODES, wire_error
from fabric.log import errors
from fabric.protocol.errors import BY_NAME, FabricError
from fabric.records.batch import encode_batch


def test_every_log_error_has_a_wire_code_and_damage_keeps_its_skip_offset():
    kinds = [getattr(errors, name) for name in errors.__all__ if name != "LogError"]
    assert set(kinds) == set(WIRE_CODES)
    for kind in kinds:
        exc = kind("m", 3, 9) if kind is errors.CorruptSegmentError else kind("m")
        err = wire_error(exc)
        assert isinstance(err, FabricError) and err.name == WIRE_CODES[kind] and err.message == "m"
        assert err.name in BY_NAME
    assert wire_error(errors.CorruptSegmentError("m", 3, 9)).details == {"skip_offset": 9}
    assert wire_error(errors.StorageFailure("m")).retriable
    same = FabricError("NOT_LEADER", "x")
    assert wire_error(same) is same


def test_a_closed_log_answers_storage_error_for_its_partition(tmp_path):
    core = BrokerCore(BrokerConfig(data_dir=str(tmp_path / "d")), 1000)
    try:
        core.handle(b"p", [cbor2.dumps({"op": "create_topics", "v": 1, "cid": 1,
                                        "topics": [{"name": "t"}]})], 1000)
        core.topics.partition("t", 0).close()  # as a delete or a shutdown does under a request
        (_, r), = core.handle(b"p", [cbor2.dumps({"op": "produce", "v": 1, "cid": 2,
                                                   "batches": [{"topic": "t", "partition": 0}]}),
                                     encode_batch([1], [None], [b"v"])], 1000)
        assert r.header["results"][0]["error"]["name"] == "STORAGE_ERROR"
    finally:
        core.close()
