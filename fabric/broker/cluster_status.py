"""``cluster_status``: a cluster's health as one broker answers it (the operator's view:
``fabric cluster status``, the dashboard).

Why two sources: Raft's state (role, term, commit index, followers' progress) and the brokers'
liveness live on the controller leader, so the broker asks it (``ClusterNode.forward``); which
partitions are under-replicated, under their minimum ISR or offline is read from this broker's
metadata image, the same one its metadata replies come from.
"""

from __future__ import annotations

from typing import Any

from ..clock import Now
from ..protocol.messages import ok_reply
from .replies import Outbox, Reply


def answer(node: Any, peer: bytes, header: dict[str, Any], now: Now) -> Outbox:
    """``cluster_status``: the controller's view (Raft role, term, commit index, followers' lag,
    brokers' liveness), asked of the controller leader, with the partition health this broker's
    image shows (under-replicated, under min ISR, offline)."""
    cid = header.get("cid", 0)

    def done(answer: dict[str, Any]) -> Outbox:
        if answer.get("error"):
            return [(peer, Reply({"op": "cluster_status", "cid": cid, "error": answer["error"]}))]
        controller = {k: v for k, v in answer.items() if k not in ("op", "cid")}
        body = {"broker_id": node.node_id, "metadata_offset": node.link.offset, "controller": controller,
                **partition_health(node)}
        return [(peer, Reply(ok_reply("cluster_status", cid, **body)))]

    node.forward({"op": "cluster_status"}, done, now.mono_ms)
    return []


def partition_health(node: Any) -> dict[str, Any]:
    """Brokers (fenced or up, with the replicas they hold and the partitions they lead: balance and
    a decommission's progress) and the partitions under-replicated, under min ISR, offline or
    being reassigned."""
    image = node.core.leadership.image
    under, under_min, offline, moving = [], [], [], []
    held: dict[int, int] = {}
    leads: dict[int, int] = {}
    total = 0
    for t in image.topics.values():
        min_isr = int(t.configs.get("min_insync_replicas", node.config.min_insync_replicas))
        for p, a in enumerate(t.partitions):
            total += 1
            row = {"topic": t.name, "partition": p, "leader": a.leader, "replicas": list(a.replicas),
                   "isr": list(a.isr)}
            if a.leader < 0:
                offline.append(row)
            for r in a.replicas:
                held[r] = held.get(r, 0) + 1
            leads[a.leader] = leads.get(a.leader, 0) + 1
            if a.adding or a.removing:  # a reassignment in progress (SPEC 13.7)
                moving.append({**row, "adding": list(a.adding), "removing": list(a.removing)})
            if len(a.isr) < len(a.replicas):
                under.append(row)
            if len(a.isr) < min(min_isr, len(a.replicas)):
                under_min.append(row)
    brokers = [{"node_id": b.node_id, "host": b.host, "port": b.port, "rack": b.rack,
                "fenced": bool(getattr(b, "fenced", False)),
                "decommissioned": bool(getattr(b, "decommissioned", False)), "replicas": held.get(b.node_id, 0),
                "leaders": leads.get(b.node_id, 0)} for b in sorted(image.brokers.values(),
                                                                             key=lambda b: b.node_id)]
    return {"brokers": brokers, "partitions_total": total, "under_replicated": under,
            "under_min_isr": under_min, "offline": offline, "reassigning": moving}
