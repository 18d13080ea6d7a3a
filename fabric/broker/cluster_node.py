"""A broker's cluster membership and replication I/O: the sockets and timers around
``ControllerLink`` (registration, heartbeats, metadata), ``ReplicaManager`` (leaders and
followers) and ``AcksAllReplies`` (produce replies waiting for the high watermark).

Why apart from ``server.py``: a single node has none of this, and the broker loop only needs to
poll a few more sockets and call ``on_readable``/``tick``/``flush``; everything that decides is in
the pure classes.  The controller itself (for a voter) runs in its own thread
(``fabric.controller.server``), reached over ZeroMQ like any other voter.

Sockets:
- a DEALER per controller voter (``controller_link``'s requests; one in flight);
- a PUB bound on ``pub_port``: leaders publish each appended batch as
  ``[prefix, header, batch]`` with ``prefix = b"r" + topic_id + b"/" + partition (4 bytes BE)``;
- a SUB connected to every other broker's PUB, subscribed to the prefixes this broker follows;
- a DEALER per leader broker (its client port) for ``replica_fetch`` (answered) and
  ``replica_ack`` (one-way).

Rules:
1. Images are applied in one step (``_apply_image``): local logs first (``sync_to_image``), then
   leadership and the replica objects, then subscriptions; produce replies whose leadership ended
   fail with NOT_LEADER.
2. A leader acknowledges (``acks=all`` and ``acks=1``) only while its lease is valid (a heartbeat
   answered within the session timeout): a paused or cut-off leader stops acknowledging before the
   controller can have moved its partitions away.
3. Nothing here trusts PUB/SUB: a lost push is found by the follower's offsets and fetched.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path
from typing import Any, Callable

import zmq

from ..clock import Now
from ..controller.server import ControllerServer
from ..multipart import recv_frames, try_send_frames
from ..protocol import codec
from ..protocol.errors import FabricError
from ..replication.config import ReplicationConfig
from ..replication.messages import Push, ReplicaAck, ReplicaFetch, ReplicaFetchReply
from . import cluster_status
from .acks_all import AcksAllReplies
from .controller_link import ControllerLink, LinkConfig
from .producer_id_blocks import ClusterProducerIds
from .replicas import ReplicaManager
from .restart import next_incarnation, restart_intact_since
from .replies import Outbox, Reply
from .topics import CONTROLLER_DIR

log = logging.getLogger("fabric.broker.cluster")

HEADER_BYTES_MAX = 64 << 20
FORWARD_TIMEOUT_MS = 10_000
FORWARD_RETRY_MS = 100  # a forwarded request answered NOT_CONTROLLER goes to the named leader after this
PART = struct.Struct(">I")


def push_prefix(topic_id: str, partition: int) -> bytes:
    return b"r" + topic_id.encode() + b"/" + PART.pack(partition)


def _addr(host_port: str) -> str:
    return host_port if host_port.startswith("tcp://") else f"tcp://{host_port}"


class ClusterNode:
    def __init__(self, core: Any, ctx: zmq.Context, now: Now) -> None:
        self.core = core
        config = core.config
        self.config = config
        self.node_id = config.node_id
        self.ctx = ctx
        voters = {int(k): v for k, v in config.controller_voters.items()}
        self.controller: ControllerServer | None = None
        if self.node_id in voters:
            from ..controller.logic import LogicConfig
            logic = LogicConfig(session_timeout_ms=config.broker_session_timeout_ms,
                                heartbeat_ms=config.broker_heartbeat_ms,
                                default_replication_factor=config.default_replication_factor,
                                min_insync_replicas=config.min_insync_replicas,
                                leader_imbalance_check_ms=config.leader_imbalance_check_ms)
            port = config.controller_port or int(voters[self.node_id].rsplit(":", 1)[1])
            self.controller = ControllerServer(self.node_id, voters, Path(config.data_dir) / CONTROLLER_DIR,
                                               f"tcp://{config.host}:{port}", logic_config=logic, context=ctx)
        incarnation = next_incarnation(Path(config.data_dir))
        self.link = ControllerLink(self.node_id, list(voters), {"host": config.advertised, "port": 0,
                                                                "pub_port": config.pub_port, "rack": config.rack},
                                   incarnation=incarnation,
                                   config=LinkConfig(heartbeat_ms=config.broker_heartbeat_ms,
                                                     session_timeout_ms=config.broker_session_timeout_ms),
                                   intact_since=restart_intact_since(Path(config.data_dir), incarnation))
        self.replicas = ReplicaManager(self.node_id, ReplicationConfig(replica_lag_ms=config.replica_lag_ms),
                                       config.min_insync_replicas)
        self.replicas.default_throttle = config.replication_throttle_bytes
        self.acks = AcksAllReplies(config.limits.inflight_requests_max)
        self.voter_socks: dict[int, zmq.Socket] = {}
        for vid, address in voters.items():
            s = self._dealer(_addr(address))
            self.voter_socks[vid] = s
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 100_000)
        self.pub.bind(f"tcp://{config.host}:{config.pub_port}")
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 100_000)
        self._sub_connected: dict[int, str] = {}
        self._subscribed: set[bytes] = set()
        self.peer_socks: dict[int, tuple[str, zmq.Socket]] = {}  # leader broker id -> (address, DEALER)
        self.sockets_changed = True  # the shell re-registers ``sockets()`` with its poller when set
        self._fetch_cid = 0
        self._waiting_offset: list[tuple[int, dict[str, Any], Callable[[dict[str, Any]], Outbox]]] = []
        # forwarded cid -> (done, deadline, header); a client's request answered NOT_CONTROLLER (a
        # voter that lost or never had the lead) is sent again to the leader it names after
        # FORWARD_RETRY_MS, until its deadline, so the client never sees the controller's churn
        self._forwards: dict[int, tuple[Callable[[dict[str, Any]], Outbox] | None, int, dict[str, Any]]] = {}
        self._forward_retries: list[tuple[int, int]] = []  # (due, forwarded cid)
        # forwarded cid -> the voter it went to: a forward still unanswered when the link has
        # moved to another voter (the one it went to died or lost the lead without answering) is
        # sent again there, instead of waiting out its whole deadline
        self._forward_sent: dict[int, int] = {}
        self._fwd_cid = 0
        self.pending_admin: list[tuple[int, dict[str, Any]]] = []
        self.producer_ids = ClusterProducerIds(self)  # init_producer_id's blocks (producer_id_blocks.py)
        self.on_image: Callable[[Any, Now], Outbox] | None = None

    def _dealer(self, address: str) -> zmq.Socket:
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 10_000)
        s.setsockopt(zmq.MAXMSGSIZE, -1)
        s.connect(address)
        return s

    def start(self, advertised_port: int) -> None:
        self.link.endpoint["port"] = advertised_port
        if self.controller is not None:
            self.controller.start()

    def sockets(self) -> list[zmq.Socket]:
        return [self.sub, *self.voter_socks.values(), *(s for _, s in self.peer_socks.values())]

    # ------------------------------------------------------------------ controller link
    def controller_request(self, now: Now) -> None:
        """Send the link's due request and any queued admin forward."""
        for vid, hello in self.link.hellos(now.mono_ms):
            self._send(self.voter_socks[vid], [codec.encode(hello)])
        req = self.link.poll(now.mono_ms)
        if req is not None:
            vid, header = req
            self._send(self.voter_socks[vid], [codec.encode(header)])
        while self.pending_admin:
            cid, header = self.pending_admin.pop(0)
            target = self.link.target
            self._forward_sent[cid] = target
            self._send(self.voter_socks[target], [codec.encode({**header, "cid": cid})])

    def forward(self, header: dict[str, Any], done: Callable[[dict[str, Any]], Outbox] | None = None,
                now_ms: int = 0) -> None:
        """A request for the controller (create/delete topic, an ISR proposal): sent on at the next
        poll; the controller's answer goes to ``done`` once this broker's metadata has caught up
        with it (so a client's next metadata request already sees the change).  A request the
        controller does not answer within ``FORWARD_TIMEOUT_MS`` is answered REQUEST_TIMED_OUT."""
        self._fwd_cid += 1
        fcid = -self._fwd_cid  # (negative: never a link request's cid)
        self._forwards[fcid] = (done, now_ms + FORWARD_TIMEOUT_MS, header)
        self.pending_admin.append((fcid, header))

    def _on_controller_reply(self, header: dict[str, Any], now: Now) -> Outbox:
        cid = header.get("cid")
        if isinstance(cid, int) and cid < 0:
            fwd = self._forwards.pop(cid, None)
            self._forward_sent.pop(cid, None)
            if fwd is None:
                return []
            done = fwd[0]
            need = header.get("metadata_offset")
            if isinstance(need, int):
                self.link.note_committed(need)
            err = header.get("error")
            if isinstance(err, dict) and err.get("name") == "NOT_CONTROLLER":
                self.link.redirect(header.get("leader_id"))
                if done is not None and fwd[1] > now.mono_ms + FORWARD_RETRY_MS:
                    self._forwards[cid] = fwd
                    self._forward_retries.append((now.mono_ms + FORWARD_RETRY_MS, cid))
                    return []
            if done is None:
                return []
            if isinstance(need, int) and need > self.link.offset and not err:
                self._waiting_offset.append((need, header, done))
                return []
            return done(header)
        self.link.on_reply(header, now.mono_ms)
        return self._maybe_apply(now)

    def _expire_forwards(self, now_ms: int) -> Outbox:
        out: Outbox = []
        if self._forward_retries:
            due = [fcid for at, fcid in self._forward_retries if at <= now_ms]
            self._forward_retries = [(at, fcid) for at, fcid in self._forward_retries if at > now_ms]
            for fcid in due:
                fwd = self._forwards.get(fcid)
                if fwd is not None:
                    self.pending_admin.append((fcid, fwd[2]))
        target = self.link.target
        for fcid, sent_to in list(self._forward_sent.items()):
            if sent_to != target and fcid in self._forwards:
                del self._forward_sent[fcid]
                self.pending_admin.append((fcid, self._forwards[fcid][2]))
        for fcid, (done, deadline, _) in list(self._forwards.items()):
            if deadline <= now_ms:
                del self._forwards[fcid]
                self._forward_sent.pop(fcid, None)
                if done is not None:
                    err = FabricError("REQUEST_TIMED_OUT", "the controller did not answer in time; retry")
                    out.extend(done({"error": err.to_wire()}))
        return out

    def _maybe_apply(self, now: Now) -> Outbox:
        if not self.link.image_changed:
            return []
        self.link.image_changed = False
        image = self.link.state.image()
        out = self.on_image(image, now) if self.on_image is not None else []
        self._reconcile_sockets(image)
        ready = [w for w in self._waiting_offset if w[0] <= self.link.offset]
        if ready:
            self._waiting_offset = [w for w in self._waiting_offset if w[0] > self.link.offset]
            for _, header, done in ready:
                out.extend(done(header))
        return out

    # ------------------------------------------------------------------ sockets for replication
    def _reconcile_sockets(self, image: Any) -> None:
        for bid, b in image.brokers.items():
            if bid == self.node_id or not getattr(b, "pub_port", 0):
                continue
            pub = f"tcp://{b.host}:{b.pub_port}"
            if self._sub_connected.get(bid) != pub:
                if bid in self._sub_connected:
                    try:
                        self.sub.disconnect(self._sub_connected[bid])
                    except zmq.ZMQError:
                        pass
                self.sub.connect(pub)
                self._sub_connected[bid] = pub
        wanted = {push_prefix(t, p) for subs in self.replicas.subscriptions().values() for t, p in subs}
        for prefix in wanted - self._subscribed:
            self.sub.setsockopt(zmq.SUBSCRIBE, prefix)
        for prefix in self._subscribed - wanted:
            self.sub.setsockopt(zmq.UNSUBSCRIBE, prefix)
        self._subscribed = wanted
        for leader in self.replicas.subscriptions():
            b = image.brokers.get(leader)
            if b is None:
                continue
            address = b.address
            held = self.peer_socks.get(leader)
            if held is None or held[0] != address:
                if held is not None:
                    held[1].close(linger=0)
                self.peer_socks[leader] = (address, self._dealer(address))
                self.sockets_changed = True
                for f in self.replicas.followers.values():
                    if f.leader == leader:
                        f.restart_fetch()

    @staticmethod
    def _send(sock: zmq.Socket, frames: list) -> None:
        """Without waiting, through ``multipart`` (libzmq with the GIL kept): pyzmq's
        ``send_multipart`` lets the process's other threads (the controller voter, the flusher)
        in at every frame, and a follower's ack then waited for the GIL (~0.5 ms per ack
        measured at 10,000 records/s), on the path of every ``acks=all`` reply."""
        try:
            try_send_frames(sock, frames)
        except zmq.ZMQError:
            pass  # backed up or gone: timers resend (replication) or retry (controller)

    def flush(self) -> None:
        """End of a loop turn: publish the leaders' pushes, send the followers' fetches/acks."""
        reps = self.replicas
        if reps.pushes:
            for push in reps.pushes:
                header = {"topic_id": push.topic_id, "partition": push.partition, "leader_epoch": push.leader_epoch,
                          "base_offset": push.base_offset, "high_watermark": push.high_watermark}
                self._send(self.pub, [push_prefix(push.topic_id, push.partition), codec.encode(header), push.batch])
            reps.pushes.clear()
        if reps.outgoing:
            for leader, messages in reps.take_outgoing().items():
                held = self.peer_socks.get(leader)
                if held is None:
                    continue
                for m in messages:
                    if isinstance(m, ReplicaFetch):
                        self._fetch_cid += 1
                        self._send(held[1], [codec.encode({"op": "replica_fetch", "v": 1, "cid": self._fetch_cid,
                                                           **m.to_wire()})])
                    else:
                        self._send(held[1], [codec.encode({"op": "replica_ack", "v": 1, "cid": 0, **m.to_wire()})])

    # ------------------------------------------------------------------ events
    def on_readable(self, sock: zmq.Socket, now: Now) -> Outbox:
        out: Outbox = []
        for _ in range(1000):
            got = recv_frames(sock)  # (the GIL kept, as in ``_send``)
            if got is None:
                break
            frames = [f if f.__class__ is bytes else bytes(f) for f in got]
            try:
                if sock is self.sub:
                    self._on_push(frames, now)
                elif sock in self.voter_socks.values():
                    out.extend(self._on_controller_reply(codec.decode_map(frames[0], HEADER_BYTES_MAX), now))
                else:
                    self._on_fetch_reply(frames, now)
            except (FabricError, ValueError, KeyError, TypeError) as exc:
                log.warning("malformed cluster message dropped: %s", exc)
        return out

    def _on_push(self, frames: list, now: Now) -> None:
        if len(frames) != 3:
            raise ValueError(f"a push has 3 frames, not {len(frames)}")
        h = codec.decode_map(frames[1], 4096)
        push = Push.from_wire({"type": "push", **h, "batch": frames[2]})
        self.replicas.on_push(push, now.mono_ms)

    def _on_fetch_reply(self, frames: list, now: Now) -> None:
        h = codec.decode_map(frames[0], HEADER_BYTES_MAX)
        if h.get("op") != "replica_fetch":
            return
        if "error" in h and isinstance(h["error"], dict) and "topic_id" not in h:
            log.info("replica_fetch refused: %s", h["error"])
            return
        body = {k: v for k, v in h.items() if k not in ("op", "v", "cid")}
        body["batches"] = frames[1] if len(frames) > 1 else b""
        reply = ReplicaFetchReply.from_wire({"type": "replica_fetch_reply", **body})
        f = self.replicas.follower_by_id(reply.topic_id, reply.partition)
        if f is not None:
            self.replicas.send(f.leader, f.on_fetch_reply(reply, now.mono_ms))

    # ------------------------------------------------------------------ leader side (broker port)
    def handle_replica(self, peer: bytes, header: dict[str, Any], now: Now) -> Outbox:
        """``replica_fetch`` (answered) and ``replica_ack`` (one-way) from followers."""
        op = header.get("op")
        body = {k: v for k, v in header.items() if k not in ("op", "v", "cid")}
        try:
            if op == "replica_ack":
                message: Any = ReplicaAck.from_wire({**body, "type": "replica_ack"})
            else:
                message = ReplicaFetch.from_wire({**body, "type": "replica_fetch"})
        except (ValueError, TypeError, KeyError) as exc:  # a hostile or broken peer: a clear error, not UNKNOWN_ERROR
            raise FabricError("INVALID_FIELD", f"{op}: {exc}"[:500]) from None
        if op == "replica_ack":
            ack = message
            leader = self.replicas.leader_by_id(ack.topic_id, ack.partition)
            if leader is not None:
                leader.on_ack(ack, now.mono_ms)
                return self.committed(leader, now)
            return []
        fetch = message
        leader = self.replicas.leader_by_id(fetch.topic_id, fetch.partition)
        if leader is None:
            reply = ReplicaFetchReply(fetch.topic_id, fetch.partition, fetch.leader_epoch, fetch.fetch_offset,
                                      "NOT_LEADER", 0, 0, 0, b"", None)
            out: Outbox = []
        else:
            reply = leader.on_fetch(fetch, now.mono_ms)
            out = self.committed(leader, now)
        wire = reply.to_wire()
        wire.pop("type", None)
        batches = wire.pop("batches", b"")
        out.insert(0, (peer, Reply({"op": "replica_fetch", "v": 1, "cid": header.get("cid", 0), **wire},
                                   [batches])))
        return out

    def committed(self, leader: Any, now: Now) -> Outbox:
        """After anything that may move ``leader``'s high watermark (an append, a follower's ack
        or fetch, an ISR change): release the ``acks=all`` replies it completes and, if it moved,
        wake the consumers waiting for it.  Called on the spot, never from a timer: the reply
        leaves in the same loop turn as the ack that commits it."""
        tokens = leader.hw_moved()
        groups = [t for t in tokens if isinstance(t, tuple)]  # offset commits (cluster_groups.py)
        out = self.acks.committed([t for t in tokens if not isinstance(t, tuple)])
        if groups and self.core.cluster_groups is not None:
            out.extend(self.core.cluster_groups.settle(groups))
        if leader.take_hw_change() and len(self.core.waiters):  # (consumers read below the HW only)
            key = self.replicas.key_of(leader.topic_id, leader.partition)
            if key is not None:
                out.extend(self.core.fetcher.wake([key], now.mono_ms))
        return out

    def status(self, peer: bytes, header: dict[str, Any], now: Now) -> Outbox:
        """``cluster_status`` (``cluster_status.py``)."""
        return cluster_status.answer(self, peer, header, now)

    def lease_valid(self, now: Now) -> bool:
        """Rule 2."""
        return self.link.lease_valid(now.mono_ms)

    # ------------------------------------------------------------------ timers
    def tick(self, now: Now) -> Outbox:
        out: Outbox = self.acks.expire(now.mono_ms)
        out.extend(self._expire_forwards(now.mono_ms))
        if self.core.cluster_groups is not None:
            out.extend(self.core.cluster_groups.expire(now))
        for change in self.replicas.tick(now.mono_ms):
            self.forward(self.replicas.alter_partition(change), None, now.mono_ms)
        out.extend(self.producer_ids.tick(now))
        self.controller_request(now)
        return out

    def next_deadline_ms(self) -> int | None:
        return self.acks.next_deadline_ms()

    def close(self) -> None:
        if self.controller is not None:
            self.controller.stop()
        for s in [self.pub, self.sub, *self.voter_socks.values(), *(s for _, s in self.peer_socks.values())]:
            s.close(linger=0)
