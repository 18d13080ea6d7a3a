"""A seeded simulation of a whole 3-node Fabric cluster: the real Raft, metadata and
partition-replication state machines together, on a fake network and a manual clock.

Why: each layer has its own simulation (``raft_sim.py``; the controller logic and partition
replication in ``tests/sim``), but the failures that lose data live where they meet: a leader
elected by the controller while its broker has not heard, a fenced broker whose lease has not run
out, an ISR change that commits after the leader moved on, a restart that loses an unflushed tail
while the metadata still counts the replica in sync.  Here three combined-mode processes
(``cluster_sim_node.SimNode``: a controller voter and a broker each, made of the product's
sans-I/O classes) register, heartbeat, elect partition leaders, replicate a topic of two
partitions (RF 3, ``min_insync_replicas`` 2) and answer a producer's ``acks=all`` batches.

Faults, every choice from ``random.Random(seed)``: drops and delays on every channel, reordering
and duplication of Raft messages and of pushes (PUB/SUB), network partitions (one node isolated,
or one link cut), pauses (SIGSTOP: no timers, messages wait; then SIGCONT), process kills
(unsynced Raft writes lost; a partition log keeps what was written, as a killed process's page
cache does), quick restarts, power losses (every unflushed partition-log
byte lost too, and the machine reboots: a new boot id, so the restarted broker registers without
``intact_since``, ``fabric/broker/restart.py``) and restarts.  A power loss strikes only a fully replicated cluster (every node up,
every ISR complete), as acknowledged-but-unflushed data would otherwise be lost by design with
two losses in a row (replication, not fsync, is what ``acks=all`` promises: Kafka's trade-off).

After every step ``ClusterChecker`` (``cluster_sim_check.py``) checks the invariants; once the
faults stop and everything heals, the cluster must converge (liveness): one controller, every
broker registered and unfenced, every partition led with the full ISR, every replica's log equal
to the leader's up to the high watermark at its end, and new ``acks=all`` batches acknowledged.
``tools/sim.py --model cluster --seed N --verbose`` replays a run event by event.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from ..clock import ManualClock
from ..controller.raft import Role
from ..broker.restart import LastStart, intact_since
from ..controller.raft_storage import MemoryRaftStorage
from ..records.batch import encode_batch
from ..replication.config import ReplicationConfig
from ..replication.messages import Push
from .cluster_sim_check import ClusterChecker, ClusterViolation
from .cluster_sim_node import Disk, SimConfig, SimNode
from .network import FakeNetwork

__all__ = ["ClusterSim", "ClusterViolation", "run_cluster_chaos", "TOPIC", "PARTITIONS"]

TOPIC = "events"
PARTITIONS = 2
CHANNELS = ("raft", "link", "repl", "pub", "client")
CLIENT = "client"


class ClusterSim:
    def __init__(self, seed: int, *, drop: float = 0.0, delay_ms: tuple[int, int] = (1, 20), reorder: bool = False,
                 duplicate: float = 0.0, pub_drop: float = 0.1, step_ms: int = 10, config: SimConfig | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed * 7_919 + 3)
        self.clock = ManualClock(0)
        self.ids = [1, 2, 3]
        self.config = config or SimConfig()
        self.step_ms, self.duplicate = step_ms, duplicate
        self.nets = {c: FakeNetwork(seed * 31 + i, self.clock, drop=drop if c != "pub" else max(drop, pub_drop),
                                    delay_ms=delay_ms, reorder=reorder and c in ("raft", "pub"))
                     for i, c in enumerate(CHANNELS)}
        self.storages = {i: MemoryRaftStorage() for i in self.ids}
        self.disks: dict[int, Disk] = {i: {} for i in self.ids}
        self.incarnation = {i: 1 for i in self.ids}
        self.boots = {i: 1 for i in self.ids}  # each machine's boot: a power loss reboots it
        self.last_start: dict[int, LastStart] = {}  # ``meta/last-start`` (restart.py), durable
        self.nodes: dict[int, SimNode] = {}
        self.check = ClusterChecker(f"cluster sim seed {seed}")
        self._log = log
        self._cid = 0
        self._roles: dict[int, Any] = {}
        self.paused: dict[int, list[tuple[str, Any, Any, Any]]] = {}  # SIGSTOPped node -> what waits for it
        self.produced: dict[int, tuple[tuple[str, int], bytearray]] = {}  # cid -> what it sent
        self.stats = {"acked": 0, "refused": 0, "kills": 0, "power_losses": 0, "partitions": 0, "timeouts": 0,
                      "pauses": 0, "bounces": 0}
        for i in self.ids:
            self.start(i)

    def __repr__(self) -> str:
        return f"ClusterSim(seed={self.seed}, t={self.now}ms, nodes={sorted(self.nodes)}, {self.stats})"

    @property
    def now(self) -> int:
        return self.clock.monotonic_ms()

    def log(self, text: str) -> None:
        if self._log is not None:
            self._log(f"{self.now:>7}ms {text}")

    # ------------------------------------------------------------------ processes
    def start(self, node_id: int) -> None:
        if node_id in self.nodes:
            return
        incarnation, boot = self.incarnation[node_id], f"boot-{self.boots[node_id]}"
        intact = intact_since(None, self.last_start.get(node_id), boot)  # (no clean shutdown here)
        self.last_start[node_id] = (incarnation, boot, incarnation if intact is None else intact)
        self.nodes[node_id] = SimNode(node_id, self.ids, self.storages[node_id], self.disks[node_id],
                                      incarnation, self.now, self.config,
                                      random.Random(self.rng.getrandbits(64)), intact_since=intact)
        self.log(f"start {node_id} (incarnation {incarnation}, writes intact since {intact})")

    def crash(self, node_id: int, power: bool = False) -> None:
        """Kill ``node_id``'s process (``power``: the machine loses power, unflushed log bytes too)."""
        if self.nodes.pop(node_id, None) is None:
            return
        self.paused.pop(node_id, None)
        self.storages[node_id].crash()
        disk = self.disks[node_id]
        for key, plog in disk.items():
            if not power:
                plog.flush(self.now)  # (a killed process's writes are in the page cache)
            disk[key] = plog.crashed()
        self.incarnation[node_id] += 1  # (``meta/incarnation`` is written durably)
        if power:
            self.boots[node_id] += 1
        self.stats["power_losses" if power else "kills"] += 1
        self.log(f"{'power loss' if power else 'kill'} {node_id}")
        for other in self.nodes.values():  # the kernel resets the dead process's connections
            if not self.cut_between(node_id, other.id):
                other.peer_died(node_id, self.now)
                self._route(other)

    def pause(self, node_id: int) -> None:
        """SIGSTOP: the process neither runs its timers nor reads its sockets (what others send
        waits in its buffers); its connections stay open, so nobody is told."""
        if node_id in self.nodes and node_id not in self.paused:
            self.paused[node_id] = []
            self.stats["pauses"] += 1
            self.log(f"pause {node_id}")

    def resume(self, node_id: int) -> None:
        """SIGCONT: the process runs again and reads everything that waited, in order."""
        backlog = self.paused.pop(node_id, None)
        if backlog is None:
            return
        self.log(f"resume {node_id} ({len(backlog)} messages waited)")
        for channel, src, dst, envelope in backlog:
            self._deliver(channel, src, dst, envelope)

    def fully_replicated(self) -> bool:
        """Every node up, reachable and running, and in the ISR of every partition by the newest
        committed metadata."""
        if len(self.nodes) != len(self.ids) or self.paused or any(net._cut for net in self.nets.values()):
            return False
        state = max((n.service.state for n in self.nodes.values()), key=lambda s: s.offset)
        topic = state.topics.get(TOPIC)
        return topic is not None and all(sorted(p.isr) == self.ids and p.leader != -1 for p in topic.partitions)

    def cut_between(self, a: int, b: int) -> bool:
        return frozenset((a, b)) in self.nets["raft"]._cut

    def isolate(self, node_id: int) -> None:
        for c in CHANNELS:
            self.nets[c].isolate(node_id, self.ids)
        self.stats["partitions"] += 1
        self.log(f"isolate {node_id}")

    def cut(self, a: int, b: int) -> None:
        for c in CHANNELS:
            self.nets[c].cut(a, b)
        self.stats["partitions"] += 1
        self.log(f"cut {a}-{b}")

    def heal(self) -> None:
        for c in CHANNELS:
            for a in self.ids:
                for b in self.ids:
                    self.nets[c].heal(a, b)
        self.log("heal")

    # ------------------------------------------------------------------ traffic
    def _send(self, channel: str, src: Any, dst: Any, message: Any) -> None:
        copies = 2 if channel in ("raft", "pub") and self.rng.random() < self.duplicate else 1
        envelope = (self.incarnation.get(src, 0), self.incarnation.get(dst, 0), message)
        for _ in range(copies):
            self.nets[channel].send(src, dst, envelope)

    def _route(self, node: SimNode) -> None:
        out, node.outbox = node.outbox, []
        for channel, dst, message in out:
            if channel == "pub":
                for other in self.ids:
                    if other != node.id:
                        self._send(channel, node.id, other, message)
            else:
                self._send(channel, node.id, dst, message)

    def _deliver(self, channel: str, src: Any, dst: Any, envelope: tuple[int, int, Any]) -> None:
        src_inc, dst_inc, message = envelope
        if src in self.nodes and self.incarnation[src] != src_inc or src in self.ids and src not in self.nodes:
            return  # (the sender died: its connections went with it)
        if dst == CLIENT:
            self._on_reply(message)
            return
        if dst in self.paused:
            self.paused[dst].append((channel, src, dst, envelope))  # (held in its socket buffers)
            return
        node = self.nodes.get(dst)
        if node is None or self.incarnation[dst] != dst_inc:
            return
        now = self.now
        if channel == "raft":
            node.on_raft(src, message, now)
        elif channel == "link":
            kind, header = message
            if kind == "request":
                node.on_request(src, header, now)
            else:
                node.on_reply(header, now)
        elif channel == "repl":
            node.on_replica(src, message, now)
        elif channel == "pub":
            assert isinstance(message, Push)
            node.on_push(message, now)
        elif channel == "client":
            cid, key, batch = message
            node.produce(CLIENT, cid, key[0], key[1], batch, now)
        self._route(node)

    # ------------------------------------------------------------------ the producer
    def produce(self, p: int | None = None) -> None:
        """Send one ``acks=all`` batch to the broker the producer believes leads the partition
        (from a random live broker's metadata; a random broker when that names none)."""
        p = self.rng.randrange(PARTITIONS) if p is None else p
        key = (TOPIC, p)
        if not self.nodes:
            return
        view = self.nodes[self.rng.choice(sorted(self.nodes))].leadership.image
        topic = view.topics.get(TOPIC)
        leader = topic.partitions[p].leader if topic is not None else -1
        if leader not in self.ids:
            leader = self.rng.choice(self.ids)
        self._cid += 1
        n = self.rng.randint(1, 3)
        batch = bytearray(encode_batch([self.now] * n, [None] * n, [b"%d-%d" % (self._cid, i) for i in range(n)]))
        self.produced[self._cid] = (key, batch)
        self._send("client", CLIENT, leader, (self._cid, key, batch))

    def _on_reply(self, header: dict[str, Any]) -> None:
        key, batch = self.produced.pop(header["cid"])
        row = header["results"][0]
        if row.get("error"):
            name = row["error"]["name"]
            self.stats["timeouts" if name == "REQUEST_TIMED_OUT" else "refused"] += 1
            return
        self.stats["acked"] += 1
        self.log(f"acked {key} at {row['base_offset']}")
        self.check.ack(key, row["base_offset"], bytes(batch), self.nodes.values())

    # ------------------------------------------------------------------ driving
    def step(self) -> None:
        """Advance the clock one step: deliver what is due, fire every process's timers, check."""
        self.clock.advance(self.step_ms)
        for channel, net in self.nets.items():
            for env in net.deliver():
                self._deliver(channel, env.src, env.dst, env.message)
        for node in list(self.nodes.values()):
            if node.id in self.paused:
                continue
            before = (node.raft.role, node.raft.term)
            node.tick(self.now)
            self._route(node)
            if (node.raft.role, node.raft.term) != before:
                self.log(f"node {node.id}: raft {node.raft.role.value} term {node.raft.term}")
            self._producer_ids(node)
        self.verify()

    def _producer_ids(self, node: SimNode) -> None:
        """Each running broker hands out a producer id every step (an ``init_producer_id``), and
        every block it received is checked against all the others (rule 8)."""
        states = [n.service.state for n in self.nodes.values()] + [n.link.state for n in self.nodes.values()]
        while node.pid_granted:
            start, size = node.pid_granted.pop(0)
            self.log(f"broker {node.id}: producer ids {start}-{start + size - 1}")
            self.check.pid_block(node.id, start, size, states)
        pid = node.pid_blocks.take()
        if pid is not None:
            self.check.producer_id(node.id, pid)

    def verify(self) -> None:
        self.check.t = self.now
        if self._log is not None:
            for node in self.nodes.values():
                roles = {k: f"L{r.leader_epoch}" for k, r in node.replicas.leaders.items() if not r.closed}
                roles.update({k: f"F{r.leader_epoch}" for k, r in node.replicas.followers.items()})
                view = (sorted(roles.items()), node.link.lease_valid(self.now))
                if self._roles.get(node.id) != view:
                    self._roles[node.id] = view
                    self.log(f"broker {node.id}: {' '.join(f'{k[1]}:{v}' for k, v in view[0])} lease={view[1]}")
        for node in self.nodes.values():
            self.check.check_raft(node)
            self.check.check_state(f"controller {node.id}", node.service.state)
            self.check.check_state(f"broker {node.id}", node.link.state)
        for p in range(PARTITIONS):
            key = (TOPIC, p)
            self.check.check_partition(key, self.nodes.values())
            for node in self.nodes.values():
                if node.id not in self.paused:
                    self.check.consumer_fetch(key, node)

    def run(self, ms: int, produce_every_ms: int = 0) -> None:
        end = self.now + ms
        next_produce = self.now
        while self.now < end:
            if produce_every_ms and self.now >= next_produce:
                next_produce += produce_every_ms
                self.produce()
            self.step()

    def create_topic(self) -> None:
        """Ask a broker to forward ``create_topic`` until the metadata has the topic."""
        for _ in range(200):
            if any(TOPIC in n.link.state.topics for n in self.nodes.values()):
                return
            node = self.nodes[self.rng.choice(sorted(self.nodes))]
            node.forward({"op": "create_topic", "name": TOPIC, "partitions": PARTITIONS, "replication_factor": 3,
                          "configs": {"min_insync_replicas": 2}}, self.now)
            self._route(node)
            self.run(300)
        raise ClusterViolation(f"cluster sim seed {self.seed}: the topic was never created: {self!r}")

    def converged(self) -> str | None:
        """None when the healed cluster is whole again, else what is still missing."""
        leaders = [n for n in self.nodes.values() if n.raft.role is Role.LEADER]
        if len(self.nodes) != 3 or len(leaders) != 1:
            return f"controller leaders {[n.id for n in leaders]}"
        for n in self.nodes.values():
            if not n.link.lease_valid(self.now):
                return f"broker {n.id} has no valid lease"
            if not n.pid_blocks.available:
                return f"broker {n.id} holds no producer id"
        if not self.fully_replicated():
            return "the ISRs are not full"
        for p in range(PARTITIONS):
            key = (TOPIC, p)
            lead = [n.replicas.leaders[key] for n in self.nodes.values() if key in n.replicas.leaders]
            if len(lead) != 1 or lead[0].high_watermark != lead[0].log.end_offset or lead[0].waiting:
                return f"{key}: leaders {lead}"
            whole = lead[0].log.read(0, 1 << 40) if lead[0].log.end_offset else b""
            for n in self.nodes.values():
                f = n.replicas.followers.get(key)
                if f is None:
                    continue
                mine = f.log.read(0, 1 << 40) if f.log.end_offset else b""
                if mine != whole or f.high_watermark != f.log.end_offset:
                    return f"{key}: follower {n.id} has not caught up ({f!r})"
        return None


def run_cluster_chaos(seed: int, *, phases: int = 5, log: Callable[[str], None] | None = None) -> ClusterSim:
    """One seeded run: a random network, ``phases`` random faults with a producer writing
    throughout, then everything healed and restarted; raises ``ClusterViolation`` on a broken
    invariant or when the healed cluster does not converge within ``CONVERGE_MS``."""
    pick = random.Random(seed)
    lag = pick.choice([1_000, 3_000, ReplicationConfig().replica_lag_ms])
    more = random.Random(seed + 0xC0FFEE)  # (choices added later draw here, so older seeds replay unchanged)
    config = SimConfig(replication=ReplicationConfig(replica_lag_ms=lag, replica_fetch_idle_ms=pick.choice([100, 500]),
                                                     replica_fetch_timeout_ms=pick.choice([300, 2_000])),
                       # the metadata log compacted rarely and read a few records per fetch, as a restarted
                       # broker meets it in production (10,000 records between snapshots, 2,000 per fetch)
                       snapshot_every=more.choice([200, 5_000]), fetch_entries_max=more.choice([3, 2_000]))
    sim = ClusterSim(seed, drop=pick.choice([0.0, 0.01, 0.05]), delay_ms=(1, pick.choice([5, 20, 60])),
                     reorder=pick.random() < 0.5, duplicate=pick.choice([0.0, 0.05]),
                     pub_drop=pick.choice([0.0, 0.1, 0.3]), config=config, log=log)
    sim.run(3000)
    sim.create_topic()
    sim.run(2000, produce_every_ms=50)
    for _ in range(phases):
        fault = pick.choice(["isolate", "cut", "kill", "kill", "power", "restart", "heal", "none", "pause", "bounce"])
        victim = pick.choice(sim.ids)
        if pick.random() < 0.5:  # half the time a leader: of the controller, or of a partition
            leaders = [n.id for n in sim.nodes.values() if n.raft.role is Role.LEADER or n.replicas.leaders]
            victim = pick.choice(leaders) if leaders else victim
        if fault == "isolate":
            sim.isolate(victim)
        elif fault == "cut":
            sim.cut(victim, pick.choice([i for i in sim.ids if i != victim]))
        elif fault == "kill":
            sim.crash(victim)
        elif fault == "power" and sim.fully_replicated():
            sim.crash(victim, power=True)
        elif fault == "restart":
            for i in sim.ids:
                sim.start(i)
        elif fault == "heal":
            sim.heal()
        elif fault == "pause":
            sim.pause(victim)
        elif fault == "bounce":  # killed and started again at once (within the controller's grace, often)
            sim.crash(victim, power=sim.fully_replicated() and pick.random() < 0.5)
            sim.run(pick.choice([0, 100, 400, 800]), produce_every_ms=50)
            sim.start(victim)
            sim.stats["bounces"] += 1
        sim.run(pick.randrange(300, 4000), produce_every_ms=pick.choice([20, 50, 200]))
        for paused in list(sim.paused):
            sim.resume(paused)
    sim.heal()
    for i in sim.ids:
        sim.start(i)
    for net in sim.nets.values():
        net.drop = 0.0
    sim.log("healed: convergence check")
    deadline = sim.now + CONVERGE_MS
    while sim.now < deadline:
        sim.run(100)
        if sim.converged() is None:
            before = sim.stats["acked"]
            for p in range(PARTITIONS):
                sim.produce(p)
            sim.run(1000)
            if sim.stats["acked"] >= before + PARTITIONS and sim.converged() is None:
                return sim
    raise ClusterViolation(f"cluster sim seed {seed}: no convergence after healing: {sim.converged()}; {sim!r}")


CONVERGE_MS = 30_000  # simulated time the healed cluster gets to become whole again
