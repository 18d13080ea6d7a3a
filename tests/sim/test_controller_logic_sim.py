"""ControllerLogic under random churn: brokers register, heartbeat, crash (some by power loss:
an unclean restart, rule 7), restart and shut down; topics are created; leaders shrink and grow
ISRs; the controller ticks and fails over.  Records commit in order, some after a delay; a
controller failover either commits or loses the uncommitted suffix (as Raft may) before the next
controller decides.

Invariants, checked after every step on the committed state (the seed is in every message):
leader in ISR, ISR a subset of the replicas, empty only while offline; a leader is never fenced;
the leader epoch never goes back and strictly increases whenever the leader changes; the snapshot
round-trips; a second state fed the same records as bytes has identical snapshot bytes.  At the
end, with every broker back, every partition is led again, but those whose every in-sync replica
restarted uncleanly (empty ISR): they stay offline unless their topic allows unclean elections.
"""

from __future__ import annotations

import random

import pytest

from fabric.controller.logic import ControllerLogic, LogicConfig
from fabric.controller.metadata import MetadataState, decode_record, encode_record
from fabric.testing.seeds import seeds

pytestmark = pytest.mark.sim

STEPS = 400
CONFIG = LogicConfig()


class World:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.state = MetadataState()
        self.mirror = MetadataState()
        self.logic = ControllerLogic(self.state, CONFIG, new_topic_id=lambda: f"{self.rng.getrandbits(64):016x}")
        self.now = 0
        self.brokers = list(range(1, self.rng.randint(3, 5) + 1))
        self.alive = {b: False for b in self.brokers}
        self.incarnation = {b: 0 for b in self.brokers}
        self.power = random.Random(seed * 31 + 7)  # (its own draws: the other choices replay as before)
        self.unclean = {b: False for b in self.brokers}  # its last crash was a power loss
        self.intact: dict[int, int | None] = {b: None for b in self.brokers}  # what it registers as intact_since
        self.uncommitted: list[dict] = []
        self.epochs: dict[tuple[str, int], tuple[int, int]] = {}  # -> (leader, leader_epoch)
        self.topics = 0
        self.trace: list[str] = []

    # ------------------------------------------------------------------ plumbing
    def do(self, decision) -> tuple[str | None, dict]:
        records, error, reply = decision
        self.uncommitted.extend(records)
        if self.rng.random() < 0.6:
            self.commit(len(self.uncommitted))
        return error, reply

    def commit(self, n: int) -> None:
        for record in self.uncommitted[:n]:
            index = self.state.offset + 1
            for s, r in ((self.state, record), (self.mirror, decode_record(encode_record(record)))):
                try:
                    s.apply(r, index)
                except ValueError as exc:
                    self.trace.append(f"refused at {index}: {exc}")
        del self.uncommitted[:n]

    def fail(self, what: str) -> None:
        pytest.fail(f"seed {self.seed}, t={self.now}: {what}\n  last steps: {self.trace[-12:]}")

    # ------------------------------------------------------------------ actions
    def register(self, b: int) -> None:
        if not self.alive[b]:  # a new process: its logs intact unless the machine lost power (restart.py)
            self.alive[b] = True
            self.intact[b] = None if self.unclean[b] or not self.incarnation[b] else self.incarnation[b]
            self.incarnation[b] += 1
        error, _ = self.do(self.logic.register(broker_id=b, incarnation=self.incarnation[b], host="127.0.0.1",
                                               port=9000 + b, pub_port=9100 + b, rack=f"r{b % 2}",
                                               now_ms=self.now, intact_since=self.intact[b]))
        if error is not None:
            self.fail(f"register {b} answered {error}")
        if self.intact[b] is None:  # (what the link does: the process vouches for its own writes)
            self.intact[b] = self.incarnation[b]

    def heartbeat(self, b: int, shutdown: bool = False) -> None:
        lag = self.rng.choice([0, 0, 0, 3])
        error, reply = self.do(self.logic.heartbeat(broker_id=b, incarnation=self.incarnation[b],
                                                    metadata_offset=max(0, self.state.offset - lag),
                                                    wants_shutdown=shutdown, now_ms=self.now))
        if error in ("STALE_BROKER_EPOCH", "UNKNOWN_BROKER"):
            self.incarnation[b] += 1  # what the broker's link does
            self.register(b)
        elif error is not None:
            self.fail(f"heartbeat {b} answered {error}")
        elif shutdown and reply["shutdown_ready"]:
            self.alive[b] = self.unclean[b] = False

    def alter(self) -> None:
        parts = [(t, p) for t in self.state.topics.values() for p in range(len(t.partitions))]
        if not parts:
            return
        t, p = self.rng.choice(parts)
        part = t.partitions[p]
        if part.leader == -1 or not self.alive[part.leader]:
            return
        others = [r for r in part.replicas if r != part.leader]
        isr = [part.leader] + self.rng.sample(others, self.rng.randint(0, len(others)))
        error, reply = self.do(self.logic.alter_partition(
            broker_id=part.leader, topic_id=t.topic_id, partition=p, leader_epoch=part.leader_epoch,
            partition_epoch=part.partition_epoch, isr=isr, now_ms=self.now))
        if error not in (None, "FENCED_LEADER_EPOCH", "INVALID_UPDATE_VERSION"):
            self.fail(f"alter_partition answered {error}")

    def step(self) -> None:
        rng, live = self.rng, [b for b in self.brokers if self.alive[b]]
        roll = rng.random()
        if roll < 0.30:
            self.now += rng.choice([10, 100, 250, 600, CONFIG.session_timeout_ms])
            for b in live:
                if rng.random() < 0.9:
                    self.heartbeat(b)
            self.trace.append(f"t+ heartbeats {live}")
            self.do(self.logic.tick(self.now))
        elif roll < 0.40:
            dead = [b for b in self.brokers if not self.alive[b]]
            b = rng.choice(dead or self.brokers)
            self.trace.append(f"register {b}")
            self.register(b)
        elif roll < 0.48 and live:
            b = rng.choice(live)
            self.alive[b] = False
            self.unclean[b] = self.power.random() < 0.3
            self.trace.append(f"{'power loss' if self.unclean[b] else 'crash'} {b}")
        elif roll < 0.52 and live:
            b = rng.choice(live)
            self.trace.append(f"shutdown {b}")
            self.heartbeat(b, shutdown=True)
        elif roll < 0.60 and self.topics < 8:
            self.topics += 1
            configs = {"unclean_leader_election": True} if rng.random() < 0.2 else {}
            self.trace.append(f"create t{self.topics}")
            self.do(self.logic.create_topic(name=f"t{self.topics}", partitions=rng.randint(1, 4),
                                            replication_factor=rng.randint(1, 3), configs=configs,
                                            now_ms=self.now))
        elif roll < 0.80:
            self.trace.append("alter")
            self.alter()
        elif roll < 0.83:
            keep = len(self.uncommitted) if rng.random() < 0.5 else rng.randint(0, len(self.uncommitted))
            self.trace.append(f"failover (commits {keep} of {len(self.uncommitted)})")
            self.commit(keep)
            self.uncommitted.clear()
            self.logic.on_became_leader(self.now)
        else:
            self.commit(rng.randint(0, len(self.uncommitted)))

    # ------------------------------------------------------------------ invariants
    def check(self) -> None:
        s = self.state
        for t in s.topics.values():
            for p, part in enumerate(t.partitions):
                where = f"{t.name}-{p} {part}"
                if (not part.isr and part.leader != -1) or not set(part.isr) <= set(part.replicas):
                    self.fail(f"{where}: ISR empty while led, or not within the replicas")
                if part.leader != -1:
                    if part.leader not in part.isr:
                        self.fail(f"{where}: leader outside the ISR")
                    if s.brokers[part.leader].fenced:
                        self.fail(f"{where}: the leader is fenced")
                key = (t.topic_id, p)
                before = self.epochs.get(key)
                if before is not None:
                    if part.leader_epoch < before[1] or (part.leader != before[0] and part.leader_epoch <= before[1]):
                        self.fail(f"{where}: leader {before[0]}@{before[1]} -> {part.leader}@{part.leader_epoch}")
                self.epochs[key] = (part.leader, part.leader_epoch)
        snap = s.to_snapshot()
        if MetadataState.from_snapshot(snap).to_snapshot() != snap:
            self.fail("the snapshot does not round-trip")
        if self.mirror.to_snapshot() != snap:
            self.fail("a second state fed the same records differs")


def lost(topic, part) -> bool:
    """Every in-sync replica restarted uncleanly: nothing may lead it (rule 7) but by an unclean
    election."""
    return not part.isr and topic.configs.get("unclean_leader_election") is not True


@pytest.mark.parametrize("seed", seeds(range(40)))
def test_controller_logic_keeps_its_invariants(seed):
    w = World(seed)
    for b in w.brokers:
        w.register(b)
    w.commit(len(w.uncommitted))
    for _ in range(STEPS):
        w.step()
        w.check()
    # heal: everyone back and heartbeating, everything committed; every partition is led again
    w.commit(len(w.uncommitted))
    for b in w.brokers:
        if not w.alive[b]:
            w.register(b)
    for _ in range(3):
        w.now += CONFIG.heartbeat_ms
        for b in w.brokers:
            w.heartbeat(b)
        w.do(w.logic.tick(w.now))
        w.commit(len(w.uncommitted))
        w.check()
    offline = [(t.name, p) for t in w.state.topics.values() for p, part in enumerate(t.partitions)
               if part.leader == -1 and not lost(t, part)]
    if offline:
        w.fail(f"still offline with every broker back: {offline}")
    if any(b.fenced for b in w.state.brokers.values()):
        w.fail(f"still fenced with every broker back: {[b.id for b in w.state.brokers.values() if b.fenced]}")
