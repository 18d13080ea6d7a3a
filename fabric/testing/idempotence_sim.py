"""The idempotent producer, simulated: the real client bookkeeping against real replica logs.

What is real: the producer's ``RequestBook`` (retries, order, ``idempotent=True``) and
``Idempotence`` (sequences), the batch encoding, and three replicas' ``ProducerLog`` over
``MemoryLog`` (the leader's duplicate and sequence checks, followers recording what they copy,
state rebuilt by a truncation or a crash).  What is a stand-in: the network (one request
"connection" to the leader, FIFO as TCP is, with delays; a lost request or reply breaks it, so
nothing later on it arrives either, and the client's timeout opens a new one),
replication (a follower copies the leader's next batches at random) and the controller (clean
elections among replicas holding every committed batch, crashes losing unflushed tails).

The promise checked at the end of every seed: of the records the producer sent, each one whose
future succeeded is in the final log exactly once, no record is in it twice, the log holds the
producer's records in send order, and (no fault outlasting the delivery timeout) every record
sent was acknowledged, but for those of a batch that may have been written before the partition
lost the producer's state (``epoch_bump`` rule 3).  One fault is that loss: every replica forgets
the producer (its state expired) while it has nothing outstanding, so its next batch is refused
and the producer must bump its epoch and re-send (KIP-360).
``python tools/sim.py --idempotence --seeds 5000`` hunts over many seeds; ``--seed N`` replays.
"""

from __future__ import annotations

import random
from typing import Callable

from ..broker.log_errors import wire_error
from ..client.accumulator import ProducerBatch
from ..client.connection import RequestTimeoutError
from ..client.idempotence import Idempotence
from ..client.ordering import RequestBook
from ..log import LogConfig
from ..log.errors import LogError
from ..log.memory import MemoryLog
from ..log.producer_log import ProducerLog
from ..protocol.errors import OutOfOrderSequenceError, UnknownProducerIdError, error_map
from ..records.batch import decode_records, iter_headers, producer_fields

NODES = (1, 2, 3)
TOPIC = "t"
REQUEST_TIMEOUT = 200
IN_FLIGHT_MAX = 5
BIG = 1 << 30


class IdempotenceSim:
    def __init__(self, seed: int, log: Callable[[str], None] | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.say = log or (lambda s: None)
        self.now = 0
        self.logs = {n: ProducerLog(MemoryLog(LogConfig(), 0, f"node{n}")) for n in NODES}
        self.alive = {n: True for n in NODES}
        self.committed_at_crash: dict[int, int] = {}
        self.last_at: dict[str, int] = {}
        self.broken: set[int] = set()  # connections (generations) that broke: FIFO means nothing after a loss
        self.leader, self.epoch, self.hw = 1, 0, 0
        self.idem = Idempotence()
        self.idem.granted(0, 0)
        self.maybe_written: set[bytes] = set()
        self.book = RequestBook(self._finish, 20, 60_000, idempotent=True)
        self.cid = 0
        self.generation = 0  # the client's connection; replies of an older one are dropped
        self.to_broker: list[tuple[int, int, int, int, ProducerBatch]] = []  # (at, gen, cid, epoch, batch)
        self.to_client: list[tuple[int, int, dict]] = []  # (at, generation, reply)
        self.parked: list[tuple[int, int, int, int, int]] = []  # (gen, cid, epoch, last offset, base)
        self.sent: list[bytes] = []  # record values in send order
        self.acked: set[bytes] = set()
        self.failed: set[bytes] = set()
        self.queue: list[ProducerBatch] = []
        self.stats = {"elections": 0, "crashes": 0, "lost_requests": 0, "lost_replies": 0, "timeouts": 0,
                      "duplicates": 0, "bumps": 0, "state_losses": 0}

    # ------------------------------------------------------------------ client
    def _finish(self, b: ProducerBatch, base: int, err: BaseException | None) -> None:
        values = self._values(b)
        (self.acked if err is None else self.failed).update(values)
        if isinstance(err, (OutOfOrderSequenceError, UnknownProducerIdError)):  # epoch_bump rule 3
            assert b.uncertain, (self.seed, "a batch known unwritten failed with a lost-state error")
            self.maybe_written.update(values)
        b.result.complete(base, err)

    def _values(self, b: ProducerBatch) -> list[bytes]:
        return [r.value for r in decode_records(TOPIC, 0, b.data)] if b.data else list(b.values)

    def new_batch(self) -> None:
        b = ProducerBatch(TOPIC, 0, self.now)
        for _ in range(self.rng.randint(1, 3)):
            v = b"r%d" % len(self.sent)
            self.sent.append(v)
            b.timestamps.append(self.now)
            b.keys.append(None)
            b.values.append(v)
        self.queue.append(b)

    def client_send(self) -> None:
        ready = self.book.rebase_ready()
        if ready:  # (Sender._rebase: init_producer_id answers the id's next epoch)
            self.stats["bumps"] += 1
            self.idem.granted(self.idem.producer_id, self.idem.epoch + 1)
            for key in ready:
                self.book.rebased(key, self.idem, self.now)
        fresh, self.queue = self.queue, []
        go = self.book.select(fresh, self.now)
        while go and len(self.book.inflight) < IN_FLIGHT_MAX:
            b = go.pop(0)
            if b.data is None:
                key = (b.topic, b.partition)
                b.data = b.encode(0, *self.idem.next(key))
                self.idem.advance(key, len(b.timestamps))
            self.cid += 1
            b.attempts += 1
            self.book.sent(self.cid, [b], self.now)
            if self.rng.random() < 0.03:  # the connection breaks: this and what follows on it is lost
                self.stats["lost_requests"] += 1
                self.broken.add(self.generation)
            elif self.generation not in self.broken:
                self.to_broker.append((self._fifo("up"), self.generation, self.cid, self.epoch, b))
        if go:
            self.book.keep(go)

    def client_receive(self) -> None:
        due = [m for m in self.to_client if m[0] <= self.now]
        self.to_client = [m for m in self.to_client if m[0] > self.now]
        for _, gen, reply in due:
            if gen == self.generation:
                self.book.on_reply(reply, self.now, lambda e: None)
        oldest = min((f.sent_ms for f in self.book.inflight.values()), default=None)
        if oldest is not None and self.now - oldest >= REQUEST_TIMEOUT:
            self.stats["timeouts"] += 1
            self.generation += 1  # a new connection: what the old one carries is lost
            self.book.on_lost(self.now, RequestTimeoutError("timeout"))

    # ------------------------------------------------------------------ broker side
    def reply(self, gen: int, cid: int, result: dict) -> None:
        if gen in self.broken:
            return
        if self.rng.random() < 0.03:  # the connection breaks: no later reply on it arrives either
            self.stats["lost_replies"] += 1
            self.broken.add(gen)
            return
        self.to_client.append((self._fifo("down"), gen, {"cid": cid, "results": [result]}))

    def _fifo(self, way: str) -> int:
        """A delivery time after the previous message's the same way: one connection is FIFO."""
        at = max(self.last_at.get(way, 0), self.now + self.rng.randint(1, 20))
        self.last_at[way] = at
        return at

    def broker_receive(self) -> None:
        due = [m for m in self.to_broker if m[0] <= self.now]
        self.to_broker = [m for m in self.to_broker if m[0] > self.now]
        for _, gen, cid, epoch, b in due:
            if epoch != self.epoch or not self.alive[self.leader]:
                self.reply(gen, cid, {"base_offset": -1, "error": error_map("NOT_LEADER")})
                continue
            plog = self.logs[self.leader]
            h = next(iter_headers(b.data))[1]
            try:
                dup = plog.check_producer(h.producer_id, h.producer_epoch, h.base_sequence, h.record_count)
            except LogError as exc:  # a sequence refused: the broker's wire error for it
                self.reply(gen, cid, {"base_offset": -1, "error": wire_error(exc).to_wire()})
                continue
            if dup is not None:
                self.stats["duplicates"] += 1
                base, last = dup.base_offset, dup.last_offset
            else:
                res = plog.append(bytearray(b.data), self.now, self.epoch)
                base, last = res.base_offset, res.last_offset
            self.parked.append((gen, cid, self.epoch, last, base))  # acks=all: answered once committed

    def replicate(self) -> None:
        lead = self.logs[self.leader]
        for n in NODES:
            if n == self.leader or not self.alive[n]:
                continue
            for _ in range(self.rng.randint(0, 2)):
                f = self.logs[n]
                if f.end_offset >= lead.end_offset:
                    break
                data = lead.read(f.end_offset, 1)
                _, h = next(iter_headers(data))
                f.append_replicated(bytearray(data[:h.size]), self.now)
        isr = [n for n in NODES if self.alive[n]]
        self.hw = max(self.hw, min(self.logs[n].end_offset for n in isr))
        if self.rng.random() < 0.2:
            self.logs[self.rng.choice(NODES)].flush(self.now)
        # Replies leave in request order (the broker's acks_all rule 6): stop at the first waiting one.
        n = 0
        while n < len(self.parked) and self.parked[n][3] < self.hw:
            n += 1
        done, self.parked = self.parked[:n], self.parked[n:]
        for gen, cid, _, _, base in done:
            self.reply(gen, cid, {"base_offset": base})

    def elect(self, new: int) -> None:
        """A clean election: ``new`` holds every committed batch; the others cut what it lacks."""
        self.say(f"t={self.now} leader {self.leader} -> {new}")
        self.leader, self.epoch = new, self.epoch + 1
        for gen, cid, _, _, _ in self.parked:
            self.reply(gen, cid, {"base_offset": -1, "error": error_map("NOT_LEADER")})
        self.parked = []
        end = self.logs[new].end_offset
        for n in NODES:
            if n != new and self.alive[n] and self.logs[n].end_offset > end:
                self.logs[n].truncate_to(end)
        self.stats["elections"] += 1

    def crash(self, n: int) -> None:
        others = [m for m in NODES if m != n and self.alive[m] and self.logs[m].end_offset >= self.hw]
        if not others:
            return
        if n == self.leader:
            self.elect(self.rng.choice(others))
        self.say(f"t={self.now} crash {n}")
        self.alive[n] = False
        self.logs[n] = ProducerLog(self.logs[n].log.crashed())  # state rebuilt from what survived
        # What it holds beyond the HW of now may be replaced by a later leader while it is down
        # (a real follower finds that out by leader epoch): it restarts from this prefix.
        self.committed_at_crash[n] = self.hw
        self.stats["crashes"] += 1

    def restart(self, n: int) -> None:
        self.alive[n] = True
        keep = self.committed_at_crash.pop(n)
        if self.logs[n].end_offset > keep:
            self.logs[n].truncate_to(keep)

    # ------------------------------------------------------------------ the run
    def run(self, steps: int = 600) -> "IdempotenceSim":
        rng = self.rng
        down: dict[int, int] = {}
        expire = False
        for step in range(steps):
            if rng.random() < 0.4 and not expire:  # (a producer about to expire is idle)
                self.new_batch()
            op = rng.random()
            if op < 0.01:
                cands = [n for n in NODES if n != self.leader and self.alive[n] and self.logs[n].end_offset >= self.hw]
                if cands:
                    self.elect(rng.choice(cands))
            elif op < 0.02 and not down:
                victim = rng.choice(NODES)
                self.crash(victim)
                if not self.alive[victim]:
                    down[victim] = step + rng.randint(5, 80)
            elif 0.02 <= op < 0.026:
                expire = True
            if expire and self.book.idle and not self.queue:
                # Every replica forgets the producer (its state expired), which happens only to a
                # producer idle for producer_id_expiration_ms: never with a batch of it in flight
                # (a retry at sequence 0 after that would be taken for a new producer's first).
                expire = False
                self.say(f"t={self.now} producer state lost")
                self.stats["state_losses"] += 1
                for n in NODES:
                    self.logs[n].producer_housekeeping(self.now + BIG, 0)
            for n, when in list(down.items()):
                if step >= when:
                    self.restart(n)
                    del down[n]
            self.tick()
        for n in down:
            self.restart(n)
        for _ in range(3000):  # quiet: no new records, no faults but lost replies, until all answered
            if self.book.idle and not self.queue:
                break
            self.tick()
        assert self.book.idle, (self.seed, "requests never answered")
        self.check()
        return self

    def tick(self) -> None:
        self.client_send()
        self.broker_receive()
        self.replicate()
        self.client_receive()
        self.now += self.rng.randint(1, 8)

    def check(self) -> None:
        lead = self.logs[self.leader]
        data = lead.read(0, BIG) if lead.end_offset else b""
        values = [r.value for pos, h in iter_headers(data)
                  for r in decode_records(TOPIC, 0, data[pos:pos + h.size], h)]
        ctx = f"seed={self.seed}"
        assert len(values) == len(set(values)), (ctx, "a record is in the log twice")
        missing = self.acked - set(values)
        assert not missing, (ctx, "acknowledged records missing", sorted(missing)[:5])
        order = {v: i for i, v in enumerate(self.sent)}
        positions = [order[v] for v in values]
        assert positions == sorted(positions), (ctx, "records out of send order")
        assert not (self.acked & self.failed), (ctx, "a record both acknowledged and failed")
        # No fault here outlasts delivery_timeout_ms: all get in, but for batches that may have been
        # written before the state was lost (never retried: they could be written twice).
        assert not self.failed - self.maybe_written, (ctx, "records failed", sorted(self.failed)[:5])

    def __repr__(self) -> str:
        return (f"IdempotenceSim(seed={self.seed}, sent={len(self.sent)}, acked={len(self.acked)}, "
                f"failed={len(self.failed)}, {self.stats})")


def run_idempotence(seed: int, log: Callable[[str], None] | None = None) -> IdempotenceSim:
    return IdempotenceSim(seed, log).run()


__all__ = ["IdempotenceSim", "run_idempotence"]
