"""The controller's I/O shell: one thread, one ROUTER on the controller port, one DEALER to each
other voter; everything else is ``ControllerService``.

Why its own thread and port: Raft's heartbeats must leave on time however busy the broker's data
path is (a produce burst holding the broker loop for 200 ms would otherwise look like a dead
controller and start an election).  The thread shares nothing with the broker loop but the
process: brokers, the local one included, reach it over ZeroMQ like any other.

Frames.  Voter to voter: ``[header]`` with ``{"op": "raft", "from": id, "msg": {...}}`` sent on the
sender's DEALER, received on the receiver's ROUTER, never answered on the same path (a response
is a Raft message of its own): Raft is message passing, and this keeps a slow peer from blocking
a request/reply pair.  Broker to controller: ``[header]`` with ``op``, ``cid`` and the operation's
fields on a DEALER; the reply echoes ``cid``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path
from typing import Hashable

import zmq

from ..protocol import codec
from ..protocol.errors import FabricError
from ..protocol.limits import DEFAULT_LIMITS
from .logic import ControllerLogic, LogicConfig
from .metadata import MetadataState
from .raft import RaftConfig, RaftNode
from .raft_messages import message_from_wire
from .raft_storage import FileRaftStorage
from .service import ControllerService, Effects

log = logging.getLogger("fabric.controller.server")

POLL_MS = 10
# A snapshot travels in one header; larger frames are dropped by ZeroMQ before they are read
# whole (a hostile peer's gigabyte frame never reaches memory).  The one limit: limits.py.
HEADER_BYTES_MAX = DEFAULT_LIMITS.controller_header_bytes_max


class ControllerServer:
    def __init__(self, node_id: int, voters: dict[int, str], data_dir: Path, bind: str,
                 raft_config: RaftConfig | None = None, logic_config: LogicConfig | None = None,
                 context: zmq.Context | None = None) -> None:
        self.node_id = node_id
        self.voters = voters
        self.ctx = context or zmq.Context.instance()
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        storage = FileRaftStorage(Path(data_dir))
        raft = RaftNode(node_id, sorted(voters), storage, raft_config or RaftConfig(),
                        random.Random(time.time_ns() ^ node_id))
        state = MetadataState()  # (a stored snapshot comes back in Raft's first output)
        self.service = ControllerService(raft, state, ControllerLogic(state, logic_config or LogicConfig()))
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.router.setsockopt(zmq.MAXMSGSIZE, HEADER_BYTES_MAX + 4096)  # (+ the routing frames)
        self.router.bind(bind)
        # Closed connections: a broker process that died (SIGKILL, a crash) resets its sockets at
        # once, which lets the controller fence it in ``lost_grace_ms`` instead of a session timeout.
        self.monitor = self.router.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._fd_broker: dict[int, int] = {}  # connection fd -> broker id (from its requests)
        self._fd_voter: dict[int, int] = {}  # connection fd -> voter id (from its Raft messages)
        self.peers: dict[int, zmq.Socket] = {}
        for vid, address in voters.items():
            if vid == node_id:
                continue
            s = self.ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 1000)
            s.setsockopt(zmq.IMMEDIATE, 1)  # no queueing for a voter that is not connected: Raft resends
            s.setsockopt(zmq.IDENTITY, f"c{node_id}".encode())
            s.connect(address if address.startswith("tcp://") else f"tcp://{address}")
            self.peers[vid] = s
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"controller-{node_id}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)

    def _do(self, fx: Effects) -> None:
        for dst, msg in fx.messages:
            sock = self.peers.get(dst)
            if sock is None:
                continue
            try:
                sock.send(codec.encode({"op": "raft", "from": self.node_id, "msg": msg.to_wire()}), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # unreachable or backed up: Raft retries on its own timers
        for target, reply in fx.replies:
            peer, cid, op = target  # type: ignore[misc]
            body = {"op": op, "cid": cid, **reply}
            try:
                self.router.send_multipart([peer, codec.encode(body)], zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                log.debug("dropping controller reply: %s", exc)

    def _handle(self, peer: bytes, frames: list[bytes], now_ms: int, fd: int | None = None) -> None:
        try:
            header = codec.decode_map(frames[0], HEADER_BYTES_MAX)
        except FabricError as err:
            self._do(Effects(replies=[((peer, None, None), {"error": err.to_wire()})]))
            return
        op = header.get("op")
        if op == "raft":
            try:
                src = int(header["from"])
                msg = message_from_wire(header["msg"])
            except (KeyError, TypeError, ValueError, FabricError) as exc:
                log.warning("malformed raft message from %s: %s", peer.hex(), exc)
                return
            if src not in self.voters:
                log.warning("raft message from %d, not a voter", src)
                return
            if fd is not None and fd >= 0:
                self._fd_voter[fd] = src
            self._do(self.service.receive(src, msg, now_ms))
            return
        cid = header.get("cid")
        fields = {k: v for k, v in header.items() if k not in ("op", "cid", "v")}
        broker = fields.get("broker_id")
        if fd is not None and fd >= 0 and isinstance(broker, int) and op in ("register", "heartbeat", "hello"):
            self._fd_broker[fd] = broker
            self.service.heard_from(broker)
        if op == "hello":
            return  # (one-way: a broker names its connection, so its death is noticed: _disconnects)
        target: Hashable = (peer, cid, op)
        if not isinstance(op, str):
            err = FabricError("MALFORMED_REQUEST", "op must be a string")
            self._do(Effects(replies=[(target, {"error": err.to_wire()})]))
            return
        self._do(self.service.request(target, op, fields, now_ms))

    def _disconnects(self, now_ms: int) -> None:
        from zmq.utils.monitor import recv_monitor_message
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            fd = int(event["value"])
            voter = self._fd_voter.pop(fd, None)
            if voter is not None:
                log.info("voter %d's connection to controller %d closed", voter, self.node_id)
                self._do(self.service.voter_lost(voter, now_ms))
            broker = self._fd_broker.pop(fd, None)
            if broker is not None:
                log.info("broker %d's connection to controller %d closed", broker, self.node_id)
                self.service.connection_lost(broker, now_ms, self.service.lost_grace_ms)

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        for s in self.peers.values():
            poller.register(s, zmq.POLLIN)  # (nothing is sent back on these; drained if so)
        log.info("controller %d on %s, voters %s", self.node_id,
                 self.router.getsockopt(zmq.LAST_ENDPOINT).decode(), self.voters)
        mono = time.monotonic
        try:
            while not self.stopping.is_set():
                events = dict(poller.poll(POLL_MS))
                now_ms = int(mono() * 1000)
                if self.router in events:
                    for _ in range(1000):
                        try:
                            frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        try:
                            fd = int(frames[-1].get(zmq.SRCFD))
                        except (zmq.ZMQError, AttributeError, ValueError):
                            fd = -1
                        msg = [f.bytes for f in frames]
                        if len(msg) >= 2:
                            try:
                                self._handle(msg[0], msg[1:], now_ms, fd)
                            except Exception:
                                log.exception("controller request failed")
                if self.monitor in events:
                    self._disconnects(now_ms)
                for s in self.peers.values():
                    if s in events:
                        try:
                            while s.recv_multipart(zmq.NOBLOCK):
                                pass
                        except zmq.Again:
                            pass
                self._do(self.service.tick(int(mono() * 1000)))
        finally:
            for s in self.peers.values():
                s.close(linger=0)
            self.router.disable_monitor()
            self.monitor.close(linger=0)
            self.router.close(linger=0)
