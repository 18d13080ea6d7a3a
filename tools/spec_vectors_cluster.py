"""The cluster vectors of SPEC.md section 13.6, for ``tools/spec_vectors.py``.

Why apart: the cluster operations are brokers-only and not yet served by the reference broker, so
their replies cannot be recorded from a ``BrokerCore`` like section 10's; the requests are encoded
by the real client code (``request_header``) and parsed by the real parsers, and the replies are
fixed examples of the documented shapes (tests/test_spec.py checks their fields against the reply
tables).  When the lead wires the cluster, replace the examples by recorded replies.
"""

from __future__ import annotations

from typing import Any, Callable

from fabric.protocol import codec
from fabric.protocol.cluster import (AlterPartitionRequest, BrokerHeartbeatRequest, BrokerRegisterRequest,
                                     ClusterStatusRequest, ControlledShutdownRequest, IsrProposal,
                                     MetadataFetchRequest, RaftRequest, ReplicaAck, ReplicaAckRequest,
                                     ReplicaFetchPartition, ReplicaFetchRequest)
from fabric.protocol.messages import request_header
from fabric.protocol.schema import unparse

BEGIN = "<!-- BEGIN GENERATED CLUSTER VECTORS (tools/spec_vectors.py --write) -->"
END = "<!-- END GENERATED CLUSTER VECTORS -->"
TOPIC_ID = "00000000000000000000000000000001"  # the first sequential topic id of 10.1
CLUSTER_ID = "spec-cluster-0001"


def _steps() -> list[tuple[str, str, str, Any, dict[str, Any] | None, list[bytes]]]:
    """(name, title, op, request body, reply fields or None, reply payload frames)."""
    ack = {"op": "raft"}
    return [
        ("replica-fetch", "replica_fetch (follower 2 at offset 5 of orders/1)", "replica_fetch",
         ReplicaFetchRequest(replica_id=2, broker_epoch=17, max_wait_ms=500, partitions=(
             ReplicaFetchPartition(topic_id=TOPIC_ID, partition=1, leader_epoch=3, fetch_offset=5,
                                   last_fetched_epoch=3),)),
         {"partitions": [{"topic_id": TOPIC_ID, "partition": 1, "leader_epoch": 3, "high_watermark": 5,
                          "log_start_offset": 0, "log_end_offset": 5, "diverging": None}]}, [b""]),
        ("replica-fetch-diverging", "replica_fetch after a leader change: the follower's epoch 2 ended at 4",
         "replica_fetch",
         ReplicaFetchRequest(replica_id=2, broker_epoch=17, partitions=(
             ReplicaFetchPartition(topic_id=TOPIC_ID, partition=1, leader_epoch=4, fetch_offset=6,
                                   last_fetched_epoch=2),)),
         {"partitions": [{"topic_id": TOPIC_ID, "partition": 1, "leader_epoch": 4, "high_watermark": 4,
                          "log_start_offset": 0, "log_end_offset": 9,
                          "diverging": {"epoch": 2, "end_offset": 4}}]}, [b""]),
        ("replica-ack", "replica_ack (follower 2 holds orders/1 up to offset 7)", "replica_ack",
         ReplicaAckRequest(replica_id=2, broker_epoch=17, partitions=(
             ReplicaAck(topic_id=TOPIC_ID, partition=1, leader_epoch=3, log_end=7),)),
         {"partitions": [{"topic_id": TOPIC_ID, "partition": 1, "high_watermark": 7}]}, []),
        ("metadata-fetch", "metadata_fetch (broker 3 applied up to index 41)", "metadata_fetch",
         MetadataFetchRequest(broker_id=3, broker_epoch=12, offset=42, max_wait_ms=500),
         {"controller_id": 1, "term": 2, "commit_index": 42,
          "records": [{"index": 42, "term": 2, "data": codec.encode({"type": "fence_broker", "id": 2})}],
          "snapshot": None}, []),
        ("raft-vote", "raft: a pre-vote request from voter 1 to voter 2", "raft",
         RaftRequest(cluster_id=CLUSTER_ID, src=1, dst=2, kind="vote_request",
                     message={"term": 3, "candidate": 1, "last_index": 42, "last_term": 2, "pre_vote": True}),
         ack, []),
        ("raft-append", "raft: an append of one entry from leader 1 to voter 3", "raft",
         RaftRequest(cluster_id=CLUSTER_ID, src=1, dst=3, kind="append_request",
                     message={"term": 2, "leader": 1, "prev_index": 41, "prev_term": 2,
                              "entries": [{"term": 2, "index": 42,
                                           "data": codec.encode({"type": "fence_broker", "id": 2})}],
                              "commit": 41}),
         ack, []),
        ("broker-register", "broker_register (broker 2 starts)", "broker_register",
         BrokerRegisterRequest(cluster_id=CLUSTER_ID, broker_id=2, incarnation=2718281828,
                               host="127.0.0.1", port=9093, pub_port=9193, controller_port=9293, rack="r2"),
         {"broker_epoch": 17, "controller_id": 1}, []),
        ("broker-heartbeat", "broker_heartbeat", "broker_heartbeat",
         BrokerHeartbeatRequest(broker_id=2, broker_epoch=17, metadata_offset=42),
         {"fenced": False, "shutdown_ready": False, "controller_id": 1}, []),
        ("alter-partition", "alter_partition (leader 1 shrinks the ISR of orders/1 to [1, 3])", "alter_partition",
         AlterPartitionRequest(broker_id=1, broker_epoch=9, partitions=(
             IsrProposal(topic_id=TOPIC_ID, partition=1, leader_epoch=3, partition_epoch=5, isr=(1, 3)),)),
         {"partitions": [{"topic_id": TOPIC_ID, "partition": 1, "leader": 1, "leader_epoch": 3,
                          "partition_epoch": 6, "isr": [1, 3]}]}, []),
        ("controlled-shutdown", "controlled_shutdown", "controlled_shutdown",
         ControlledShutdownRequest(broker_id=2, broker_epoch=17), {"remaining": 0}, []),
        ("cluster-status", "cluster_status", "cluster_status", ClusterStatusRequest(),
         {"cluster_id": CLUSTER_ID, "node_id": 1, "controller_id": 1, "term": 2, "commit_index": 42,
          "voters": [{"node_id": n, "match_index": 42} for n in (1, 2, 3)],
          "brokers": [{"node_id": n, "host": "127.0.0.1", "port": 9091 + n, "rack": f"r{n}", "fenced": n == 2,
                       "broker_epoch": 3 * n} for n in (1, 2, 3)],
          "offline_partitions": 0, "under_replicated_partitions": 1}, []),
    ]


def render_cluster(block: Callable[..., str], hex_lines: Callable[[bytes], str], diag: Callable[[Any], str]) -> str:
    out = [BEGIN, "\n"]
    for i, (name, title, op, body, reply, frames) in enumerate(_steps(), 1):
        cid = 100 + i
        out.append(f"#### 13.6.{i} {title}\n\nRequest, frame 0:\n\n")
        header = request_header(op, cid, body)
        raw = codec.encode(header)
        out.append(block("hex", f"{name}-request", hex_lines(raw)))
        out.append(block("diag", f"{name}-request", diag(codec.decode_map(raw, 1 << 26))))
        rep = {"op": op, "cid": cid, **{k: v for k, v in unparse(reply).items() if k != "op"}}
        out.append("\nReply, frame 0" + (" (an acknowledgement only)" if op == "raft" else "") + ":\n\n")
        out.append(block("hex", f"{name}-reply", hex_lines(codec.encode(rep))))
        out.append(block("diag", f"{name}-reply", diag(rep)))
        for n, f in enumerate(frames, 1):
            out.append(f"\nReply, frame {n}" + (" (empty)" if not f else "") + ":\n\n")
            out.append(block("hex", f"{name}-reply-frame{n}", hex_lines(f)))
        out.append("\n")
    out.append(END)
    return "".join(out)
