"""A seeded simulation of a Raft quorum, with faults and invariant checks after every step.

Why: Raft's bugs live in rare interleavings (a vote forgotten by a crash, a stale leader's late
append, Figure 8).  ``RaftSim`` runs N real ``RaftNode``s on a ``FakeNetwork`` (drops, delays,
reordering; duplication added here by sending twice) and a ``ManualClock``, with partitions,
crashes that lose unsynced writes (``MemoryRaftStorage.crash``) and restarts.  Every choice comes
from the seed, so ``tools/sim.py --seed N --verbose`` replays a failure event by event.

Invariants checked after every step (``Violation`` names the seed):
- at most one leader per term;
- a committed entry never changes: every entry any node reports committed is recorded by index as
  (term, data) and must match whenever reported again; a new leader's log must hold every recorded
  committed entry it has not compacted (Leader Completeness), so none disappears;
- every state machine applies the same entries in the same order (a hash chain per index, also
  carried in snapshots).

``ManualCluster`` is the hand-driven variant for scenario tests (Figure 8): the test says which
messages are delivered.
"""

from __future__ import annotations

import random
import zlib
from typing import Callable, Iterable

import cbor2

from ..clock import ManualClock
from ..controller.raft import RaftConfig, RaftNode, RaftOutput, Role
from ..controller.raft_messages import Entry, RaftMessage
from ..controller.raft_storage import MemoryRaftStorage
from .network import FakeNetwork

__all__ = ["Violation", "StateMachine", "RaftSim", "ManualCluster"]


class Violation(AssertionError):
    """A Raft safety invariant broke; the message names the seed to replay."""


class StateMachine:
    """A toy state machine: a hash chain over applied entries, so two machines that applied the
    same entries in the same order have the same ``digest``."""

    def __init__(self) -> None:
        self.index = 0
        self.digest = 0
        self.applied = 0  # entries applied since start (snapshots not counted)

    def apply(self, entry: Entry) -> None:
        if entry.index != self.index + 1:
            raise Violation(f"state machine at {self.index} applies entry {entry.index}")
        self.index, self.digest = entry.index, zlib.crc32(entry.data, self.digest ^ entry.term)
        self.applied += 1

    def snapshot(self) -> bytes:
        return cbor2.dumps([self.index, self.digest])

    def restore(self, data: bytes) -> None:
        self.index, self.digest = cbor2.loads(data)


class _Checker:
    """The invariants, shared by ``RaftSim`` and ``ManualCluster``."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.leaders: dict[int, int] = {}              # term -> leader
        self.committed: dict[int, tuple[int, bytes]] = {}  # index -> (term, data)
        self.digests: dict[int, int] = {}              # index -> state machine digest after it

    def fail(self, what: str) -> None:
        raise Violation(f"{self.label}: {what}")

    def on_output(self, node_id: int, out: RaftOutput, sm: StateMachine) -> None:
        if out.snapshot_to_apply is not None:
            sm.restore(out.snapshot_to_apply.data)
            self._digest(node_id, sm)
        for e in out.committed:
            known = self.committed.setdefault(e.index, (e.term, e.data))
            if known != (e.term, e.data):
                self.fail(f"node {node_id} committed {e.index} as {(e.term, e.data)}, before it was {known}")
            sm.apply(e)
            self._digest(node_id, sm)

    def _digest(self, node_id: int, sm: StateMachine) -> None:
        known = self.digests.setdefault(sm.index, sm.digest)
        if known != sm.digest:
            self.fail(f"node {node_id}'s state machine differs at index {sm.index}: applied out of order")

    def check_node(self, node: RaftNode) -> None:
        if node.role is Role.LEADER:
            first = self.leaders.setdefault(node.term, node.id)
            if first != node.id:
                self.fail(f"two leaders in term {node.term}: {first} and {node.id}")
            if first == node.id and getattr(node, "_checked_term", None) != node.term:
                node._checked_term = node.term  # type: ignore[attr-defined]
                lo = node.storage.first_index()
                for index, (term, data) in self.committed.items():
                    if index >= lo and (index > node.last_index
                                        or node.storage.entries(index, index + 1)[0] != Entry(term, index, data)):
                        self.fail(f"leader {node.id} of term {node.term} lacks committed entry {index}")


class RaftSim:
    """N nodes on a fake network; drive it with ``run``/``propose`` and the fault methods."""

    def __init__(self, seed: int, n: int = 3, *, drop: float = 0.0, delay_ms: tuple[int, int] = (1, 20),
                 reorder: bool = False, duplicate: float = 0.0, step_ms: int = 10,
                 compact_every: int = 40, config: RaftConfig | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.seed = seed
        self.clock = ManualClock(0)
        self.net = FakeNetwork(seed, self.clock, drop=drop, delay_ms=delay_ms, reorder=reorder)
        self.rng = random.Random(seed * 7919 + 1)
        self.ids = list(range(1, n + 1))
        self.config = config or RaftConfig()
        self.duplicate, self.step_ms, self.compact_every = duplicate, step_ms, compact_every
        self.storages = {i: MemoryRaftStorage() for i in self.ids}
        self.nodes: dict[int, RaftNode] = {}
        self.sms: dict[int, StateMachine] = {}
        self.restarts = 0
        self.check = _Checker(f"raft sim seed {seed}")
        self._log = log
        for i in self.ids:
            self.restart(i)

    def __repr__(self) -> str:
        return f"RaftSim(seed={self.seed}, t={self.now}ms, {list(self.nodes.values())})"

    @property
    def now(self) -> int:
        return self.clock.monotonic_ms()

    def log(self, text: str) -> None:
        if self._log is not None:
            self._log(f"{self.now:>7}ms {text}")

    # ------------------------------------------------------------------ faults
    def crash(self, node_id: int) -> None:
        """Power cut: the node's unsynced writes are lost, and it stops until ``restart``."""
        if self.nodes.pop(node_id, None) is not None:
            self.storages[node_id].crash()
            self.log(f"crash {node_id}")

    def restart(self, node_id: int) -> None:
        if node_id in self.nodes:
            return
        self.restarts += 1
        rng = random.Random(self.seed * 1_000_003 + self.restarts)
        self.nodes[node_id] = RaftNode(node_id, self.ids, self.storages[node_id], self.config, rng)
        self.sms[node_id] = StateMachine()
        self.log(f"start {node_id}")

    def isolate(self, node_id: int) -> None:
        self.net.isolate(node_id, self.ids)
        self.log(f"isolate {node_id}")

    def cut(self, a: int, b: int) -> None:
        self.net.cut(a, b)
        self.log(f"cut {a}-{b}")

    def heal(self) -> None:
        for a in self.ids:
            for b in self.ids:
                self.net.heal(a, b)
        self.log("heal all")

    # ------------------------------------------------------------------ driving
    def leader(self) -> RaftNode | None:
        """The leader with the highest term among running nodes (a deposed one may not know yet)."""
        leaders = [n for n in self.nodes.values() if n.role is Role.LEADER]
        return max(leaders, key=lambda n: n.term) if leaders else None

    def propose(self, data: bytes) -> int | None:
        node = self.leader()
        if node is None:
            return None
        index, out = node.propose(data, self.now)
        self.log(f"propose {data!r} at {node.id} -> {index}")
        self._handle(node.id, out)
        return index

    def _handle(self, node_id: int, out: RaftOutput) -> None:
        node, sm = self.nodes[node_id], self.sms[node_id]
        self.check.on_output(node_id, out, sm)
        for dst, message in out.messages:
            for _ in range(2 if self.rng.random() < self.duplicate else 1):
                self.net.send(node_id, dst, message)
        if sm.index - node.storage.first_index() >= self.compact_every:
            node.compact(sm.index, sm.snapshot())
        self.check.check_node(node)

    def step(self) -> None:
        """Advance the clock one step: deliver what is due, then fire every node's timers."""
        self.clock.advance(self.step_ms)
        for env in self.net.deliver():
            node = self.nodes.get(env.dst)
            if node is None:
                continue
            self.log(f"{env.src}->{env.dst} {env.message!r:.160}")
            self._handle(env.dst, node.receive(env.src, env.message, self.now))
        for node_id in list(self.nodes):
            node = self.nodes[node_id]
            before = (node.role, node.term)
            self._handle(node_id, node.tick(self.now))
            if (node.role, node.term) != before:
                self.log(f"node {node_id}: {node!r}")

    def run(self, ms: int, propose_every_ms: int = 0, tag: str = "p") -> list[int]:
        """Run ``ms`` of simulated time, proposing an entry every ``propose_every_ms`` (0: none);
        returns the indices the leaders accepted."""
        accepted = []
        end = self.now + ms
        next_proposal = self.now
        while self.now < end:
            if propose_every_ms and self.now >= next_proposal:
                next_proposal += propose_every_ms
                index = self.propose(f"{tag}{self.now}".encode())
                if index is not None:
                    accepted.append(index)
            self.step()
        return accepted

    def applied(self) -> dict[int, int]:
        return {i: sm.index for i, sm in self.sms.items() if i in self.nodes}


class ManualCluster:
    """Nodes whose every message waits in ``outbox`` until the test delivers or drops it, and
    whose timers fire only when the test says: for replaying the paper's scenarios exactly."""

    def __init__(self, n: int, config: RaftConfig | None = None, seed: int = 0) -> None:
        self.ids = list(range(1, n + 1))
        self.config = config or RaftConfig()
        self.seed = seed
        self.now = 0
        self.storages = {i: MemoryRaftStorage() for i in self.ids}
        self.nodes: dict[int, RaftNode] = {}
        self.sms: dict[int, StateMachine] = {}
        self.outbox: list[tuple[int, int, RaftMessage]] = []
        self.check = _Checker(f"manual cluster seed {seed}")
        for i in self.ids:
            self.restart(i)

    def restart(self, node_id: int) -> None:
        self.nodes[node_id] = RaftNode(node_id, self.ids, self.storages[node_id], self.config,
                                       random.Random(self.seed * 100 + node_id))
        self.sms[node_id] = StateMachine()
        self._handle(node_id, self.nodes[node_id].tick(self.now))  # starts its election timer

    def crash(self, node_id: int) -> None:
        del self.nodes[node_id]
        self.storages[node_id].crash()
        self.outbox = [m for m in self.outbox if node_id not in (m[0], m[1])]

    def _handle(self, node_id: int, out: RaftOutput) -> None:
        self.check.on_output(node_id, out, self.sms[node_id])
        self.outbox.extend((node_id, dst, m) for dst, m in out.messages if dst in self.nodes)
        self.check.check_node(self.nodes[node_id])

    def elapse(self, ms: int) -> None:
        """Let time pass without firing any timer (leases expire)."""
        self.now += ms

    def timeout(self, node_id: int) -> None:
        """Fire ``node_id``'s election timer now (others' timers do not fire)."""
        self.now += self.config.election_timeout_max_ms
        self._handle(node_id, self.nodes[node_id].tick(self.now))

    def heartbeat(self, node_id: int) -> None:
        self.now += self.config.heartbeat_ms
        self._handle(node_id, self.nodes[node_id].tick(self.now))

    def propose(self, node_id: int, data: bytes) -> int | None:
        index, out = self.nodes[node_id].propose(data, self.now)
        self._handle(node_id, out)
        return index

    def deliver(self, among: Iterable[int], only: tuple[type, ...] = (object,), rounds: int = 100) -> None:
        """Deliver messages between the nodes in ``among`` (of the types in ``only``), and what
        they answer, until none is left; other messages keep waiting (``drop`` loses them)."""
        group = set(among)
        for _ in range(rounds):
            todo = [x for x in self.outbox if x[0] in group and x[1] in group and isinstance(x[2], only)]
            if not todo:
                return
            self.outbox = [x for x in self.outbox if x not in todo]
            for src, dst, message in todo:
                self._handle(dst, self.nodes[dst].receive(src, message, self.now))
        raise AssertionError("messages never stopped")

    def deliver_one(self, src: int, dst: int) -> RaftMessage:
        """Deliver only the oldest waiting message from ``src`` to ``dst``; what it answers waits."""
        for k, (s, d, message) in enumerate(self.outbox):
            if (s, d) == (src, dst):
                del self.outbox[k]
                self._handle(dst, self.nodes[dst].receive(src, message, self.now))
                return message
        raise AssertionError(f"no message waits from {src} to {dst}")

    def drop(self) -> None:
        """Lose every waiting message."""
        self.outbox.clear()

    def log_terms(self, node_id: int) -> list[int]:
        s = self.storages[node_id]
        return [e.term for e in s.entries(s.first_index(), s.last_index() + 1)]


def run_chaos(seed: int, *, phases: int = 6, log: Callable[[str], None] | None = None) -> RaftSim:
    """One seeded run: a random cluster and network, ``phases`` random faults with proposals
    flowing throughout, then everything healed and restarted.  Raises ``Violation`` on a broken
    invariant, and also when the healed cluster makes no progress: it must commit
    ``PROGRESS_ENTRIES`` new proposals on every node within ``PROGRESS_DEADLINE_MS``."""
    pick = random.Random(seed)
    sim = RaftSim(seed, n=pick.choice([3, 3, 5]), drop=pick.choice([0.0, 0.02, 0.1]),
                  delay_ms=(1, pick.choice([5, 30, 150])), reorder=pick.random() < 0.5,
                  duplicate=pick.choice([0.0, 0.05]), log=log)
    sim.run(3000, propose_every_ms=100)
    for _ in range(phases):
        fault = pick.choice(["isolate", "cut", "crash", "crash_mid", "restart", "heal", "none"])
        leader = sim.leader()
        # Half the time the fault hits the leader: that is where elections race (Figure 8).
        victim = leader.id if leader is not None and pick.random() < 0.5 else pick.choice(sim.ids)
        if fault == "isolate":
            sim.isolate(victim)
        elif fault == "cut":
            sim.cut(victim, pick.choice([i for i in sim.ids if i != victim]))
        elif fault == "crash":
            sim.crash(victim)
        elif fault == "crash_mid" and victim in sim.nodes:
            # Power lost while the node handles a proposal: nothing it wrote reaches the disk.
            sim.storages[victim].lose_next_sync = True
            sim.nodes[victim].propose(b"lost", sim.now)
            sim.crash(victim)
        elif fault == "restart":
            for i in sim.ids:
                sim.restart(i)
        elif fault == "heal":
            sim.heal()
        sim.run(pick.randrange(300, 3000), propose_every_ms=pick.choice([20, 100, 300]))
    sim.heal()
    for i in sim.ids:
        sim.restart(i)
    sim.log("healed: progress check")
    deadline, proposed = sim.now + PROGRESS_DEADLINE_MS, 0
    while sim.now < deadline:
        final = [i for i, (_, data) in sim.check.committed.items() if data.startswith(b"final")]
        if len(final) >= PROGRESS_ENTRIES:
            if min(sim.applied().values()) >= max(sim.check.committed):
                if any(data == b"lost" for _, data in sim.check.committed.values()):
                    raise Violation(f"raft sim seed {seed}: an entry never synced nor sent was committed")
                return sim
        elif sim.propose(f"final{proposed}".encode()) is not None:
            proposed += 1
        sim.run(50)
    raise Violation(f"raft sim seed {seed}: no progress after healing: {sim!r}")


PROGRESS_ENTRIES = 10        # proposals that must commit on every node once the cluster is healed
PROGRESS_DEADLINE_MS = 20_000  # simulated time allowed for that (elections take up to a few seconds)
