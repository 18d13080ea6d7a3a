"""ControllerLogic's operator decisions (logic_admin.py) under the churn of
``test_controller_logic_sim``: besides brokers crashing, restarting and shutting down, ISRs
changing and controller failovers that lose uncommitted records, an operator reassigns random
partitions to random targets, cancels moves, grows topics, decommissions brokers and asks for
preferred-leader elections.

Invariants, after every step (the base sim's plus): ``adding`` and ``removing`` are disjoint
subsets of the replicas, the target set is never empty, and a partition without a move in progress
has neither.  At the end, with every broker back and every leader proposing a full ISR, every move
has completed: each partition's replicas are its target, led by a member of its ISR (but those
whose every in-sync replica restarted uncleanly: they stay offline, their move waiting).
"""

from __future__ import annotations

import pytest

from fabric.testing.seeds import seeds

from tests.sim.test_controller_logic_sim import CONFIG, STEPS, World, lost

pytestmark = pytest.mark.sim


class AdminWorld(World):
    def operator(self) -> None:
        rng, s = self.rng, self.state
        parts = [(t, p) for t in s.topics.values() for p in range(len(t.partitions))]
        roll = rng.random()
        if roll < 0.5 and parts:
            t, p = rng.choice(parts)
            cur = t.partitions[p]
            if rng.random() < 0.2:
                target = None
            else:
                rf = len(cur.target)
                target = rng.sample(self.brokers, min(len(self.brokers), max(1, rf + rng.choice([-1, 0, 0, 1]))))
            self.trace.append(f"reassign {t.name}-{p} -> {target}")
            error, reply = self.do(self.logic.alter_partition_reassignments(
                reassignments=[{"topic": t.name, "partition": p, "replicas": target}], now_ms=self.now))
            row = reply["results"][0]
            if error is not None or (row.get("error") and row["error"]["name"] not in (
                    "NO_REASSIGNMENT_IN_PROGRESS", "INVALID_REPLICA_ASSIGNMENT", "UNKNOWN_TOPIC_OR_PARTITION")):
                self.fail(f"reassignment answered {error or row['error']}")
        elif roll < 0.65 and s.topics:
            t = rng.choice(sorted(s.topics.values(), key=lambda t: t.name))
            if t.internal or len(t.partitions) > 12:
                return
            self.trace.append(f"grow {t.name}")
            try:
                self.do(self.logic.create_partitions(topic=t.name, count=len(t.partitions) + rng.randint(1, 3),
                                                     now_ms=self.now))
            except Exception as exc:  # a pending growth may already be bigger: INVALID_PARTITIONS
                if getattr(exc, "name", None) != "INVALID_PARTITIONS":
                    raise
        elif roll < 0.75:
            b = rng.choice(self.brokers)
            self.trace.append(f"decommission {b}")
            self.do(self.logic.decommission_broker(broker_id=b, now_ms=self.now))
        else:
            self.trace.append("elect leaders")
            self.do(self.logic.elect_leaders(now_ms=self.now))

    def step(self) -> None:
        if self.rng.random() < 0.15:
            self.operator()
        else:
            super().step()

    def check(self) -> None:
        super().check()
        for t in self.state.topics.values():
            for p, part in enumerate(t.partitions):
                add, rem = set(part.adding), set(part.removing)
                if add & rem or not add <= set(part.replicas) or not rem <= set(part.replicas) or not part.target:
                    self.fail(f"{t.name}-{p} {part}: adding/removing inconsistent")


@pytest.mark.parametrize("seed", seeds(range(40)))
def test_operator_decisions_keep_the_invariants_and_moves_complete(seed):
    w = AdminWorld(seed)
    for b in w.brokers:
        w.register(b)
    w.commit(len(w.uncommitted))
    for _ in range(STEPS):
        w.step()
        w.check()
    w.commit(len(w.uncommitted))
    for b in w.brokers:  # (the heal below brings every broker back into service)
        w.do(w.logic.decommission_broker(broker_id=b, now_ms=w.now, cancel=True))
    w.commit(len(w.uncommitted))
    for b in w.brokers:
        if not w.alive[b]:
            w.register(b)
    for _ in range(6):
        w.now += CONFIG.heartbeat_ms
        for b in w.brokers:
            w.heartbeat(b)
        w.do(w.logic.tick(w.now))
        w.commit(len(w.uncommitted))
        for t in w.state.topics.values():  # every leader finds every replica caught up
            for p, part in enumerate(t.partitions):
                if part.leader != -1 and sorted(part.isr) != sorted(part.replicas):
                    w.do(w.logic.alter_partition(broker_id=part.leader, topic_id=t.topic_id, partition=p,
                                                 leader_epoch=part.leader_epoch,
                                                 partition_epoch=part.partition_epoch,
                                                 isr=list(part.replicas), now_ms=w.now))
                    w.commit(len(w.uncommitted))
        w.check()
    moving = [(t.name, p, part) for t in w.state.topics.values() for p, part in enumerate(t.partitions)
              if (part.adding or part.removing) and not lost(t, part)]
    if moving:
        w.fail(f"moves still in progress with every broker back: {moving[:3]}")
    offline = [(t.name, p) for t in w.state.topics.values() for p, part in enumerate(t.partitions)
               if part.leader == -1 and not lost(t, part)]
    if offline:
        w.fail(f"still offline with every broker back: {offline}")
