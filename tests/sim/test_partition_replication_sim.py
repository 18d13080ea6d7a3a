"""Partition replication, simulated: the real ``LeaderReplica`` and ``FollowerReplica`` of three
replicas on ``MemoryLog``s, over a seeded fake network and a manual clock.

Faults, all from ``random.Random(seed)``: pushes (the PUB path) dropped, reordered and duplicated;
fetches, replies, acks and ISR proposals dropped and delayed (the DEALER/ROUTER path, FIFO per
link); network partitions between the leader and a follower; followers and leaders crash, losing the unflushed tail of their log, and restart; leader
changes decided by a small stand-in controller (clean election from the live ISR, epoch + 1; a
crashed broker is fenced out of the ISR at once, as its session expiry would do).  Producers
append with ``acks=all`` (``min_insync_replicas`` 2) and ``acks=1`` at random.

Invariants after every step (the failure message names the seed; ``--seed N`` replays it):
1. no acknowledged ``acks=all`` batch is lost: the committed prefix of the log (bytes below the
   highest HW any leader had) is a prefix of the current leader's log, and each acknowledged
   batch sits in it at its offset;
2. every live replica's log below its HW is a prefix of the leader's log (so no two replicas hold
   different batches at one offset below the HW);
3. a leader's HW never goes backwards within its epoch; the consumer-visible HW never goes
   backwards at all;
4. liveness: after the faults stop and the crashed restart, every follower catches up, the HW
   reaches the log end, the ISR is all three and no ``acks=all`` request is left waiting.
"""

from __future__ import annotations

import random

import pytest

from fabric.clock import ManualClock
from fabric.log import LogConfig
from fabric.log.memory import MemoryLog
from fabric.protocol.errors import FabricError
from fabric.records.batch import encode_batch
from fabric.replication import PartitionState
from fabric.replication.config import ReplicationConfig
from fabric.replication.follower import FollowerReplica
from fabric.replication.leader import IsrChange, LeaderReplica
from fabric.replication.messages import Push, ReplicaAck, ReplicaFetch, ReplicaFetchReply
from fabric.testing.network import FakeNetwork
from fabric.testing.seeds import seeds

pytestmark = pytest.mark.sim

NODES = (1, 2, 3)
CTL = "controller"
TOPIC = "t-0001"
MIN_ISR = 2
CONFIG = ReplicationConfig(replica_lag_ms=400, replica_fetch_idle_ms=60, replica_fetch_timeout_ms=150,
                           replica_fetch_max_bytes=600, isr_retry_ms=150)
STEPS = 700
BIG = 1 << 30


class Node:
    def __init__(self, node_id: int) -> None:
        self.id = node_id
        self.log = MemoryLog(LogConfig(), 0, f"node{node_id}")
        self.state = PartitionState(node_id)
        self.replica: LeaderReplica | FollowerReplica | None = None
        self.alive = True
        self.incarnation = 0


class Sim:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.clock = ManualClock(0)
        self.net = FakeNetwork(seed, self.clock, drop=0.05, delay_ms=(1, 25))  # DEALER/ROUTER: FIFO per link
        self.pub = FakeNetwork(seed + 1_000_003, self.clock, drop=0.25, delay_ms=(0, 40), reorder=True)
        self.nodes = {n: Node(n) for n in NODES}
        # the stand-in controller's view
        self.leader, self.epoch, self.isr, self.partition_epoch = 1, 0, set(NODES), 0
        # the checks' memory
        self.acked: dict[int, bytes] = {}  # base offset -> the acknowledged batch
        self.waiting: dict[int, tuple[int, bytes]] = {}  # token -> (base offset, batch)
        self.tokens = 0
        self.committed = b""  # the leader's log below the highest HW seen
        self.visible_hw = 0
        self.leader_hw = 0
        self.elections = self.crashes = self.refused = self.cuts = self.shrinks = 0
        self.elect(1)

    def ctx(self, step: object) -> str:
        return f"seed={self.seed} step={step} epoch={self.epoch} leader={self.leader} isr={sorted(self.isr)}"

    @property
    def lead(self) -> LeaderReplica:
        replica = self.nodes[self.leader].replica
        assert isinstance(replica, LeaderReplica)
        return replica

    # ------------------------------------------------------------------ the stand-in controller
    def elect(self, new_leader: int) -> None:
        """A clean election: ``new_leader`` is a live ISR member; every live replica learns at once."""
        now = self.clock.monotonic_ms()
        old = self.nodes[self.leader].replica
        if isinstance(old, LeaderReplica):
            for token in old.close():  # answered NOT_LEADER: never acknowledged
                del self.waiting[token]
        self.leader, self.epoch = new_leader, self.epoch + 1
        self.partition_epoch += 1
        self.leader_hw = 0
        for node in self.nodes.values():
            if node.alive:
                self.start_replica(node, now)
        self.elections += 1

    def start_replica(self, node: Node, now: int) -> None:
        if node.id == self.leader:
            node.replica = LeaderReplica(node.log, node.state, TOPIC, 0, leader_epoch=self.epoch, replicas=NODES,
                                         isr=self.isr, now_ms=now, min_insync_replicas=MIN_ISR,
                                         partition_epoch=self.partition_epoch, config=CONFIG)
            self.leader_hw = node.state.high_watermark
        else:
            node.replica = FollowerReplica(node.log, node.state, TOPIC, 0, leader=self.leader,
                                           leader_epoch=self.epoch, replicas=NODES, now_ms=now, config=CONFIG)

    def on_isr_change(self, change: IsrChange) -> None:
        if change.leader_epoch != self.epoch or change.partition_epoch != self.partition_epoch:
            return  # a stale proposal: refused
        assert self.leader in change.isr, (self.ctx("isr"), change)
        self.shrinks += len(self.isr - change.isr) > 0
        self.set_isr(set(change.isr) & {n for n in NODES if self.nodes[n].alive})

    def set_isr(self, isr: set[int]) -> None:
        self.isr, self.partition_epoch = isr, self.partition_epoch + 1
        self.lead.set_isr(isr, self.partition_epoch)
        self.answer_waiters()

    def crash(self, node_id: int) -> None:
        """The broker dies and loses its unflushed tail; its session expires: fenced out of the ISR."""
        if node_id == self.leader:
            candidates = sorted(n for n in self.isr - {node_id} if self.nodes[n].alive)
            if not candidates:
                return
            self.elect(self.rng.choice(candidates))
        node = self.nodes[node_id]
        node.alive, node.replica = False, None
        node.log = node.log.crashed()
        node.state = PartitionState(node_id)  # the HW is not durable here: it restarts at 0
        node.incarnation += 1  # (messages to and from the old process are lost with its sockets)
        self.crashes += 1
        if node_id in self.isr:
            self.set_isr(self.isr - {node_id})
        self.lead.forget_follower(node_id)

    def restart(self, node_id: int) -> None:
        node = self.nodes[node_id]
        node.alive = True
        node.incarnation += 1
        self.start_replica(node, self.clock.monotonic_ms())

    def cut(self, a: int, b: int) -> None:
        for network in (self.net, self.pub):
            network.cut(a, b)
        self.cuts += 1

    def heal(self) -> None:
        for a in NODES:
            for b in NODES:
                for network in (self.net, self.pub):
                    network.heal(a, b)

    # ------------------------------------------------------------------ traffic
    def send(self, src: int, dst: object, message: object, net: FakeNetwork | None = None) -> None:
        src_inc = self.nodes[src].incarnation
        dst_inc = self.nodes[dst].incarnation if dst in self.nodes else 0
        (net or self.net).send(src, dst, (src_inc, dst_inc, message))

    def deliver(self, envelope) -> None:
        src_inc, dst_inc, message = envelope.message
        src, dst = envelope.src, envelope.dst
        if src in self.nodes and (self.nodes[src].incarnation != src_inc or not self.nodes[src].alive):
            return
        if dst == CTL:
            self.on_isr_change(message)
            return
        node = self.nodes[dst]
        if not node.alive or node.incarnation != dst_inc or node.replica is None:
            return
        now = self.clock.monotonic_ms()
        replica = node.replica
        if isinstance(replica, LeaderReplica):
            if isinstance(message, ReplicaFetch):
                self.send(dst, src, replica.on_fetch(message, now))
            elif isinstance(message, ReplicaAck):
                replica.on_ack(message, now)
            if node.id == self.leader:
                self.answer_waiters()
        elif isinstance(message, Push):
            self.to_leader(dst, replica.on_push(message, now))
        elif isinstance(message, ReplicaFetchReply):
            self.to_leader(dst, replica.on_fetch_reply(message, now))

    def to_leader(self, src: int, messages: list) -> None:
        replica = self.nodes[src].replica
        assert isinstance(replica, FollowerReplica)
        for m in messages:
            self.send(src, replica.leader, m)

    def answer_waiters(self) -> None:
        lead = self.lead
        for token in lead.hw_moved():
            base, batch = self.waiting.pop(token)
            assert base + 1 <= lead.high_watermark and len(lead.isr) >= MIN_ISR, self.ctx("ack")
            assert lead.log.read(base, 1).startswith(batch), (self.ctx("ack"), base)
            self.acked[base] = batch

    def produce(self, step: int) -> None:
        lead, now = self.lead, self.clock.monotonic_ms()
        n = self.rng.randint(1, 3)
        data = bytearray(encode_batch([now] * n, [None] * n, [b"s%d-%d" % (step, i) for i in range(n)]))
        acks_all = self.rng.random() < 0.7
        token = None
        if acks_all:
            self.tokens += 1
            token = self.tokens
        end = lead.log.end_offset
        try:
            base, _ = lead.append(data, now, token)
        except FabricError as exc:
            assert exc.name == "NOT_ENOUGH_REPLICAS" and len(lead.isr) < MIN_ISR, self.ctx(step)
            assert lead.log.end_offset == end, (self.ctx(step), "a refused append appended")
            self.refused += 1
            return
        if token is not None:
            self.waiting[token] = (base, bytes(data))
        push = lead.push(base, data)
        for n_id in NODES:
            if n_id != self.leader:
                self.send(self.leader, n_id, push, self.pub)
                if self.rng.random() < 0.1:  # PUB may repeat a frame
                    self.send(self.leader, n_id, push, self.pub)
        self.answer_waiters()

    def tick(self) -> None:
        now = self.clock.monotonic_ms()
        for node in self.nodes.values():
            if not node.alive or node.replica is None:
                continue
            if isinstance(node.replica, LeaderReplica):
                change = node.replica.tick(now)
                if change is not None:
                    self.send(node.id, CTL, change)
            else:
                self.to_leader(node.id, node.replica.tick(now))
        for network in (self.net, self.pub):
            for envelope in network.deliver():
                self.deliver(envelope)
        if self.rng.random() < 0.05:
            self.nodes[self.rng.choice(NODES)].log.flush(now)

    # ------------------------------------------------------------------ the invariants
    def check(self, step: object) -> None:
        ctx = self.ctx(step)
        lead = self.lead
        leader_log = lead.log.read(0, BIG) if lead.log.end_offset else b""
        assert leader_log.startswith(self.committed), (ctx, "committed records lost or changed")  # 1
        hw = lead.high_watermark
        assert hw >= self.leader_hw, (ctx, "the leader's HW went back", hw, self.leader_hw)  # 3
        self.leader_hw = hw
        visible = lead.visible_high_watermark
        if visible is not None:
            assert visible >= self.visible_hw, (ctx, "the consumer-visible HW went back", visible, self.visible_hw)
            self.visible_hw = visible
            prefix = lead.log.read(0, BIG, upto_offset=hw) if hw else b""
            if len(prefix) > len(self.committed):
                self.committed = prefix
        for node in self.nodes.values():  # 2
            if node.alive and node.id != self.leader:
                nhw = node.state.high_watermark
                assert nhw <= node.log.end_offset, ctx
                mine = node.log.read(0, BIG, upto_offset=nhw) if nhw else b""
                assert leader_log.startswith(mine), (ctx, node.id, "a replica's committed prefix differs")

    def check_acked(self, ctx: str) -> None:
        for base, batch in self.acked.items():
            assert self.lead.log.read(base, 1).startswith(batch), (ctx, "acknowledged batch lost", base)


def run(seed: int) -> Sim:
    sim = Sim(seed)
    rng = sim.rng
    down: dict[int, int] = {}  # crashed node -> step to restart it
    cut: dict[int, int] = {}  # follower cut off from the leader -> step to heal the link
    for step in range(STEPS):
        if rng.random() < 0.35:
            sim.produce(step)
        op = rng.random()
        if op < 0.008 and step > 50:
            candidates = sorted(n for n in sim.isr - {sim.leader} if sim.nodes[n].alive)
            if candidates:
                sim.elect(rng.choice(candidates))
        elif op < 0.016 and not down:
            victim = rng.choice(NODES)
            before = sim.crashes
            sim.crash(victim)
            if sim.crashes > before:
                down[victim] = step + rng.randint(5, 120)
        elif op < 0.022 and not cut:  # a network partition between the leader and one follower
            victim = rng.choice([n for n in NODES if n != sim.leader])
            sim.cut(sim.leader, victim)
            cut[victim] = step + rng.randint(20, 250)
        for node_id, when in list(down.items()):
            if step >= when:
                sim.restart(node_id)
                del down[node_id]
        for node_id, when in list(cut.items()):
            if step >= when:
                sim.heal()
                del cut[node_id]
        sim.tick()
        sim.clock.advance(rng.randint(0, 12))
        sim.check(step)
    # Healing: no more faults, the crashed come back, every message arrives.
    for node_id in down:
        sim.restart(node_id)
    sim.heal()
    sim.net.drop = sim.pub.drop = 0.0
    for quiet in range(400):
        sim.tick()
        sim.clock.advance(10)
        sim.check(f"quiet {quiet}")
        lead = sim.lead
        if (lead.isr == set(NODES) and lead.high_watermark == lead.log.end_offset and not sim.waiting
                and all(n.log.end_offset == n.state.high_watermark == lead.log.end_offset
                        for n in sim.nodes.values())):
            break
    ctx = sim.ctx("end")
    lead = sim.lead
    assert lead.isr == set(NODES), (ctx, "the ISR did not recover")
    assert lead.high_watermark == lead.log.end_offset, (ctx, lead)
    assert not sim.waiting, (ctx, "acks=all requests left waiting", len(sim.waiting))
    whole = lead.log.read(0, BIG)
    for node in sim.nodes.values():
        assert node.log.read(0, BIG) == whole, (ctx, node.id, "a replica did not converge")
        assert node.state.high_watermark == lead.log.end_offset, (ctx, node.id, node.state)
    sim.check_acked(ctx)
    return sim


@pytest.mark.parametrize("seed", seeds(range(300)))
def test_partition_replication_keeps_acknowledged_records(seed):
    sim = run(seed)
    assert sim.acked, f"seed={seed}: nothing was acknowledged"


def test_the_simulation_exercises_every_fault():
    """Over a handful of seeds, every fault happened (so a green run means something)."""
    totals = {"elections": 0, "crashes": 0, "refused": 0, "acked": 0, "pub_dropped": 0, "dropped": 0, "cuts": 0,
              "shrinks": 0}
    for seed in range(10):
        sim = run(seed)
        totals["elections"] += sim.elections - 1
        totals["crashes"] += sim.crashes
        totals["refused"] += sim.refused
        totals["acked"] += len(sim.acked)
        totals["pub_dropped"] += sim.pub.dropped
        totals["dropped"] += sim.net.dropped
        totals["cuts"] += sim.cuts
        totals["shrinks"] += sim.shrinks
    assert all(v > 0 for v in totals.values()), totals
