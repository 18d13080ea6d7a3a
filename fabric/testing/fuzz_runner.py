"""Run ``fuzzing.Fuzzer`` cases against a broker and check what must hold whatever it was sent.

The runner talks through one function, ``send(frames) -> replies`` (each reply's decoded frame
0 and its payload frames), so the same checks run against ``BrokerCore`` in memory
(``core_sender``, the CI test: fast, with a manual clock that releases parked requests) and
against a real broker process over ZeroMQ (``socket_sender``, ``tools/fuzz.py`` and the process
test).

Checks, per case: a request that expects a reply gets one; no reply is ``UNKNOWN_ERROR`` (hostile
input must be classified before it reaches a handler); every error map has an integer code, a
name and a message; a batch whose header lies in a way validation can prove is refused.  At the
end (``verify``): the base topic holds exactly what ``prepare`` wrote, and the fuzzed partition's
log end moved by exactly the records of the batches the broker acknowledged.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import cbor2
import zmq

from ..protocol.codec import decode_map
from ..records.batch import encode_batch, records_in
from ..replication.messages import ReplicaAck
from .fuzzing import BASE_TOPIC, FUZZ_TOPIC, Case, Fuzzer

Reply = tuple[dict[str, Any], list[bytes]]  # a reply's decoded header and its payload frames
Sender = Callable[[list[bytes]], list[Reply]]
BASE_RECORDS = 300
ERROR_NAMES_EXPECTED = ("MALFORMED_REQUEST", "INVALID_FIELD", "INVALID_BATCH")


@dataclass
class Failure:
    case: int  # replay with the same seed and this case index
    kind: str
    reason: str
    frame0: bytes

    def __str__(self) -> str:
        return f"case {self.case} ({self.kind}): {self.reason}; frame 0 starts {self.frame0[:60].hex()}"


@dataclass
class FuzzReport:
    seed: int
    cases: int = 0
    replies: int = 0
    errors: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    acked_records: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.cases / self.seconds if self.seconds else 0.0
        lines = [f"seed {self.seed}: {self.cases} cases in {self.seconds:.1f} s ({rate:.0f}/s), "
                 f"{self.replies} replies, {self.acked_records} fuzzed records acknowledged",
                 "cases by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items())),
                 "errors: " + ", ".join(f"{k} {n}" for k, n in self.errors.most_common())]
        if self.failures:
            lines.append(f"FAILED: {len(self.failures)} failures (replay: --seed {self.seed} --case N)")
            lines.extend(f"  {f}" for f in self.failures[:20])
        else:
            lines.append("no failures")
        return "\n".join(lines)


class FuzzRun:
    def __init__(self, seed: int, send: Sender) -> None:
        self.fuzzer = Fuzzer(seed)
        self.send = send
        self.report = FuzzReport(seed)
        self.fuzz_start = 0

    # ------------------------------------------------------------------ setup and final checks
    def prepare(self) -> None:
        """Create the base and fuzzed topics and write ``BASE_RECORDS`` records to the base."""
        self._ok({"op": "create_topics", "v": 1, "cid": 1,
                  "topics": [{"name": BASE_TOPIC, "partitions": 1}, {"name": FUZZ_TOPIC, "partitions": 1}]})
        now_ms = int(time.time() * 1000)  # (timestamps of 1970 would be past any retention: a roll deletes them)
        for start in range(0, BASE_RECORDS, 100):
            batch = encode_batch(list(range(now_ms + start, now_ms + start + 100)), [str(i).encode() for i in range(start, start + 100)],
                                 [f"record-{i}".encode() for i in range(start, start + 100)])
            reply = self._ok({"op": "produce", "v": 1, "cid": 2, "acks": 1,
                              "batches": [{"topic": BASE_TOPIC, "partition": 0}]}, [batch])
            assert "error" not in reply["results"][0], reply
        self.fuzz_start = self._end_offset(FUZZ_TOPIC)

    def verify(self) -> list[str]:
        """The final checks; returns what failed (empty when the data is intact)."""
        problems = []
        values, offset = [], 0
        while offset < BASE_RECORDS:
            reply, frames = self._fetch(BASE_TOPIC, offset)
            got = records_in(BASE_TOPIC, 0, frames[0], offset) if frames and frames[0] else []
            if not got:
                problems.append(f"base topic stops at offset {offset}: {reply}")
                break
            values.extend(r.value for r in got)
            offset = got[-1].offset + 1
        if values[:BASE_RECORDS] != [f"record-{i}".encode() for i in range(BASE_RECORDS)][:len(values)]:
            problems.append("base topic records changed")
        end = self._end_offset(FUZZ_TOPIC)
        if end != self.fuzz_start + self.report.acked_records:
            problems.append(f"fuzzed partition ends at {end}, but {self.fuzz_start} + "
                            f"{self.report.acked_records} acknowledged records")
        return problems

    # ------------------------------------------------------------------ cases
    def run(self, cases: range, gone: Callable[[], str | None] = lambda: None) -> FuzzReport:
        """Run ``cases``; after a failure, ``gone()`` may say the broker is dead (then stop: every
        case after it would only wait out its timeout)."""
        started = time.monotonic()
        for i in cases:
            failures = len(self.report.failures)
            self.check(i, self.fuzzer.case(i))
            if len(self.report.failures) > failures:
                why = gone()
                if why:
                    self.report.failures.append(Failure(i, "-", f"stopped: {why}", b""))
                    break
        self.report.seconds += time.monotonic() - started
        return self.report

    def check(self, i: int, case: Case) -> None:
        report = self.report
        report.cases += 1
        report.kinds[case.kind] += 1
        try:
            replies = self.send(case.frames)
        except Exception as exc:  # in memory: the exception escaped the request handler
            self._fail(i, case, f"escaped the handler: {type(exc).__name__}: {str(exc)[:200]}")
            return
        report.replies += len(replies)
        if not replies:
            if case.op == "replica_ack" and _well_formed_ack(case.frames):
                return  # one-way by design (SPEC 13.3): a well-formed ack is never answered
            self._fail(i, case, "no reply")
            return
        for header, _ in replies:
            err = header.get("error")
            if isinstance(err, str) and header.get("op") == "replica_fetch" and "topic_id" in header:
                report.errors[err] += 1  # a replica_fetch reply names its error (SPEC 13.3), no map
                continue
            if err is not None:
                if not (isinstance(err, dict) and type(err.get("code")) is int and err.get("name")
                        and err.get("message")):
                    self._fail(i, case, f"malformed error map {err!r:.200}")
                    continue
                report.errors[err["name"]] += 1
                if err["name"] == "UNKNOWN_ERROR":
                    self._fail(i, case, f"UNKNOWN_ERROR: {err['message']:.300}")
            if header.get("op") == "produce" and "results" in header:  # (its cid may be a mutated one)
                self._produced(i, case, header["results"])

    def _produced(self, i: int, case: Case, results: list[dict[str, Any]]) -> None:
        for j, res in enumerate(results):
            err = res.get("error")
            if err is not None:
                self.report.errors[err["name"]] += 1
            if j < len(case.must_refuse) and case.must_refuse[j] and err is None:
                self._fail(i, case, f"batch {j} with a provable lie was accepted at offset {res.get('base_offset')}")
            if err is None and res.get("topic") == FUZZ_TOPIC and res.get("partition") == 0 \
                    and j < len(case.record_counts):
                self.report.acked_records += case.record_counts[j]

    def _fail(self, i: int, case: Case, reason: str) -> None:
        self.report.failures.append(Failure(i, case.kind, reason, case.frames[0] if case.frames else b""))

    # ------------------------------------------------------------------ helpers
    def _ok(self, header: dict[str, Any], frames: list[bytes] = ()) -> dict[str, Any]:  # type: ignore[assignment]
        replies = self.send([cbor2.dumps(header), *frames])
        assert replies and "error" not in replies[0][0], (header["op"], replies)
        return replies[0][0]

    def _fetch(self, topic: str, offset: int) -> tuple[dict[str, Any], list[bytes]]:
        header = {"op": "fetch", "v": 1, "cid": 3, "max_wait_ms": 0,
                  "partitions": [{"topic": topic, "partition": 0, "offset": offset, "max_bytes": 1 << 20}]}
        replies = self.send([cbor2.dumps(header)])
        return replies[0] if replies else ({}, [])

    def _end_offset(self, topic: str) -> int:
        reply = self._ok({"op": "list_offsets", "v": 1, "cid": 4,
                          "partitions": [{"topic": topic, "partition": 0, "at": "latest"}]})
        return reply["partitions"][0]["offset"]


# ------------------------------------------------------------------ senders
def core_sender(core: Any, clock: list[int]) -> Sender:
    """Requests straight into a ``BrokerCore``; a request that parks (a join waiting for its
    group, a produce that waits) is released by moving the manual ``clock`` on a minute."""
    peer = b"fuzz"

    def send(frames: list[bytes]) -> list[Reply]:
        clock[0] += 1
        out = core.handle(peer, frames, clock[0])
        if not out:
            clock[0] += 60_000
            out = core.tick(clock[0]) + core.drain_waiters()
        return [(r.header, list(r.frames)) for p, r in out if p == peer]

    return send


def socket_sender(ctx: zmq.Context, bootstrap: str, reply_timeout_ms: int = 5000) -> tuple[Sender, zmq.Socket]:
    """Lockstep requests over one DEALER: send, then read until a reply with this request's cid
    (or with a null cid: the broker could not read it) arrives or ``reply_timeout_ms`` passes."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://{bootstrap}")

    def send(frames: list[bytes]) -> list[Reply]:
        sock.send_multipart(frames, copy=False)
        deadline = time.monotonic() + reply_timeout_ms / 1000
        while True:
            left = int((deadline - time.monotonic()) * 1000)
            if left <= 0 or not sock.poll(left):
                return []
            parts = sock.recv_multipart()
            header = cbor2.loads(parts[0])
            # a reply to an earlier case that parked arrives late: skip it, it is not this one's
            if header.get("cid") is None or _sent_cid(frames) in (None, header.get("cid")):
                return [(header, parts[1:])]

    return send, sock


def _sent_cid(frames: list[bytes]) -> Any:
    try:  # our own hardened decoder: the frame may be anything
        return decode_map(frames[0], len(frames[0])).get("cid")
    except Exception:
        return None


def _well_formed_ack(frames: list[bytes]) -> bool:
    """A ``replica_ack`` the leader takes (and, one-way, never answers): one frame, every field
    in range.  Anything else must be answered with an error."""
    if len(frames) != 1:
        return False
    try:
        header = decode_map(frames[0], 1 << 20)
        if header.get("op") != "replica_ack":
            return False
        ReplicaAck.from_wire({**{k: v for k, v in header.items() if k not in ("op", "v", "cid")},
                              "type": "replica_ack"})
    except Exception:  # noqa: BLE001 - any refusal means "not well formed"
        return False
    return True
