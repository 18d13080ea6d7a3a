"""The cluster foundations back to back: three replicas, each a ``MemoryLog`` and a
``PartitionState``, fetching over a seeded ``FakeNetwork`` on a ``ManualClock``, with leader
changes (clean elections from the ISR) while some appends are not yet replicated.

Not the broker's replication (that shell does not exist yet): a compact stand-in for it, so the
pieces are shown to fit.  Followers fetch with their latest epoch; a leader whose epoch table
says they diverged answers with where the epoch ends (``end_offset_for_epoch``) and the follower
truncates there (KIP-101/320).  Invariant, checked at every step and printed with the seed:
nothing below a leader's high watermark is ever lost or changed, on any replica, and at the end
every replica holds the leader's log up to the high watermark byte for byte.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from fabric.clock import ManualClock
from fabric.log import LogConfig
from fabric.log.memory import MemoryLog
from fabric.records.batch import encode_batch, iter_headers
from fabric.replication import PartitionState, Role
from fabric.testing.network import FakeNetwork
from fabric.testing.seeds import seeds

pytestmark = pytest.mark.sim

NODES = (1, 2, 3)
LAG_MS = 300
FETCH_EVERY_MS = 20


@dataclass(frozen=True)
class Fetch:
    epoch: int  # the leader epoch the follower believes in
    offset: int
    last_epoch: int  # the epoch of the follower's newest batch (-1: empty log)


@dataclass(frozen=True)
class Data:
    epoch: int
    offset: int
    batches: bytes
    high_watermark: int


@dataclass(frozen=True)
class Diverged:
    epoch: int
    end_epoch: int
    end_offset: int


class Replica:
    def __init__(self, node: int) -> None:
        self.node = node
        self.log = MemoryLog(LogConfig(), 0, f"replica{node}")
        self.state = PartitionState(node)
        self.fetching = False

    def last_epoch(self) -> int:
        entries = self.log.leader_epochs()
        return entries[-1].epoch if entries else -1

    def handle(self, net: FakeNetwork, src: int, msg, now: int) -> None:
        s = self.state
        if isinstance(msg, Fetch):
            if s.role is not Role.LEADER or msg.epoch != s.leader_epoch:
                return  # fenced: a stale follower learns the new epoch from the controller
            end_epoch, end_offset = self.log.end_offset_for_epoch(msg.last_epoch)
            if msg.last_epoch >= 0 and (end_epoch != msg.last_epoch or end_offset < msg.offset):
                net.send(self.node, src, Diverged(s.leader_epoch, end_epoch, end_offset))
                return
            hw = s.update_follower(src, msg.offset, now)
            net.send(self.node, src, Data(s.leader_epoch, msg.offset, self.log.read(msg.offset, 2000), hw))
        elif isinstance(msg, (Data, Diverged)):
            self.fetching = False
            if s.role is not Role.FOLLOWER or msg.epoch != s.leader_epoch or src != s.leader:
                return
            if isinstance(msg, Diverged):  # cut the log where it stops agreeing with the leader's
                mine = self.log.end_offset_for_epoch(msg.end_epoch)[1] if msg.end_epoch >= 0 else 0
                self.log.truncate_to(min(msg.end_offset, mine) if mine >= 0 else msg.end_offset)
                s.follower_fetched(self.log.end_offset, s.high_watermark)
            elif msg.offset == self.log.end_offset:  # (a reply to an older fetch is dropped)
                for pos, h in iter_headers(msg.batches):
                    self.log.append_replicated(bytearray(msg.batches[pos:pos + h.size]), now)
                s.follower_fetched(self.log.end_offset, msg.high_watermark)

    def maybe_fetch(self, net: FakeNetwork) -> None:
        s = self.state
        if s.role is Role.FOLLOWER and not self.fetching:
            self.fetching = net.send(self.node, s.leader, Fetch(s.leader_epoch, self.log.end_offset, self.last_epoch()))


def committed_prefix(replica: Replica, hw: int) -> bytes:
    return replica.log.read(0, 1 << 30, upto_offset=hw) if hw > 0 else b""


def elect(replicas: dict[int, Replica], new_leader: int, epoch: int, isr: set[int], now: int) -> None:
    """The controller's decision, applied at once to every replica (Kafka: LeaderAndIsr)."""
    for r in replicas.values():
        r.fetching = False
        if r.node == new_leader:
            r.log.assign_epoch(epoch, r.log.end_offset)
            r.state.become_leader(epoch, NODES, isr, r.log.end_offset, now)
        else:
            r.state.become_follower(epoch, new_leader, NODES, r.log.end_offset)


@pytest.mark.parametrize("seed", seeds(range(6)))
def test_committed_records_survive_leader_changes(seed):
    rng = random.Random(seed)
    clock = ManualClock(0)
    net = FakeNetwork(seed, clock, drop=0.05, delay_ms=(1, 15), reorder=False)
    replicas = {n: Replica(n) for n in NODES}
    epoch, leader = 1, 1
    elect(replicas, leader, epoch, set(NODES), 0)
    committed = b""  # the longest committed prefix seen, as bytes of the leader's log
    elections = 0
    for step in range(1500):
        ctx = f"seed={seed} step={step} {net}"
        now = clock.monotonic_ms()
        lead = replicas[leader]
        op = rng.random()
        if op < 0.25:
            n = rng.randint(1, 4)
            data = bytearray(encode_batch([now] * n, [None] * n, [b"s%d-%d" % (step, i) for i in range(n)]))
            lead.log.append(data, now, leader_epoch=epoch)
            lead.state.leader_appended(lead.log.end_offset)
        elif op < 0.27 and step > 100:
            candidates = sorted(lead.state.isr - {leader})
            if candidates:
                isr = set(lead.state.isr)  # (the controller's view, kept in sync in this stand-in)
                leader, epoch = rng.choice(candidates), epoch + 1
                elect(replicas, leader, epoch, isr, now)
                elections += 1
        for r in replicas.values():
            r.maybe_fetch(net)
        for envelope in net.deliver():
            replicas[envelope.dst].handle(net, envelope.src, envelope.message, clock.monotonic_ms())
        replicas[leader].state.maybe_shrink_isr(clock.monotonic_ms(), LAG_MS)
        if step % 50 == 0:  # a fetch lost on the wire is retried
            for r in replicas.values():
                r.fetching = False
        clock.advance(rng.randint(0, FETCH_EVERY_MS))
        lead = replicas[leader]
        assert lead.log.read(0, 1 << 30).startswith(committed), (ctx, "committed records changed or were lost")
        prefix = committed_prefix(lead, lead.state.high_watermark)
        assert committed.startswith(prefix) or prefix.startswith(committed), ctx
        committed = max(committed, prefix, key=len)
        for r in replicas.values():
            assert r.state.high_watermark <= r.log.end_offset, ctx
            mine = committed_prefix(r, min(r.state.high_watermark, r.log.end_offset))
            assert committed.startswith(mine), (ctx, r.node, "a replica's committed records differ")
    # Quiet period: no appends, every fetch delivered; all replicas converge on the leader's log.
    for _ in range(200):
        for r in replicas.values():
            r.fetching = False
            r.maybe_fetch(net)
        net.run(lambda e: replicas[e.dst].handle(net, e.src, e.message, clock.monotonic_ms()))
        clock.advance(FETCH_EVERY_MS)
    lead = replicas[leader]
    end = lead.log.end_offset
    assert lead.state.high_watermark == end and lead.state.isr == set(NODES), (seed, lead.state)
    for r in replicas.values():
        assert r.log.read(0, 1 << 30) == lead.log.read(0, 1 << 30), (seed, r.node)
    assert len(committed) > 0 and elections > 0, (seed, elections)
