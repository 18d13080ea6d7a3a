"""One simulated Fabric process in combined mode: a controller voter and a broker, made of the
product's own sans-I/O classes, with the socket pumps replaced by an outbox the simulation routes.

Why a separate module: ``cluster_sim.py`` owns the network, the clock, the faults and the checks;
this is "what ``ControllerServer`` + ``ClusterNode`` + the produce handler do with a message",
re-told without ZeroMQ so that a simulated process decides exactly as a real one.  What runs:

- controller: ``RaftNode`` on a ``MemoryRaftStorage``, ``ControllerService`` (metadata state,
  ``ControllerLogic``), driven as ``controller/server.py`` drives it (``request``, ``receive``,
  ``tick``, ``heard_from``, ``connection_lost``, ``voter_lost``);
- broker: ``ControllerLink`` (registration, heartbeats, lease, metadata fetch), ``Leadership``
  and ``ReplicaManager`` applying each new image (``BrokerCore.apply_image``), the real
  ``LeaderReplica``/``FollowerReplica`` on ``MemoryLog``s, ``AcksAllReplies`` holding
  ``acks=all`` replies until the high watermark passes them, ISR proposals forwarded to the
  controller (``ClusterNode.tick``/``forward``), the produce decisions of
  ``cluster_handlers.produce`` (``ReplicaManager.produce_leader``/``append_produced``), and the
  producer-id blocks a broker asks the controller for (``ProducerIdBlocks``, as
  ``ClusterProducerIds`` drives it).

What is simplified (and why it does not matter here): a partition's log is a ``MemoryLog``
(same observable behaviour as the file log, by the conformance suite), opened when the image
assigns it (``TopicManager.sync_to_image``; the simulation never deletes topics); a produce
request carries one batch for one partition; no group coordination, no consumer fetch purgatory.

Every method appends what the process sends to ``outbox`` as ``(channel, destination,
message)``: channel ``raft`` (voter to voter), ``link`` (broker <-> controller: ``("request", header)``
and ``("reply", header)``), ``repl`` (fetches, acks and fetch replies, over DEALER/ROUTER), ``pub`` (pushes over
PUB/SUB), ``client`` (produce replies).
"""

from __future__ import annotations

import random
from typing import Any, Callable, Hashable

from ..broker.acks_all import AcksAllReplies
from ..broker.controller_link import ControllerLink, LinkConfig
from ..broker.leadership import Leadership
from ..broker.producer_id_blocks import ProducerIdBlocks
from ..broker.replicas import ReplicaManager
from ..controller.logic import ControllerLogic, LogicConfig
from ..controller.metadata import MetadataState
from ..controller.raft import RaftConfig, RaftNode
from ..controller.raft_storage import MemoryRaftStorage
from ..controller.service import ControllerService, Effects
from ..log import LogConfig
from ..log.memory import MemoryLog
from ..protocol.errors import FabricError
from ..replication.config import ReplicationConfig
from ..replication.image import BrokerInfo, MetadataImage
from ..replication.messages import Push, ReplicaAck, ReplicaFetch, ReplicaFetchReply

__all__ = ["SimConfig", "SimNode", "Disk"]

Disk = dict[tuple[str, int], MemoryLog]  # (topic id, partition) -> log: what survives a restart
FORWARD_TIMEOUT_MS = 10_000


class SimConfig:
    """The timers of every simulated process (the product's defaults unless a run picks others)."""

    def __init__(self, raft: RaftConfig = RaftConfig(), logic: LogicConfig = LogicConfig(min_insync_replicas=2),
                 link: LinkConfig = LinkConfig(), replication: ReplicationConfig = ReplicationConfig(),
                 snapshot_every: int = 200, produce_timeout_ms: int = 5_000, fetch_entries_max: int = 2_000) -> None:
        self.raft, self.logic, self.link, self.replication = raft, logic, link, replication
        self.snapshot_every, self.produce_timeout_ms = snapshot_every, produce_timeout_ms
        self.fetch_entries_max = fetch_entries_max  # small: a restarted broker catches up in many steps


class _Logs:
    """What ``Leadership`` reads of a ``TopicManager`` in a cluster: no local topics of its own
    (``topics``: the image comes from the controller) and ``local`` (the log of a partition held
    here), kept in step with each image by ``sync`` (``TopicManager.sync_to_image``'s opening)."""

    def __init__(self, node_id: int, disk: Disk) -> None:
        self.node_id = node_id
        self.disk = disk
        self.topics: dict[str, Any] = {}
        self._open: dict[tuple[str, int], MemoryLog] = {}

    def sync(self, image: MetadataImage, now_ms: int) -> None:
        self._open = {}
        for name, p in image.partitions_on(self.node_id):
            key = (image.topic(name).topic_id, p)
            if key not in self.disk:
                self.disk[key] = MemoryLog(LogConfig(), now_ms, f"node{self.node_id}/{name}-{p}")
            self._open[(name, p)] = self.disk[key]

    def local(self, name: str, p: int) -> MemoryLog | None:
        return self._open.get((name, p))


class SimNode:
    def __init__(self, node_id: int, voters: list[int], storage: MemoryRaftStorage, disk: Disk, incarnation: int,
                 now_ms: int, config: SimConfig, rng: random.Random, intact_since: int | None = None) -> None:
        self.id = node_id
        self.incarnation = incarnation
        self.config = config
        raft = RaftNode(node_id, voters, storage, config.raft, random.Random(rng.getrandbits(64)))
        state = MetadataState()
        logic = ControllerLogic(state, config.logic, new_topic_id=lambda: f"{rng.getrandbits(64):016x}")
        self.service = ControllerService(raft, state, logic, snapshot_every=config.snapshot_every)
        self.service.fetch_entries_max = config.fetch_entries_max
        self.link = ControllerLink(node_id, voters, {"host": "127.0.0.1", "port": 9000 + node_id,
                                                     "pub_port": 9100 + node_id, "rack": None},
                                   incarnation, config.link, intact_since=intact_since)
        self.logs = _Logs(node_id, disk)
        self.replicas = ReplicaManager(node_id, config.replication, config.logic.min_insync_replicas)
        self.leadership = Leadership(self.logs, lambda: BrokerInfo(node_id, "127.0.0.1", 9000 + node_id),  # type: ignore[arg-type]
                                     now_ms)
        self.leadership.replicas = self.replicas
        self.acks = AcksAllReplies(10_000)
        self.outbox: list[tuple[str, Hashable, Any]] = []
        # cid -> (deadline, what to call with the answer) (ClusterNode.forward)
        self._forwards: dict[int, tuple[int, Callable[[dict[str, Any]], None] | None]] = {}
        self.pid_blocks = ProducerIdBlocks()
        self.pid_granted: list[tuple[int, int]] = []  # (start, size) of each block this process received
        self._fwd_cid = 0

    @property
    def raft(self) -> RaftNode:
        return self.service.raft

    # ================================================================== controller (server.py)
    def _effects(self, fx: Effects) -> None:
        for dst, message in fx.messages:
            self.outbox.append(("raft", dst, message))
        for target, reply in fx.replies:
            peer, cid, op = target  # type: ignore[misc]
            self.outbox.append(("link", peer, ("reply", {"op": op, "cid": cid, **reply})))

    def on_raft(self, src: int, message: Any, now_ms: int) -> None:
        self._effects(self.service.receive(src, message, now_ms))

    def on_request(self, src: int, header: dict[str, Any], now_ms: int) -> None:
        op, cid = header.get("op"), header.get("cid")
        fields = {k: v for k, v in header.items() if k not in ("op", "cid", "v")}
        if op in ("register", "heartbeat", "hello") and isinstance(fields.get("broker_id"), int):
            self.service.heard_from(fields["broker_id"])
        if op == "hello":
            return
        self._effects(self.service.request((src, cid, op), str(op), fields, now_ms))

    def peer_died(self, peer: int, now_ms: int) -> None:
        """``peer``'s process died and the kernel reset its connections to this one: what the
        controller's monitor socket reports (a broker connection and a voter connection)."""
        self.service.connection_lost(peer, now_ms, self.service.lost_grace_ms)
        self._effects(self.service.voter_lost(peer, now_ms))

    # ================================================================== broker: controller link
    def forward(self, header: dict[str, Any], now_ms: int, done: Callable[[dict[str, Any]], None] | None = None) -> None:
        """``ClusterNode.forward`` (``done`` gets the answer, or a timeout or NOT_CONTROLLER error:
        the real broker sends the request again after NOT_CONTROLLER; here its owner does)."""
        self._fwd_cid += 1
        self._forwards[-self._fwd_cid] = (now_ms + FORWARD_TIMEOUT_MS, done)
        self.outbox.append(("link", self.link.target, ("request", {**header, "cid": -self._fwd_cid})))

    def on_reply(self, header: dict[str, Any], now_ms: int) -> None:
        cid = header.get("cid")
        if isinstance(cid, int) and cid < 0:
            fwd = self._forwards.pop(cid, None)
            if fwd is None:
                return
            need = header.get("metadata_offset")
            if isinstance(need, int):
                self.link.note_committed(need)
            err = header.get("error")
            if isinstance(err, dict) and err.get("name") == "NOT_CONTROLLER":
                self.link.redirect(header.get("leader_id"))
            if fwd[1] is not None:
                fwd[1](header)
            return
        self.link.on_reply(header, now_ms)
        if self.link.image_changed:
            self.link.image_changed = False
            self.apply_image(self.link.state.image(), now_ms)

    def apply_image(self, image: MetadataImage, now_ms: int) -> None:
        """``BrokerCore.apply_image``: logs, then leadership and replicas; the replies of closed
        leaderships fail with NOT_LEADER."""
        self.logs.sync(image, now_ms)
        self.leadership.apply(image, now_ms)
        if self.replicas.closing:
            tokens, self.replicas.closing = self.replicas.closing, []
            self._client(self.acks.failed(tokens, FabricError(
                "NOT_LEADER", "leadership moved before the in-sync replicas confirmed the batch: retry")))

    # ================================================================== broker: replication
    def on_push(self, push: Push, now_ms: int) -> None:
        self.replicas.on_push(push, now_ms)

    def on_replica(self, src: int, message: Any, now_ms: int) -> None:
        """``ClusterNode.handle_replica`` and ``_on_fetch_reply``."""
        if isinstance(message, ReplicaFetchReply):
            f = self.replicas.follower_by_id(message.topic_id, message.partition)
            if f is not None:
                self.replicas.send(f.leader, f.on_fetch_reply(message, now_ms))
            return
        leader = self.replicas.leader_by_id(message.topic_id, message.partition)
        if isinstance(message, ReplicaAck):
            if leader is not None:
                leader.on_ack(message, now_ms)
                self.committed(leader)
            return
        assert isinstance(message, ReplicaFetch)
        if leader is None:
            reply = ReplicaFetchReply(message.topic_id, message.partition, message.leader_epoch, message.fetch_offset,
                                      "NOT_LEADER", 0, 0, 0, b"", None)
        else:
            reply = leader.on_fetch(message, now_ms)
            self.committed(leader)
        self.outbox.append(("repl", src, reply))

    def committed(self, leader: Any) -> None:
        """``ClusterNode.committed``: release the ``acks=all`` replies the HW passed."""
        self._client(self.acks.committed(leader.hw_moved()))

    def _client(self, out: list) -> None:
        for peer, reply in out:
            self.outbox.append(("client", peer, reply.header))

    # ================================================================== broker: produce
    def produce(self, peer: Hashable, cid: int, topic: str, p: int, batch: bytearray, now_ms: int) -> None:
        """``cluster_handlers.Handlers.produce`` for one ``acks=all`` batch."""
        try:
            leader = self.replicas.produce_leader((topic, p), self.link.lease_valid(now_ms))
            if leader is None:
                self.leadership.leading(topic, p)  # raises, saying who leads
                raise FabricError("NOT_LEADER", f"{topic}-{p} has no leader here")
            base, last = self.replicas.append_produced(leader, batch, now_ms, acks_all=True)
        except FabricError as exc:
            row = {"topic": topic, "partition": p, "base_offset": -1, "error": exc.to_wire()}
            self._client(self.acks.answer(peer, "produce", cid, [row]))  # type: ignore[arg-type]
            return
        results = [{"topic": topic, "partition": p, "base_offset": base, "log_append_time": -1}]
        tokens = self.acks.hold(peer, "produce", cid, results, [(0, topic, p)],  # type: ignore[arg-type]
                                now_ms + self.config.produce_timeout_ms)
        leader.wait(tokens[0], last)
        self.committed(leader)

    # ================================================================== timers
    def tick(self, now_ms: int) -> None:
        """The controller thread's and the broker loop's timers, then what the loop sends."""
        self._effects(self.service.tick(now_ms))
        self._client(self.acks.expire(now_ms))
        for cid, (deadline, done) in list(self._forwards.items()):
            if deadline <= now_ms:
                del self._forwards[cid]
                if done is not None:
                    done({"error": FabricError("REQUEST_TIMED_OUT", "no answer").to_wire()})
        if self.link.registered and self.pid_blocks.wants_block(now_ms):  # (ClusterProducerIds.tick)
            self.pid_blocks.asking()
            self.forward({"op": "allocate_producer_ids", "broker_id": self.id, "incarnation": self.link.incarnation},
                         now_ms, self._pid_block)
        for change in self.replicas.tick(now_ms):
            self.forward(self.replicas.alter_partition(change), now_ms)
        for vid, hello in self.link.hellos(now_ms):
            self.outbox.append(("link", vid, ("request", hello)))
        request = self.link.poll(now_ms)
        if request is not None:
            self.outbox.append(("link", request[0], ("request", request[1])))
        self.flush()

    def _pid_block(self, answer: dict[str, Any]) -> None:
        """``ClusterProducerIds._granted``."""
        if answer.get("error"):
            self.pid_blocks.on_failure()
            return
        self.pid_granted.append((answer["start"], answer["size"]))
        self.pid_blocks.on_block(answer["start"], answer["size"])

    def flush(self) -> None:
        """``ClusterNode.flush``: pushes to every other broker (each keeps those it follows),
        follower messages to their leaders."""
        reps = self.replicas
        for push in reps.pushes:
            self.outbox.append(("pub", None, push))
        reps.pushes.clear()
        for leader, messages in reps.take_outgoing().items():
            for m in messages:
                self.outbox.append(("repl", leader, m))
