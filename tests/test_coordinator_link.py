"""``CoordinatorLink`` against a scripted fake broker (a ROUTER socket in a thread): coordinator
lookup, retry with a fresh lookup on NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE, replies matched
by cid when several requests are in flight."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import zmq

from fabric.client.connection import RequestTimeoutError
from fabric.client.coordinator_link import CoordinatorLink
from fabric.groups.messages import OffsetFetchRequest
from fabric.protocol import codec
from fabric.protocol.errors import FabricError, error_map
from fabric.testing import free_port


class FakeBroker:
    """Answers ``find_coordinator`` with itself and every other op from ``script[op]`` (a list of
    error names or None = success, used up in order); ``hold`` ops are answered only once a later
    request arrives, in reverse order."""

    def __init__(self, script: dict[str, list[str | None]], hold: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.script = {op: list(v) for op, v in script.items()}
        self.hold = hold
        self.seen: Counter[str] = Counter()
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(f"tcp://127.0.0.1:{self.port}")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def bootstrap(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _run(self) -> None:
        held: list = []
        while not self.stop.is_set():
            if not self.sock.poll(50):
                continue
            ident, frame = self.sock.recv_multipart()
            h = codec.decode_map(frame, 1 << 20)
            op = h["op"]
            self.seen[op] += 1
            if op == "find_coordinator":
                rep = {"op": op, "cid": h["cid"], "node_id": 7, "host": "127.0.0.1", "port": self.port}
            else:
                err = self.script[op].pop(0) if self.script.get(op) else None
                rep = {"op": op, "cid": h["cid"], "group_id": h.get("group_id"), "offsets": []}
                if err is not None:
                    rep = {"op": op, "cid": h["cid"], "error": error_map(err)}
            if op in self.hold and not held:
                held.append((ident, rep))
                continue
            self.sock.send_multipart([ident, codec.encode(rep)])
            for ident2, rep2 in reversed(held):
                self.sock.send_multipart([ident2, codec.encode(rep2)])
            held.clear()
        self.sock.close(linger=0)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def fake():
    made: list[FakeBroker] = []

    def make(*args, **kw) -> FakeBroker:
        b = FakeBroker(*args, **kw)
        made.append(b)
        return b

    try:
        yield make
    finally:
        for b in made:
            b.close()


FETCH = OffsetFetchRequest(group_id="g")


def test_coordinator_moves_are_retried_with_a_fresh_lookup(fake):
    broker = fake({"offset_fetch": ["NOT_COORDINATOR", "COORDINATOR_NOT_AVAILABLE", None]})
    link = CoordinatorLink([broker.bootstrap], "g", request_timeout_ms=5000)
    try:
        rep = link.request("offset_fetch", FETCH)
        assert rep["group_id"] == "g"
        assert broker.seen == Counter({"offset_fetch": 3, "find_coordinator": 3})
        assert link.endpoint == broker.bootstrap
    finally:
        link.close()


def test_other_errors_are_raised_with_the_reply(fake):
    broker = fake({"offset_fetch": ["GROUP_ID_NOT_FOUND"]})
    link = CoordinatorLink([broker.bootstrap], "g", request_timeout_ms=5000)
    try:
        with pytest.raises(FabricError) as info:
            link.request("offset_fetch", FETCH)
        assert info.value.name == "GROUP_ID_NOT_FOUND" and info.value.reply["cid"] > 0
    finally:
        link.close()


def test_replies_are_matched_by_cid_when_several_are_in_flight(fake):
    broker = fake({}, hold=("heartbeat",))
    link = CoordinatorLink([broker.bootstrap], "g", request_timeout_ms=5000)
    try:
        link.ensure(deadline_ms=10**15)
        first = link.send("heartbeat", None)  # held until the next request arrives
        rep = link.request("offset_fetch", FETCH)  # its reply comes first; the heartbeat's waits in the inbox
        assert rep["op"] == "offset_fetch"
        for _ in range(50):  # the held reply follows at once
            if link.has(first):
                break
            link.pump(100)
        assert link.take(first)["op"] == "heartbeat"
    finally:
        link.close()


def test_an_unreachable_coordinator_times_out_clearly():
    link = CoordinatorLink([f"tcp://127.0.0.1:{free_port()}"], "g", request_timeout_ms=300)
    try:
        with pytest.raises(RequestTimeoutError, match="find_coordinator"):
            link.request("offset_fetch", FETCH, timeout_ms=300)
    finally:
        link.close()
