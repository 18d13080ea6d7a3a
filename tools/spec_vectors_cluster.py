"""The cluster vectors of SPEC.md section 13.6, for ``tools/spec_vectors.py``.

Why built this way: every request and one-way message here is produced by the code that sends it
in the reference cluster (``ControllerLink.poll``/``hellos`` for register, heartbeat and
metadata_fetch; ``ReplicaFetch``/``ReplicaAck``/``Push`` and the framing of ``ClusterNode.flush``;
``RaftMessage.to_wire`` inside the controller's ``raft`` frame), or copied field for field from the
code that builds it (the forwarded ``create_topic``/``delete_topic``/``alter_partition``/
``cluster_status``, with the forward's negative ``cid`` last, as ``ClusterNode.controller_request``
sends it; ``allocate_producer_ids`` from ``ClusterProducerIds.tick``).  Replies are examples of the shapes ``ControllerService``/``ControllerLogic`` and
``ClusterNode.handle_replica`` build (``tests/test_spec.py`` checks their fields against SPEC.md's
reply tables and that every request parses with ``fabric.protocol.cluster``'s classes).
"""

from __future__ import annotations

from typing import Any, Callable

from fabric.broker.cluster_node import push_prefix
from fabric.broker.controller_link import ControllerLink
from fabric.broker.producer_id_blocks import ClusterProducerIds
from fabric.clock import as_now
from fabric.controller.metadata import MetadataState
from fabric.controller.raft_messages import AppendRequest, AppendResponse, Entry, VoteRequest
from fabric.controller.records import encode_record
from fabric.protocol import codec
from fabric.protocol.errors import FabricError
from fabric.protocol.cluster_admin import (AlterPartitionReassignmentsRequest, DecommissionBrokerRequest,
                                           ElectLeadersRequest, ListPartitionReassignmentsRequest, Reassignment)
from fabric.protocol.messages import request_header
from fabric.replication.messages import Push, ReplicaAck, ReplicaFetch, ReplicaFetchReply

BEGIN = "<!-- BEGIN GENERATED CLUSTER VECTORS (tools/spec_vectors.py --write) -->"
END = "<!-- END GENERATED CLUSTER VECTORS -->"
TOPIC_ID = "00000000000000000000000000000001"  # the first sequential topic id of 10.1
INCARNATION = 1733400000000  # broker 2's registered incarnation (KIP-903: on every follower message)
FENCE_2 = encode_record({"type": "fence_broker", "id": 2, "incarnation": 1733400000000})


def _link() -> ControllerLink:
    """Broker 2 of voters 1-3, as ``ClusterNode`` builds its link (port filled in at start)."""
    return ControllerLink(2, [1, 2, 3], {"host": "127.0.0.1", "port": 9093, "pub_port": 9193, "rack": "r2"},
                          incarnation=1733400000000, intact_since=1733300000000)


def _replica_reply(reply: ReplicaFetchReply, cid: int) -> tuple[dict[str, Any], list[bytes]]:
    """``ClusterNode.handle_replica``'s framing of a fetch reply."""
    wire = reply.to_wire()
    wire.pop("type", None)
    batches = wire.pop("batches", b"")
    return {"op": "replica_fetch", "v": 1, "cid": cid, **wire}, [batches]


def _err(name: str, message: str) -> dict[str, Any]:
    return FabricError(name, message).to_wire()


def _steps() -> list[tuple[str, str, dict[str, Any], dict[str, Any] | None, list[bytes]]]:
    """(name, title, request header, reply header or None (one-way), reply payload frames)."""
    fetch = ReplicaFetch(TOPIC_ID, 1, 2, 3, 5, 3, 1 << 20, INCARNATION)
    diverging = ReplicaFetch(TOPIC_ID, 1, 2, 4, 6, 2, 1 << 20, INCARNATION)
    link = _link()
    register = link.poll(0)[1]
    link.on_reply({"cid": register["cid"], "metadata_offset": 41}, 0)
    fetch_md = link.poll(1)[1]
    link.on_reply({"cid": fetch_md["cid"], "records": [], "offset": 0, "committed": 41}, 1)
    link.state.offset = 41  # (as if it had applied records 1-41: nothing left to fetch)
    heartbeat = link.poll(2)[1]
    status = {"node_id": 1, "role": "leader", "term": 2, "leader_id": 1, "commit_index": 42, "last_index": 42,
              "applied": 42, "followers": {"2": 42, "3": 41},
              "brokers": [{"id": n, "host": "127.0.0.1", "port": 9091 + n, "rack": f"r{n}",
                           "incarnation": 1733400000000, "fenced": n == 3, "since_heartbeat_ms": 120 if n != 3 else 2400,
                           "shutting_down": False, "decommissioned": False} for n in (1, 2, 3)]}
    return [
        ("replica-fetch", "replica_fetch (follower 2 at offset 5 of orders/1, caught up)",
         {"op": "replica_fetch", "v": 1, "cid": 7, **fetch.to_wire()},
         *_replica_reply(ReplicaFetchReply(TOPIC_ID, 1, 3, 5, None, 5, 0, 5, b"", None), 7)),
        ("replica-fetch-diverging", "replica_fetch after a leader change: the follower's epoch 2 ended at 4",
         {"op": "replica_fetch", "v": 1, "cid": 8, **diverging.to_wire()},
         *_replica_reply(ReplicaFetchReply(TOPIC_ID, 1, 4, 6, None, 4, 0, 9, b"", (2, 4)), 8)),
        ("replica-fetch-not-leader", "replica_fetch sent to a broker that does not lead orders/1",
         {"op": "replica_fetch", "v": 1, "cid": 9, **fetch.to_wire()},
         *_replica_reply(ReplicaFetchReply(TOPIC_ID, 1, 3, 5, "NOT_LEADER", 0, 0, 0, b"", None), 9)),
        ("replica-ack", "replica_ack (follower 2 holds orders/1 up to offset 7; one-way)",
         {"op": "replica_ack", "v": 1, "cid": 0, **ReplicaAck(TOPIC_ID, 1, 2, 3, 7, INCARNATION).to_wire()}, None, []),
        ("replica-fetch-stale-incarnation",
         "replica_fetch from a previous incarnation of follower 2 (it restarted since: KIP-903)",
         {"op": "replica_fetch", "v": 1, "cid": 10, **ReplicaFetch(TOPIC_ID, 1, 2, 3, 5, 3, 1 << 20,
                                                                    INCARNATION - 1).to_wire()},
         *_replica_reply(ReplicaFetchReply(TOPIC_ID, 1, 3, 5, "STALE_BROKER_EPOCH", 5, 0, 5, b"", None), 10)),
        ("register", "register (broker 2 starts after a clean end of its previous incarnation)", register, {"op": "register", "cid": register["cid"],
                                                              "metadata_offset": 41}, []),
        ("metadata-fetch", "metadata_fetch (broker 2 applied up to index 41)",
         {**fetch_md, "offset": 41},
         {"op": "metadata_fetch", "cid": fetch_md["cid"], "records": [[42, FENCE_2]], "offset": 42,
          "committed": 42, "leader_id": 1}, []),
        ("metadata-fetch-snapshot", "metadata_fetch behind the controller's snapshot",
         {"op": "metadata_fetch", "cid": 9, "offset": 0},
         {"op": "metadata_fetch", "cid": 9, "snapshot": MetadataState().to_snapshot(), "offset": 0,
          "committed": 42, "leader_id": 1}, []),
        ("broker-heartbeat", "heartbeat", heartbeat,
         {"op": "heartbeat", "cid": heartbeat["cid"], "fenced": False, "metadata_offset": 42,
          "shutdown_ready": False}, []),
        ("broker-heartbeat-not-controller", "heartbeat sent to a voter that does not lead",
         {**heartbeat, "cid": 5},
         {"op": "heartbeat", "cid": 5, "error": _err("NOT_CONTROLLER", "controller 3 does not lead; try 1"),
          "leader_id": 1}, []),
        ("broker-heartbeat-stale", "heartbeat from an incarnation that registered again since",
         {**heartbeat, "cid": 6, "incarnation": 1733300000000},
         {"op": "heartbeat", "cid": 6, "error": _err("STALE_BROKER_EPOCH", "heartbeat"),
          "incarnation": 1733400000000}, []),
        ("create-topic", "create_topic (forwarded by a broker for create_topics)",
         {"op": "create_topic", "name": "orders", "partitions": 3, "configs": {}, "replication_factor": 3, "cid": -1},
         {"op": "create_topic", "cid": -1, "topic_id": "6f1c0a9e2b4d4c8e9a7f3e5d1b2c4a6e", "partitions": 3,
          "replication_factor": 3, "configs": {"min_insync_replicas": 1}, "metadata_offset": 43}, []),
        ("delete-topic", "delete_topic (forwarded for delete_topics)",
         {"op": "delete_topic", "name": "orders", "cid": -2},
         {"op": "delete_topic", "cid": -2, "metadata_offset": 44}, []),
        ("alter-partition", "alter_partition (leader 1 shrinks the ISR of orders/1 to [1, 3])",
         {"op": "alter_partition", "broker_id": 1, "topic_id": TOPIC_ID, "partition": 1, "leader_epoch": 3,
          "partition_epoch": 5, "isr": [1, 3], "isr_incarnations": [INCARNATION - 7, INCARNATION + 9], "cid": -3},
         {"op": "alter_partition", "cid": -3, "leader": 1, "leader_epoch": 3, "partition_epoch": 6, "isr": [1, 3],
          "metadata_offset": 45}, []),
        ("controlled-shutdown", "controlled_shutdown (served; the reference broker sends heartbeat wants_shutdown)",
         {"op": "controlled_shutdown", "cid": 11, "broker_id": 2},
         {"op": "controlled_shutdown", "cid": 11, "fenced": False, "metadata_offset": 45, "shutdown_ready": False},
         []),
        ("ensure-internal-topic", "ensure_internal_topic (served; nothing sends it yet)",
         {"op": "ensure_internal_topic", "cid": 12},
         {"op": "ensure_internal_topic", "cid": 12, "topic_id": "0b8e4f2a6c1d4e3f8a9b7c6d5e4f3a2b",
          "metadata_offset": 45}, []),
        ("controller-cluster-status", "cluster_status on the controller port (forwarded by a broker)",
         {"op": "cluster_status", "cid": -4}, {"op": "cluster_status", "cid": -4, **status}, []),
        ("broker-cluster-status", "cluster_status on a broker's client port (what `fabric cluster status` asks)",
         request_header("cluster_status", 13),
         {"op": "cluster_status", "cid": 13, "broker_id": 2, "metadata_offset": 42,
          "controller": status,
          "brokers": [{"node_id": n, "host": "127.0.0.1", "port": 9091 + n, "rack": f"r{n}", "fenced": n == 3,
                       "decommissioned": False, "replicas": 3, "leaders": 2 if n == 1 else (1 if n == 2 else 0)} for n in (1, 2, 3)],
          "partitions_total": 3,
          "under_replicated": [{"topic": "orders", "partition": 1, "leader": 1, "replicas": [1, 2, 3],
                                "isr": [1, 2]}],
          "under_min_isr": [], "offline": [], "reassigning": []}, []),
        *_admin_steps(),
        _allocate_producer_ids(),
    ]


class _Capture:
    """What ``ClusterProducerIds`` uses of ``ClusterNode``: the forward it sends is kept, with the
    negative ``cid`` last as ``ClusterNode.controller_request`` adds it."""

    node_id = 2

    def __init__(self) -> None:
        self.link = _link()
        self.link.registered = True
        self.sent: list[dict[str, Any]] = []

    def forward(self, header: dict[str, Any], done: Any, now_ms: int) -> None:
        self.sent.append({**header, "cid": -5})


def _allocate_producer_ids() -> tuple[str, str, dict[str, Any], dict[str, Any] | None, list[bytes]]:
    """A broker's first block: ``ClusterProducerIds.tick`` asks as soon as it is registered."""
    node = _Capture()
    ClusterProducerIds(node).tick(as_now(0))
    request = node.sent[0]
    return ("allocate-producer-ids", "allocate_producer_ids (broker 2 asks for a block of producer ids)", request,
            {"op": "allocate_producer_ids", "cid": -5, "start": 17179869184, "size": 1000, "metadata_offset": 46}, [])


def _admin_steps() -> list[tuple[str, str, dict[str, Any], dict[str, Any] | None, list[bytes]]]:
    """Section 13.7: what ``fabric.client.reassign`` sends on a broker's client port."""
    move = AlterPartitionReassignmentsRequest(reassignments=(
        Reassignment(topic="orders", partition=0, replicas=(2, 3, 4)),
        Reassignment(topic="orders", partition=1, replicas=None)))
    moving = {"topic": "orders", "partition": 0, "replicas": [2, 3, 4, 1], "adding": [4], "removing": [1],
              "isr": [1, 2, 3], "leader": 1}
    return [
        ("alter-partition-reassignments", "alter_partition_reassignments (orders/0 to brokers 2, 3, 4; cancel "
         "orders/1, which is not moving)", request_header("alter_partition_reassignments", 14, move),
         {"op": "alter_partition_reassignments", "cid": 14,
          "results": [{"topic": "orders", "partition": 0},
                      {"topic": "orders", "partition": 1,
                       "error": _err("NO_REASSIGNMENT_IN_PROGRESS", "orders-1 is not being reassigned")}]}, []),
        ("list-partition-reassignments", "list_partition_reassignments (orders/0 is copying to broker 4)",
         request_header("list_partition_reassignments", 15, ListPartitionReassignmentsRequest()),
         {"op": "list_partition_reassignments", "cid": 15, "reassignments": [moving]}, []),
        ("decommission-broker", "decommission_broker (move every replica off broker 1)",
         request_header("decommission_broker", 16, DecommissionBrokerRequest(broker_id=1)),
         {"op": "decommission_broker", "cid": 16, "moving": 3}, []),
        ("elect-leaders", "elect_leaders (every topic: preferred-leader election)",
         request_header("elect_leaders", 17, ElectLeadersRequest()),
         {"op": "elect_leaders", "cid": 17, "elected": 2}, []),
    ]


def _messages() -> list[tuple[str, str, list[bytes], list[str]]]:
    """One-way messages: (name, title, frames, what each frame is)."""
    push = Push(TOPIC_ID, 1, 3, 5, 5, b"<the record batch as stored>")
    header = {"topic_id": push.topic_id, "partition": push.partition, "leader_epoch": push.leader_epoch,
              "base_offset": push.base_offset, "high_watermark": push.high_watermark}
    vote = VoteRequest(term=3, candidate=1, last_index=42, last_term=2, pre_vote=True)
    append = AppendRequest(term=2, leader=1, prev_index=41, prev_term=2, entries=(Entry(2, 42, FENCE_2),), commit=41)
    resp = AppendResponse(term=2, success=True, match_index=42, hint_index=0)
    return [
        ("replica-push", "a push on the PUB socket (leader of orders/1, epoch 3, batch at offset 5)",
         [push_prefix(push.topic_id, push.partition), codec.encode(header)], ["prefix", "header"]),
        ("raft-vote", "raft: a pre-vote request from voter 1 (to voter 2)",
         [codec.encode({"op": "raft", "from": 1, "msg": vote.to_wire()})], ["message"]),
        ("raft-append", "raft: an append of one entry from leader 1",
         [codec.encode({"op": "raft", "from": 1, "msg": append.to_wire()})], ["message"]),
        ("raft-append-resp", "raft: voter 3's answer to it",
         [codec.encode({"op": "raft", "from": 3, "msg": resp.to_wire()})], ["message"]),
        ("hello", "hello (broker 2 names its connection to a voter)",
         [codec.encode(_link().hellos(0)[0][1])], ["message"]),
    ]


def render_cluster(block: Callable[..., str], hex_lines: Callable[[bytes], str], diag: Callable[[Any], str]) -> str:
    out = [BEGIN, "\n"]
    n = 0
    for name, title, request, reply, frames in _steps():
        n += 1
        out.append(f"#### 13.6.{n} {title}\n\nRequest, frame 0:\n\n")
        raw = codec.encode(request)
        out.append(block("hex", f"{name}-request", hex_lines(raw)))
        out.append(block("diag", f"{name}-request", diag(codec.decode_map(raw, 1 << 26))))
        if reply is None:
            out.append("\nNo reply.\n\n")
            continue
        out.append("\nReply, frame 0:\n\n")
        out.append(block("hex", f"{name}-reply", hex_lines(codec.encode(reply))))
        out.append(block("diag", f"{name}-reply", diag(reply)))
        for i, f in enumerate(frames, 1):
            out.append(f"\nReply, frame {i}" + (" (empty)" if not f else "") + ":\n\n")
            out.append(block("hex", f"{name}-reply-frame{i}", hex_lines(f)))
        out.append("\n")
    for name, title, frames, kinds in _messages():
        n += 1
        out.append(f"#### 13.6.{n} {title}\n\n")
        for i, (f, kind) in enumerate(zip(frames, kinds)):
            out.append(f"Frame {i}:\n\n")
            out.append(block("hex", f"{name}-{kind}", hex_lines(f)))
            if kind != "prefix":
                out.append(block("diag", f"{name}-{kind}", diag(codec.decode_map(f, 1 << 26))))
            out.append("\n")
        if name == "replica-push":
            out.append("Frame 2: the batch bytes, exactly as the leader stored them (section 6).\n\n")
    out.append(END)
    return "".join(out)
